//! The free physical memory of the machine as a set of page-aligned ranges. Pure
//! bookkeeping (no memory is touched), so it is tested on the host; `phys` wraps it
//! into the hypervisor's frame allocator.

use heapless::Vec;

use super::addr::{HostPhysAddr, PAGE_SIZE};

/// Enough for the fragmented maps real laptops report after reservations are cut out.
pub const MAX_RANGES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    /// Bytes in the range (0 for an empty or inverted one).
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

#[derive(Debug, Default)]
pub struct FreeRanges {
    ranges: Vec<Range, MAX_RANGES>,
    /// Ranges that did not fit in the table (reported, never silently used).
    dropped_bytes: u64,
}

impl FreeRanges {
    pub const fn new() -> Self {
        FreeRanges { ranges: Vec::new(), dropped_bytes: 0 }
    }

    /// Adds [start, end), shrunk to whole pages. Touching ranges are merged; so are
    /// overlapping ones (a firmware map may repeat memory, and a page must never be in
    /// the free set twice).
    pub fn add(&mut self, start: u64, end: u64) {
        // No whole page starts at or above the last page boundary below 2^64.
        let Some(start) = start.checked_next_multiple_of(PAGE_SIZE) else {
            return;
        };
        let end = end & !(PAGE_SIZE - 1);
        if end <= start {
            return;
        }
        // Every range touching or overlapping [start, end) is taken out and their union
        // (one interval, since each of them meets [start, end)) put back.
        let mut joined = Range { start, end };
        self.ranges.retain(|r| {
            let apart = r.end < start || r.start > end;
            if !apart {
                joined.start = joined.start.min(r.start);
                joined.end = joined.end.max(r.end);
            }
            apart
        });
        let pos = self.ranges.iter().position(|r| r.start > joined.start).unwrap_or(self.ranges.len());
        if self.ranges.insert(pos, joined).is_err() {
            self.dropped_bytes = self.dropped_bytes.saturating_add(joined.len());
        }
    }

    /// Removes [start, end) from the free set (e.g. the hypervisor image, the
    /// framebuffer, the first MiB).
    pub fn remove(&mut self, start: u64, end: u64) {
        let start = start & !(PAGE_SIZE - 1);
        // Rounding up past 2^64 means "to the top of the address space".
        let end = end.checked_next_multiple_of(PAGE_SIZE).unwrap_or(u64::MAX);
        if end <= start {
            return;
        }
        let mut i = 0;
        while let Some(&r) = self.ranges.get(i) {
            if r.end <= start || r.start >= end {
                // `i` never exceeds the table's length (at most MAX_RANGES): no wrap.
                i = i.wrapping_add(1);
                continue;
            }
            let left = Range { start: r.start, end: start.max(r.start) };
            let right = Range { start: end.min(r.end), end: r.end };
            self.ranges.remove(i);
            if !right.is_empty() && self.ranges.insert(i, right).is_err() {
                self.dropped_bytes = self.dropped_bytes.saturating_add(right.len());
            }
            if !left.is_empty() {
                if self.ranges.insert(i, left).is_err() {
                    self.dropped_bytes = self.dropped_bytes.saturating_add(left.len());
                } else {
                    i = i.wrapping_add(1);
                }
            }
            if !right.is_empty() {
                i = i.wrapping_add(1);
            }
        }
    }

    /// Takes `bytes` (a multiple of 4 KiB) aligned to `align`, from the highest range
    /// that can hold it (low memory is kept for things that need it: AP trampolines,
    /// 32-bit DMA).
    pub fn take(&mut self, bytes: u64, align: u64) -> Option<HostPhysAddr> {
        let bytes = bytes.checked_next_multiple_of(PAGE_SIZE)?;
        // At least PAGE_SIZE, so subtracting 1 cannot wrap.
        let align_mask = !(align.max(PAGE_SIZE).wrapping_sub(1));
        let found = self.ranges.iter().rev().find_map(|r| {
            let start = r.end.checked_sub(bytes)? & align_mask;
            let end = start.checked_add(bytes)?;
            (start >= r.start).then_some((start, end))
        });
        let (start, end) = found?;
        self.remove(start, end);
        Some(HostPhysAddr::new(start))
    }

    pub fn free_bytes(&self) -> u64 {
        self.ranges.iter().map(Range::len).sum()
    }

    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_merges_neighbours_and_trims_to_pages() {
        let mut f = FreeRanges::new();
        f.add(0x1000, 0x3000);
        f.add(0x5000, 0x8000);
        f.add(0x3000, 0x5000);
        assert_eq!(f.ranges(), &[Range { start: 0x1000, end: 0x8000 }]);
        f.add(0x10_0800, 0x10_2fff);
        assert_eq!(f.ranges()[1], Range { start: 0x10_1000, end: 0x10_2000 });
    }

    #[test]
    fn remove_splits_ranges() {
        let mut f = FreeRanges::new();
        f.add(0x0, 0x10_0000);
        f.remove(0x4000, 0x6000);
        f.remove(0x0, 0x1000);
        assert_eq!(f.ranges(), &[Range { start: 0x1000, end: 0x4000 }, Range { start: 0x6000, end: 0x10_0000 }]);
        assert_eq!(f.free_bytes(), 0x10_0000 - 0x3000);
    }

    #[test]
    fn take_prefers_high_memory_and_honours_alignment() {
        let mut f = FreeRanges::new();
        f.add(0x10_0000, 0x80_0000);
        f.add(0x100_0000, 0x130_0000);
        let big = f.take(0x20_0000, 0x20_0000).unwrap();
        // 0x130_0000 - 2 MiB = 0x110_0000, aligned down to 2 MiB.
        assert_eq!(big.raw(), 0x100_0000);
        let page = f.take(0x1000, 0x1000).unwrap();
        assert_eq!(page.raw(), 0x12f_f000);
        assert_eq!(f.ranges().last(), Some(&Range { start: 0x120_0000, end: 0x12f_f000 }));
    }

    #[test]
    fn take_fails_cleanly_when_nothing_fits() {
        let mut f = FreeRanges::new();
        f.add(0x1000, 0x3000);
        assert_eq!(f.take(0x4000, 0x1000), None);
        assert_eq!(f.take(u64::MAX, 0x1000), None);
        assert_eq!(f.free_bytes(), 0x2000);
    }

    #[test]
    fn table_overflow_is_accounted_not_lost_silently() {
        let mut f = FreeRanges::new();
        for i in 0..(MAX_RANGES as u64 + 3) {
            f.add(i * 0x10_000, i * 0x10_000 + 0x1000);
        }
        assert_eq!(f.ranges().len(), MAX_RANGES);
        assert_eq!(f.dropped_bytes(), 3 * 0x1000);
    }

    #[test]
    fn overlapping_adds_are_joined_not_duplicated() {
        let mut f = FreeRanges::new();
        f.add(0x1000, 0x5000);
        f.add(0x3000, 0x8000);
        f.add(0x2000, 0x3000);
        assert_eq!(f.ranges(), &[Range { start: 0x1000, end: 0x8000 }]);
        f.add(0xa000, 0xc000);
        f.add(0x0, 0x10_000);
        assert_eq!(f.ranges(), &[Range { start: 0x0, end: 0x10_000 }]);
        assert_eq!(f.free_bytes(), 0x10_000);
    }

    #[test]
    fn edge_of_address_space_and_inverted_ranges_are_harmless() {
        let mut f = FreeRanges::new();
        f.add(u64::MAX - 0x10, u64::MAX);
        assert_eq!(f.ranges(), &[]);
        f.add(0x8000, 0x2000);
        assert_eq!(f.ranges(), &[]);
        f.add(0, u64::MAX);
        // The last page boundary below 2^64.
        let top = !(PAGE_SIZE - 1);
        assert_eq!(f.ranges(), &[Range { start: 0, end: top }]);
        f.remove(0x8000, 0x2000);
        f.remove(0x5000, 0x5000);
        assert_eq!(f.ranges(), &[Range { start: 0, end: top }]);
        f.remove(u64::MAX - 5, u64::MAX);
        assert_eq!(f.ranges(), &[Range { start: 0, end: top }]);
        f.remove(top - 1, u64::MAX);
        assert_eq!(f.ranges(), &[Range { start: 0, end: top - PAGE_SIZE }]);
        assert_eq!(f.take(u64::MAX - 0xff, PAGE_SIZE), None);
        assert_eq!(f.take(PAGE_SIZE, u64::MAX), Some(HostPhysAddr::new(0)));
        assert_eq!(f.ranges(), &[Range { start: PAGE_SIZE, end: top - PAGE_SIZE }]);
    }

    /// Arbitrary maps (any start and end, overlapping, inverted, near 2^64) never panic
    /// and always leave a sorted table of whole pages with gaps between ranges.
    #[test]
    fn arbitrary_inputs_keep_the_table_well_formed() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut f = FreeRanges::new();
            for _ in 0..400 {
                let pick = next();
                // Mostly small addresses (so ranges meet), sometimes anywhere.
                let mut addr = || if pick & 0x100 == 0 { next() % 0x40_0000 } else { next() };
                let (a, b) = (addr(), addr());
                match pick % 4 {
                    0 | 1 => f.add(a, b),
                    2 => f.remove(a, b),
                    _ => {
                        let before = f.free_bytes();
                        if let Some(pa) = f.take(a % 0x2_0000, 1 << (b % 24)) {
                            assert!(pa.raw() % PAGE_SIZE == 0);
                            assert!(f.free_bytes() < before);
                        }
                    }
                }
                for r in f.ranges() {
                    assert!(r.start % PAGE_SIZE == 0 && r.end % PAGE_SIZE == 0 && r.start < r.end, "{r:?}");
                }
                for w in f.ranges().windows(2) {
                    assert!(w[0].end < w[1].start, "{w:?}");
                }
            }
        }
    }
}
