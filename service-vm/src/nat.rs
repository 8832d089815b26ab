//! The masquerading table: maps a desktop's flow to a port of the uplink address and
//! back, with per-state timeouts and a bounded size (in total and per link).
//!
//! Every mapping owns one external port per protocol, so an inbound packet is found by
//! (protocol, port) and then must come from the far end the desktop talked to
//! (endpoint-dependent filtering). A full table refuses new flows (the caller drops and
//! counts the packet); it never evicts a live mapping.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

use smoltcp::time::Instant;
use smoltcp::wire::Ipv4Address;

use crate::addressing::LinkId;
use crate::conntrack::{Direction, FlowState, NatTimeouts, Protocol, next_tcp_state, opens_tcp};
use crate::counters::DropReason;
use crate::frame::TcpFlags;

/// A flow as the desktop sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Inside {
    pub(crate) protocol: Protocol,
    pub(crate) link: LinkId,
    /// Source port, or the ICMP echo identifier.
    pub(crate) port: u16,
    pub(crate) remote: Ipv4Address,
    /// Destination port; 0 for ICMP.
    pub(crate) remote_port: u16,
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    inside: Inside,
    state: FlowState,
    expires: Instant,
}

/// Sizes of the table.
#[derive(Clone, Debug)]
pub(crate) struct NatLimits {
    pub(crate) capacity: usize,
    pub(crate) per_link: usize,
    pub(crate) ports: RangeInclusive<u16>,
    pub(crate) timeouts: NatTimeouts,
}

#[derive(Debug)]
pub(crate) struct NatTable {
    by_inside: BTreeMap<Inside, u16>,
    by_outside: BTreeMap<(Protocol, u16), Mapping>,
    per_link: Vec<usize>,
    limits: NatLimits,
    /// Where the next port search starts; moves on so a freed port is not reused at once.
    cursor: u16,
}

impl NatTable {
    pub(crate) fn new(limits: NatLimits, links: usize, start: u16) -> Self {
        let span = u32::from(limits.ports.end() - limits.ports.start()) + 1;
        let cursor = limits.ports.start() + (u32::from(start) % span) as u16;
        NatTable { by_inside: BTreeMap::new(), by_outside: BTreeMap::new(), per_link: vec![0; links], limits, cursor }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_outside.len()
    }

    pub(crate) fn link_len(&self, link: LinkId) -> usize {
        self.per_link.get(link.index()).copied().unwrap_or(0)
    }

    /// The external port for an outbound packet of `inside`, creating the mapping if the
    /// packet may open one. `tcp` carries the flags of a TCP segment.
    pub(crate) fn outbound(&mut self, now: Instant, inside: Inside, tcp: Option<TcpFlags>) -> Result<u16, DropReason> {
        if let Some(&port) = self.by_inside.get(&inside) {
            let key = (inside.protocol, port);
            let live = self.by_outside.get(&key).is_some_and(|m| m.expires > now);
            if live {
                self.touch(now, key, tcp, Direction::Outbound);
                return Ok(port);
            }
            self.remove(key);
        }
        let state = match tcp {
            Some(flags) if opens_tcp(flags) => FlowState::TcpOpening,
            Some(_) => return Err(DropReason::NoConnection),
            None => FlowState::Stateless,
        };
        if self.len() >= self.limits.capacity || self.link_len(inside.link) >= self.limits.per_link {
            self.expire(now);
            if self.len() >= self.limits.capacity || self.link_len(inside.link) >= self.limits.per_link {
                return Err(DropReason::NatTableFull);
            }
        }
        let port = self.allocate_port(now, inside.protocol, inside.port).ok_or(DropReason::NatPortsExhausted)?;
        let expires = now + self.limits.timeouts.for_state(inside.protocol, state);
        self.by_outside.insert((inside.protocol, port), Mapping { inside, state, expires });
        self.by_inside.insert(inside, port);
        if let Some(n) = self.per_link.get_mut(inside.link.index()) {
            *n += 1;
        }
        Ok(port)
    }

    /// The desktop flow an inbound packet belongs to: it must hit a live mapping's port
    /// and come from that mapping's far end.
    pub(crate) fn inbound(
        &mut self,
        now: Instant,
        protocol: Protocol,
        port: u16,
        from: (Ipv4Address, u16),
        tcp: Option<TcpFlags>,
    ) -> Result<Inside, DropReason> {
        let key = (protocol, port);
        let timeouts = self.limits.timeouts;
        let m = self.by_outside.get_mut(&key).ok_or(DropReason::NoConnection)?;
        if m.expires <= now {
            self.remove(key);
            return Err(DropReason::NoConnection);
        }
        if (m.inside.remote, m.inside.remote_port) != from {
            return Err(DropReason::NoConnection);
        }
        // Refreshed in place (what `touch` does, without a second lookup).
        if let Some(flags) = tcp {
            m.state = next_tcp_state(m.state, flags, Direction::Inbound);
        }
        m.expires = now + timeouts.for_state(protocol, m.state);
        Ok(m.inside)
    }

    /// The desktop flow of a live mapping on `port` with far end `from`, without
    /// refreshing it (for ICMP errors, which must not keep a mapping alive).
    pub(crate) fn peek_inbound(
        &self,
        now: Instant,
        protocol: Protocol,
        port: u16,
        from: (Ipv4Address, u16),
    ) -> Option<Inside> {
        let m = self.by_outside.get(&(protocol, port))?;
        (m.expires > now && (m.inside.remote, m.inside.remote_port) == from).then_some(m.inside)
    }

    /// The external port of a live mapping of `inside`, without refreshing it.
    pub(crate) fn peek_outbound(&self, now: Instant, inside: Inside) -> Option<u16> {
        let port = *self.by_inside.get(&inside)?;
        self.by_outside.get(&(inside.protocol, port)).filter(|m| m.expires > now).map(|_| port)
    }

    /// Removes every expired mapping; returns how many went.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let dead: Vec<(Protocol, u16)> =
            self.by_outside.iter().filter(|(_, m)| m.expires <= now).map(|(&k, _)| k).collect();
        for &k in &dead {
            self.remove(k);
        }
        dead.len()
    }

    /// Forgets every mapping (the uplink address changed, so none can work any more).
    pub(crate) fn clear(&mut self) {
        self.by_inside.clear();
        self.by_outside.clear();
        self.per_link.iter_mut().for_each(|n| *n = 0);
    }

    /// Forgets `link`'s mappings (its rule changed: flows it allowed may not be allowed
    /// now); returns how many went.
    pub(crate) fn clear_link(&mut self, link: LinkId) -> usize {
        let keys: Vec<(Protocol, u16)> =
            self.by_outside.iter().filter(|(_, m)| m.inside.link == link).map(|(&k, _)| k).collect();
        for &k in &keys {
            self.remove(k);
        }
        keys.len()
    }

    fn touch(&mut self, now: Instant, key: (Protocol, u16), tcp: Option<TcpFlags>, direction: Direction) {
        let timeouts = self.limits.timeouts;
        if let Some(m) = self.by_outside.get_mut(&key) {
            if let Some(flags) = tcp {
                m.state = next_tcp_state(m.state, flags, direction);
            }
            m.expires = now + timeouts.for_state(key.0, m.state);
        }
    }

    fn remove(&mut self, key: (Protocol, u16)) {
        if let Some(m) = self.by_outside.remove(&key) {
            self.by_inside.remove(&m.inside);
            if let Some(n) = self.per_link.get_mut(m.inside.link.index()) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// A free external port: the desktop's own port when it is in range and free
    /// (keeps port-sensitive protocols happy), else the next free one after the cursor.
    fn allocate_port(&mut self, now: Instant, protocol: Protocol, wanted: u16) -> Option<u16> {
        let (lo, hi) = (*self.limits.ports.start(), *self.limits.ports.end());
        if (lo..=hi).contains(&wanted) && self.port_free(now, protocol, wanted) {
            return Some(wanted);
        }
        let span = u32::from(hi - lo) + 1;
        for _ in 0..span {
            let p = self.cursor;
            self.cursor = if p >= hi { lo } else { p + 1 };
            if self.port_free(now, protocol, p) {
                return Some(p);
            }
        }
        None
    }

    /// Whether `port` is unused; an expired mapping holding it is removed.
    fn port_free(&mut self, now: Instant, protocol: Protocol, port: u16) -> bool {
        match self.by_outside.get(&(protocol, port)) {
            None => true,
            Some(m) if m.expires <= now => {
                self.remove((protocol, port));
                true
            }
            Some(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::time::Duration;

    const SYN: TcpFlags = TcpFlags { syn: true, ack: false, fin: false, rst: false };
    const SYN_ACK: TcpFlags = TcpFlags { syn: true, ack: true, fin: false, rst: false };
    const ACK: TcpFlags = TcpFlags { syn: false, ack: true, fin: false, rst: false };

    fn table(capacity: usize, per_link: usize, ports: RangeInclusive<u16>) -> NatTable {
        let limits = NatLimits { capacity, per_link, ports, timeouts: NatTimeouts::default() };
        NatTable::new(limits, 4, 0)
    }

    fn udp(link: u8, port: u16) -> Inside {
        Inside {
            protocol: Protocol::Udp,
            link: LinkId(link),
            port,
            remote: Ipv4Address::new(192, 0, 2, 1),
            remote_port: 53,
        }
    }

    #[test]
    fn same_flow_same_port_and_different_flows_different_ports() {
        let mut t = table(16, 16, 20000..=20010);
        let now = Instant::from_secs(1);
        let a = t.outbound(now, udp(0, 5000), None).unwrap();
        assert_eq!(t.outbound(now, udp(0, 5000), None).unwrap(), a);
        let b = t.outbound(now, udp(1, 5000), None).unwrap();
        assert_ne!(a, b, "two desktops with the same source port get distinct mappings");
        let c = t.outbound(now, udp(0, 20005), None).unwrap();
        assert_eq!(c, 20005, "a free in-range source port is kept");
        let d = t.outbound(now, udp(1, 20005), None).unwrap();
        assert_ne!(d, 20005);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn ports_never_collide_until_exhausted() {
        let mut t = table(100, 100, 30000..=30009);
        let now = Instant::from_secs(1);
        let mut seen = alloc::collections::BTreeSet::new();
        for i in 0..10 {
            assert!(seen.insert(t.outbound(now, udp(0, 1000 + i), None).unwrap()));
        }
        assert_eq!(t.outbound(now, udp(0, 2000), None), Err(DropReason::NatPortsExhausted));
        // TCP has its own port space.
        let tcp = Inside { protocol: Protocol::Tcp, ..udp(0, 2000) };
        assert!(t.outbound(now, tcp, Some(SYN)).is_ok());
    }

    #[test]
    fn full_table_refuses_new_flows_until_one_expires() {
        let mut t = table(3, 2, 20000..=29999);
        let now = Instant::from_secs(10);
        t.outbound(now, udp(0, 1), None).unwrap();
        t.outbound(now, udp(0, 2), None).unwrap();
        assert_eq!(t.outbound(now, udp(0, 3), None), Err(DropReason::NatTableFull), "per-link share");
        t.outbound(now, udp(1, 1), None).unwrap();
        assert_eq!(t.outbound(now, udp(2, 1), None), Err(DropReason::NatTableFull), "total");
        // Existing flows still pass.
        assert!(t.outbound(now, udp(1, 1), None).is_ok());
        let later = now + NatTimeouts::default().udp + Duration::from_secs(1);
        assert!(t.outbound(later, udp(2, 1), None).is_ok(), "expired mappings make room");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn inbound_must_come_from_the_far_end_and_before_the_timeout() {
        let mut t = table(16, 16, 20000..=20010);
        let now = Instant::from_secs(1);
        let port = t.outbound(now, udp(0, 5000), None).unwrap();
        let far = (Ipv4Address::new(192, 0, 2, 1), 53);
        assert_eq!(t.inbound(now, Protocol::Udp, port, far, None).unwrap(), udp(0, 5000));
        let other = (Ipv4Address::new(192, 0, 2, 2), 53);
        assert_eq!(t.inbound(now, Protocol::Udp, port, other, None), Err(DropReason::NoConnection));
        assert_eq!(t.inbound(now, Protocol::Tcp, port, far, Some(ACK)), Err(DropReason::NoConnection));
        let timeout = NatTimeouts::default().udp;
        // Traffic refreshes the timer.
        let mid = now + timeout - Duration::from_secs(1);
        assert!(t.inbound(mid, Protocol::Udp, port, far, None).is_ok());
        assert!(t.inbound(mid + timeout - Duration::from_secs(1), Protocol::Udp, port, far, None).is_ok());
        let dead = mid + timeout * 3;
        assert_eq!(t.inbound(dead, Protocol::Udp, port, far, None), Err(DropReason::NoConnection));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn tcp_needs_a_syn_and_established_connections_live_long() {
        let mut t = table(16, 16, 20000..=20010);
        let now = Instant::from_secs(1);
        let tcp = Inside { protocol: Protocol::Tcp, ..udp(0, 40000) };
        assert_eq!(t.outbound(now, tcp, Some(ACK)), Err(DropReason::NoConnection));
        let port = t.outbound(now, tcp, Some(SYN)).unwrap();
        let far = (tcp.remote, tcp.remote_port);
        let timeouts = NatTimeouts::default();
        // Unanswered SYN: gone after the opening timeout.
        assert!(t.expire(now + timeouts.tcp_opening - Duration::from_secs(1)) == 0);
        t.inbound(now, Protocol::Tcp, port, far, Some(SYN_ACK)).unwrap();
        assert_eq!(t.expire(now + timeouts.tcp_opening + Duration::from_secs(1)), 0, "established lives on");
        assert_eq!(t.expire(now + timeouts.tcp_established + Duration::from_secs(1)), 1);
        let rst = TcpFlags { rst: true, ..ACK };
        let p2 = t.outbound(now, tcp, Some(SYN)).unwrap();
        t.outbound(now, tcp, Some(rst)).unwrap();
        assert!(t.inbound(now, Protocol::Tcp, p2, far, Some(ACK)).is_ok());
        assert_eq!(t.expire(now + timeouts.tcp_reset + Duration::from_secs(1)), 1);
    }
}
