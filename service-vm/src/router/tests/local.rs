//! The service VM's own TCP connections from the uplink address, and rule updates.

use super::*;

#[test]
fn segments_to_a_local_port_go_to_the_local_queue_not_nat() {
    let mut r = router();
    let local = *Limits::default().local_ports.start();
    let segment = tcp_packet((REMOTE, 8470), (UPLINK_IP, local), "SA", b"");
    assert!(feed(&mut r, t(1), Port::Uplink, &from_gateway(&segment)).is_empty());
    assert_eq!(r.take_local_packet(), Some(segment));
    assert_eq!(r.take_local_packet(), None);
    // A segment to a port outside the range is NAT's, which has no connection for it.
    let other = tcp_packet((REMOTE, 8470), (UPLINK_IP, local - 1), "SA", b"");
    feed(&mut r, t(1), Port::Uplink, &from_gateway(&other));
    assert_eq!(r.take_local_packet(), None);
    assert_eq!(dropped(&r, Port::Uplink, DropReason::NoConnection), 1);
}

#[test]
fn the_local_queue_is_bounded() {
    let mut r = router();
    let local = *Limits::default().local_ports.start();
    let segment = from_gateway(&tcp_packet((REMOTE, 8470), (UPLINK_IP, local), "A", b"data"));
    for _ in 0..LOCAL_QUEUE + 3 {
        feed(&mut r, t(1), Port::Uplink, &segment);
    }
    assert_eq!(dropped(&r, Port::Uplink, DropReason::LocalQueueFull), 3);
    assert_eq!(core::iter::from_fn(|| r.take_local_packet()).count(), LOCAL_QUEUE);
}

#[test]
fn local_packets_leave_only_from_the_uplink_address_and_a_local_port() {
    let mut r = router();
    let local = *Limits::default().local_ports.start();
    let mut out = Vec::new();
    r.send_local(t(1), tcp_packet((UPLINK_IP, local), (REMOTE, 8470), "S", b""), &mut out);
    // The gateway is not resolved yet: ARP first, then the segment.
    assert_eq!(out.len(), 1);
    let released = feed(&mut r, t(1), Port::Uplink, &arp_reply_from_gateway());
    assert_eq!(released.len(), 1);
    assert_eq!(seen(&ipv4_of(&released[0].frame, UPLINK_MAC, GW_MAC)).src, (UPLINK_IP, local));
    for bad in [
        tcp_packet((UPLINK_IP, 40000), (REMOTE, 8470), "S", b""),
        tcp_packet((Ipv4Address::new(192, 168, 1, 51), local), (REMOTE, 8470), "S", b""),
        udp_packet((UPLINK_IP, local), (REMOTE, 8470), b""),
    ] {
        let mut out = Vec::new();
        r.send_local(t(2), bad, &mut out);
        assert!(out.is_empty());
    }
    assert_eq!(dropped(&r, Port::Uplink, DropReason::Spoofed), 3);
}

#[test]
fn nat_never_hands_out_local_ports() {
    let limits = Limits { local_ports: 59_990..=60_010, ..Limits::default() };
    let config = RouterConfig { limits, ..config() };
    assert_eq!(Router::new(config).unwrap_err(), RouterError::PortRangesOverlap);
}

#[test]
fn a_new_rule_applies_to_new_flows_and_ends_old_ones() {
    let mut r = router();
    let me = (addrs(&r, L0).desktop, 43210);
    let out = send_out(&mut r, t(1), L0, &tcp_packet(me, (REMOTE, 80), "S", b""));
    let ext = seen(&ipv4_of(&out, UPLINK_MAC, GW_MAC)).src.1;
    assert!(!r.replace_link_rule(L0, Rule::Internet), "the same rule changes nothing");
    assert!(r.replace_link_rule(L0, Rule::Isolated));
    // The connection the old rule allowed is gone, and no new one starts.
    let syn_ack = tcp_packet((REMOTE, 80), (UPLINK_IP, ext), "SA", b"");
    assert!(feed(&mut r, t(1), Port::Uplink, &from_gateway(&syn_ack)).is_empty());
    assert_eq!(dropped(&r, Port::Uplink, DropReason::NoConnection), 1);
    let again = from_desktop(L0, &tcp_packet(me, (REMOTE, 80), "S", b""));
    assert!(feed(&mut r, t(2), Port::Link(L0), &again).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::RuleDenied), 1);
    assert!(!r.replace_link_rule(LinkId(9), Rule::Internet));
}
