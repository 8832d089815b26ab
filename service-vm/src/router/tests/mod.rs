//! Router tests with real frames built and checked with `smoltcp::wire`.

mod dhcp;
mod dns;
mod drops;
mod icmp_error;
mod local;
mod nat;
mod rules;
mod uplink;

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet,
    IpAddress, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, TcpPacket, UdpPacket,
};

use super::*;
use crate::frame::{UdpEnds, arp_frame, ipv4_frame, ipv4_packet};
use crate::rules::Destination;

pub(super) const UPLINK_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
pub(super) const UPLINK_IP: Ipv4Address = Ipv4Address::new(192, 168, 1, 50);
pub(super) const GW_IP: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
pub(super) const GW_MAC: EthernetAddress = EthernetAddress([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);
pub(super) const RESOLVER: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
pub(super) const REMOTE: Ipv4Address = Ipv4Address::new(93, 184, 216, 34);
pub(super) const CORP_NET: Ipv4Address = Ipv4Address::new(192, 0, 2, 0);

/// Links of the standard fixture.
pub(super) const L0: LinkId = LinkId(0); // internet, peers with L1
pub(super) const L1: LinkId = LinkId(1); // internet, peers with L0
pub(super) const CORP: LinkId = LinkId(2); // corporate-only: 192.0.2.0/24 port 443
pub(super) const ISO: LinkId = LinkId(3); // isolated

pub(super) fn desktop_mac(link: LinkId) -> EthernetAddress {
    EthernetAddress([0x52, 0x54, 0x00, 0x00, 0x00, 0x10 + link.0])
}

pub(super) fn config() -> RouterConfig {
    let corp = vec![Destination { net: Ipv4Cidr::new(CORP_NET, 24), port: Some(443) }];
    let link = |i: u8, rule: Rule, peers: Vec<LinkId>| LinkConfig { desktop_mac: desktop_mac(LinkId(i)), rule, peers };
    RouterConfig {
        plan: AddressPlan::DEFAULT,
        links: vec![
            link(0, Rule::Internet, vec![L1]),
            link(1, Rule::Internet, vec![L0, CORP]),
            link(2, Rule::CorporateOnly(corp), vec![]),
            link(3, Rule::Isolated, vec![L0]),
        ],
        uplink_mac: UPLINK_MAC,
        limits: Limits::default(),
        seed: 0x5eed,
    }
}

pub(super) fn uplink_config() -> UplinkConfig {
    UplinkConfig {
        address: Ipv4Cidr::new(UPLINK_IP, 24),
        gateway: Some(GW_IP),
        dns: vec![RESOLVER],
        mtu: UplinkConfig::DEFAULT_MTU,
    }
}

/// A router with the standard links and a configured uplink.
pub(super) fn router() -> Router {
    let mut r = Router::new(config()).unwrap();
    r.set_uplink(Some(uplink_config())).unwrap();
    r
}

pub(super) fn addrs(r: &Router, link: LinkId) -> LinkAddresses {
    r.link_addresses(link).unwrap()
}

pub(super) fn t(secs: i64) -> Instant {
    Instant::from_secs(secs)
}

/// Feeds one frame and returns what came out.
pub(super) fn feed(r: &mut Router, now: Instant, port: Port, frame: &[u8]) -> Vec<Transmit> {
    let mut out = Vec::new();
    r.handle_frame(now, port, frame, &mut out);
    out
}

pub(super) fn poll(r: &mut Router, now: Instant) -> Vec<Transmit> {
    let mut out = Vec::new();
    r.poll(now, &mut out);
    out
}

pub(super) fn dropped(r: &Router, port: Port, reason: DropReason) -> u64 {
    r.counters(port).unwrap().dropped(reason)
}

/// A TCP segment with a 20-byte header and valid checksums.
pub(super) fn tcp_packet(src: (Ipv4Address, u16), dst: (Ipv4Address, u16), flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 20 + payload.len()];
    {
        let mut tcp = TcpPacket::new_unchecked(&mut l4[..]);
        tcp.set_src_port(src.1);
        tcp.set_dst_port(dst.1);
        tcp.set_seq_number(smoltcp::wire::TcpSeqNumber(1000));
        tcp.set_header_len(20);
        tcp.clear_flags();
        tcp.set_syn(flags.contains('S'));
        tcp.set_ack(flags.contains('A'));
        tcp.set_fin(flags.contains('F'));
        tcp.set_rst(flags.contains('R'));
        tcp.set_window_len(65535);
        tcp.payload_mut().copy_from_slice(payload);
        tcp.fill_checksum(&IpAddress::Ipv4(src.0), &IpAddress::Ipv4(dst.0));
    }
    ipv4_packet(src.0, dst.0, IpProtocol::Tcp, &l4)
}

pub(super) fn icmp_echo_packet(src: Ipv4Address, dst: Ipv4Address, ident: u16, request: bool) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + 16];
    {
        let mut icmp = Icmpv4Packet::new_unchecked(&mut l4[..]);
        icmp.set_msg_type(if request { Icmpv4Message::EchoRequest } else { Icmpv4Message::EchoReply });
        icmp.set_msg_code(0);
        icmp.set_echo_ident(ident);
        icmp.set_echo_seq_no(7);
        icmp.data_mut().copy_from_slice(b"0123456789abcdef");
        icmp.fill_checksum();
    }
    ipv4_packet(src, dst, IpProtocol::Icmp, &l4)
}

pub(super) fn udp_packet(src: (Ipv4Address, u16), dst: (Ipv4Address, u16), payload: &[u8]) -> Vec<u8> {
    crate::frame::udp_packet(src, dst, payload.len(), |p| p.copy_from_slice(payload))
}

/// A frame from `link`'s desktop to its gateway MAC.
pub(super) fn from_desktop(link: LinkId, packet: &[u8]) -> Vec<u8> {
    ipv4_frame(desktop_mac(link), crate::addressing::gateway_mac(link), packet)
}

/// A frame from the uplink gateway to the router's uplink MAC.
pub(super) fn from_gateway(packet: &[u8]) -> Vec<u8> {
    ipv4_frame(GW_MAC, UPLINK_MAC, packet)
}

pub(super) fn arp_reply_from_gateway() -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: GW_MAC,
        source_protocol_addr: GW_IP,
        target_hardware_addr: UPLINK_MAC,
        target_protocol_addr: UPLINK_IP,
    };
    arp_frame(GW_MAC, UPLINK_MAC, repr)
}

/// Sends `packet` from `link` and, when the gateway is not resolved yet, answers the
/// ARP request; returns the frame that left on the uplink.
pub(super) fn send_out(r: &mut Router, now: Instant, link: LinkId, packet: &[u8]) -> Vec<u8> {
    let frame = from_desktop(link, packet);
    let out = feed(r, now, Port::Link(link), &frame);
    assert_eq!(out.len(), 1, "one frame out: {out:?}");
    assert_eq!(out[0].port, Port::Uplink);
    let eth = EthernetFrame::new_checked(&out[0].frame[..]).unwrap();
    if eth.ethertype() == EthernetProtocol::Arp {
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 { operation, target_protocol_addr, source_protocol_addr, .. } = arp else {
            panic!("not IPv4 ARP");
        };
        assert_eq!((operation, target_protocol_addr, source_protocol_addr), (ArpOperation::Request, GW_IP, UPLINK_IP));
        let released = feed(r, now, Port::Uplink, &arp_reply_from_gateway());
        assert_eq!(released.len(), 1);
        return released[0].frame.clone();
    }
    out[0].frame.clone()
}

/// The IPv4 packet in a frame, after checking the frame's MACs and the IPv4 checksum.
pub(super) fn ipv4_of(frame: &[u8], src_mac: EthernetAddress, dst_mac: EthernetAddress) -> Vec<u8> {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (src_mac, dst_mac));
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    eth.payload().to_vec()
}

/// Source, destination, TTL and (checked) transport header of an IPv4 packet.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) src: (Ipv4Address, u16),
    pub(super) dst: (Ipv4Address, u16),
    pub(super) ttl: u8,
}

/// Parses a TCP/UDP/ICMP-echo packet and checks its transport checksum; ICMP's
/// identifier shows as both ports.
pub(super) fn seen(packet: &[u8]) -> Seen {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    let (s, d) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
    let (sp, dp) = match ip.next_header() {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(tcp.verify_checksum(&s, &d), "TCP checksum");
            (tcp.src_port(), tcp.dst_port())
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(udp.verify_checksum(&s, &d), "UDP checksum");
            (udp.src_port(), udp.dst_port())
        }
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
            assert!(icmp.verify_checksum(), "ICMP checksum");
            (icmp.echo_ident(), icmp.echo_ident())
        }
        other => panic!("unexpected {other}"),
    };
    Seen { src: (ip.src_addr(), sp), dst: (ip.dst_addr(), dp), ttl: ip.hop_limit() }
}
