//! The log's output buffer: formatted lines wait here until the scheduler drains them
//! to the serial port between slices, so logging inside a VM exit never waits for the
//! UART. A line that does not fit is dropped whole (never half a line) and counted.
#![forbid(unsafe_code)]

/// A byte ring of `N` bytes holding whole records.
pub struct LogRing<const N: usize> {
    buf: [u8; N],
    /// Index of the oldest byte.
    head: usize,
    len: usize,
    /// `len` when the record being written began.
    record_start: usize,
    /// The record being written did not fit.
    overflow: bool,
    dropped: u64,
}

impl<const N: usize> core::fmt::Debug for LogRing<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LogRing").field("len", &self.len).field("dropped", &self.dropped).finish_non_exhaustive()
    }
}

impl<const N: usize> Default for LogRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LogRing<N> {
    pub const fn new() -> Self {
        LogRing { buf: [0; N], head: 0, len: 0, record_start: 0, overflow: false, dropped: 0 }
    }

    /// Starts a record (one log line).
    pub fn begin(&mut self) {
        self.record_start = self.len;
        self.overflow = false;
    }

    /// Appends to the current record; once a piece does not fit, the record is lost.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if bytes.len() > N.saturating_sub(self.len) {
            self.overflow = true;
            return;
        }
        for &b in bytes {
            let at = self.head.wrapping_add(self.len).checked_rem(N).unwrap_or(0);
            if let Some(slot) = self.buf.get_mut(at) {
                *slot = b;
            }
            self.len = self.len.saturating_add(1);
        }
    }

    /// Ends the record: kept whole, or (if it did not fit) removed and counted.
    /// Returns whether it was kept.
    pub fn end(&mut self) -> bool {
        if self.overflow {
            self.len = self.record_start;
            self.overflow = false;
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        true
    }

    /// The oldest byte, removed.
    pub fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.buf.get(self.head).copied();
        self.head = self.head.wrapping_add(1).checked_rem(N).unwrap_or(0);
        self.len = self.len.saturating_sub(1);
        self.record_start = self.record_start.saturating_sub(1);
        byte
    }

    /// Copies the oldest bytes into `out` without removing them; returns how many.
    pub fn peek(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for (i, slot) in out.iter_mut().take(n).enumerate() {
            *slot = self.buf.get(self.head.wrapping_add(i).checked_rem(N).unwrap_or(0)).copied().unwrap_or(0);
        }
        n
    }

    /// Removes the `n` oldest bytes (after [`Self::peek`]).
    pub fn consume(&mut self, n: usize) {
        for _ in 0..n.min(self.len) {
            self.pop();
        }
    }

    /// Returns and clears the count of records dropped.
    pub fn take_dropped(&mut self) -> u64 {
        core::mem::take(&mut self.dropped)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn record<const N: usize>(r: &mut LogRing<N>, text: &[u8]) -> bool {
        r.begin();
        for piece in text.chunks(3) {
            r.push(piece);
        }
        r.end()
    }

    fn drain<const N: usize>(r: &mut LogRing<N>) -> Vec<u8> {
        core::iter::from_fn(|| r.pop()).collect()
    }

    #[test]
    fn a_full_ring_drops_whole_records_and_counts_them() {
        let mut r = LogRing::<16>::new();
        assert!(record(&mut r, b"line one\n"));
        // 9 of 16 bytes used: a 9-byte record no longer fits and leaves no trace.
        assert!(!record(&mut r, b"line two\n"));
        assert!(!record(&mut r, b"line three\n"));
        assert_eq!(r.len(), 9);
        assert_eq!(r.take_dropped(), 2);
        assert_eq!(r.take_dropped(), 0);
        let mut first = [0u8; 4];
        assert_eq!(r.peek(&mut first), 4);
        assert_eq!(&first, b"line");
        r.consume(2);
        assert_eq!(drain(&mut r), b"ne one\n");
        // Drained, it wraps around and keeps order.
        assert!(record(&mut r, b"abcdefgh\n"));
        assert!(record(&mut r, b"xyz\n"));
        assert_eq!(drain(&mut r), b"abcdefgh\nxyz\n");
        assert!(r.is_empty());
    }

    #[test]
    fn a_flood_of_records_never_grows_past_the_ring() {
        let mut r = LogRing::<256>::new();
        let kept = (0..10_000).filter(|_| record(&mut r, b"[cpu0 INFO  guest] spam\n")).count();
        assert_eq!(r.len(), kept * 24);
        assert!(r.len() <= 256);
        assert_eq!(r.take_dropped(), 10_000 - kept as u64);
    }
}
