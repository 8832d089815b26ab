//! Host-test physical memory: a [`FrameSource`] over boxed, 4 KiB-aligned pages keyed by
//! a fake physical address, with contiguous allocation and word access by address. Page
//! tables, vCPU frames and the simulated IOMMU units (which read their tables from it
//! the way the hardware would) all run on it in unit tests.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;

use super::addr::{HostPhysAddr, PAGE_SIZE};
use super::frames::{FrameSource, Table};

/// One frame; aligned like a real one, since vCPU code views frames as 4 KiB-aligned
/// hardware structures.
#[repr(C, align(4096))]
struct Page(Table);

#[derive(Default)]
pub struct FakeFrames {
    pages: BTreeMap<u64, Box<Page>>,
    next: u64,
    /// Fail allocations that would make more than this many pages live.
    pub limit: Option<usize>,
}

impl core::fmt::Debug for FakeFrames {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FakeFrames({} live)", self.live())
    }
}

impl FakeFrames {
    pub fn new() -> Self {
        Self { next: 0x4000_0000, ..Self::default() }
    }

    /// Pages handed out and not freed.
    pub fn live(&self) -> usize {
        self.pages.len()
    }

    /// `npages` zeroed, physically contiguous pages (addresses are never reused).
    pub fn alloc_pages(&mut self, npages: usize) -> Option<HostPhysAddr> {
        if self.limit.is_some_and(|l| self.live() + npages > l) {
            return None;
        }
        let base = self.next;
        for i in 0..npages as u64 {
            self.pages.insert(base + i * PAGE_SIZE, Box::new(Page([0; 512])));
        }
        self.next += npages as u64 * PAGE_SIZE;
        Some(HostPhysAddr::new(base))
    }

    /// The word at `pa`; all-ones outside live pages, like a read of unbacked memory.
    pub fn read_u64(&self, pa: u64) -> u64 {
        self.pages.get(&(pa & !0xfff)).map_or(u64::MAX, |p| p.0[((pa & 0xfff) / 8) as usize])
    }

    /// Writes outside live pages are dropped.
    pub fn write_u64(&mut self, pa: u64, value: u64) {
        if let Some(p) = self.pages.get_mut(&(pa & !0xfff)) {
            p.0[((pa & 0xfff) / 8) as usize] = value;
        }
    }

    pub fn write_u32(&mut self, pa: u64, value: u32) {
        let word = self.read_u64(pa & !7);
        let shift = (pa & 4) * 8;
        self.write_u64(pa & !7, (word & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift));
    }

    pub fn read_u32(&self, pa: u64) -> u32 {
        (self.read_u64(pa & !7) >> ((pa & 4) * 8)) as u32
    }
}

impl FrameSource for FakeFrames {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        self.alloc_pages(1)
    }
    fn free(&mut self, frame: HostPhysAddr) {
        assert!(self.pages.remove(&frame.raw()).is_some(), "free of unknown frame {frame}");
    }
    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table {
        &mut self.pages.get_mut(&frame.raw()).expect("live frame").0
    }
}

mod tests {
    use super::*;

    #[test]
    fn frames_are_zeroed_aligned_counted_and_limited() {
        let mut f = FakeFrames::new();
        let a = f.alloc_zeroed().unwrap();
        f.table_mut(a)[3] = 7;
        assert_eq!(f.read_u64(a.raw() + 24), 7);
        assert_eq!(f.table_mut(a).as_ptr() as usize % 4096, 0);
        let run = f.alloc_pages(3).unwrap();
        assert_eq!(f.live(), 4);
        f.write_u32(run.raw() + 2 * PAGE_SIZE + 4, 0xdead_beef);
        assert_eq!(f.read_u64(run.raw() + 2 * PAGE_SIZE), 0xdead_beef_0000_0000);
        assert_eq!(f.read_u64(0x10), u64::MAX);
        f.limit = Some(f.live());
        assert_eq!(f.alloc_zeroed(), None);
        f.free(a);
        assert_eq!(f.live(), 3);
        let b = f.alloc_zeroed().unwrap();
        assert_ne!(b, a, "addresses are not reused");
        assert_eq!(f.table_mut(b)[3], 0);
    }
}
