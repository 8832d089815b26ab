//! The uplink: ARP, its DHCP client, configuration checks and the status snapshot.

use smoltcp::wire::{
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame,
};

use super::*;

fn arp_from_neighbour(op: ArpOperation, ip: Ipv4Address, mac: EthernetAddress, target: Ipv4Address) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    arp_frame(mac, EthernetAddress::BROADCAST, repr)
}

fn arp_of(frame: &[u8]) -> ArpRepr {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap()
}

#[test]
fn arp_for_the_uplink_address_is_answered() {
    let mut r = router();
    let neighbour = EthernetAddress([0, 1, 2, 3, 4, 5]);
    let ip = Ipv4Address::new(192, 168, 1, 20);
    let out = feed(&mut r, t(1), Port::Uplink, &arp_from_neighbour(ArpOperation::Request, ip, neighbour, UPLINK_IP));
    assert_eq!(out.len(), 1);
    let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, target_hardware_addr, .. } = arp_of(&out[0].frame)
    else {
        panic!()
    };
    assert_eq!((operation, source_hardware_addr, target_hardware_addr), (ArpOperation::Reply, UPLINK_MAC, neighbour));
    let other = Ipv4Address::new(192, 168, 1, 99);
    assert!(
        feed(&mut r, t(1), Port::Uplink, &arp_from_neighbour(ArpOperation::Request, ip, neighbour, other)).is_empty()
    );
    // An unsolicited reply does not plant a binding.
    assert!(
        feed(&mut r, t(1), Port::Uplink, &arp_from_neighbour(ArpOperation::Reply, GW_IP, neighbour, UPLINK_IP))
            .is_empty()
    );
    assert_eq!(dropped(&r, Port::Uplink, DropReason::ArpIgnored), 2);
    assert_eq!(r.status().arp_cache, 0);
}

#[test]
fn arp_queue_is_bounded_and_unresolved_packets_are_counted() {
    let mut cfg = config();
    cfg.limits.arp_queue = 2;
    let mut r = Router::new(cfg).unwrap();
    r.set_uplink(Some(uplink_config())).unwrap();
    let me = addrs(&r, L0).desktop;
    let mut requests = 0;
    for port in 1..=3 {
        let frame = from_desktop(L0, &udp_packet((me, port), (REMOTE, 9), b""));
        requests += feed(&mut r, t(1), Port::Link(L0), &frame).len();
    }
    assert_eq!(requests, 1, "one ARP request for the gateway");
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::ArpQueueFull), 1);
    let mut retries = 0;
    for s in 2..10 {
        retries += poll(&mut r, t(s)).len();
    }
    assert_eq!(retries, 2);
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::ArpUnresolved), 2);
    assert_eq!(r.status().arp_queue, 0);
}

fn server_message(message_type: DhcpMessageType, xid: u32, lease: u32) -> Vec<u8> {
    server_message_with(message_type, xid, lease, &[])
}

fn server_message_with(
    message_type: DhcpMessageType,
    xid: u32,
    lease: u32,
    options: &[smoltcp::wire::DhcpOption<'_>],
) -> Vec<u8> {
    let mut dns = heapless::Vec::new();
    dns.push(RESOLVER).unwrap();
    let repr = DhcpRepr {
        message_type,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: UPLINK_MAC,
        client_ip: Ipv4Address::UNSPECIFIED,
        your_ip: UPLINK_IP,
        server_ip: Ipv4Address::UNSPECIFIED,
        router: Some(GW_IP),
        subnet_mask: Some(Ipv4Address::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Address::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(GW_IP),
        parameter_request_list: None,
        dns_servers: Some(dns),
        max_size: None,
        lease_duration: Some(lease),
        renew_duration: None,
        rebind_duration: None,
        additional_options: options,
    };
    let ends = UdpEnds {
        src_mac: GW_MAC,
        dst_mac: UPLINK_MAC,
        src: (GW_IP, DHCP_SERVER_PORT),
        dst: (UPLINK_IP, DHCP_CLIENT_PORT),
    };
    crate::dhcp_server::dhcp_frame(ends, &repr)
}

/// The client message in a frame the router sent: (type, xid, requested ip, ciaddr).
fn client_message(out: &[Transmit]) -> (DhcpMessageType, u32, Option<Ipv4Address>, Ipv4Address) {
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].port, Port::Uplink);
    let eth = EthernetFrame::new_checked(&out[0].frame[..]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (UPLINK_MAC, EthernetAddress::BROADCAST));
    let packet = seen(eth.payload());
    assert_eq!((packet.src.1, packet.dst), (DHCP_CLIENT_PORT, (Ipv4Address::BROADCAST, DHCP_SERVER_PORT)));
    let dhcp = DhcpPacket::new_checked(&eth.payload()[28..]).unwrap();
    let repr = DhcpRepr::parse(&dhcp).unwrap();
    assert_eq!(repr.client_hardware_address, UPLINK_MAC);
    (repr.message_type, repr.transaction_id, repr.requested_ip, repr.client_ip)
}

#[test]
fn dhcp_client_gets_renews_and_loses_a_lease() {
    let mut r = Router::new(config()).unwrap();
    r.start_uplink_dhcp(t(0));
    let (kind, xid, ..) = client_message(&poll(&mut r, t(0)));
    assert_eq!(kind, DhcpMessageType::Discover);
    assert!(poll(&mut r, t(1)).is_empty(), "waits before retransmitting");
    let (kind, xid2, ..) = client_message(&poll(&mut r, t(4)));
    assert_eq!((kind, xid2), (DhcpMessageType::Discover, xid));

    // An offer for another transaction is ignored.
    assert!(feed(&mut r, t(5), Port::Uplink, &server_message(DhcpMessageType::Offer, xid ^ 1, 600)).is_empty());
    let out = feed(&mut r, t(5), Port::Uplink, &server_message(DhcpMessageType::Offer, xid, 600));
    let (kind, _, requested, _) = client_message(&out);
    assert_eq!((kind, requested), (DhcpMessageType::Request, Some(UPLINK_IP)));
    assert!(r.uplink().is_none());

    feed(&mut r, t(6), Port::Uplink, &server_message(DhcpMessageType::Ack, xid, 600));
    assert_eq!(r.uplink(), Some(&uplink_config()));
    assert_eq!(r.dhcp_client_state(), DhcpClientState::Bound);

    // T1 = 300 s after the ACK: renew with ciaddr set.
    assert!(poll(&mut r, t(305)).is_empty());
    assert_eq!(r.dhcp_client_state(), DhcpClientState::Bound);
    let (kind, renew_xid, _, ciaddr) = client_message(&poll(&mut r, t(306)));
    assert_eq!(r.dhcp_client_state(), DhcpClientState::Renewing);
    assert_eq!((kind, ciaddr), (DhcpMessageType::Request, UPLINK_IP));
    feed(&mut r, t(312), Port::Uplink, &server_message(DhcpMessageType::Ack, renew_xid, 600));
    assert_eq!(r.dhcp_client_state(), DhcpClientState::Bound);
    assert!(r.uplink().is_some());

    // No answer to the next renewals: the address goes when the lease runs out.
    let mut now = t(312);
    while now < t(312 + 601) {
        now += Duration::from_secs(1);
        poll(&mut r, now);
    }
    assert!(r.uplink().is_none());
    assert_eq!(r.dhcp_client_state(), DhcpClientState::Selecting);
}

#[test]
fn dhcp_nak_restarts_discovery() {
    let mut r = Router::new(config()).unwrap();
    r.start_uplink_dhcp(t(0));
    let (_, xid, ..) = client_message(&poll(&mut r, t(0)));
    feed(&mut r, t(1), Port::Uplink, &server_message(DhcpMessageType::Offer, xid, 600));
    feed(&mut r, t(1), Port::Uplink, &server_message(DhcpMessageType::Nak, xid, 0));
    assert_eq!(r.dhcp_client_state(), DhcpClientState::Selecting);
    let (kind, new_xid, ..) = client_message(&poll(&mut r, t(1)));
    assert_eq!(kind, DhcpMessageType::Discover);
    assert_ne!(new_xid, xid);
}

#[test]
fn configuration_is_checked() {
    let mut cfg = config();
    cfg.links[0].peers = vec![LinkId(9)];
    assert_eq!(Router::new(cfg).unwrap_err(), RouterError::BadPeer);
    let mut cfg = config();
    cfg.limits.dns_ports = 50000..=50010;
    assert_eq!(Router::new(cfg).unwrap_err(), RouterError::PortRangesOverlap);
    let mut cfg = config();
    cfg.links[0].peers = vec![LinkId(4)];
    assert_eq!(Router::new(cfg).unwrap_err(), RouterError::BadPeer, "one past the last link");
    let mut cfg = config();
    cfg.limits.nat_mappings = 0;
    assert_eq!(Router::new(cfg).unwrap_err(), RouterError::BadLimit);
    let mut cfg = config();
    cfg.limits.nat_timeouts.udp = Duration::from_secs(400 * 24 * 3600);
    assert_eq!(Router::new(cfg).unwrap_err(), RouterError::BadLimit);
    let mut cfg = config();
    cfg.limits.nat_ports = 80..=1100;
    assert_eq!(Router::new(cfg).unwrap_err(), RouterError::BadLimit);
    let mut cfg = config();
    cfg.links[1].desktop_mac = EthernetAddress::BROADCAST;
    assert_eq!(Router::new(cfg).unwrap_err(), RouterError::BadMac);
    let mut cfg = config();
    cfg.links = (0..65)
        .map(|_| cfg.links[0].clone())
        .map(|mut l| {
            l.peers.clear();
            l
        })
        .collect();
    assert_eq!(Router::new(cfg).unwrap_err(), RouterError::TooManyLinks);
    let mut r = router();
    let inside = UplinkConfig {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 213, 0, 9), 16),
        gateway: None,
        dns: vec![],
        mtu: 1500,
    };
    assert_eq!(r.set_uplink(Some(inside)), Err(RouterError::UplinkInPlan));
}

#[test]
fn time_going_backwards_does_not_revive_state() {
    let mut r = router();
    let me = addrs(&r, L0).desktop;
    let ext =
        seen(&ipv4_of(&send_out(&mut r, t(1000), L0, &udp_packet((me, 5), (REMOTE, 9), b"")), UPLINK_MAC, GW_MAC))
            .src
            .1;
    poll(&mut r, t(1000) + NatTimeouts::default().udp);
    // A reply stamped with an earlier time still finds the mapping gone.
    assert!(
        feed(&mut r, t(1001), Port::Uplink, &from_gateway(&udp_packet((REMOTE, 9), (UPLINK_IP, ext), b""))).is_empty()
    );
    assert_eq!(dropped(&r, Port::Uplink, DropReason::NoConnection), 1);
}

#[test]
fn status_snapshot_reports_state_and_counters() {
    let mut r = router();
    let me = addrs(&r, L0).desktop;
    send_out(&mut r, t(1), L0, &udp_packet((me, 5), (REMOTE, 9), b""));
    feed(&mut r, t(1), Port::Link(L0), &[0; 3]);
    let s = r.status();
    assert_eq!(s.uplink.address, Some(Ipv4Cidr::new(UPLINK_IP, 24)));
    assert_eq!(s.uplink.gateway, Some(GW_IP));
    assert_eq!(s.links.len(), 4);
    assert_eq!(s.links[0].nat_mappings, 1);
    assert_eq!(s.links[0].counters.forwarded, 1);
    assert_eq!(s.links[0].counters.dropped(DropReason::Runt), 1);
    assert_eq!(s.arp_cache, 1);
    let text = alloc::format!("{s}");
    assert!(text.starts_with("uplink 192.168.1.50/24 mtu 1500 dhcp Stopped"), "{text}");
    assert!(text.contains("link 0 up 10.213.0.2 nat 1: rx 2 fwd 1 own 0 tx 0 drop 1 runt=1"), "{text}");
    assert_eq!(text.lines().count(), 5);
}

#[test]
fn dhcp_client_takes_the_interface_mtu() {
    let mut r = Router::new(config()).unwrap();
    r.start_uplink_dhcp(t(0));
    let (_, xid, ..) = client_message(&poll(&mut r, t(0)));
    feed(&mut r, t(1), Port::Uplink, &server_message(DhcpMessageType::Offer, xid, 600));
    let mtu = 1492u16.to_be_bytes();
    let option = [smoltcp::wire::DhcpOption { kind: 26, data: &mtu }];
    feed(&mut r, t(1), Port::Uplink, &server_message_with(DhcpMessageType::Ack, xid, 600, &option));
    assert_eq!(r.uplink().map(|u| u.mtu), Some(1492));
    assert_eq!(r.status().uplink.mtu, 1492);
}
