//! Malformed, spoofed and unsupported frames: dropped and counted, never forwarded.

use smoltcp::wire::{EthernetAddress, EthernetProtocol, Ipv4Packet};

use super::*;
use crate::frame::ethernet_frame;

/// Feeds `frame` on `link` and checks it was dropped for `reason` and nothing left.
fn expect_drop(r: &mut Router, link: LinkId, frame: &[u8], reason: DropReason) {
    let before = dropped(r, Port::Link(link), reason);
    let out = feed(r, t(1), Port::Link(link), frame);
    assert!(out.is_empty(), "{reason:?}: {out:?}");
    assert_eq!(dropped(r, Port::Link(link), reason), before + 1, "{reason:?}");
}

fn good_udp(r: &Router) -> Vec<u8> {
    udp_packet((addrs(r, L0).desktop, 1000), (REMOTE, 2000), b"payload")
}

#[test]
fn length_faults() {
    let mut r = router();
    expect_drop(&mut r, L0, &[0u8; 10], DropReason::Runt);
    let mut big = from_desktop(L0, &good_udp(&r));
    big.resize(1515, 0);
    expect_drop(&mut r, L0, &big, DropReason::Oversized);
    let frame = from_desktop(L0, &good_udp(&r));
    expect_drop(&mut r, L0, &frame[..14 + 10], DropReason::Malformed);
    expect_drop(&mut r, L0, &frame[..frame.len() - 1], DropReason::Malformed);
    // Ethernet padding after the IP packet is fine.
    let mut padded = frame.clone();
    padded.extend_from_slice(&[0; 20]);
    assert_eq!(send_out(&mut r, t(1), L0, &padded[14..]).len(), frame.len());
}

#[test]
fn header_faults() {
    let mut r = router();
    let mut bad_sum = good_udp(&r);
    bad_sum[10] ^= 0xff;
    expect_drop(&mut r, L0, &from_desktop(L0, &bad_sum), DropReason::BadIpChecksum);

    let mut fragment = good_udp(&r);
    Ipv4Packet::new_unchecked(&mut fragment[..]).set_frag_offset(8);
    Ipv4Packet::new_unchecked(&mut fragment[..]).fill_checksum();
    expect_drop(&mut r, L0, &from_desktop(L0, &fragment), DropReason::Fragment);

    let mut version6 = good_udp(&r);
    version6[0] = 0x65;
    expect_drop(&mut r, L0, &from_desktop(L0, &version6), DropReason::Malformed);

    let gre = ipv4_packet(addrs(&r, L0).desktop, REMOTE, smoltcp::wire::IpProtocol::Unknown(47), &[0; 8]);
    expect_drop(&mut r, L0, &from_desktop(L0, &gre), DropReason::UnsupportedProtocol);
}

#[test]
fn ttl_running_out_here_is_answered_with_time_exceeded() {
    let mut r = router();
    let a = addrs(&r, L0);
    let mut ttl1 = good_udp(&r);
    Ipv4Packet::new_unchecked(&mut ttl1[..]).set_hop_limit(1);
    Ipv4Packet::new_unchecked(&mut ttl1[..]).fill_checksum();
    let out = feed(&mut r, t(1), Port::Link(L0), &from_desktop(L0, &ttl1));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].port, Port::Link(L0));
    let packet = ipv4_of(&out[0].frame, a.gateway_mac, desktop_mac(L0));
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (a.gateway, a.desktop));
    let icmp = smoltcp::wire::Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (smoltcp::wire::Icmpv4Message::TimeExceeded, 0));
    assert_eq!(&ip.payload()[8..], &ttl1[..28], "quotes the header and 8 bytes");
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::TtlExpired), 1);
    assert_eq!(r.counters(Port::Uplink).unwrap().transmitted, 0);
    // Towards a peer too; but an ICMP error with TTL 1 gets no error back.
    let mut to_peer = udp_packet((a.desktop, 1), (addrs(&r, L1).desktop, 2), b"");
    Ipv4Packet::new_unchecked(&mut to_peer[..]).set_hop_limit(1);
    Ipv4Packet::new_unchecked(&mut to_peer[..]).fill_checksum();
    assert_eq!(feed(&mut r, t(1), Port::Link(L0), &from_desktop(L0, &to_peer))[0].port, Port::Link(L0));
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::TtlExpired), 2);
}

#[test]
fn spoofed_sources() {
    let mut r = router();
    let packet = good_udp(&r);
    let other_mac = ipv4_frame(desktop_mac(L1), crate::addressing::gateway_mac(L0), &packet);
    expect_drop(&mut r, L0, &other_mac, DropReason::Spoofed);
    // L1's desktop address sent on L0.
    let other_ip = udp_packet((addrs(&r, L1).desktop, 1000), (REMOTE, 2000), b"x");
    expect_drop(&mut r, L0, &from_desktop(L0, &other_ip), DropReason::Spoofed);
    let outside_ip = udp_packet((Ipv4Address::new(8, 8, 8, 8), 1000), (REMOTE, 2000), b"x");
    expect_drop(&mut r, L0, &from_desktop(L0, &outside_ip), DropReason::Spoofed);
    // Right source, but sent to a MAC other than the gateway's.
    let elsewhere = ipv4_frame(desktop_mac(L0), EthernetAddress([2, 0, 0, 0, 0, 9]), &packet);
    expect_drop(&mut r, L0, &elsewhere, DropReason::NotRoutable);
    assert_eq!(r.counters(Port::Link(L0)).unwrap().forwarded, 0);
    assert_eq!(r.counters(Port::Uplink).unwrap().transmitted, 0);
}

#[test]
fn ipv6_and_unknown_ethertypes() {
    let mut r = router();
    let v6 =
        ethernet_frame(desktop_mac(L0), EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), EthernetProtocol::Ipv6, 40, |_| {});
    expect_drop(&mut r, L0, &v6, DropReason::Ipv6);
    let lldp =
        ethernet_frame(desktop_mac(L0), EthernetAddress::BROADCAST, EthernetProtocol::Unknown(0x88cc), 30, |_| {});
    expect_drop(&mut r, L0, &lldp, DropReason::UnsupportedEtherType);
    // Also on the uplink.
    let v6 = ethernet_frame(GW_MAC, UPLINK_MAC, EthernetProtocol::Ipv6, 40, |_| {});
    assert!(feed(&mut r, t(1), Port::Uplink, &v6).is_empty());
    assert_eq!(dropped(&r, Port::Uplink, DropReason::Ipv6), 1);
}

#[test]
fn unroutable_destinations() {
    let mut r = router();
    let me = addrs(&r, L0).desktop;
    for dst in [
        Ipv4Address::BROADCAST,
        Ipv4Address::new(224, 0, 0, 251),
        Ipv4Address::new(127, 0, 0, 1),
        Ipv4Address::new(169, 254, 1, 1),
        addrs(&r, L0).broadcast,
        UPLINK_IP,
    ] {
        let frame = from_desktop(L0, &udp_packet((me, 1), (dst, 2), b""));
        expect_drop(&mut r, L0, &frame, DropReason::NotRoutable);
    }
}

#[test]
fn uplink_faults_are_counted_on_the_uplink() {
    let mut r = router();
    let mut bad = udp_packet((REMOTE, 1), (UPLINK_IP, 20000), b"");
    bad[10] ^= 1;
    for (frame, reason) in [
        (vec![0u8; 5], DropReason::Runt),
        (from_gateway(&bad), DropReason::BadIpChecksum),
        (
            ipv4_frame(GW_MAC, EthernetAddress([2, 9, 9, 9, 9, 9]), &udp_packet((REMOTE, 1), (UPLINK_IP, 2), b"")),
            DropReason::NotRoutable,
        ),
        (from_gateway(&udp_packet((REMOTE, 1), (Ipv4Address::new(192, 168, 1, 51), 2), b"")), DropReason::NotRoutable),
    ] {
        let before = dropped(&r, Port::Uplink, reason);
        assert!(feed(&mut r, t(1), Port::Uplink, &frame).is_empty());
        assert_eq!(dropped(&r, Port::Uplink, reason), before + 1, "{reason:?}");
    }
}

#[test]
fn packets_over_the_uplink_mtu_get_fragmentation_needed_when_df_is_set() {
    let mut r = router();
    r.set_uplink(Some(UplinkConfig { mtu: 1400, ..uplink_config() })).unwrap();
    let a = addrs(&r, L0);
    let fits = udp_packet((a.desktop, 1), (REMOTE, 2), &[7; 1400 - 28]);
    assert_eq!(send_out(&mut r, t(1), L0, &fits).len(), 14 + 1400);

    let mut big = udp_packet((a.desktop, 1), (REMOTE, 2), &[7; 1400 - 27]);
    Ipv4Packet::new_unchecked(&mut big[..]).set_dont_frag(true);
    Ipv4Packet::new_unchecked(&mut big[..]).fill_checksum();
    let out = feed(&mut r, t(1), Port::Link(L0), &from_desktop(L0, &big));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, Port::Link(L0));
    let packet = ipv4_of(&out[0].frame, a.gateway_mac, desktop_mac(L0));
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    let icmp = smoltcp::wire::Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (smoltcp::wire::Icmpv4Message::DstUnreachable, 4));
    assert_eq!(u16::from_be_bytes([ip.payload()[6], ip.payload()[7]]), 1400, "next-hop MTU");
    assert_eq!(&ip.payload()[8..], &big[..28]);

    Ipv4Packet::new_unchecked(&mut big[..]).set_dont_frag(false);
    Ipv4Packet::new_unchecked(&mut big[..]).fill_checksum();
    assert!(feed(&mut r, t(1), Port::Link(L0), &from_desktop(L0, &big)).is_empty(), "no fragmentation");
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::TooBig), 2);
    assert_eq!(r.status().nat_mappings, 1, "no mapping for dropped packets");
}
