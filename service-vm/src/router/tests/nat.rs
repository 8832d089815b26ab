//! Masquerading round trips, connection tracking timeouts and the table bound.

use super::*;

/// The uplink-side view of a translated packet; checks MACs, checksums and TTL.
fn outside(frame: &[u8], sent_ttl: u8) -> Seen {
    let s = seen(&ipv4_of(frame, UPLINK_MAC, GW_MAC));
    assert_eq!(s.src.0, UPLINK_IP, "masqueraded to the uplink address");
    assert_eq!(s.ttl, sent_ttl - 1);
    s
}

/// Delivers `packet` from the far end and returns the desktop-side view.
fn back_in(r: &mut Router, now: Instant, link: LinkId, packet: &[u8]) -> Seen {
    let out = feed(r, now, Port::Uplink, &from_gateway(packet));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].port, Port::Link(link));
    seen(&ipv4_of(&out[0].frame, addrs(r, link).gateway_mac, desktop_mac(link)))
}

#[test]
fn tcp_round_trip() {
    let mut r = router();
    let me = (addrs(&r, L0).desktop, 43210);
    let syn = tcp_packet(me, (REMOTE, 80), "S", b"");
    let s = outside(&send_out(&mut r, t(1), L0, &syn), 64);
    assert_eq!(s.dst, (REMOTE, 80));
    let ext = s.src.1;

    let syn_ack = tcp_packet((REMOTE, 80), (UPLINK_IP, ext), "SA", b"");
    let back = back_in(&mut r, t(1), L0, &syn_ack);
    assert_eq!(back.src, (REMOTE, 80));
    assert_eq!(back.dst, me);

    // Data with a payload keeps the same mapping both ways.
    let data = tcp_packet(me, (REMOTE, 80), "A", b"GET / HTTP/1.0\r\n\r\n");
    let s2 = outside(&send_out(&mut r, t(2), L0, &data), 64);
    assert_eq!(s2.src.1, ext);
    let reply = tcp_packet((REMOTE, 80), (UPLINK_IP, ext), "A", b"HTTP/1.0 200 OK\r\n");
    assert_eq!(back_in(&mut r, t(2), L0, &reply).dst, me);

    let c = r.counters(Port::Link(L0)).unwrap();
    assert_eq!((c.forwarded, c.transmitted), (2, 2));
    assert_eq!(r.counters(Port::Uplink).unwrap().forwarded, 2);
}

#[test]
fn only_a_frame_the_nic_verified_reaches_the_desktop_vouched_for() {
    let mut r = router();
    let me = (addrs(&r, L0).desktop, 43211);
    let ext = outside(&send_out(&mut r, t(1), L0, &tcp_packet(me, (REMOTE, 80), "S", b"")), 64).src.1;
    let out = feed(&mut r, t(1), Port::Link(L0), &from_desktop(L0, &tcp_packet(me, (REMOTE, 80), "A", b"")));
    assert_eq!((out.len(), out[0].port, out[0].checksum_good), (1, Port::Uplink, false), "outbound: never vouched for");
    let reply = from_gateway(&tcp_packet((REMOTE, 80), (UPLINK_IP, ext), "SA", b""));
    let unverified = feed(&mut r, t(2), Port::Uplink, &reply);
    assert_eq!((unverified.len(), unverified[0].checksum_good), (1, false));
    let mut verified = Vec::new();
    r.handle_verified_uplink_frame(t(2), &reply, &mut verified);
    assert_eq!((verified.len(), verified[0].port), (1, Port::Link(L0)));
    assert!(verified[0].checksum_good);
    // The translated frame's checksum is right (`seen` checks it), so the verdict holds.
    let s = seen(&ipv4_of(&verified[0].frame, addrs(&r, L0).gateway_mac, desktop_mac(L0)));
    assert_eq!(s.dst, me);
    // The next frame, not verified, is not vouched for either.
    assert!(!feed(&mut r, t(3), Port::Uplink, &reply)[0].checksum_good);
}

#[test]
fn forwarded_frames_reuse_the_buffers_given_back() {
    let mut r = router();
    let me = (addrs(&r, L0).desktop, 43212);
    let ext = outside(&send_out(&mut r, t(1), L0, &tcp_packet(me, (REMOTE, 80), "S", b"")), 64).src.1;
    // A bounded number is kept, and only buffers that hold a whole frame.
    let given: Vec<Vec<u8>> = (0..SPARE_FRAMES + 8).map(|_| Vec::with_capacity(1514)).collect();
    let last = given.last().unwrap().as_ptr();
    for buffer in given {
        r.recycle(buffer);
    }
    r.recycle(Vec::with_capacity(100));
    assert_eq!(r.spare_frames.len(), SPARE_FRAMES);
    let kept_last = r.spare_frames.last().unwrap().as_ptr();
    assert_ne!(kept_last, last, "the buffers over the bound were freed");
    let reply = from_gateway(&tcp_packet((REMOTE, 80), (UPLINK_IP, ext), "SA", b"payload"));
    let out = feed(&mut r, t(2), Port::Uplink, &reply);
    assert_eq!(out[0].frame.as_ptr(), kept_last, "built in the last spare buffer");
    assert_eq!(r.spare_frames.len(), SPARE_FRAMES - 1);
    let s = seen(&ipv4_of(&out[0].frame, addrs(&r, L0).gateway_mac, desktop_mac(L0)));
    assert_eq!((s.dst, s.src), (me, (REMOTE, 80)));
}

#[test]
fn udp_and_icmp_round_trips() {
    let mut r = router();
    let me = addrs(&r, L1).desktop;
    let query = udp_packet((me, 5353), (Ipv4Address::new(9, 9, 9, 9), 53), b"not really dns");
    let s = outside(&send_out(&mut r, t(1), L1, &query), 64);
    assert_eq!(s.dst, (Ipv4Address::new(9, 9, 9, 9), 53));
    let answer = udp_packet((Ipv4Address::new(9, 9, 9, 9), 53), (UPLINK_IP, s.src.1), b"answer");
    assert_eq!(back_in(&mut r, t(1), L1, &answer).dst, (me, 5353));

    let ping = icmp_echo_packet(me, REMOTE, 0x4242, true);
    let s = outside(&send_out(&mut r, t(1), L1, &ping), 64);
    let ident = s.src.1;
    let pong = icmp_echo_packet(REMOTE, UPLINK_IP, ident, false);
    let back = back_in(&mut r, t(1), L1, &pong);
    assert_eq!(back.dst, (me, 0x4242), "echo identifier restored");
    assert_eq!(back.src.0, REMOTE);
}

#[test]
fn two_desktops_same_source_port_get_distinct_mappings() {
    let mut r = router();
    let a = udp_packet((addrs(&r, L0).desktop, 40000), (REMOTE, 123), b"a");
    let b = udp_packet((addrs(&r, L1).desktop, 40000), (REMOTE, 123), b"b");
    let pa = outside(&send_out(&mut r, t(1), L0, &a), 64).src.1;
    let pb = outside(&send_out(&mut r, t(1), L1, &b), 64).src.1;
    assert_ne!(pa, pb);
    let to_b = udp_packet((REMOTE, 123), (UPLINK_IP, pb), b"for b");
    assert_eq!(back_in(&mut r, t(1), L1, &to_b).dst, (addrs(&r, L1).desktop, 40000));
}

#[test]
fn unsolicited_and_wrong_peer_inbound_is_dropped() {
    let mut r = router();
    let me = addrs(&r, L0).desktop;
    let ext = outside(&send_out(&mut r, t(1), L0, &tcp_packet((me, 1111), (REMOTE, 443), "S", b"")), 64).src.1;
    let stranger = Ipv4Address::new(198, 51, 100, 66);
    for packet in [
        tcp_packet((stranger, 443), (UPLINK_IP, ext), "SA", b""),
        tcp_packet((REMOTE, 444), (UPLINK_IP, ext), "SA", b""),
        udp_packet((REMOTE, 443), (UPLINK_IP, ext), b""),
        tcp_packet((REMOTE, 443), (UPLINK_IP, 22), "S", b""),
        icmp_echo_packet(REMOTE, UPLINK_IP, 1, true),
    ] {
        assert!(feed(&mut r, t(1), Port::Uplink, &from_gateway(&packet)).is_empty());
    }
    assert_eq!(dropped(&r, Port::Uplink, DropReason::NoConnection), 5);
    // Mid-stream TCP without a SYN opens nothing.
    let frame = from_desktop(L0, &tcp_packet((me, 2222), (REMOTE, 443), "A", b"x"));
    assert!(feed(&mut r, t(1), Port::Link(L0), &frame).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::NoConnection), 1);
}

#[test]
fn mappings_time_out() {
    let mut r = router();
    let me = addrs(&r, L0).desktop;
    let udp_ext = outside(&send_out(&mut r, t(0), L0, &udp_packet((me, 5000), (REMOTE, 9), b"")), 64).src.1;
    let syn = tcp_packet((me, 6000), (REMOTE, 80), "S", b"");
    let tcp_ext = outside(&send_out(&mut r, t(0), L0, &syn), 64).src.1;
    back_in(&mut r, t(0), L0, &tcp_packet((REMOTE, 80), (UPLINK_IP, tcp_ext), "SA", b""));
    assert_eq!(r.status().nat_mappings, 2);

    let timeouts = NatTimeouts::default();
    let after_udp = t(0) + timeouts.udp + Duration::from_secs(1);
    poll(&mut r, after_udp);
    assert_eq!(r.status().nat_mappings, 1, "UDP gone, established TCP stays");
    assert!(
        feed(&mut r, after_udp, Port::Uplink, &from_gateway(&udp_packet((REMOTE, 9), (UPLINK_IP, udp_ext), b"")))
            .is_empty()
    );
    assert_eq!(dropped(&r, Port::Uplink, DropReason::NoConnection), 1);

    // FIN moves the connection to the closing timeout.
    let fin = tcp_packet((REMOTE, 80), (UPLINK_IP, tcp_ext), "FA", b"");
    back_in(&mut r, after_udp, L0, &fin);
    poll(&mut r, after_udp + timeouts.tcp_closing + Duration::from_secs(1));
    assert_eq!(r.status().nat_mappings, 0);
}

#[test]
fn full_table_drops_and_counts_new_flows() {
    let mut cfg = config();
    cfg.limits.nat_mappings = 3;
    cfg.limits.nat_mappings_per_link = 2;
    let mut r = Router::new(cfg).unwrap();
    r.set_uplink(Some(uplink_config())).unwrap();
    let me0 = addrs(&r, L0).desktop;
    send_out(&mut r, t(1), L0, &udp_packet((me0, 1), (REMOTE, 9), b""));
    send_out(&mut r, t(1), L0, &udp_packet((me0, 2), (REMOTE, 9), b""));
    let third = from_desktop(L0, &udp_packet((me0, 3), (REMOTE, 9), b""));
    assert!(feed(&mut r, t(1), Port::Link(L0), &third).is_empty(), "link share used up");
    let me1 = addrs(&r, L1).desktop;
    send_out(&mut r, t(1), L1, &udp_packet((me1, 1), (REMOTE, 9), b""));
    let frame = from_desktop(L1, &udp_packet((me1, 2), (REMOTE, 9), b""));
    assert!(feed(&mut r, t(1), Port::Link(L1), &frame).is_empty(), "table full");
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::NatTableFull), 1);
    assert_eq!(dropped(&r, Port::Link(L1), DropReason::NatTableFull), 1);
    // Existing flows keep working.
    send_out(&mut r, t(2), L0, &udp_packet((me0, 1), (REMOTE, 9), b"still"));
    assert_eq!(r.status().nat_mappings, 3);
    // Once they idle out, there is room again.
    let later = t(2) + NatTimeouts::default().udp + Duration::from_secs(1);
    assert_eq!(feed(&mut r, later, Port::Link(L0), &third).len(), 1);
}

#[test]
fn uplink_change_forgets_mappings() {
    let mut r = router();
    let me = addrs(&r, L0).desktop;
    let ext = outside(&send_out(&mut r, t(1), L0, &udp_packet((me, 5000), (REMOTE, 9), b"")), 64).src.1;
    let mut moved = uplink_config();
    moved.address = Ipv4Cidr::new(Ipv4Address::new(192, 168, 1, 77), 24);
    r.set_uplink(Some(moved)).unwrap();
    assert_eq!(r.status().nat_mappings, 0);
    let to_old = udp_packet((REMOTE, 9), (UPLINK_IP, ext), b"");
    assert!(feed(&mut r, t(1), Port::Uplink, &from_gateway(&to_old)).is_empty());
    assert_eq!(dropped(&r, Port::Uplink, DropReason::NotRoutable), 1);
}
