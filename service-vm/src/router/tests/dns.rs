//! The DNS relay through the gateway address.

use super::*;

fn query(id: u16) -> Vec<u8> {
    // Header (id, RD, one question) and the question "a." IN A.
    let mut q = Vec::from(id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1]);
    q
}

fn udp_payload(packet: &[u8]) -> &[u8] {
    &packet[20 + 8..]
}

#[test]
fn query_relayed_to_the_resolver_and_answer_returned() {
    let mut r = router();
    let a = addrs(&r, L0);
    let q = query(0xabcd);
    let relayed = send_out(&mut r, t(1), L0, &udp_packet((a.desktop, 33333), (a.gateway, 53), &q));
    let packet = ipv4_of(&relayed, UPLINK_MAC, GW_MAC);
    let s = seen(&packet);
    assert_eq!((s.src.0, s.dst), (UPLINK_IP, (RESOLVER, 53)));
    let relay_port = s.src.1;
    let relayed_q = udp_payload(&packet).to_vec();
    assert_eq!(relayed_q[2..], q[2..], "question unchanged");
    assert_eq!(r.status().dns_pending, 1);

    let mut answer = relayed_q.clone();
    answer[2] |= 0x80;
    let out =
        feed(&mut r, t(2), Port::Uplink, &from_gateway(&udp_packet((RESOLVER, 53), (UPLINK_IP, relay_port), &answer)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, Port::Link(L0));
    let back = ipv4_of(&out[0].frame, a.gateway_mac, desktop_mac(L0));
    assert_eq!(seen(&back).src, (a.gateway, 53));
    assert_eq!(seen(&back).dst, (a.desktop, 33333));
    assert_eq!(udp_payload(&back)[..2], [0xab, 0xcd], "the desktop's id");
    assert_eq!(udp_payload(&back)[2..], answer[2..]);
    assert_eq!(r.status().dns_pending, 0);
}

#[test]
fn forged_answer_and_late_answer_are_dropped() {
    let mut r = router();
    let a = addrs(&r, L1);
    let relayed = send_out(&mut r, t(1), L1, &udp_packet((a.desktop, 4000), (a.gateway, 53), &query(1)));
    let packet = ipv4_of(&relayed, UPLINK_MAC, GW_MAC);
    let relay_port = seen(&packet).src.1;
    let mut answer = udp_payload(&packet).to_vec();
    answer[2] |= 0x80;
    let forger = Ipv4Address::new(192, 168, 1, 66);
    let forged = from_gateway(&udp_packet((forger, 53), (UPLINK_IP, relay_port), &answer));
    assert!(feed(&mut r, t(1), Port::Uplink, &forged).is_empty());
    assert_eq!(dropped(&r, Port::Uplink, DropReason::DnsUnmatched), 1);

    poll(&mut r, t(1) + Limits::default().dns_timeout);
    assert_eq!(dropped(&r, Port::Link(L1), DropReason::DnsTimeout), 1);
    let late = from_gateway(&udp_packet((RESOLVER, 53), (UPLINK_IP, relay_port), &answer));
    assert!(feed(&mut r, t(7), Port::Uplink, &late).is_empty());
    assert_eq!(dropped(&r, Port::Uplink, DropReason::DnsUnmatched), 2);
}

#[test]
fn without_uplink_the_gateway_answers_servfail() {
    let mut r = Router::new(config()).unwrap();
    let a = addrs(&r, CORP);
    let frame = from_desktop(CORP, &udp_packet((a.desktop, 4000), (a.gateway, 53), &query(0x7777)));
    let out = feed(&mut r, t(1), Port::Link(CORP), &frame);
    assert_eq!(out.len(), 1);
    let back = ipv4_of(&out[0].frame, a.gateway_mac, desktop_mac(CORP));
    assert_eq!(seen(&back).dst, (a.desktop, 4000));
    let reply = udp_payload(&back);
    assert_eq!(reply[..2], [0x77, 0x77]);
    assert_eq!((reply[2] & 0x80, reply[3] & 0x0f), (0x80, 2), "response, SERVFAIL");
}

#[test]
fn pending_table_is_bounded() {
    let mut cfg = config();
    cfg.limits.dns_pending = 2;
    let mut r = Router::new(cfg).unwrap();
    r.set_uplink(Some(uplink_config())).unwrap();
    let a = addrs(&r, L0);
    send_out(&mut r, t(1), L0, &udp_packet((a.desktop, 1), (a.gateway, 53), &query(1)));
    send_out(&mut r, t(1), L0, &udp_packet((a.desktop, 2), (a.gateway, 53), &query(2)));
    let frame = from_desktop(L0, &udp_packet((a.desktop, 3), (a.gateway, 53), &query(3)));
    assert!(feed(&mut r, t(1), Port::Link(L0), &frame).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::DnsTableFull), 1);
    // After the timeout the stale queries make room.
    assert_eq!(feed(&mut r, t(10), Port::Link(L0), &frame).len(), 1);
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::DnsTimeout), 2);
}

#[test]
fn query_that_cannot_be_sent_leaves_no_pending_entry() {
    let mut r = router();
    // The resolver is off-link and there is no gateway: no route.
    let mut uplink = uplink_config();
    uplink.gateway = None;
    uplink.dns = vec![Ipv4Address::new(9, 9, 9, 9)];
    r.set_uplink(Some(uplink)).unwrap();
    let a = addrs(&r, L0);
    let frame = from_desktop(L0, &udp_packet((a.desktop, 1), (a.gateway, 53), &query(1)));
    assert!(feed(&mut r, t(1), Port::Link(L0), &frame).is_empty());
    assert_eq!(dropped(&r, Port::Link(L0), DropReason::NoUplink), 1);
    assert_eq!(r.status().dns_pending, 0);
}
