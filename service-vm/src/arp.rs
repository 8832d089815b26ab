//! ARP on the uplink: a bounded cache of next hops and a bounded queue of packets
//! waiting for a next hop to answer. (Desktop links need no resolution: each link's
//! desktop MAC is known from its configuration.)

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, Ipv4Address};

use crate::addressing::Port;
use crate::counters::DropReason;

/// Sizes and timers of the resolver.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArpLimits {
    pub(crate) cache_entries: usize,
    pub(crate) queued_packets: usize,
    pub(crate) entry_lifetime: Duration,
    pub(crate) retry_interval: Duration,
    pub(crate) tries: u8,
}

impl Default for ArpLimits {
    fn default() -> Self {
        ArpLimits {
            cache_entries: 64,
            queued_packets: 64,
            entry_lifetime: Duration::from_secs(300),
            retry_interval: Duration::from_secs(1),
            tries: 3,
        }
    }
}

/// A packet waiting for its next hop's MAC, with the port it came from (for counters).
#[derive(Debug)]
pub(crate) struct Waiting {
    pub(crate) next_hop: Ipv4Address,
    pub(crate) origin: Port,
    pub(crate) packet: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
struct Request {
    next_try: Instant,
    tries_left: u8,
}

#[derive(Debug)]
pub(crate) struct ArpResolver {
    limits: ArpLimits,
    cache: BTreeMap<Ipv4Address, (EthernetAddress, Instant)>,
    requests: BTreeMap<Ipv4Address, Request>,
    waiting: VecDeque<Waiting>,
}

/// What a poll wants done.
#[derive(Debug, Default)]
pub(crate) struct ArpPoll {
    /// Addresses to send an ARP request for.
    pub(crate) ask: Vec<Ipv4Address>,
    /// Packets whose next hop never answered.
    pub(crate) unresolved: Vec<Waiting>,
}

impl ArpResolver {
    pub(crate) fn new(limits: ArpLimits) -> Self {
        ArpResolver { limits, cache: BTreeMap::new(), requests: BTreeMap::new(), waiting: VecDeque::new() }
    }

    pub(crate) fn lookup(&self, now: Instant, ip: Ipv4Address) -> Option<EthernetAddress> {
        self.cache.get(&ip).filter(|(_, expires)| *expires > now).map(|&(mac, _)| mac)
    }

    pub(crate) fn cache_len(&self) -> usize {
        self.cache.len()
    }

    pub(crate) fn queue_len(&self) -> usize {
        self.waiting.len()
    }

    /// Queues `packet` until `next_hop` answers; returns whether a request must go out
    /// now (the first packet for that hop).
    pub(crate) fn enqueue(&mut self, now: Instant, waiting: Waiting) -> Result<bool, DropReason> {
        if self.waiting.len() >= self.limits.queued_packets {
            return Err(DropReason::ArpQueueFull);
        }
        let next_hop = waiting.next_hop;
        self.waiting.push_back(waiting);
        if self.requests.contains_key(&next_hop) {
            return Ok(false);
        }
        let request =
            Request { next_try: now + self.limits.retry_interval, tries_left: self.limits.tries.saturating_sub(1) };
        self.requests.insert(next_hop, request);
        Ok(true)
    }

    /// Takes in an ARP sender binding. Only addresses the router asked for or already
    /// knows are learnt, so a neighbour cannot fill the cache with bindings; returns the
    /// packets that were waiting for `ip`.
    pub(crate) fn learn(&mut self, now: Instant, ip: Ipv4Address, mac: EthernetAddress) -> Option<Vec<Waiting>> {
        if !mac.is_unicast() || (!self.requests.contains_key(&ip) && !self.cache.contains_key(&ip)) {
            return None;
        }
        self.requests.remove(&ip);
        if !self.cache.contains_key(&ip) && self.cache.len() >= self.limits.cache_entries {
            // Make room by dropping the entry closest to expiry.
            if let Some(&victim) = self.cache.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| k) {
                self.cache.remove(&victim);
            }
        }
        self.cache.insert(ip, (mac, now + self.limits.entry_lifetime));
        let (ready, rest): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|w| w.next_hop == ip);
        self.waiting = rest.into();
        Some(ready)
    }

    /// Retries unanswered requests and gives up on those out of tries.
    pub(crate) fn poll(&mut self, now: Instant) -> ArpPoll {
        let mut out = ArpPoll::default();
        self.cache.retain(|_, (_, expires)| *expires > now);
        let mut given_up = Vec::new();
        for (&ip, req) in self.requests.iter_mut() {
            if req.next_try > now {
                continue;
            }
            if req.tries_left == 0 {
                given_up.push(ip);
            } else {
                req.tries_left -= 1;
                req.next_try = now + self.limits.retry_interval;
                out.ask.push(ip);
            }
        }
        for ip in given_up {
            self.requests.remove(&ip);
            let (dead, rest): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|w| w.next_hop == ip);
            self.waiting = rest.into();
            out.unresolved.extend(dead);
        }
        out
    }

    /// Drops everything (the uplink changed); returns the queued packets for counting.
    pub(crate) fn clear(&mut self) -> Vec<Waiting> {
        self.cache.clear();
        self.requests.clear();
        self.waiting.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addressing::LinkId;

    const GW: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
    const GW_MAC: EthernetAddress = EthernetAddress([0, 0x11, 0x22, 0x33, 0x44, 0x55]);

    fn waiting(hop: Ipv4Address, tag: u8) -> Waiting {
        Waiting { next_hop: hop, origin: Port::Link(LinkId(0)), packet: alloc::vec![tag] }
    }

    #[test]
    fn queued_packets_are_released_in_order_when_the_hop_answers() {
        let mut r = ArpResolver::new(ArpLimits::default());
        let now = Instant::from_secs(5);
        assert_eq!(r.enqueue(now, waiting(GW, 1)), Ok(true));
        assert_eq!(r.enqueue(now, waiting(GW, 2)), Ok(false), "one request per hop");
        let other = Ipv4Address::new(192, 168, 1, 9);
        r.enqueue(now, waiting(other, 3)).unwrap();
        let ready = r.learn(now, GW, GW_MAC).unwrap();
        assert_eq!(ready.iter().map(|w| w.packet[0]).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(r.lookup(now, GW), Some(GW_MAC));
        assert_eq!(r.queue_len(), 1);
        assert_eq!(r.lookup(now + ArpLimits::default().entry_lifetime, GW), None, "entries expire");
    }

    #[test]
    fn unsolicited_bindings_are_not_learnt() {
        let mut r = ArpResolver::new(ArpLimits::default());
        assert!(r.learn(Instant::ZERO, GW, GW_MAC).is_none());
        assert_eq!(r.cache_len(), 0);
    }

    #[test]
    fn queue_is_bounded_and_unanswered_hops_give_up_after_retries() {
        let limits = ArpLimits { queued_packets: 2, tries: 3, ..ArpLimits::default() };
        let mut r = ArpResolver::new(limits);
        let mut now = Instant::from_secs(1);
        r.enqueue(now, waiting(GW, 1)).unwrap();
        r.enqueue(now, waiting(GW, 2)).unwrap();
        assert_eq!(r.enqueue(now, waiting(GW, 3)).unwrap_err(), DropReason::ArpQueueFull);
        let mut asked = 0;
        let mut dropped = 0;
        for _ in 0..10 {
            now += limits.retry_interval;
            let p = r.poll(now);
            asked += p.ask.len();
            dropped += p.unresolved.len();
        }
        assert_eq!(asked, 2, "first request at enqueue, then two retries");
        assert_eq!(dropped, 2);
        assert_eq!(r.queue_len(), 0);
    }

    #[test]
    fn cache_is_bounded() {
        let limits = ArpLimits { cache_entries: 2, ..ArpLimits::default() };
        let mut r = ArpResolver::new(limits);
        for i in 0..5u8 {
            let ip = Ipv4Address::new(192, 168, 1, 10 + i);
            r.enqueue(Instant::from_secs(i64::from(i)), waiting(ip, i)).unwrap();
            r.learn(Instant::from_secs(i64::from(i)), ip, GW_MAC).unwrap();
            assert!(r.cache_len() <= 2);
        }
        assert!(r.lookup(Instant::from_secs(5), Ipv4Address::new(192, 168, 1, 14)).is_some());
    }
}
