//! The router: configuration, state, and the frames-in/frames-out API.
//!
//! `handle_frame` takes one frame from a port and appends whatever it causes to an
//! output list; `poll` runs the timers (NAT and DNS timeouts, ARP retries, the uplink
//! DHCP client). Time is always passed in; a time earlier than one already seen is
//! treated as that one, so a misbehaving clock cannot resurrect expired state.

mod icmp_error;
mod link;
#[cfg(test)]
mod tests;
mod uplink;

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

use crate::addressing::{AddressPlan, LinkAddresses, LinkId, Port};
use crate::arp::{ArpLimits, ArpResolver};
use crate::conntrack::NatTimeouts;
use crate::counters::{Counters, DropReason};
use crate::dhcp_client::{ClientEvent, DhcpClient, DhcpClientState};
use crate::dns_relay::{DnsLimits, DnsRelay};
use crate::nat::{NatLimits, NatTable};
use crate::random::Random;
use crate::rules::Rule;

/// One desktop link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// The MAC the hypervisor gave the desktop's virtio-net device; the only source
    /// MAC accepted on the link and the only client the DHCP server answers.
    pub desktop_mac: EthernetAddress,
    /// What the desktop may reach through the uplink.
    pub rule: Rule,
    /// Links this desktop may exchange packets with. Two desktops talk only when each
    /// names the other and neither is `Isolated`.
    pub peers: Vec<LinkId>,
}

/// Sizes and timers; the defaults suit a laptop with a handful of desktops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connection-table entries in total.
    pub nat_mappings: usize,
    /// Connection-table entries one link may hold, so one desktop cannot starve others.
    pub nat_mappings_per_link: usize,
    /// External ports for NAT mappings (one space per protocol).
    pub nat_ports: RangeInclusive<u16>,
    /// Idle timeouts of NAT mappings.
    pub nat_timeouts: NatTimeouts,
    /// DNS queries waiting for the resolver.
    pub dns_pending: usize,
    /// How long a DNS query may wait.
    pub dns_timeout: Duration,
    /// Source ports of relayed DNS queries; must not overlap `nat_ports`.
    pub dns_ports: RangeInclusive<u16>,
    /// TCP ports of the service VM's own connections from the uplink address (the
    /// check-in agent): inbound segments to them go to [`Router::take_local_packet`],
    /// never to NAT; must not overlap `nat_ports` or `dns_ports`.
    pub local_ports: RangeInclusive<u16>,
    /// Uplink neighbours remembered.
    pub arp_cache: usize,
    /// Packets waiting for an uplink neighbour's MAC.
    pub arp_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nat_mappings: 4096,
            nat_mappings_per_link: 1024,
            nat_ports: 20000..=59999,
            nat_timeouts: NatTimeouts::default(),
            dns_pending: 256,
            dns_timeout: Duration::from_secs(5),
            dns_ports: 61000..=61999,
            local_ports: 62000..=62099,
            arp_cache: 64,
            arp_queue: 64,
        }
    }
}

/// Everything the router is built from.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Where the desktops' /30s live.
    pub plan: AddressPlan,
    /// The desktop links; the index in this list is the [`LinkId`].
    pub links: Vec<LinkConfig>,
    /// The uplink NIC's MAC.
    pub uplink_mac: EthernetAddress,
    pub limits: Limits,
    /// Seed for DNS ids, relay ports and DHCP transaction ids (from a hardware source).
    pub seed: u64,
}

/// The uplink's layer-3 configuration (from its DHCP client or set statically).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkConfig {
    /// The uplink address and its on-link prefix.
    pub address: Ipv4Cidr,
    /// The default gateway; without one only on-link destinations are reached.
    pub gateway: Option<Ipv4Address>,
    /// The resolvers; the DNS relay uses the first.
    pub dns: Vec<Ipv4Address>,
    /// The uplink's MTU (DHCP option 26, else [`UplinkConfig::DEFAULT_MTU`]); taken
    /// as at least 576 and at most 1500. Desktops learn it through their DHCP lease.
    pub mtu: u16,
}

impl UplinkConfig {
    /// Ethernet's MTU, and the most any link carries.
    pub const DEFAULT_MTU: u16 = 1500;
    /// The least MTU an IPv4 host must accept (RFC 791).
    pub const MIN_MTU: u16 = 576;
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterError {
    /// More links than the address plan holds.
    TooManyLinks,
    /// A desktop or uplink MAC that is not unicast.
    BadMac,
    /// A peer names a link that does not exist, or the link itself.
    BadPeer,
    /// A limit or timeout is zero, a timeout is over a year, or a port range is empty
    /// or below 1024.
    BadLimit,
    /// The NAT, DNS and local port ranges overlap.
    PortRangesOverlap,
    /// The uplink address lies in (or covers) the desktop address plan.
    UplinkInPlan,
}

/// A frame to send on a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub port: Port,
    pub frame: Vec<u8>,
    /// The transport checksum is known good: the uplink NIC verified it on arrival and
    /// the router changed the frame only by incremental updates. The link port tells
    /// the desktop so (VIRTIO_NET_HDR_F_DATA_VALID), which spares it summing the payload.
    pub checksum_good: bool,
}

#[derive(Debug)]
struct Link {
    config: LinkConfig,
    addrs: LinkAddresses,
    up: bool,
    counters: Counters,
}

/// The router of the networking service VM.
#[derive(Debug)]
pub struct Router {
    plan: AddressPlan,
    links: Vec<Link>,
    uplink_mac: EthernetAddress,
    uplink: Option<UplinkConfig>,
    uplink_counters: Counters,
    nat: NatTable,
    dns: DnsRelay,
    arp: ArpResolver,
    dhcp: DhcpClient,
    rng: Random,
    now: Instant,
    limits: Limits,
    /// IPv4 packets for the service VM's own connections, oldest first.
    local_in: VecDeque<Vec<u8>>,
    /// The uplink frame being handled had its IPv4 header and transport checksums
    /// verified by the NIC.
    uplink_checksum_good: bool,
    /// Frame buffers given back after sending ([`Router::recycle`]), reused for the
    /// frames forwarded to the desktops: no allocation per frame on a busy link.
    spare_frames: Vec<Vec<u8>>,
}

/// Spare frame buffers kept at most (the rest are freed).
pub const SPARE_FRAMES: usize = 64;
/// The capacity a spare buffer needs: an Ethernet header and a 1500-byte packet.
const FRAME_CAPACITY: usize = 1514;

/// Packets for the service VM's own connections waiting to be taken.
pub const LOCAL_QUEUE: usize = 64;

/// The longest timeout accepted: far below where adding it to a time could overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

fn check_range(r: &RangeInclusive<u16>) -> Result<(), RouterError> {
    if r.is_empty() || *r.start() < 1024 { Err(RouterError::BadLimit) } else { Ok(()) }
}

impl Router {
    /// A router with every link up and no uplink address.
    pub fn new(config: RouterConfig) -> Result<Router, RouterError> {
        let l = &config.limits;
        if config.links.len() > AddressPlan::MAX_LINKS {
            return Err(RouterError::TooManyLinks);
        }
        if [l.nat_mappings, l.nat_mappings_per_link, l.dns_pending, l.arp_cache, l.arp_queue].contains(&0) {
            return Err(RouterError::BadLimit);
        }
        let t = &l.nat_timeouts;
        let timeouts = [t.tcp_opening, t.tcp_established, t.tcp_closing, t.tcp_reset, t.udp, t.icmp, l.dns_timeout];
        if timeouts.iter().any(|&d| d == Duration::ZERO || d > MAX_TIMEOUT) {
            return Err(RouterError::BadLimit);
        }
        check_range(&l.nat_ports)?;
        check_range(&l.dns_ports)?;
        check_range(&l.local_ports)?;
        let overlap = |a: &RangeInclusive<u16>, b: &RangeInclusive<u16>| a.start() <= b.end() && b.start() <= a.end();
        if overlap(&l.nat_ports, &l.dns_ports)
            || overlap(&l.nat_ports, &l.local_ports)
            || overlap(&l.dns_ports, &l.local_ports)
        {
            return Err(RouterError::PortRangesOverlap);
        }
        if !config.uplink_mac.is_unicast() {
            return Err(RouterError::BadMac);
        }
        let count = config.links.len();
        let mut links = Vec::with_capacity(count);
        for (i, link) in config.links.into_iter().enumerate() {
            let id = LinkId(i as u8);
            if !link.desktop_mac.is_unicast() {
                return Err(RouterError::BadMac);
            }
            if link.peers.iter().any(|p| *p == id || p.index() >= count) {
                return Err(RouterError::BadPeer);
            }
            let addrs = config.plan.link(id).ok_or(RouterError::TooManyLinks)?;
            links.push(Link { config: link, addrs, up: true, counters: Counters::default() });
        }
        let mut rng = Random::new(config.seed);
        let nat_limits = NatLimits {
            capacity: l.nat_mappings,
            per_link: l.nat_mappings_per_link,
            ports: l.nat_ports.clone(),
            timeouts: l.nat_timeouts,
        };
        let nat = NatTable::new(nat_limits, links.len(), rng.next_u16());
        let dns =
            DnsRelay::new(DnsLimits { pending: l.dns_pending, timeout: l.dns_timeout, ports: l.dns_ports.clone() });
        let arp = ArpResolver::new(ArpLimits {
            cache_entries: l.arp_cache,
            queued_packets: l.arp_queue,
            ..ArpLimits::default()
        });
        Ok(Router {
            plan: config.plan,
            links,
            uplink_mac: config.uplink_mac,
            uplink: None,
            uplink_counters: Counters::default(),
            nat,
            dns,
            arp,
            dhcp: DhcpClient::new(config.uplink_mac),
            rng,
            now: Instant::ZERO,
            limits: config.limits,
            local_in: VecDeque::new(),
            uplink_checksum_good: false,
            spare_frames: Vec::new(),
        })
    }

    /// The addresses of `link`.
    pub fn link_addresses(&self, link: LinkId) -> Option<LinkAddresses> {
        self.links.get(link.index()).map(|l| l.addrs)
    }

    /// Counters of a port (`None` for a link that does not exist).
    pub fn counters(&self, port: Port) -> Option<&Counters> {
        match port {
            Port::Uplink => Some(&self.uplink_counters),
            Port::Link(id) => self.links.get(id.index()).map(|l| &l.counters),
        }
    }

    /// The MTU desktops should use: the uplink's, or 1500 without an uplink.
    pub fn link_mtu(&self) -> u16 {
        self.uplink.as_ref().map_or(UplinkConfig::DEFAULT_MTU, |u| u.mtu)
    }

    /// The uplink's current configuration.
    pub fn uplink(&self) -> Option<&UplinkConfig> {
        self.uplink.as_ref()
    }

    /// Where the uplink DHCP client is.
    pub fn dhcp_client_state(&self) -> DhcpClientState {
        self.dhcp.state()
    }

    /// Marks a desktop link up or down (the desktop's device is reset or gone); frames
    /// for a down link are dropped and counted.
    pub fn set_link_up(&mut self, link: LinkId, up: bool) {
        if let Some(l) = self.links.get_mut(link.index()) {
            l.up = up;
        }
    }

    /// Gives `link` a new rule (a policy update): the link's NAT mappings are dropped
    /// when the rule changes, so a flow the old rule allowed does not outlive it.
    /// Returns whether the rule changed.
    pub fn replace_link_rule(&mut self, link: LinkId, rule: Rule) -> bool {
        let Some(l) = self.links.get_mut(link.index()) else { return false };
        if l.config.rule == rule {
            return false;
        }
        l.config.rule = rule;
        let dropped = self.nat.clear_link(link);
        log::info!(target: "router", "link {}: new rule, {dropped} connections dropped", link.index());
        true
    }

    /// The next IPv4 packet that arrived for the service VM's own TCP connections (a
    /// destination port in `Limits::local_ports` on the uplink address).
    pub fn take_local_packet(&mut self) -> Option<Vec<u8>> {
        self.local_in.pop_front()
    }

    /// Sends an IPv4 packet of the service VM's own: it must be TCP from the uplink
    /// address and a local port (anything else is dropped and counted on the uplink).
    pub fn send_local(&mut self, now: Instant, packet: Vec<u8>, out: &mut Vec<Transmit>) {
        let now = self.clock(now);
        if let Err(reason) =
            self.check_local(&packet).and_then(|()| self.send_to_uplink(now, Port::Uplink, packet, out))
        {
            self.count_drop(Port::Uplink, reason);
        }
    }

    fn check_local(&self, packet: &[u8]) -> Result<(), DropReason> {
        let parsed = crate::frame::check_ipv4_frame(packet)?;
        let ours = self.uplink.as_ref().map(|u| u.address.address()).ok_or(DropReason::NoUplink)?;
        match parsed.transport {
            crate::frame::Transport::Tcp { src_port, .. }
                if parsed.ip.src == ours
                    && self.limits.local_ports.contains(&src_port)
                    && parsed.ip.total_len == packet.len() =>
            {
                Ok(())
            }
            _ => Err(DropReason::Spoofed),
        }
    }

    /// Queues an inbound packet for the service VM's own connections.
    pub(super) fn queue_local(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        if self.local_in.len() >= LOCAL_QUEUE {
            return Err(DropReason::LocalQueueFull);
        }
        self.local_in.push_back(packet.to_vec());
        self.consume(Port::Uplink);
        Ok(())
    }

    /// Sets the uplink statically (stopping the DHCP client), or removes it with `None`.
    pub fn set_uplink(&mut self, config: Option<UplinkConfig>) -> Result<(), RouterError> {
        self.dhcp.stop();
        self.apply_uplink(config)
    }

    /// Starts the uplink DHCP client; the uplink is configured when a lease is acked.
    pub fn start_uplink_dhcp(&mut self, now: Instant) {
        let now = self.clock(now);
        let _ = self.apply_uplink(None);
        self.dhcp.start(now, &mut self.rng);
    }

    fn apply_uplink(&mut self, mut config: Option<UplinkConfig>) -> Result<(), RouterError> {
        if let Some(c) = &mut config {
            c.mtu = c.mtu.clamp(UplinkConfig::MIN_MTU, UplinkConfig::DEFAULT_MTU);
            let plan = self.plan.prefix();
            if c.address.contains_addr(&plan.address()) || plan.contains_addr(&c.address.address()) {
                return Err(RouterError::UplinkInPlan);
            }
        }
        let same_address = self.uplink.as_ref().map(|u| u.address) == config.as_ref().map(|c| c.address);
        if !same_address {
            // Mappings and pending queries name the old address; none can work any more.
            self.nat.clear();
            for link in self.dns.clear() {
                self.count_drop(Port::Link(link), DropReason::DnsTimeout);
            }
            for w in self.arp.clear() {
                self.count_drop(w.origin, DropReason::NoUplink);
            }
        }
        if let Some(c) = &config {
            log::info!(target: "router", "uplink {} gateway {:?} dns {:?} mtu {}", c.address, c.gateway, c.dns, c.mtu);
        } else if self.uplink.is_some() {
            log::info!(target: "router", "uplink deconfigured");
        }
        self.uplink = config;
        Ok(())
    }

    /// Takes back the buffer of a frame that was sent, for a later frame to reuse.
    pub fn recycle(&mut self, frame: Vec<u8>) {
        if self.spare_frames.len() < SPARE_FRAMES && frame.capacity() >= FRAME_CAPACITY {
            self.spare_frames.push(frame);
        }
    }

    /// A buffer for a frame: a spare one, or a new one that is large enough to be kept.
    fn frame_buffer(&mut self) -> Vec<u8> {
        self.spare_frames.pop().unwrap_or_else(|| Vec::with_capacity(FRAME_CAPACITY))
    }

    /// Takes one frame that arrived on the uplink whose TCP or UDP checksum the NIC
    /// verified good: as [`handle_frame`](Self::handle_frame), and what is forwarded
    /// to a desktop carries that verdict.
    pub fn handle_verified_uplink_frame(&mut self, now: Instant, frame: &[u8], out: &mut Vec<Transmit>) {
        self.uplink_checksum_good = true;
        self.handle_frame(now, Port::Uplink, frame, out);
        self.uplink_checksum_good = false;
    }

    /// Takes one frame that arrived on `port`; frames to send go to `out`. A frame on a
    /// link that does not exist is ignored (that is a kernel bug, not guest input).
    pub fn handle_frame(&mut self, now: Instant, port: Port, frame: &[u8], out: &mut Vec<Transmit>) {
        let now = self.clock(now);
        let result = match port {
            Port::Link(id) if id.index() < self.links.len() => {
                self.links[id.index()].counters.received += 1;
                self.handle_link_frame(now, id, frame, out)
            }
            Port::Link(_) => return,
            Port::Uplink => {
                self.uplink_counters.received += 1;
                self.handle_uplink_frame(now, frame, out)
            }
        };
        if let Err(reason) = result {
            self.count_drop(port, reason);
        }
    }

    /// Runs the timers: expires NAT mappings and DNS queries, retries or gives up ARP
    /// requests, and drives the uplink DHCP client.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let now = self.clock(now);
        self.nat.expire(now);
        for link in self.dns.expire(now) {
            self.count_drop(Port::Link(link), DropReason::DnsTimeout);
        }
        let arp = self.arp.poll(now);
        for ip in arp.ask {
            self.send_arp_request(ip, out);
        }
        for w in arp.unresolved {
            self.count_drop(w.origin, DropReason::ArpUnresolved);
        }
        let dhcp = self.dhcp.poll(now, &mut self.rng);
        self.apply_dhcp(dhcp, out);
    }

    fn apply_dhcp(&mut self, step: crate::dhcp_client::ClientOutput, out: &mut Vec<Transmit>) {
        if let Some(frame) = step.frame {
            self.transmit(Port::Uplink, frame, out);
        }
        match step.event {
            Some(ClientEvent::Configured(config)) => {
                let refused = self.apply_uplink(Some(config));
                if refused.is_err() {
                    log::warn!(target: "router", "DHCP lease overlaps the desktop address plan; not used");
                    let _ = self.apply_uplink(None);
                    self.dhcp.refuse_lease(self.now, &mut self.rng);
                }
            }
            Some(ClientEvent::Deconfigured) => {
                let _ = self.apply_uplink(None);
            }
            None => {}
        }
    }

    /// The later of `now` and the latest time seen, kept far below where adding a
    /// timeout could overflow.
    fn clock(&mut self, now: Instant) -> Instant {
        const LATEST: Instant = Instant::from_micros_const(1 << 60);
        self.now = self.now.max(now).min(LATEST);
        self.now
    }

    fn count_drop(&mut self, port: Port, reason: DropReason) {
        log::trace!(target: "router", "drop on {port:?}: {}", reason.name());
        match port {
            Port::Uplink => self.uplink_counters.count_drop(reason),
            Port::Link(id) => {
                if let Some(l) = self.links.get_mut(id.index()) {
                    l.counters.count_drop(reason);
                }
            }
        }
    }

    fn counters_mut(&mut self, port: Port) -> Option<&mut Counters> {
        match port {
            Port::Uplink => Some(&mut self.uplink_counters),
            Port::Link(id) => self.links.get_mut(id.index()).map(|l| &mut l.counters),
        }
    }

    /// Queues `frame` for `port`, counting it as transmitted there.
    fn transmit(&mut self, port: Port, frame: Vec<u8>, out: &mut Vec<Transmit>) {
        if let Some(c) = self.counters_mut(port) {
            c.transmitted += 1;
        }
        out.push(Transmit { port, frame, checksum_good: false });
    }

    /// Sends `frame` that came in on `from` out of `to`.
    fn forward(&mut self, from: Port, to: Port, frame: Vec<u8>, out: &mut Vec<Transmit>) {
        if let Some(c) = self.counters_mut(from) {
            c.forwarded += 1;
        }
        self.transmit(to, frame, out);
        if from == Port::Uplink
            && matches!(to, Port::Link(_))
            && let Some(sent) = out.last_mut()
        {
            sent.checksum_good = self.uplink_checksum_good;
        }
    }

    /// Sends the router's own answer to a frame from `port`.
    fn answer(&mut self, port: Port, frame: Vec<u8>, out: &mut Vec<Transmit>) {
        self.consume(port);
        self.transmit(port, frame, out);
    }

    /// Counts a frame from `port` that the router's own services took in.
    fn consume(&mut self, port: Port) {
        if let Some(c) = self.counters_mut(port) {
            c.consumed += 1;
        }
    }

    /// Whether desktops on `a` and `b` may exchange packets.
    fn peers_allowed(&self, a: LinkId, b: LinkId) -> bool {
        let (Some(la), Some(lb)) = (self.links.get(a.index()), self.links.get(b.index())) else {
            return false;
        };
        a != b
            && la.config.rule != Rule::Isolated
            && lb.config.rule != Rule::Isolated
            && la.config.peers.contains(&b)
            && lb.config.peers.contains(&a)
    }
}

/// Read access for the status snapshot.
impl Router {
    /// For the fuzz harness's bound check.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn spare_frame_count(&self) -> usize {
        self.spare_frames.len()
    }

    pub(crate) fn link_count(&self) -> usize {
        self.links.len()
    }

    pub(crate) fn link_up(&self, link: LinkId) -> bool {
        self.links.get(link.index()).is_some_and(|l| l.up)
    }

    pub(crate) fn nat_mappings_of(&self, link: LinkId) -> usize {
        self.nat.link_len(link)
    }

    pub(crate) fn uplink_mac(&self) -> EthernetAddress {
        self.uplink_mac
    }

    /// NAT mappings, pending DNS queries, ARP cache entries, packets waiting for ARP.
    pub(crate) fn table_sizes(&self) -> (usize, usize, usize, usize) {
        (self.nat.len(), self.dns.len(), self.arp.cache_len(), self.arp.queue_len())
    }
}
