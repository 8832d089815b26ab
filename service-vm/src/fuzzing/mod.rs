//! A harness that drives the router with arbitrary bytes, for the fuzz target in
//! `service-vm/fuzz/` and for short deterministic runs under `cargo test`.
//!
//! The input becomes a sequence of steps: raw frames on any port, frames built from
//! fuzzed fields (so checksums are right and the deep paths are reached, optionally with
//! one byte flipped afterwards), replies aimed at the ports and ids the router just used,
//! time steps with polls, link and uplink changes. After every step it asserts:
//! no frame reaches a link that the sending link's rule forbids, no desktop address
//! leaves on the uplink, isolated links send nothing out, corporate-only links reach only
//! their allow-list and the relay, every table stays within its limit, and each frame
//! is counted exactly once (forwarded, consumed or dropped) unless it waits for ARP.
//!
//! Built only for tests and with the `fuzzing` feature; nothing here ships.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::wire::{
    ArpOperation, ArpRepr, DHCP_CLIENT_PORT, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Packet,
    IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, TcpPacket, UdpPacket,
};

mod frames;

use crate::addressing::{AddressPlan, LinkId, Port, gateway_mac};
use crate::frame::{arp_frame, ethernet_frame, ipv4_frame, udp_packet};
use crate::router::{Limits, LinkConfig, Router, RouterConfig, Transmit, UplinkConfig};
use crate::rules::{Destination, Rule};
use crate::{Duration, Instant};
use frames::{dhcp_from_desktop, dhcp_from_server, dns_message, echo, icmp_error, mutate, tcp};

/// At most this many steps are taken from one input.
pub const MAX_STEPS: usize = 2048;
/// Bytes of fields each step reads (an op byte comes before them; raw frames follow).
const RECORD_LEN: usize = 48;

const LINKS: usize = 4;
const UPLINK_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
const GW_MAC: EthernetAddress = EthernetAddress([0, 0x11, 0x22, 0x33, 0x44, 0x55]);
const GW: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
const UPLINK_IP: Ipv4Address = Ipv4Address::new(192, 168, 1, 50);
const RESOLVER: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
const CORP: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::new(192, 0, 2, 0), 24);
const CORP_PORT: u16 = 443;
/// Far ends the structured frames talk to.
const REMOTES: [Ipv4Address; 4] = [
    Ipv4Address::new(93, 184, 216, 34),
    Ipv4Address::new(192, 0, 2, 10),
    Ipv4Address::new(192, 168, 1, 7),
    Ipv4Address::new(8, 8, 8, 8),
];

/// Reads the input front to back; past the end every read is zero or empty.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    fn byte(&mut self) -> u8 {
        self.u8().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Up to `max` (at most 255) bytes, the count taken from the next byte.
    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.byte()).min(max);
        self.take(n)
    }

    /// A raw frame: mostly short (the length is the next byte), sometimes up to 1600
    /// bytes (the length is the two bytes after a byte of 240 or more).
    fn frame(&mut self) -> &'a [u8] {
        let n = match self.byte() {
            short @ 0..240 => usize::from(short),
            _ => usize::from(self.u16()) % 1601,
        };
        self.take(n)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }
}

fn desktop_mac(link: usize) -> EthernetAddress {
    EthernetAddress([0x52, 0x54, 0, 0, 0, 0x10 + link as u8])
}

fn config() -> RouterConfig {
    let corp = vec![Destination { net: CORP, port: Some(CORP_PORT) }];
    let link = |i: usize, rule: Rule, peers: &[u8]| LinkConfig {
        desktop_mac: desktop_mac(i),
        rule,
        peers: peers.iter().map(|&p| LinkId(p)).collect(),
    };
    RouterConfig {
        plan: AddressPlan::DEFAULT,
        links: vec![
            link(0, Rule::Internet, &[1, 3]),
            link(1, Rule::Internet, &[0, 2]),
            link(2, Rule::CorporateOnly(corp), &[]),
            link(3, Rule::Isolated, &[0]),
        ],
        uplink_mac: UPLINK_MAC,
        // Small tables, so that full tables and port exhaustion are reached.
        limits: Limits {
            nat_mappings: 24,
            nat_mappings_per_link: 10,
            nat_ports: 20000..=20015,
            dns_pending: 4,
            dns_ports: 61000..=61007,
            arp_cache: 4,
            arp_queue: 6,
            ..Limits::default()
        },
        seed: 1,
    }
}

fn uplink_config() -> UplinkConfig {
    UplinkConfig {
        address: Ipv4Cidr::new(UPLINK_IP, 24),
        gateway: Some(GW),
        dns: vec![RESOLVER],
        mtu: UplinkConfig::DEFAULT_MTU,
    }
}

/// Whether the harness's configuration lets `from` send to `to` (computed here, not
/// asked of the router).
fn peers_allowed(from: usize, to: usize) -> bool {
    let cfg = config();
    let (a, b) = (&cfg.links[from], &cfg.links[to]);
    from != to
        && a.rule != Rule::Isolated
        && b.rule != Rule::Isolated
        && a.peers.contains(&LinkId(to as u8))
        && b.peers.contains(&LinkId(from as u8))
}

/// What the harness learnt from the router's output, to aim replies at.
#[derive(Default)]
struct Seen {
    /// Source ports (or echo ids) of translated packets, with their far end.
    flows: Vec<(IpProtocol, u16, Ipv4Address, u16)>,
    /// The last DHCP transaction id the uplink client used.
    xid: u32,
    /// The start of IPv4 packets delivered to each link, for the desktop to quote in
    /// an ICMP error.
    delivered: Vec<(usize, Vec<u8>)>,
}

struct Harness {
    router: Router,
    /// Answer the router's ARP requests on the uplink at once (else only when the
    /// input sends a reply), so that most inputs get packets through.
    auto_arp: bool,
    now: Instant,
    seen: Seen,
    uplink: Option<UplinkConfig>,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input { data };
    let mut router = Router::new(config()).expect("harness configuration is valid");
    let setup = input.byte();
    let uplink = (setup & 1 == 0).then(uplink_config);
    router.set_uplink(uplink.clone()).expect("uplink outside the plan");
    let mut h = Harness { router, auto_arp: setup & 2 == 0, now: Instant::ZERO, seen: Seen::default(), uplink };
    for _ in 0..MAX_STEPS {
        let Some(op) = input.u8() else { break };
        // Fixed-size records keep one step's fields from shifting every later step.
        let mut fields = Input { data: input.take(RECORD_LEN) };
        h.step(op, &mut fields, &mut input);
    }
}

impl Harness {
    /// One step: `op` picks it, `input` holds its fields, raw frames come from `rest`.
    fn step(&mut self, op: u8, input: &mut Input<'_>, rest: &mut Input<'_>) {
        let op = op % 16;
        match op {
            0 => {
                // Time steps from a millisecond to hours (several of each timeout).
                let step = u64::from(input.u16()) << (input.byte() % 8);
                self.now += Duration::from_millis(step);
                let mut out = Vec::new();
                self.router.poll(self.now, &mut out);
                for t in &out {
                    assert_eq!(t.port, Port::Uplink, "timers only send on the uplink");
                }
                self.check_uplink_frames(&out, None);
                self.learn(&out);
                self.give_back(out);
            }
            1 => {
                let link = usize::from(input.byte()) % LINKS;
                let frame = rest.frame().to_vec();
                self.feed_link(link, &frame);
            }
            2 => {
                let verified = input.byte() & 1 == 0;
                let frame = rest.frame().to_vec();
                self.feed_uplink(&frame, verified);
            }
            3..=8 => {
                let link = usize::from(input.byte()) % LINKS;
                let mut frame = self.desktop_frame(link, op, input);
                mutate(&mut frame, input);
                self.feed_link(link, &frame);
            }
            9..=12 => {
                let verified = input.byte() & 1 == 0;
                let mut frame = self.uplink_frame(op, input);
                mutate(&mut frame, input);
                self.feed_uplink(&frame, verified);
            }
            13 => {
                let link = LinkId(input.byte() % LINKS as u8);
                self.router.set_link_up(link, input.byte() & 1 == 0);
            }
            14 => {
                let cfg = match input.byte() % 5 {
                    0 => None,
                    1 => Some(UplinkConfig { gateway: None, ..uplink_config() }),
                    2 => Some(UplinkConfig { mtu: input.u16(), ..uplink_config() }),
                    _ => Some(uplink_config()),
                };
                self.router.set_uplink(cfg.clone()).expect("uplink outside the plan");
                self.uplink = cfg;
            }
            _ => {
                self.router.start_uplink_dhcp(self.now);
                self.uplink = None;
            }
        }
        self.check_bounds();
    }

    fn feed_link(&mut self, link: usize, frame: &[u8]) {
        let port = Port::Link(LinkId(link as u8));
        let before = self.router.counters(port).cloned().unwrap_or_default();
        let queued_before = self.router.status().arp_queue;
        let mut out = Vec::new();
        self.router.handle_frame(self.now, port, frame, &mut out);
        let after = self.router.counters(port).cloned().unwrap_or_default();
        // Every frame is forwarded, consumed, dropped, or waits for ARP: exactly one.
        // (Queries the DNS relay times out to make room count on their own link.)
        let queued = self.router.status().arp_queue - queued_before;
        assert_eq!(after.received, before.received + 1);
        assert_eq!(handled(&after) - handled(&before) + queued as u64, 1, "a frame not counted exactly once");
        let rule = config().links[link].rule.clone();
        for t in &out {
            assert!(!t.checksum_good, "a frame from a desktop vouched for");
            match t.port {
                Port::Link(to) if to.index() != link => {
                    assert!(peers_allowed(link, to.index()), "link {link} reached link {} against the rules", to.0);
                    self.check_link_frame(to.index(), &t.frame);
                }
                Port::Link(_) => self.check_link_frame(link, &t.frame),
                Port::Uplink => assert_ne!(rule, Rule::Isolated, "an isolated link sent on the uplink"),
            }
        }
        self.check_uplink_frames(&out, Some(&rule));
        self.learn(&out);
        self.give_back(out);
    }

    /// Gives the sent frames' buffers back, as the kernel does.
    fn give_back(&mut self, out: Vec<Transmit>) {
        for t in out {
            self.router.recycle(t.frame);
        }
    }

    /// `verified`: the NIC found the frame's checksums good (whether or not they are:
    /// a NIC may err, and the router must stay sound either way).
    fn feed_uplink(&mut self, frame: &[u8], verified: bool) {
        let before = self.router.counters(Port::Uplink).cloned().unwrap_or_default();
        let mut out = Vec::new();
        if verified {
            self.router.handle_verified_uplink_frame(self.now, frame, &mut out);
        } else {
            self.router.handle_frame(self.now, Port::Uplink, frame, &mut out);
        }
        let after = self.router.counters(Port::Uplink).cloned().unwrap_or_default();
        assert_eq!(handled(&after) - handled(&before), 1, "an uplink frame not counted exactly once");
        for t in &out {
            assert!(!t.checksum_good || (verified && matches!(t.port, Port::Link(_))), "vouched for without a verdict");
            if let Port::Link(to) = t.port {
                self.check_link_frame(to.index(), &t.frame);
                if t.frame.len() > 14 + 28 && t.frame[12..14] == [0x08, 0x00] {
                    if self.seen.delivered.len() >= 16 {
                        self.seen.delivered.remove(0);
                    }
                    self.seen.delivered.push((to.index(), t.frame[14..14 + 28].to_vec()));
                }
            }
        }
        self.check_uplink_frames(&out, None);
        self.learn(&out);
        self.give_back(out);
    }

    /// A frame the router sends to a desktop comes from that link's gateway MAC and goes
    /// to the desktop (or broadcast, for DHCP).
    fn check_link_frame(&self, link: usize, frame: &[u8]) {
        let eth = EthernetFrame::new_checked(frame).expect("router emits whole frames");
        assert_eq!(eth.src_addr(), gateway_mac(LinkId(link as u8)));
        assert!(eth.dst_addr() == desktop_mac(link) || eth.dst_addr().is_broadcast());
    }

    /// No IPv4 packet leaves on the uplink with a desktop address, and a corporate-only
    /// link's packets go to its allow-list or to the resolver's port 53.
    fn check_uplink_frames(&self, out: &[Transmit], rule: Option<&Rule>) {
        for t in out.iter().filter(|t| t.port == Port::Uplink) {
            let eth = EthernetFrame::new_checked(&t.frame[..]).expect("router emits whole frames");
            assert_eq!(eth.src_addr(), UPLINK_MAC);
            if eth.ethertype() != EthernetProtocol::Ipv4 {
                continue;
            }
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("router emits whole packets");
            let src = ip.src_addr();
            assert!(
                Some(src) == self.router.uplink().map(|u| u.address.address()) || src.is_unspecified(),
                "{src} leaked on the uplink"
            );
            if let Some(Rule::CorporateOnly(list)) = rule {
                let dst = ip.dst_addr();
                let port = transport_dst_port(&ip);
                // An ICMP error about an allowed flow goes to that flow's far end; its
                // port is in the quoted packet.
                let icmp_error =
                    ip.next_header() == IpProtocol::Icmp && ip.payload().first().is_some_and(|&t| t == 3 || t == 11);
                let listed = list
                    .iter()
                    .any(|d| d.net.contains_addr(&dst) && (icmp_error || d.port.is_none_or(|p| Some(p) == port)));
                assert!(listed || (dst == RESOLVER && port == Some(53)), "corporate-only link reached {dst} {port:?}");
            }
        }
    }

    fn check_bounds(&self) {
        let limits = &config().limits;
        let s = self.router.status();
        assert!(s.nat_mappings <= limits.nat_mappings);
        assert!(s.links.iter().all(|l| l.nat_mappings <= limits.nat_mappings_per_link));
        assert_eq!(s.links.iter().map(|l| l.nat_mappings).sum::<usize>(), s.nat_mappings);
        assert!(s.dns_pending <= limits.dns_pending);
        assert!(s.arp_cache <= limits.arp_cache);
        assert!(s.arp_queue <= limits.arp_queue);
        assert!(self.router.spare_frame_count() <= crate::router::SPARE_FRAMES);
    }

    /// Remembers translated flows and DHCP transaction ids from the router's output, and
    /// answers ARP requests when `auto_arp` is on.
    fn learn(&mut self, out: &[Transmit]) {
        for t in out.iter().filter(|t| t.port == Port::Uplink) {
            let Ok(eth) = EthernetFrame::new_checked(&t.frame[..]) else { continue };
            if eth.ethertype() == EthernetProtocol::Arp && self.auto_arp {
                let Ok(ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    target_protocol_addr,
                    source_protocol_addr,
                    ..
                }) = ArpRepr::parse(&smoltcp::wire::ArpPacket::new_unchecked(eth.payload()))
                else {
                    continue;
                };
                let reply = ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: GW_MAC,
                    source_protocol_addr: target_protocol_addr,
                    target_hardware_addr: UPLINK_MAC,
                    target_protocol_addr: source_protocol_addr,
                };
                self.feed_uplink(&arp_frame(GW_MAC, UPLINK_MAC, reply), false);
                continue;
            }
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { continue };
            let l4 = ip.payload();
            let flow = match ip.next_header() {
                IpProtocol::Tcp => TcpPacket::new_checked(l4).ok().map(|p| (p.src_port(), p.dst_port())),
                IpProtocol::Udp => UdpPacket::new_checked(l4).ok().map(|p| (p.src_port(), p.dst_port())),
                IpProtocol::Icmp => Icmpv4Packet::new_checked(l4).ok().map(|p| (p.echo_ident(), 0)),
                _ => None,
            };
            if let Some((sport, dport)) = flow {
                if sport == DHCP_CLIENT_PORT && l4.len() >= 8 + 8 {
                    self.seen.xid = u32::from_be_bytes([l4[12], l4[13], l4[14], l4[15]]);
                }
                if self.seen.flows.len() >= 32 {
                    self.seen.flows.remove(0);
                }
                self.seen.flows.push((ip.next_header(), sport, ip.dst_addr(), dport));
            }
        }
    }

    /// A well-formed frame from a desktop, its fields taken from the input.
    fn desktop_frame(&self, link: usize, op: u8, input: &mut Input<'_>) -> Vec<u8> {
        let id = LinkId(link as u8);
        let a = self.router.link_addresses(id).expect("harness link exists");
        let src_ip = if input.byte() < 240 { a.desktop } else { Ipv4Address::from_bits(input.u32()) };
        let mut dsts = vec![a.gateway, CORP.address(), RESOLVER, a.broadcast];
        dsts.extend(REMOTES);
        dsts.extend((0..LINKS).filter_map(|l| self.router.link_addresses(LinkId(l as u8))).map(|x| x.desktop));
        let dst_ip = if input.byte() < 250 { input.pick(&dsts) } else { Ipv4Address::from_bits(input.u32()) };
        let ports = [53, 80, CORP_PORT, 20000, 20001, 40000, input.u16()];
        let (sport, dport) = (input.pick(&ports), input.pick(&ports));
        let src_mac = if input.byte() < 250 { desktop_mac(link) } else { desktop_mac((link + 1) % LINKS) };
        let dst_mac = if input.byte() < 240 { gateway_mac(id) } else { EthernetAddress::BROADCAST };
        let packet = match op {
            3 => tcp(src_ip, sport, dst_ip, dport, input.byte(), input.bytes(16)),
            4 => {
                let payload = input.bytes(16);
                udp_packet((src_ip, sport), (dst_ip, dport), payload.len(), |p| p.copy_from_slice(payload))
            }
            5 => {
                let quotable = self.seen.delivered.iter().rev().find(|(l, _)| *l == link).map(|(_, p)| p);
                match quotable {
                    Some(quoted) if input.byte() & 1 == 0 => {
                        let far = Ipv4Address::from_octets([quoted[12], quoted[13], quoted[14], quoted[15]]);
                        icmp_error(src_ip, far, input.byte(), quoted)
                    }
                    _ => echo(src_ip, dst_ip, input.u16(), input.byte() & 1 == 0),
                }
            }
            6 => {
                let payload = dns_message(input, false);
                udp_packet((src_ip, sport), (a.gateway, 53), payload.len(), |p| p.copy_from_slice(&payload))
            }
            7 => return dhcp_from_desktop(link, input),
            _ => {
                let target = input.pick(&dsts);
                let repr = ArpRepr::EthernetIpv4 {
                    operation: if input.byte() & 1 == 0 { ArpOperation::Request } else { ArpOperation::Reply },
                    source_hardware_addr: src_mac,
                    source_protocol_addr: src_ip,
                    target_hardware_addr: EthernetAddress([0; 6]),
                    target_protocol_addr: target,
                };
                return arp_frame(src_mac, dst_mac, repr);
            }
        };
        ipv4_frame(src_mac, dst_mac, &packet)
    }

    /// A well-formed frame from the uplink, often aimed at a flow the router opened.
    fn uplink_frame(&self, op: u8, input: &mut Input<'_>) -> Vec<u8> {
        let flow =
            (!self.seen.flows.is_empty()).then(|| self.seen.flows[usize::from(input.byte()) % self.seen.flows.len()]);
        let ours = self.uplink.as_ref().map_or(UPLINK_IP, |u| u.address.address());
        let (remote, rport, lport) = match flow {
            Some((_, sport, dst, dport)) if input.byte() < 200 => (dst, dport, sport),
            _ => (input.pick(&REMOTES), input.u16(), 20000 + input.u16() % 24),
        };
        match op {
            9 => ipv4_frame(GW_MAC, UPLINK_MAC, &tcp(remote, rport, ours, lport, input.byte(), input.bytes(16))),
            10 => {
                let payload = if rport == 53 { dns_message(input, true) } else { input.bytes(16).to_vec() };
                ipv4_frame(
                    GW_MAC,
                    UPLINK_MAC,
                    &udp_packet((remote, rport), (ours, lport), payload.len(), |p| p.copy_from_slice(&payload)),
                )
            }
            11 if input.byte() & 1 == 0 => {
                ipv4_frame(GW_MAC, UPLINK_MAC, &echo(remote, ours, lport, input.byte() & 1 == 0))
            }
            11 => {
                // An error quoting what the router sent for the flow.
                let quoted = match input.byte() % 3 {
                    0 => tcp(ours, lport, remote, rport, 2, &[]),
                    1 => udp_packet((ours, lport), (remote, rport), 0, |_| {}),
                    _ => echo(ours, remote, lport, true),
                };
                ipv4_frame(GW_MAC, UPLINK_MAC, &icmp_error(input.pick(&REMOTES), ours, input.byte(), &quoted))
            }
            _ => match input.byte() % 3 {
                0 => {
                    let sender = if input.byte() & 1 == 0 { GW } else { input.pick(&REMOTES) };
                    let repr = ArpRepr::EthernetIpv4 {
                        operation: if input.byte() & 1 == 0 { ArpOperation::Reply } else { ArpOperation::Request },
                        source_hardware_addr: GW_MAC,
                        source_protocol_addr: sender,
                        target_hardware_addr: UPLINK_MAC,
                        target_protocol_addr: ours,
                    };
                    arp_frame(GW_MAC, UPLINK_MAC, repr)
                }
                1 => dhcp_from_server(self.seen.xid, input),
                _ => ethernet_frame(GW_MAC, UPLINK_MAC, EthernetProtocol::Ipv6, 40, |_| {}),
            },
        }
    }
}

/// Frames a port's counters account for, less the DNS timeouts a new query can cause.
fn handled(c: &crate::Counters) -> u64 {
    c.forwarded + c.consumed + c.dropped_total() - c.dropped(crate::DropReason::DnsTimeout)
}

fn transport_dst_port(ip: &Ipv4Packet<&[u8]>) -> Option<u16> {
    match ip.next_header() {
        IpProtocol::Tcp | IpProtocol::Udp if ip.payload().len() >= 4 => {
            Some(u16::from_be_bytes([ip.payload()[2], ip.payload()[3]]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::random::Random;

    #[test]
    fn random_inputs_keep_the_invariants() {
        let mut rng = Random::new(0xf0220);
        for _ in 0..300 {
            let len = (rng.next_u64() % 4096) as usize;
            let data: alloc::vec::Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            super::run(&data);
        }
    }
}
