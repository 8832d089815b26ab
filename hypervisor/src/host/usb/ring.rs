//! The bookkeeping of xHCI rings (xHCI 1.2 §4.9): a producer ring (command and transfer
//! rings, one segment closed by a Link TRB that toggles the cycle) and the consumer side
//! of the event ring (one segment, §4.9.4). Pure: it says which TRBs to write where, and
//! which event is new; the controller does the writing.
#![forbid(unsafe_code)]

use xhci::ring::trb::Link;

/// Bytes per TRB (§6.4).
pub const TRB_BYTES: u64 = 16;
/// TRBs per ring segment: one 4 KiB page.
pub const RING_TRBS: u16 = 256;

/// A command or transfer ring: `RING_TRBS - 1` usable slots, then a Link TRB back to
/// the start with Toggle Cycle set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerRing {
    base: u64,
    enqueue: u16,
    cycle: bool,
}

/// One TRB write: its device address and its four dwords.
pub type TrbWrite = (u64, [u32; 4]);

impl ProducerRing {
    /// A ring at device address `base` (64-byte aligned, `RING_TRBS` TRBs, zeroed):
    /// the producer cycle state starts at 1 (§4.9.2).
    pub fn new(base: u64) -> Self {
        ProducerRing { base, enqueue: 0, cycle: true }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// Where the next TRB goes, and the cycle it will carry (for Set TR Dequeue
    /// Pointer: the ring's state after everything pushed so far).
    pub fn enqueue_pointer(&self) -> (u64, bool) {
        (self.slot_address(self.enqueue), self.cycle)
    }

    fn slot_address(&self, index: u16) -> u64 {
        self.base.wrapping_add(u64::from(index).wrapping_mul(TRB_BYTES))
    }

    /// Places `trb` (its cycle bit set to the ring's) and, when that fills the segment,
    /// the Link TRB; returns the TRB's address and the writes to make, in order.
    pub fn push(&mut self, mut trb: [u32; 4]) -> (u64, heapless::Vec<TrbWrite, 2>) {
        let mut writes = heapless::Vec::new();
        trb[3] = (trb[3] & !1) | u32::from(self.cycle);
        let at = self.slot_address(self.enqueue);
        let _ = writes.push((at, trb));
        self.enqueue = self.enqueue.saturating_add(1);
        if self.enqueue >= RING_TRBS.saturating_sub(1) {
            let mut link = Link::new();
            link.set_ring_segment_pointer(self.base).set_toggle_cycle();
            if self.cycle {
                link.set_cycle_bit();
            }
            let _ = writes.push((self.slot_address(self.enqueue), link.into_raw()));
            self.enqueue = 0;
            self.cycle = !self.cycle;
        }
        (at, writes)
    }
}

/// The consumer side of a one-segment event ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRing {
    base: u64,
    dequeue: u16,
    cycle: bool,
}

impl EventRing {
    /// An event ring at `base` of `RING_TRBS` TRBs; the consumer cycle state starts at 1
    /// (§4.9.4).
    pub fn new(base: u64) -> Self {
        EventRing { base, dequeue: 0, cycle: true }
    }

    /// The address of the TRB to look at next (also what ERDP is set to).
    pub fn dequeue_pointer(&self) -> u64 {
        self.base.wrapping_add(u64::from(self.dequeue).wrapping_mul(TRB_BYTES))
    }

    /// Whether `trb` (read at `dequeue_pointer`) is a new event: its cycle bit equals the
    /// consumer cycle state.
    pub fn is_new(&self, trb: &[u32; 4]) -> bool {
        (trb[3] & 1 != 0) == self.cycle
    }

    /// Moves past the event just consumed; the cycle flips when the segment wraps.
    pub fn advance(&mut self) {
        self.dequeue = self.dequeue.saturating_add(1);
        if self.dequeue >= RING_TRBS {
            self.dequeue = 0;
            self.cycle = !self.cycle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_ring_links_back_and_toggles_its_cycle() {
        let mut ring = ProducerRing::new(0x10_0000);
        let noop = xhci::ring::trb::command::Noop::new().into_raw();
        let (at, writes) = ring.push(noop);
        assert_eq!(at, 0x10_0000);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].1[3] & 1, 1, "first lap carries cycle 1");
        for i in 1..(RING_TRBS - 2) {
            let (at, w) = ring.push(noop);
            assert_eq!(at, 0x10_0000 + u64::from(i) * 16);
            assert_eq!(w.len(), 1);
        }
        // The last usable slot: the Link TRB follows in the last slot.
        let (at, w) = ring.push(noop);
        assert_eq!(at, 0x10_0000 + u64::from(RING_TRBS - 2) * 16);
        assert_eq!(w.len(), 2);
        let (link_at, link) = w[1];
        assert_eq!(link_at, 0x10_0000 + u64::from(RING_TRBS - 1) * 16);
        assert_eq!(u64::from(link[0]) | (u64::from(link[1]) << 32), 0x10_0000);
        assert_eq!((link[3] >> 10) & 0x3f, 6, "TRB type Link");
        assert_eq!(link[3] & 0b11, 0b11, "cycle 1 and toggle cycle");
        // Second lap: back at the base with cycle 0.
        assert_eq!(ring.enqueue_pointer(), (0x10_0000, false));
        let (at, w) = ring.push(noop);
        assert_eq!(at, 0x10_0000);
        assert_eq!(w[0].1[3] & 1, 0);
        for _ in 1..(RING_TRBS - 1) {
            ring.push(noop);
        }
        assert_eq!(ring.enqueue_pointer(), (0x10_0000, true));
    }

    #[test]
    fn the_event_ring_takes_only_events_of_its_cycle() {
        let mut ev = EventRing::new(0x2000);
        let mut trb = [0u32; 4];
        assert!(!ev.is_new(&trb), "a zeroed ring holds no event");
        trb[3] = 1;
        assert!(ev.is_new(&trb));
        for _ in 0..RING_TRBS {
            ev.advance();
        }
        assert_eq!(ev.dequeue_pointer(), 0x2000);
        assert!(!ev.is_new(&trb), "after a wrap, last lap's events are old");
        trb[3] = 0;
        assert!(ev.is_new(&trb));
        ev.advance();
        assert_eq!(ev.dequeue_pointer(), 0x2010);
    }
}
