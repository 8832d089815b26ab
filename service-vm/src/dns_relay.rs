//! The DNS relay: desktops query their gateway on port 53; the relay forwards each query
//! from the uplink address to the uplink's resolver with a fresh random transaction id and
//! source port, and sends the answer back with the desktop's own id.
//!
//! The table of pending queries is bounded; a query that gets no answer in time is
//! forgotten (the desktop's resolver retries on its own). Without an uplink resolver the
//! relay answers SERVFAIL at once, so desktops fail fast instead of waiting.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::Ipv4Address;

use crate::addressing::LinkId;
use crate::counters::DropReason;
use crate::random::Random;

pub(crate) const DNS_PORT: u16 = 53;
const HEADER_LEN: usize = 12;
const FLAGS_QR: u8 = 0x80;
const RCODE_SERVFAIL: u8 = 2;

/// Sizes and timer of the relay.
#[derive(Clone, Debug)]
pub(crate) struct DnsLimits {
    pub(crate) pending: usize,
    pub(crate) timeout: Duration,
    pub(crate) ports: RangeInclusive<u16>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    link: LinkId,
    client_port: u16,
    client_id: u16,
    relay_id: u16,
    resolver: Ipv4Address,
    expires: Instant,
}

/// A query ready to go to the resolver.
#[derive(Debug)]
pub(crate) struct Forward {
    pub(crate) relay_port: u16,
    pub(crate) payload: Vec<u8>,
}

/// An answer ready to go back to a desktop.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) link: LinkId,
    pub(crate) client_port: u16,
    pub(crate) payload: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct DnsRelay {
    limits: DnsLimits,
    pending: BTreeMap<u16, Pending>,
}

fn id_of(message: &[u8]) -> u16 {
    u16::from_be_bytes([message[0], message[1]])
}

fn is_response(message: &[u8]) -> bool {
    message[2] & FLAGS_QR != 0
}

impl DnsRelay {
    pub(crate) fn new(limits: DnsLimits) -> Self {
        DnsRelay { limits, pending: BTreeMap::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether `port` is one of the relay's source ports.
    pub(crate) fn owns_port(&self, port: u16) -> bool {
        self.limits.ports.contains(&port)
    }

    /// Takes a query from `link`'s desktop for `resolver`.
    pub(crate) fn query(
        &mut self,
        now: Instant,
        rng: &mut Random,
        (link, client_port): (LinkId, u16),
        message: &[u8],
        resolver: Ipv4Address,
    ) -> Result<Forward, DropReason> {
        if message.len() < HEADER_LEN || is_response(message) {
            return Err(DropReason::Malformed);
        }
        if self.pending.len() >= self.limits.pending {
            return Err(DropReason::DnsTableFull);
        }
        let relay_port = self.free_port(rng).ok_or(DropReason::DnsTableFull)?;
        let relay_id = rng.next_u16();
        let expires = now + self.limits.timeout;
        let client_id = id_of(message);
        self.pending.insert(relay_port, Pending { link, client_port, client_id, relay_id, resolver, expires });
        let mut payload = message.to_vec();
        payload[..2].copy_from_slice(&relay_id.to_be_bytes());
        Ok(Forward { relay_port, payload })
    }

    /// Matches an answer from `from` to `relay_port`: it must come from the resolver the
    /// query went to, on port 53, with the relay's id, before the timeout.
    pub(crate) fn answer(
        &mut self,
        now: Instant,
        from: (Ipv4Address, u16),
        relay_port: u16,
        message: &[u8],
    ) -> Result<Answer, DropReason> {
        if message.len() < HEADER_LEN || !is_response(message) {
            return Err(DropReason::Malformed);
        }
        let p = self.pending.get(&relay_port).ok_or(DropReason::DnsUnmatched)?;
        if p.expires <= now || from != (p.resolver, DNS_PORT) || id_of(message) != p.relay_id {
            return Err(DropReason::DnsUnmatched);
        }
        let p = *p;
        self.pending.remove(&relay_port);
        let mut payload = message.to_vec();
        payload[..2].copy_from_slice(&p.client_id.to_be_bytes());
        Ok(Answer { link: p.link, client_port: p.client_port, payload })
    }

    /// Forgets the query sent from `relay_port` (it could not be sent).
    pub(crate) fn cancel(&mut self, relay_port: u16) {
        self.pending.remove(&relay_port);
    }

    /// Forgets queries past their timeout; returns the link of each (for counting).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<LinkId> {
        let mut dead = Vec::new();
        self.pending.retain(|_, p| {
            let live = p.expires > now;
            if !live {
                dead.push(p.link);
            }
            live
        });
        dead
    }

    /// Forgets every query (the uplink went away); returns the link of each.
    pub(crate) fn clear(&mut self) -> Vec<LinkId> {
        let links = self.pending.values().map(|p| p.link).collect();
        self.pending.clear();
        links
    }

    fn free_port(&self, rng: &mut Random) -> Option<u16> {
        let (lo, hi) = (*self.limits.ports.start(), *self.limits.ports.end());
        let span = u32::from(hi - lo) + 1;
        let start = u32::from(rng.next_u16()) % span;
        (0..span).map(|i| lo + ((start + i) % span) as u16).find(|p| !self.pending.contains_key(p))
    }
}

/// A SERVFAIL answer to `query` (same id and question), for when no resolver is known.
pub(crate) fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < HEADER_LEN || is_response(query) {
        return None;
    }
    let mut reply = query.to_vec();
    // QR=1, keep opcode and RD; RA=1, RCODE=SERVFAIL.
    reply[2] = (reply[2] | FLAGS_QR) & 0xf9;
    reply[3] = 0x80 | RCODE_SERVFAIL;
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLVER: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);

    fn relay(pending: usize) -> DnsRelay {
        DnsRelay::new(DnsLimits { pending, timeout: Duration::from_secs(5), ports: 61000..=61999 })
    }

    fn query(id: u16) -> Vec<u8> {
        let mut q = alloc::vec![0u8; 20];
        q[..2].copy_from_slice(&id.to_be_bytes());
        q[2] = 0x01; // RD
        q[5] = 1; // one question
        q
    }

    fn respond(to: &[u8]) -> Vec<u8> {
        let mut r = to.to_vec();
        r[2] |= FLAGS_QR;
        r
    }

    #[test]
    fn answer_goes_back_with_the_client_id() {
        let mut r = relay(8);
        let mut rng = Random::new(7);
        let now = Instant::from_secs(1);
        let fwd = r.query(now, &mut rng, (LinkId(3), 41000), &query(0xbeef), RESOLVER).unwrap();
        assert!(r.owns_port(fwd.relay_port));
        let answer = r.answer(now, (RESOLVER, 53), fwd.relay_port, &respond(&fwd.payload)).unwrap();
        assert_eq!((answer.link, answer.client_port), (LinkId(3), 41000));
        assert_eq!(id_of(&answer.payload), 0xbeef);
        assert_eq!(r.len(), 0);
        assert_eq!(
            r.answer(now, (RESOLVER, 53), fwd.relay_port, &respond(&fwd.payload)).unwrap_err(),
            DropReason::DnsUnmatched,
            "an answer is taken once"
        );
    }

    #[test]
    fn forged_answers_do_not_match() {
        let mut r = relay(8);
        let mut rng = Random::new(9);
        let now = Instant::from_secs(1);
        let fwd = r.query(now, &mut rng, (LinkId(0), 5353), &query(1), RESOLVER).unwrap();
        let mut wrong_id = respond(&fwd.payload);
        wrong_id[0] ^= 1;
        assert!(r.answer(now, (RESOLVER, 53), fwd.relay_port, &wrong_id).is_err());
        let good = respond(&fwd.payload);
        assert!(r.answer(now, (Ipv4Address::new(6, 6, 6, 6), 53), fwd.relay_port, &good).is_err());
        assert!(r.answer(now, (RESOLVER, 5353), fwd.relay_port, &good).is_err());
        assert!(r.answer(now, (RESOLVER, 53), fwd.relay_port, &good).is_ok());
    }

    #[test]
    fn table_is_bounded_and_times_out() {
        let mut r = relay(2);
        let mut rng = Random::new(1);
        let now = Instant::from_secs(1);
        let f1 = r.query(now, &mut rng, (LinkId(0), 1), &query(1), RESOLVER).unwrap();
        let f2 = r.query(now, &mut rng, (LinkId(1), 1), &query(2), RESOLVER).unwrap();
        assert_ne!(f1.relay_port, f2.relay_port);
        assert_eq!(r.query(now, &mut rng, (LinkId(0), 1), &query(3), RESOLVER).unwrap_err(), DropReason::DnsTableFull);
        let late = now + Duration::from_secs(5);
        assert!(r.answer(late, (RESOLVER, 53), f1.relay_port, &respond(&f1.payload)).is_err());
        assert_eq!(r.expire(late), [LinkId(0), LinkId(1)]);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn servfail_keeps_id_and_question() {
        let q = query(0x1234);
        let s = servfail(&q).unwrap();
        assert_eq!(id_of(&s), 0x1234);
        assert!(is_response(&s));
        assert_eq!(s[3] & 0x0f, RCODE_SERVFAIL);
        assert_eq!(s[4..], q[4..]);
        assert!(servfail(&s).is_none(), "no answer to an answer");
    }
}
