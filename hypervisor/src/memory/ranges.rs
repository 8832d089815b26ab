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
    pub fn len(&self) -> u64 {
        self.end - self.start
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

    /// Adds [start, end), shrunk to whole pages. Overlaps with existing ranges must not
    /// happen (the memory map is non-overlapping); touching ranges are merged.
    pub fn add(&mut self, start: u64, end: u64) {
        let start = start.next_multiple_of(PAGE_SIZE);
        let end = end & !(PAGE_SIZE - 1);
        if end <= start {
            return;
        }
        let pos = self.ranges.iter().position(|r| r.start > start).unwrap_or(self.ranges.len());
        if pos > 0 && self.ranges[pos - 1].end == start {
            self.ranges[pos - 1].end = end;
            self.merge_at(pos - 1);
            return;
        }
        if pos < self.ranges.len() && self.ranges[pos].start == end {
            self.ranges[pos].start = start;
            return;
        }
        if self.ranges.insert(pos, Range { start, end }).is_err() {
            self.dropped_bytes += end - start;
        }
    }

    fn merge_at(&mut self, i: usize) {
        if i + 1 < self.ranges.len() && self.ranges[i].end == self.ranges[i + 1].start {
            self.ranges[i].end = self.ranges[i + 1].end;
            self.ranges.remove(i + 1);
        }
    }

    /// Removes [start, end) from the free set (e.g. the hypervisor image, the
    /// framebuffer, the first MiB).
    pub fn remove(&mut self, start: u64, end: u64) {
        let start = start & !(PAGE_SIZE - 1);
        let end = end.next_multiple_of(PAGE_SIZE);
        let mut i = 0;
        while i < self.ranges.len() {
            let r = self.ranges[i];
            if r.end <= start || r.start >= end {
                i += 1;
                continue;
            }
            let left = Range { start: r.start, end: start.max(r.start) };
            let right = Range { start: end.min(r.end), end: r.end };
            self.ranges.remove(i);
            if !right.is_empty() && self.ranges.insert(i, right).is_err() {
                self.dropped_bytes += right.len();
            }
            if !left.is_empty() {
                if self.ranges.insert(i, left).is_err() {
                    self.dropped_bytes += left.len();
                } else {
                    i += 1;
                }
            }
            if !right.is_empty() {
                i += 1;
            }
        }
    }

    /// Takes `bytes` (a multiple of 4 KiB) aligned to `align`, from the highest range
    /// that can hold it (low memory is kept for things that need it: AP trampolines,
    /// 32-bit DMA).
    pub fn take(&mut self, bytes: u64, align: u64) -> Option<HostPhysAddr> {
        let bytes = bytes.checked_next_multiple_of(PAGE_SIZE)?;
        let align = align.max(PAGE_SIZE);
        for i in (0..self.ranges.len()).rev() {
            let r = self.ranges[i];
            let Some(start) = r.end.checked_sub(bytes).map(|s| s & !(align - 1)) else {
                continue;
            };
            if start < r.start {
                continue;
            }
            self.remove(start, start + bytes);
            return Some(HostPhysAddr::new(start));
        }
        None
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
}
