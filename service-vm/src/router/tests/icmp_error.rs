//! ICMP errors about translated flows.

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Ipv4Packet};

use super::*;

/// An ICMP error of `kind`/`code` from `from` to `to`, quoting the first 28 bytes of
/// `quoted` (an IPv4 packet), with a next-hop MTU of 1400 for "fragmentation needed".
fn icmp_error(from: Ipv4Address, to: Ipv4Address, kind: Icmpv4Message, code: u8, quoted: &[u8]) -> Vec<u8> {
    let quote = &quoted[..28.min(quoted.len())];
    let mut l4 = vec![0u8; 8 + quote.len()];
    {
        let mut icmp = Icmpv4Packet::new_unchecked(&mut l4[..]);
        icmp.set_msg_type(kind);
        icmp.set_msg_code(code);
    }
    l4[6..8].copy_from_slice(&1400u16.to_be_bytes());
    l4[8..].copy_from_slice(quote);
    Icmpv4Packet::new_unchecked(&mut l4[..]).fill_checksum();
    ipv4_packet(from, to, IpProtocol::Icmp, &l4)
}

/// The quoted packet of an ICMP error, after checking the outer ICMP checksum and the
/// quoted IPv4 header checksum.
fn quoted_of(packet: &[u8]) -> (Ipv4Address, Ipv4Address, u16, u16) {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum");
    let q = Ipv4Packet::new_unchecked(&ip.payload()[8..]);
    assert!(q.verify_checksum(), "quoted IPv4 header checksum");
    let l4 = &ip.payload()[8 + 20..];
    (q.src_addr(), q.dst_addr(), u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]))
}

#[test]
fn fragmentation_needed_reaches_the_desktop_translated() {
    let mut r = router();
    let me = (addrs(&r, L0).desktop, 40100);
    let sent = send_out(&mut r, t(1), L0, &tcp_packet(me, (REMOTE, 443), "S", b""));
    let sent = ipv4_of(&sent, UPLINK_MAC, GW_MAC);
    let ext = seen(&sent).src.1;
    let hop = Ipv4Address::new(203, 0, 113, 1);
    let error = icmp_error(hop, UPLINK_IP, Icmpv4Message::DstUnreachable, 4, &sent);
    let out = feed(&mut r, t(2), Port::Uplink, &from_gateway(&error));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].port, Port::Link(L0));
    let packet = ipv4_of(&out[0].frame, addrs(&r, L0).gateway_mac, desktop_mac(L0));
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (hop, me.0));
    assert_eq!(quoted_of(&packet), (me.0, REMOTE, me.1, 443), "the desktop sees its own packet quoted");
    assert_eq!(u16::from_be_bytes([packet[20 + 6], packet[20 + 7]]), 1400, "MTU passed on");
    assert_ne!(ext, 0);
}

#[test]
fn errors_for_unknown_flows_are_dropped() {
    let mut r = router();
    let me = (addrs(&r, L0).desktop, 40200);
    let sent = ipv4_of(&send_out(&mut r, t(1), L0, &udp_packet(me, (REMOTE, 53), b"q")), UPLINK_MAC, GW_MAC);
    // Quoting another far end than the flow's.
    let mut other = sent.clone();
    Ipv4Packet::new_unchecked(&mut other[..]).set_dst_addr(Ipv4Address::new(1, 1, 1, 1));
    let error = icmp_error(REMOTE, UPLINK_IP, Icmpv4Message::DstUnreachable, 3, &other);
    assert!(feed(&mut r, t(2), Port::Uplink, &from_gateway(&error)).is_empty());
    // Quoting garbage.
    let error = icmp_error(REMOTE, UPLINK_IP, Icmpv4Message::TimeExceeded, 0, &[0x45, 0, 0]);
    assert!(feed(&mut r, t(2), Port::Uplink, &from_gateway(&error)).is_empty());
    assert_eq!(dropped(&r, Port::Uplink, DropReason::NoConnection), 1);
    assert_eq!(dropped(&r, Port::Uplink, DropReason::Malformed), 1);
    // After the mapping idled out, a matching error finds nothing either.
    let late = t(2) + NatTimeouts::default().udp;
    let error = icmp_error(REMOTE, UPLINK_IP, Icmpv4Message::DstUnreachable, 3, &sent);
    assert!(feed(&mut r, late, Port::Uplink, &from_gateway(&error)).is_empty());
    assert_eq!(dropped(&r, Port::Uplink, DropReason::NoConnection), 2);
}

#[test]
fn port_unreachable_from_a_desktop_goes_out_translated() {
    let mut r = router();
    let me = (addrs(&r, L1).desktop, 40300);
    let sent = ipv4_of(&send_out(&mut r, t(1), L1, &udp_packet(me, (REMOTE, 5000), b"hi")), UPLINK_MAC, GW_MAC);
    let ext = seen(&sent).src.1;
    // The far end answers; the desktop has closed the socket and says so.
    let answer = udp_packet((REMOTE, 5000), (UPLINK_IP, ext), b"late");
    let delivered = feed(&mut r, t(2), Port::Uplink, &from_gateway(&answer));
    let delivered = ipv4_of(&delivered[0].frame, addrs(&r, L1).gateway_mac, desktop_mac(L1));
    let error = icmp_error(me.0, REMOTE, Icmpv4Message::DstUnreachable, 3, &delivered);
    let out = feed(&mut r, t(2), Port::Link(L1), &from_desktop(L1, &error));
    assert_eq!(out.len(), 1);
    let packet = ipv4_of(&out[0].frame, UPLINK_MAC, GW_MAC);
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (UPLINK_IP, REMOTE));
    assert_eq!(quoted_of(&packet), (REMOTE, UPLINK_IP, 5000, ext), "the far end sees its own packet quoted");
    // An error about a flow the desktop never had is dropped.
    let stray = udp_packet((REMOTE, 5001), (me.0, 1), b"");
    let error = icmp_error(me.0, REMOTE, Icmpv4Message::DstUnreachable, 3, &stray);
    assert!(feed(&mut r, t(2), Port::Link(L1), &from_desktop(L1, &error)).is_empty());
    assert_eq!(dropped(&r, Port::Link(L1), DropReason::NoConnection), 1);
}
