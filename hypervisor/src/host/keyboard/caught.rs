//! Bytes the keyboard's interrupt took from the controller before the switcher got to
//! them. The controller holds one byte and the keyboard about sixteen; whatever the
//! switcher is busy with (drawing the overview, starting a VM), the interrupt empties
//! the controller within microseconds, so a burst of keys is never dropped at the
//! hardware. The handler is the only producer and [`super::HostKeyboard::poll`], with
//! interrupts off, the only consumer.

use core::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};

/// Bytes held between the interrupt and the switcher: a minute of fast typing is
/// about 1,000 bytes, a few hundred milliseconds of a key storm far fewer.
pub const CAUGHT_BYTES: usize = 256;

/// A single-producer, single-consumer ring of (status, data) pairs. `head` and
/// `tail` count up forever; their difference is the fill.
#[derive(Debug)]
pub struct CaughtRing {
    slots: [AtomicU16; CAUGHT_BYTES],
    /// Next slot the producer writes.
    head: AtomicUsize,
    /// Next slot the consumer reads.
    tail: AtomicUsize,
    /// Bytes the producer found no room for.
    lost: AtomicU64,
}

impl CaughtRing {
    pub const fn new() -> Self {
        CaughtRing {
            slots: [const { AtomicU16::new(0) }; CAUGHT_BYTES],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
        }
    }

    /// Producer side: keeps the byte and the status it was read with, or counts it
    /// lost when the ring is full.
    pub fn push(&self, status: u8, data: u8) {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= CAUGHT_BYTES {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(slot) = self.slots.get(head % CAUGHT_BYTES) {
            slot.store(u16::from(status) << 8 | u16::from(data), Ordering::Relaxed);
        }
        self.head.store(head.wrapping_add(1), Ordering::Release);
    }

    /// Consumer side: the oldest (status, data) pair.
    pub fn pop(&self) -> Option<(u8, u8)> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let value = self.slots.get(tail % CAUGHT_BYTES).map_or(0, |s| s.load(Ordering::Relaxed));
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        let [status, data] = value.to_be_bytes();
        Some((status, data))
    }

    /// Bytes dropped because the ring was full, since the start.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Default for CaughtRing {
    fn default() -> Self {
        Self::new()
    }
}

/// The ring the real keyboard's interrupt fills.
pub static CAUGHT: CaughtRing = CaughtRing::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_come_out_in_order_and_a_full_ring_counts_losses() {
        let ring = CaughtRing::new();
        assert_eq!(ring.pop(), None);
        ring.push(0x01, 0x1E);
        ring.push(0x21, 0x08);
        assert_eq!(ring.pop(), Some((0x01, 0x1E)));
        assert_eq!(ring.pop(), Some((0x21, 0x08)));
        assert_eq!(ring.pop(), None);
        for i in 0..CAUGHT_BYTES + 3 {
            ring.push(1, i as u8);
        }
        assert_eq!(ring.lost(), 3);
        let out: Vec<u8> = core::iter::from_fn(|| ring.pop()).map(|(_, d)| d).collect();
        assert_eq!(out.len(), CAUGHT_BYTES);
        assert_eq!(out.first(), Some(&0));
        assert_eq!(out.last(), Some(&((CAUGHT_BYTES - 1) as u8)));
        // Room again after the consumer caught up; the counters wrap safely.
        ring.push(1, 0x42);
        assert_eq!(ring.pop(), Some((1, 0x42)));
    }
}
