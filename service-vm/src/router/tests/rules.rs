//! Per-link rules and isolation between links.

use super::*;

#[test]
fn corporate_only_passes_the_allow_list_and_counts_the_rest() {
    let mut r = router();
    let me = addrs(&r, CORP).desktop;
    let allowed = Ipv4Address::new(192, 0, 2, 10);
    let out = send_out(&mut r, t(1), CORP, &tcp_packet((me, 50000), (allowed, 443), "S", b""));
    assert_eq!(seen(&ipv4_of(&out, UPLINK_MAC, GW_MAC)).dst, (allowed, 443));
    for packet in [
        tcp_packet((me, 50001), (allowed, 80), "S", b""),
        tcp_packet((me, 50002), (REMOTE, 443), "S", b""),
        udp_packet((me, 50003), (allowed, 53), b""),
        icmp_echo_packet(me, allowed, 1, true),
    ] {
        let frame = from_desktop(CORP, &packet);
        assert!(feed(&mut r, t(1), Port::Link(CORP), &frame).is_empty(), "no frame, no RST");
    }
    assert_eq!(dropped(&r, Port::Link(CORP), DropReason::RuleDenied), 4);
    assert_eq!(r.counters(Port::Link(CORP)).unwrap().forwarded, 1);
}

#[test]
fn isolated_link_reaches_nothing() {
    let mut r = router();
    let a = addrs(&r, ISO);
    for packet in [
        tcp_packet((a.desktop, 1), (REMOTE, 443), "S", b""),
        udp_packet((a.desktop, 2), (a.gateway, 53), b"query-bytes-here"),
        icmp_echo_packet(a.desktop, REMOTE, 1, true),
        // ISO lists L0 as a peer, but an isolated link has none.
        udp_packet((a.desktop, 3), (addrs(&r, L0).desktop, 9), b""),
    ] {
        let frame = from_desktop(ISO, &packet);
        assert!(feed(&mut r, t(1), Port::Link(ISO), &frame).is_empty());
    }
    assert_eq!(dropped(&r, Port::Link(ISO), DropReason::RuleDenied), 4);
    assert_eq!(r.counters(Port::Link(ISO)).unwrap().forwarded, 0);
}

#[test]
fn peers_that_name_each_other_talk_directly() {
    let mut r = router();
    let (a, b) = (addrs(&r, L0), addrs(&r, L1));
    let packet = udp_packet((a.desktop, 7000), (b.desktop, 7001), b"hello peer");
    let out = feed(&mut r, t(1), Port::Link(L0), &from_desktop(L0, &packet));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, Port::Link(L1));
    let s = seen(&ipv4_of(&out[0].frame, b.gateway_mac, desktop_mac(L1)));
    assert_eq!((s.src, s.dst, s.ttl), ((a.desktop, 7000), (b.desktop, 7001), 63), "routed, not translated");
    // And back.
    let packet = udp_packet((b.desktop, 7001), (a.desktop, 7000), b"hello back");
    let out = feed(&mut r, t(1), Port::Link(L1), &from_desktop(L1, &packet));
    assert_eq!(out[0].port, Port::Link(L0));
}

#[test]
fn one_sided_or_missing_peer_rule_isolates_links() {
    let mut r = router();
    // L1 names CORP, but CORP names nobody; L0 and CORP name nothing of each other.
    let cases = [(L1, CORP), (CORP, L1), (L0, CORP), (CORP, L0), (L0, ISO), (ISO, L0), (L1, ISO)];
    for (from, to) in cases {
        let packet = udp_packet((addrs(&r, from).desktop, 1), (addrs(&r, to).desktop, 2), b"");
        let frame = from_desktop(from, &packet);
        assert!(feed(&mut r, t(1), Port::Link(from), &frame).is_empty(), "{from:?} -> {to:?}");
    }
    let denied: u64 = [L0, L1, CORP, ISO].iter().map(|&l| dropped(&r, Port::Link(l), DropReason::RuleDenied)).sum();
    assert_eq!(denied, cases.len() as u64);
    // Other addresses of the plan (another link's gateway) are not routable at all.
    let packet = udp_packet((addrs(&r, L0).desktop, 1), (addrs(&r, L1).gateway, 53), b"");
    let frame = from_desktop(L0, &packet);
    assert!(feed(&mut r, t(1), Port::Link(L0), &frame).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::NotRoutable), 1);
}

#[test]
fn frames_for_a_down_link_are_dropped() {
    let mut r = router();
    let (a, b) = (addrs(&r, L0), addrs(&r, L1));
    r.set_link_up(L1, false);
    let packet = udp_packet((a.desktop, 1), (b.desktop, 2), b"");
    let frame = from_desktop(L0, &packet);
    assert!(feed(&mut r, t(1), Port::Link(L0), &frame).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::LinkDown), 1);
    assert!(!r.status().links[1].up);
}
