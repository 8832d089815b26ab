//! Nested (stage-2) page tables: GPA → HPA with guest permissions.
//!
//! AMD NPT uses the ordinary long-mode 4-level format (APM Vol. 2 15.25.5): every guest
//! access is treated as a user access, so USER must be set at every level, and the
//! permissions of all levels are combined, so non-leaf entries grant everything
//! (PRESENT | WRITABLE | USER) and the leaf carries the region's rights (WRITABLE, NX).
//! Leaves are 2 MiB where GPA and HPA are both 2 MiB-aligned and at least 2 MiB remain,
//! 4 KiB otherwise. The builder is generic over [`FrameSource`], so it runs on the host
//! against a fake in tests. Intel EPT would plug in a different entry encoding.
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use super::addr::{GuestPhysAddr, HostPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
use super::frames::FrameSource;
use super::guest::{GuestMemoryMap, Perms};

/// Long-mode page-table entry bits (APM Vol. 2 5.3.3, Figure 5-18 to 5-24).
pub mod entry {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// Page size: a 2 MiB leaf in a PDE, 1 GiB in a PDPTE.
    pub const HUGE: u64 = 1 << 7;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Physical address bits 51:12.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Permissions of intermediate entries.
    pub const TABLE: u64 = PRESENT | WRITABLE | USER;
}

/// Guest-physical addresses above this are not translatable with 4-level tables.
pub const GPA_LIMIT: u64 = 1 << 48;
/// Host-physical addresses must fit the entry's address field.
pub const HPA_LIMIT: u64 = 1 << 52;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NptError {
    /// The frame source is exhausted.
    OutOfFrames,
    /// Addresses or length are not 4 KiB-aligned, or the length is 0.
    Misaligned,
    /// The range exceeds the 48-bit GPA space or the 52-bit HPA space.
    OutOfRange,
    /// Part of the range is already mapped.
    AlreadyMapped { gpa: GuestPhysAddr },
    /// Stage-2 tables cannot express a region without read permission.
    NotReadable,
}

/// A successful [`NestedPageTable::translate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub hpa: HostPhysAddr,
    pub writable: bool,
    pub executable: bool,
    pub page_size: u64,
}

/// A nested page table owning its table frames (not the frames it maps).
#[derive(Debug)]
pub struct NestedPageTable {
    root: HostPhysAddr,
}

/// Index of `gpa` in the table at `level` (4 = PML4 … 1 = PT).
fn index(gpa: u64, level: u32) -> usize {
    let shift = 12u32.wrapping_add(9u32.wrapping_mul(level.wrapping_sub(1)));
    ((gpa >> shift) & 0x1ff) as usize
}

impl NestedPageTable {
    pub fn new<F: FrameSource>(frames: &mut F) -> Result<Self, NptError> {
        let root = frames.alloc_zeroed().ok_or(NptError::OutOfFrames)?;
        log::debug!(target: "npt", "new nested page table, root {root}");
        Ok(NestedPageTable { root })
    }

    /// The value for nCR3 / the EPT pointer's address field.
    pub fn root(&self) -> HostPhysAddr {
        self.root
    }

    /// Maps every region of `map`.
    pub fn map_all<F: FrameSource>(&mut self, frames: &mut F, map: &GuestMemoryMap) -> Result<(), NptError> {
        self.map_all_tracking(frames, map, None)
    }

    /// Maps every region of `map`; the region starting at `tracked` (if any) gets 4 KiB
    /// leaves only, so [`Self::take_dirty`] can tell its pages apart.
    pub fn map_all_tracking<F: FrameSource>(
        &mut self,
        frames: &mut F,
        map: &GuestMemoryMap,
        tracked: Option<GuestPhysAddr>,
    ) -> Result<(), NptError> {
        for r in map.regions() {
            let small = Some(r.gpa()) == tracked;
            self.map_range_with(frames, r.gpa(), r.hpa(), r.len_bytes(), r.perms(), small)?;
        }
        Ok(())
    }

    /// Maps `[gpa, gpa + len_bytes)` to `[hpa, ...)`. On error the part already mapped
    /// stays mapped (the caller tears the table down).
    pub fn map_range<F: FrameSource>(
        &mut self,
        frames: &mut F,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len_bytes: u64,
        perms: Perms,
    ) -> Result<(), NptError> {
        self.map_range_with(frames, gpa, hpa, len_bytes, perms, false)
    }

    fn map_range_with<F: FrameSource>(
        &mut self,
        frames: &mut F,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len_bytes: u64,
        perms: Perms,
        small_only: bool,
    ) -> Result<(), NptError> {
        if !perms.read {
            return Err(NptError::NotReadable);
        }
        if !gpa.is_aligned(PAGE_SIZE) || !hpa.is_aligned(PAGE_SIZE) || !len_bytes.is_multiple_of(PAGE_SIZE) {
            return Err(NptError::Misaligned);
        }
        if len_bytes == 0 {
            return Err(NptError::Misaligned);
        }
        let gpa_end = gpa.raw().checked_add(len_bytes).ok_or(NptError::OutOfRange)?;
        let hpa_end = hpa.raw().checked_add(len_bytes).ok_or(NptError::OutOfRange)?;
        if gpa_end > GPA_LIMIT || hpa_end > HPA_LIMIT {
            return Err(NptError::OutOfRange);
        }
        let mut leaf_flags = entry::PRESENT | entry::USER;
        if perms.write {
            leaf_flags |= entry::WRITABLE;
        }
        if !perms.exec {
            leaf_flags |= entry::NO_EXECUTE;
        }
        let (mut g, mut h) = (gpa.raw(), hpa.raw());
        let (mut large, mut small) = (0u64, 0u64);
        while g < gpa_end {
            let remaining = gpa_end.wrapping_sub(g);
            let step = if !small_only
                && g % LARGE_PAGE_SIZE == 0
                && h % LARGE_PAGE_SIZE == 0
                && remaining >= LARGE_PAGE_SIZE
            {
                self.set_leaf(frames, g, 2, h | leaf_flags | entry::HUGE)?;
                large = large.wrapping_add(1);
                LARGE_PAGE_SIZE
            } else {
                self.set_leaf(frames, g, 1, h | leaf_flags)?;
                small = small.wrapping_add(1);
                PAGE_SIZE
            };
            g = g.wrapping_add(step);
            h = h.wrapping_add(step);
        }
        log::debug!(target: "npt", "mapped {gpa}+{len_bytes:#x} -> {hpa} ({large} x 2M, {small} x 4K)");
        Ok(())
    }

    /// Writes a leaf at `level` (1 = 4 KiB, 2 = 2 MiB), creating tables on the way.
    fn set_leaf<F: FrameSource>(&mut self, frames: &mut F, gpa: u64, level: u32, value: u64) -> Result<(), NptError> {
        let already = NptError::AlreadyMapped { gpa: GuestPhysAddr::new(gpa) };
        let mut table = self.root;
        let mut lvl = 4u32;
        while lvl > level {
            let idx = index(gpa, lvl);
            let current = *frames.table_mut(table).get(idx).ok_or(NptError::OutOfRange)?;
            table = if current & entry::PRESENT == 0 {
                let next = frames.alloc_zeroed().ok_or(NptError::OutOfFrames)?;
                if let Some(slot) = frames.table_mut(table).get_mut(idx) {
                    *slot = next.raw() | entry::TABLE;
                }
                next
            } else if current & entry::HUGE != 0 {
                return Err(already);
            } else {
                HostPhysAddr::new(current & entry::ADDR_MASK)
            };
            lvl = lvl.wrapping_sub(1);
        }
        let slot = frames.table_mut(table).get_mut(index(gpa, level)).ok_or(NptError::OutOfRange)?;
        if *slot & entry::PRESENT != 0 {
            return Err(already);
        }
        *slot = value;
        Ok(())
    }

    /// Removes the leaves mapping `[gpa, gpa + len_bytes)`; unmapped pages in the range
    /// are skipped. A 2 MiB leaf must lie wholly inside the range (this never splits
    /// one): otherwise nothing after it is touched and `Misaligned` is returned. Tables
    /// stay allocated (freed by [`Self::destroy`]). The caller flushes the guest's TLB.
    pub fn unmap_range<F: FrameSource>(
        &mut self,
        frames: &mut F,
        gpa: GuestPhysAddr,
        len_bytes: u64,
    ) -> Result<(), NptError> {
        if !gpa.is_aligned(PAGE_SIZE) || !len_bytes.is_multiple_of(PAGE_SIZE) || len_bytes == 0 {
            return Err(NptError::Misaligned);
        }
        let end = gpa.raw().checked_add(len_bytes).ok_or(NptError::OutOfRange)?;
        if end > GPA_LIMIT {
            return Err(NptError::OutOfRange);
        }
        let mut g = gpa.raw();
        while g < end {
            let step = match self.leaf_table(frames, g) {
                Some((table, 1)) => {
                    if let Some(e) = frames.table_mut(table).get_mut(index(g, 1)) {
                        *e = 0;
                    }
                    PAGE_SIZE
                }
                Some((table, _)) => {
                    let fits = g.is_multiple_of(LARGE_PAGE_SIZE) && end.wrapping_sub(g) >= LARGE_PAGE_SIZE;
                    if !fits {
                        return Err(NptError::Misaligned);
                    }
                    if let Some(e) = frames.table_mut(table).get_mut(index(g, 2)) {
                        *e = 0;
                    }
                    LARGE_PAGE_SIZE
                }
                None => PAGE_SIZE,
            };
            g = g.saturating_add(step);
        }
        log::debug!(target: "npt", "unmapped {gpa}+{len_bytes:#x}");
        Ok(())
    }

    /// Walks the table like the MMU would.
    pub fn translate<F: FrameSource>(&self, frames: &mut F, gpa: GuestPhysAddr) -> Option<Translation> {
        if gpa.raw() >= GPA_LIMIT {
            return None;
        }
        let mut table = self.root;
        let mut writable = true;
        let mut executable = true;
        for level in (1..=4u32).rev() {
            let e = *frames.table_mut(table).get(index(gpa.raw(), level))?;
            if e & entry::PRESENT == 0 || e & entry::USER == 0 {
                return None;
            }
            writable &= e & entry::WRITABLE != 0;
            executable &= e & entry::NO_EXECUTE == 0;
            let leaf = level == 1 || (e & entry::HUGE != 0 && level <= 3);
            if leaf {
                let page_size = 1u64 << 12u32.wrapping_add(9u32.wrapping_mul(level.wrapping_sub(1)));
                let base = e & entry::ADDR_MASK & !(page_size.wrapping_sub(1));
                let off = gpa.raw() & page_size.wrapping_sub(1);
                return Some(Translation { hpa: HostPhysAddr::new(base | off), writable, executable, page_size });
            }
            table = HostPhysAddr::new(e & entry::ADDR_MASK);
        }
        None
    }

    /// Reads and clears the Dirty bits of the `npages` 4 KiB pages from `gpa`: bit `i` of
    /// `bitmap` is set when page `i` was written since the last call (a 2 MiB leaf
    /// marks all its pages). Returns the number of dirty pages. The processor caches
    /// the Dirty state in its TLB (APM Vol. 2 15.25.5: nested table A/D bits are
    /// updated like host ones), so the caller must flush the guest's TLB before it runs
    /// again, or later writes go unnoticed.
    pub fn take_dirty<F: FrameSource>(
        &mut self,
        frames: &mut F,
        gpa: GuestPhysAddr,
        npages: usize,
        bitmap: &mut [u64],
    ) -> usize {
        let mut dirty = 0usize;
        let mut page = 0usize;
        while page < npages {
            let Some(g) = (page as u64).checked_mul(PAGE_SIZE).and_then(|o| gpa.raw().checked_add(o)) else { break };
            // Pages until the end of this 2 MiB block (one page table covers it).
            let in_block = ((LARGE_PAGE_SIZE.wrapping_sub(g % LARGE_PAGE_SIZE)) / PAGE_SIZE) as usize;
            let count = in_block.min(npages.wrapping_sub(page));
            match self.leaf_table(frames, g) {
                Some((table, 1)) => {
                    let first = index(g, 1);
                    for i in 0..count {
                        let Some(e) = frames.table_mut(table).get_mut(first.wrapping_add(i)) else { break };
                        if *e & entry::PRESENT != 0 && *e & entry::DIRTY != 0 {
                            *e &= !entry::DIRTY;
                            set_bit(bitmap, page.wrapping_add(i));
                            dirty = dirty.wrapping_add(1);
                        }
                    }
                }
                Some((table, _)) => {
                    if let Some(e) = frames.table_mut(table).get_mut(index(g, 2))
                        && *e & entry::DIRTY != 0
                    {
                        *e &= !entry::DIRTY;
                        for i in 0..count {
                            set_bit(bitmap, page.wrapping_add(i));
                        }
                        dirty = dirty.wrapping_add(count);
                    }
                }
                None => {}
            }
            page = page.wrapping_add(count.max(1));
        }
        dirty
    }

    /// The table holding the leaf for `gpa` and its level (1 = page table, 2 = a page
    /// directory holding a 2 MiB leaf), if `gpa` is mapped below 1 GiB leaves.
    fn leaf_table<F: FrameSource>(&self, frames: &mut F, gpa: u64) -> Option<(HostPhysAddr, u32)> {
        let mut table = self.root;
        for level in [4u32, 3, 2] {
            let e = *frames.table_mut(table).get(index(gpa, level))?;
            if e & entry::PRESENT == 0 {
                return None;
            }
            if e & entry::HUGE != 0 {
                return (level == 2).then_some((table, 2));
            }
            table = HostPhysAddr::new(e & entry::ADDR_MASK);
        }
        Some((table, 1))
    }

    /// Returns every table frame to `frames`.
    pub fn destroy<F: FrameSource>(self, frames: &mut F) {
        let freed = free_table(frames, self.root, 4);
        log::debug!(target: "npt", "nested page table {} freed ({freed} frames)", self.root);
    }
}

fn set_bit(bitmap: &mut [u64], bit: usize) {
    if let Some(word) = bitmap.get_mut(bit / 64) {
        *word |= 1u64 << (bit % 64);
    }
}

/// Frees the subtree below `table` (at `level`) and the table itself; returns the
/// number of frames freed.
fn free_table<F: FrameSource>(frames: &mut F, table: HostPhysAddr, level: u32) -> usize {
    let mut freed = 1usize;
    if level > 1 {
        let children: heapless::Vec<HostPhysAddr, 512> = frames
            .table_mut(table)
            .iter()
            .filter(|e| **e & entry::PRESENT != 0 && **e & entry::HUGE == 0)
            .map(|e| HostPhysAddr::new(*e & entry::ADDR_MASK))
            .collect();
        for child in children {
            freed = freed.wrapping_add(free_table(frames, child, level.wrapping_sub(1)));
        }
    }
    frames.free(table);
    freed
}

/// A [`FrameSource`] over boxed, 4 KiB-aligned tables, for host tests. Frame `n` has
/// the fake physical address `base + n * 4096`; it can be told to fail after a number
/// of allocations.
#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::expect_used)]
pub(crate) mod fake {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    #[repr(C, align(4096))]
    pub struct Page(pub [u64; 512]);

    pub struct FakeFrames {
        pub base: u64,
        pub pages: Vec<Option<Box<Page>>>,
        pub free_list: Vec<usize>,
        pub allocated: usize,
        pub limit: usize,
    }

    impl FakeFrames {
        pub fn new() -> Self {
            FakeFrames { base: 0x100_0000, pages: Vec::new(), free_list: Vec::new(), allocated: 0, limit: usize::MAX }
        }
        pub fn live(&self) -> usize {
            self.pages.iter().filter(|p| p.is_some()).count()
        }
        fn slot(&self, frame: HostPhysAddr) -> usize {
            ((frame.raw() - self.base) / PAGE_SIZE) as usize
        }
    }

    impl FrameSource for FakeFrames {
        fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
            if self.allocated >= self.limit {
                return None;
            }
            self.allocated += 1;
            let slot = self.free_list.pop().unwrap_or(self.pages.len());
            if slot == self.pages.len() {
                self.pages.push(None);
            }
            self.pages[slot] = Some(Box::new(Page([0; 512])));
            Some(HostPhysAddr::new(self.base + slot as u64 * PAGE_SIZE))
        }
        fn free(&mut self, frame: HostPhysAddr) {
            let slot = self.slot(frame);
            assert!(self.pages[slot].take().is_some(), "double free of {frame}");
            self.free_list.push(slot);
        }
        fn table_mut(&mut self, frame: HostPhysAddr) -> &mut [u64; 512] {
            let slot = self.slot(frame);
            &mut self.pages[slot].as_mut().expect("live frame").0
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::fake::FakeFrames;
    use super::*;
    use crate::memory::guest::GuestRegion;
    use alloc::vec;

    const MIB: u64 = 1 << 20;

    fn g(x: u64) -> GuestPhysAddr {
        GuestPhysAddr::new(x)
    }
    fn h(x: u64) -> HostPhysAddr {
        HostPhysAddr::new(x)
    }

    #[test]
    fn aligned_ranges_use_2m_pages() {
        let mut f = FakeFrames::new();
        let mut npt = NestedPageTable::new(&mut f).unwrap();
        npt.map_range(&mut f, g(0), h(16 * MIB), 8 * MIB, Perms::RWX).unwrap();
        // PML4 + PDPT + PD only.
        assert_eq!(f.live(), 3);
        let t = npt.translate(&mut f, g(0x20_1234)).unwrap();
        assert_eq!(t.hpa, h(16 * MIB + 0x20_1234));
        assert_eq!(t.page_size, LARGE_PAGE_SIZE);
        assert!(t.writable && t.executable);
        assert_eq!(npt.translate(&mut f, g(8 * MIB)), None);
        // USER + WRITABLE + PRESENT at every level.
        let pml4e = f.table_mut(npt.root())[0];
        assert_eq!(pml4e & 0x7, 0x7);
    }

    #[test]
    fn misaligned_parts_fall_back_to_4k() {
        let mut f = FakeFrames::new();
        let mut npt = NestedPageTable::new(&mut f).unwrap();
        // GPA 1M..5M -> HPA 33M..37M: 1M of 4K pages, one 2M page (2M..4M), 1M of 4K.
        npt.map_range(&mut f, g(MIB), h(33 * MIB), 4 * MIB, Perms::RW).unwrap();
        let a = npt.translate(&mut f, g(MIB + 0x5000)).unwrap();
        assert_eq!((a.hpa, a.page_size), (h(33 * MIB + 0x5000), PAGE_SIZE));
        let b = npt.translate(&mut f, g(3 * MIB)).unwrap();
        assert_eq!((b.hpa, b.page_size), (h(35 * MIB), LARGE_PAGE_SIZE));
        let c = npt.translate(&mut f, g(4 * MIB + 0xfff)).unwrap();
        assert_eq!((c.hpa, c.page_size), (h(36 * MIB + 0xfff), PAGE_SIZE));
        assert!(!c.executable && c.writable);
        // HPA not 2M-aligned relative to GPA: all 4K.
        let mut npt2 = NestedPageTable::new(&mut f).unwrap();
        npt2.map_range(&mut f, g(0), h(0x1000), 2 * MIB, Perms::R).unwrap();
        let d = npt2.translate(&mut f, g(0x1f_f000)).unwrap();
        assert_eq!((d.hpa, d.page_size, d.writable), (h(0x20_0000), PAGE_SIZE, false));
    }

    #[test]
    fn map_all_regions_and_teardown_returns_every_frame() {
        let mut f = FakeFrames::new();
        let map = GuestMemoryMap::new(vec![
            GuestRegion::new(g(0), h(64 * MIB), 4 * MIB, Perms::RWX).unwrap(),
            GuestRegion::new(g(0xfff0_0000), h(0x7000_0000), MIB, Perms::RX).unwrap(),
            GuestRegion::new(g(1 << 40), h(128 * MIB), 0x3000, Perms::RW).unwrap(),
        ])
        .unwrap();
        let mut npt = NestedPageTable::new(&mut f).unwrap();
        npt.map_all(&mut f, &map).unwrap();
        assert_eq!(npt.translate(&mut f, g(0xfff0_1008)).unwrap().hpa, h(0x7000_1008));
        assert!(!npt.translate(&mut f, g(0xfff0_1008)).unwrap().writable);
        assert_eq!(npt.translate(&mut f, g((1 << 40) + 0x2004)).unwrap().hpa, h(128 * MIB + 0x2004));
        assert!(f.live() > 3);
        npt.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }

    /// Sets the Dirty bit of the leaf mapping `gpa`, as the processor does on a write.
    fn write_to(f: &mut FakeFrames, npt: &NestedPageTable, gpa: u64) {
        let (table, level) = npt.leaf_table(f, gpa).unwrap();
        f.table_mut(table)[index(gpa, level)] |= entry::DIRTY | entry::ACCESSED;
    }

    #[test]
    fn tracked_regions_use_4k_pages_and_report_dirty_pages_once() {
        let mut f = FakeFrames::new();
        let fb = g(0xb000_0000);
        let map = GuestMemoryMap::new(vec![
            GuestRegion::new(g(0), h(64 * MIB), 4 * MIB, Perms::RWX).unwrap(),
            GuestRegion::new(fb, h(128 * MIB), 4 * MIB, Perms::RW).unwrap(),
        ])
        .unwrap();
        let mut npt = NestedPageTable::new(&mut f).unwrap();
        npt.map_all_tracking(&mut f, &map, Some(fb)).unwrap();
        assert_eq!(npt.translate(&mut f, g(0x1000)).unwrap().page_size, LARGE_PAGE_SIZE);
        assert_eq!(npt.translate(&mut f, fb).unwrap().page_size, PAGE_SIZE);
        let npages = 1024;
        let mut bits = [0u64; 16];
        assert_eq!(npt.take_dirty(&mut f, fb, npages, &mut bits), 0);
        for page in [0u64, 1, 511, 512, 1023] {
            write_to(&mut f, &npt, fb.raw() + page * PAGE_SIZE + 8);
        }
        assert_eq!(npt.take_dirty(&mut f, fb, npages, &mut bits), 5);
        assert_eq!(bits[0], 0b11);
        assert_eq!(bits[7], 1 << 63);
        assert_eq!(bits[8], 1);
        assert_eq!(bits[15], 1 << 63);
        // Read and cleared: nothing new until the next write.
        let mut again = [0u64; 16];
        assert_eq!(npt.take_dirty(&mut f, fb, npages, &mut again), 0);
        assert_eq!(again, [0; 16]);
        // A 2 MiB leaf marks all of its pages; an unmapped range reports nothing.
        write_to(&mut f, &npt, 0x20_0000);
        let mut big = [0u64; 16];
        assert_eq!(npt.take_dirty(&mut f, g(0), npages, &mut big), 512);
        assert_eq!(&big[..8], &[0; 8]);
        assert_eq!(&big[8..], &[u64::MAX; 8]);
        assert_eq!(npt.take_dirty(&mut f, g(1 << 40), 4, &mut big), 0);
        npt.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }

    #[test]
    fn unmapping_removes_leaves_and_allows_a_new_mapping() {
        let mut f = FakeFrames::new();
        let mut npt = NestedPageTable::new(&mut f).unwrap();
        // A BAR-like range: one 2 MiB leaf and 4 KiB leaves on either side.
        npt.map_range(&mut f, g(0xc01f_f000), h(0xfd1f_f000), 2 * MIB + 0x2000, Perms::RW).unwrap();
        assert_eq!(npt.translate(&mut f, g(0xc020_0000)).unwrap().page_size, LARGE_PAGE_SIZE);
        // Cutting into the 2 MiB leaf is refused rather than splitting it.
        assert_eq!(npt.unmap_range(&mut f, g(0xc030_0000), 0x1000), Err(NptError::Misaligned));
        assert!(npt.translate(&mut f, g(0xc030_0000)).is_some());
        npt.unmap_range(&mut f, g(0xc01f_f000), 2 * MIB + 0x2000).unwrap();
        for a in [0xc01f_f000, 0xc020_0000, 0xc03f_ffff, 0xc040_0000] {
            assert_eq!(npt.translate(&mut f, g(a)), None, "{a:#x}");
        }
        // Unmapped pages are skipped; the range can be mapped again elsewhere.
        npt.unmap_range(&mut f, g(0xd000_0000), 0x1000).unwrap();
        npt.map_range(&mut f, g(0xc020_0000), h(0xfd20_0000), 2 * MIB, Perms::RW).unwrap();
        assert_eq!(npt.translate(&mut f, g(0xc020_0010)).unwrap().hpa, h(0xfd20_0010));
        assert_eq!(npt.unmap_range(&mut f, g(0x800), 0x1000), Err(NptError::Misaligned));
        assert_eq!(npt.unmap_range(&mut f, g(GPA_LIMIT - 0x1000), 0x2000), Err(NptError::OutOfRange));
        npt.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let mut f = FakeFrames::new();
        let mut npt = NestedPageTable::new(&mut f).unwrap();
        assert_eq!(npt.map_range(&mut f, g(0x800), h(0), 0x1000, Perms::RW), Err(NptError::Misaligned));
        assert_eq!(npt.map_range(&mut f, g(GPA_LIMIT - 0x1000), h(0), 0x2000, Perms::RW), Err(NptError::OutOfRange));
        let no_read = Perms { read: false, ..Perms::RW };
        assert_eq!(npt.map_range(&mut f, g(0), h(0), 0x1000, no_read), Err(NptError::NotReadable));
        npt.map_range(&mut f, g(0), h(0), 2 * MIB, Perms::RW).unwrap();
        assert_eq!(
            npt.map_range(&mut f, g(0x1000), h(0), 0x1000, Perms::RW),
            Err(NptError::AlreadyMapped { gpa: g(0x1000) })
        );
        f.limit = f.allocated;
        assert_eq!(npt.map_range(&mut f, g(1 << 39), h(0), 0x1000, Perms::RW), Err(NptError::OutOfFrames));
        npt.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }
}
