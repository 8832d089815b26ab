//! The DHCP server on the desktop links, and the gateway's ARP.

use smoltcp::wire::{
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame,
    Ipv4Packet, UdpPacket,
};

use super::*;

fn request_repr(link: LinkId, message_type: DhcpMessageType) -> DhcpRepr<'static> {
    DhcpRepr {
        message_type,
        transaction_id: 0x1234_5678 + u32::from(link.0),
        secs: 0,
        client_hardware_address: desktop_mac(link),
        client_ip: Ipv4Address::UNSPECIFIED,
        your_ip: Ipv4Address::UNSPECIFIED,
        server_ip: Ipv4Address::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Address::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: Some(desktop_mac(link)),
        server_identifier: None,
        parameter_request_list: Some(&[1, 3, 6]),
        dns_servers: None,
        max_size: None,
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    }
}

/// A client message from `link`'s desktop, broadcast from 0.0.0.0 as in INIT.
fn client_frame(repr: &DhcpRepr<'_>, src_mac: EthernetAddress) -> Vec<u8> {
    let ends = UdpEnds {
        src_mac,
        dst_mac: EthernetAddress::BROADCAST,
        src: (Ipv4Address::UNSPECIFIED, DHCP_CLIENT_PORT),
        dst: (Ipv4Address::BROADCAST, DHCP_SERVER_PORT),
    };
    crate::dhcp_server::dhcp_frame(ends, repr)
}

/// Binds `$repr` (and `$dst`) to the parsed DHCP answer in `$out`.
macro_rules! reply {
    ($r:expr, $link:expr, $out:expr => $repr:ident, $dst:ident) => {
        let (bytes, $dst) = server_reply($r, $link, $out);
        let packet = DhcpPacket::new_checked(&bytes[..]).unwrap();
        let $repr = DhcpRepr::parse(&packet).unwrap();
    };
}

/// The server's answer, checking the UDP/IP framing on the way.
fn server_reply(r: &Router, link: LinkId, out: &[Transmit]) -> (Vec<u8>, Ipv4Address) {
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].port, Port::Link(link));
    let eth = EthernetFrame::new_checked(&out[0].frame[..]).unwrap();
    assert_eq!(eth.src_addr(), addrs(r, link).gateway_mac);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), addrs(r, link).gateway);
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr())));
    assert_eq!((udp.src_port(), udp.dst_port()), (DHCP_SERVER_PORT, DHCP_CLIENT_PORT));
    (udp.payload().to_vec(), ip.dst_addr())
}

#[test]
fn discover_offer_request_ack() {
    let mut r = router();
    let a = addrs(&r, L1);
    let discover = request_repr(L1, DhcpMessageType::Discover);
    let out = feed(&mut r, t(1), Port::Link(L1), &client_frame(&discover, desktop_mac(L1)));
    reply!(&r, L1, &out => offer, _dst);
    assert_eq!(offer.message_type, DhcpMessageType::Offer);
    assert_eq!(offer.transaction_id, discover.transaction_id);
    assert_eq!(offer.your_ip, a.desktop);
    assert_eq!(offer.router, Some(a.gateway));
    assert_eq!(offer.subnet_mask, Some(Ipv4Address::new(255, 255, 255, 252)));
    assert_eq!(offer.dns_servers.as_deref(), Some(&[a.gateway][..]));
    assert_eq!(offer.server_identifier, Some(a.gateway));
    assert_eq!(offer.lease_duration, Some(crate::dhcp_server::LEASE_SECONDS));

    let request = DhcpRepr {
        requested_ip: Some(offer.your_ip),
        server_identifier: offer.server_identifier,
        ..request_repr(L1, DhcpMessageType::Request)
    };
    let out = feed(&mut r, t(2), Port::Link(L1), &client_frame(&request, desktop_mac(L1)));
    reply!(&r, L1, &out => ack, dst);
    assert_eq!(ack.message_type, DhcpMessageType::Ack);
    assert_eq!(ack.your_ip, a.desktop);
    assert_eq!(dst, a.desktop, "unicast to the offered address when the client did not ask for broadcast");
    assert_eq!(r.counters(Port::Link(L1)).unwrap().consumed, 2);
}

#[test]
fn same_address_from_a_new_router_and_distinct_per_link() {
    let mut first = router();
    let discover = request_repr(L0, DhcpMessageType::Discover);
    let out = feed(&mut first, t(1), Port::Link(L0), &client_frame(&discover, desktop_mac(L0)));
    reply!(&first, L0, &out => offer, _dst);
    let leased = offer.your_ip;

    // A restarted service VM: new instance, no state; the desktop renews (INIT-REBOOT).
    let mut second = router();
    let reboot = DhcpRepr { requested_ip: Some(leased), ..request_repr(L0, DhcpMessageType::Request) };
    let out = feed(&mut second, t(1), Port::Link(L0), &client_frame(&reboot, desktop_mac(L0)));
    reply!(&second, L0, &out => ack, _dst);
    assert_eq!((ack.message_type, ack.your_ip), (DhcpMessageType::Ack, leased));

    let other = request_repr(L1, DhcpMessageType::Discover);
    let out = feed(&mut second, t(1), Port::Link(L1), &client_frame(&other, desktop_mac(L1)));
    reply!(&second, L1, &out => other_offer, _dst);
    assert_ne!(other_offer.your_ip, leased);
}

#[test]
fn request_for_another_address_is_nakked_by_broadcast() {
    let mut r = router();
    let wrong =
        DhcpRepr { requested_ip: Some(Ipv4Address::new(10, 213, 0, 6)), ..request_repr(L0, DhcpMessageType::Request) };
    let out = feed(&mut r, t(1), Port::Link(L0), &client_frame(&wrong, desktop_mac(L0)));
    reply!(&r, L0, &out => nak, dst);
    assert_eq!(nak.message_type, DhcpMessageType::Nak);
    assert_eq!(nak.your_ip, Ipv4Address::UNSPECIFIED);
    assert_eq!(dst, Ipv4Address::BROADCAST);
}

#[test]
fn foreign_client_and_foreign_source_mac_are_refused() {
    let mut r = router();
    // chaddr of another desktop, frame from the right MAC.
    let mut discover = request_repr(L0, DhcpMessageType::Discover);
    discover.client_hardware_address = desktop_mac(L1);
    assert!(feed(&mut r, t(1), Port::Link(L0), &client_frame(&discover, desktop_mac(L0))).is_empty());
    // Frame from a MAC the link does not have.
    let discover = request_repr(L0, DhcpMessageType::Discover);
    let stranger = EthernetAddress([0x52, 0x54, 0, 9, 9, 9]);
    assert!(feed(&mut r, t(1), Port::Link(L0), &client_frame(&discover, stranger)).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::Spoofed), 2);
    // Release needs no answer.
    let release = request_repr(L0, DhcpMessageType::Release);
    assert!(feed(&mut r, t(1), Port::Link(L0), &client_frame(&release, desktop_mac(L0))).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::DhcpIgnored), 1);
}

#[test]
fn isolated_link_still_gets_its_address() {
    let mut r = router();
    let discover = request_repr(ISO, DhcpMessageType::Discover);
    let out = feed(&mut r, t(1), Port::Link(ISO), &client_frame(&discover, desktop_mac(ISO)));
    reply!(&r, ISO, &out => offer, _dst);
    assert_eq!(offer.your_ip, addrs(&r, ISO).desktop);
}

fn arp_request(sender_mac: EthernetAddress, sender_ip: Ipv4Address, target: Ipv4Address) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: sender_mac,
        source_protocol_addr: sender_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    arp_frame(sender_mac, EthernetAddress::BROADCAST, repr)
}

#[test]
fn arp_for_the_gateway_is_answered_and_nothing_else() {
    let mut r = router();
    let a = addrs(&r, L0);
    let out = feed(&mut r, t(1), Port::Link(L0), &arp_request(desktop_mac(L0), a.desktop, a.gateway));
    assert_eq!(out.len(), 1);
    let eth = EthernetFrame::new_checked(&out[0].frame[..]).unwrap();
    let reply = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!(
        reply,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: a.gateway_mac,
            source_protocol_addr: a.gateway,
            target_hardware_addr: desktop_mac(L0),
            target_protocol_addr: a.desktop,
        }
    );
    // Another link's gateway, or another address: ignored.
    let other = addrs(&r, L1).gateway;
    assert!(feed(&mut r, t(1), Port::Link(L0), &arp_request(desktop_mac(L0), a.desktop, other)).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::ArpIgnored), 1);
    // Sender IP the link did not lease.
    let forged = Ipv4Address::new(10, 213, 0, 6);
    assert!(feed(&mut r, t(1), Port::Link(L0), &arp_request(desktop_mac(L0), forged, a.gateway)).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::Spoofed), 1);
}

#[test]
fn gateway_answers_ping() {
    let mut r = router();
    let a = addrs(&r, ISO);
    let ping = icmp_echo_packet(a.desktop, a.gateway, 99, true);
    let frame = from_desktop(ISO, &ping);
    let out = feed(&mut r, t(1), Port::Link(ISO), &frame);
    assert_eq!(out.len(), 1);
    let packet = ipv4_of(&out[0].frame, a.gateway_mac, desktop_mac(ISO));
    assert_eq!(seen(&packet).src, (a.gateway, 99));
    assert_eq!(Icmpv4Packet::new_checked(&packet[20..]).unwrap().msg_type(), Icmpv4Message::EchoReply);
}

/// The interface MTU option of the server's answer in `out`.
fn offered_mtu(r: &Router, link: LinkId, out: &[Transmit]) -> Option<u16> {
    let (bytes, _) = server_reply(r, link, out);
    let packet = DhcpPacket::new_checked(&bytes[..]).unwrap();
    packet.options().find(|o| o.kind == 26).map(|o| u16::from_be_bytes([o.data[0], o.data[1]]))
}

#[test]
fn lease_carries_the_uplink_mtu() {
    let mut r = router();
    let discover = request_repr(L0, DhcpMessageType::Discover);
    let out = feed(&mut r, t(1), Port::Link(L0), &client_frame(&discover, desktop_mac(L0)));
    assert_eq!(offered_mtu(&r, L0, &out), Some(1500));
    r.set_uplink(Some(UplinkConfig { mtu: 1400, ..uplink_config() })).unwrap();
    let out = feed(&mut r, t(2), Port::Link(L0), &client_frame(&discover, desktop_mac(L0)));
    assert_eq!(offered_mtu(&r, L0, &out), Some(1400));
    // Out-of-range MTUs are clamped to what IPv4 and the links allow.
    r.set_uplink(Some(UplinkConfig { mtu: 100, ..uplink_config() })).unwrap();
    assert_eq!(r.link_mtu(), 576);
    r.set_uplink(Some(UplinkConfig { mtu: 9000, ..uplink_config() })).unwrap();
    assert_eq!(r.link_mtu(), 1500);
}
