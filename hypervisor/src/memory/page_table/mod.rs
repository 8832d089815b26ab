//! The one page-table engine: address (guest-physical, or a device's DMA address, which
//! is the same here) → host-physical, for every table the hypervisor builds for a VM —
//! nested paging and the IOMMUs' DMA tables. The engine walks, maps, unmaps and frees;
//! a [`PteFormat`] says how entries are encoded (`npt.rs`; VT-d second-level and AMD-Vi
//! I/O page tables in `iommu/`), so a new kind of table is a new format, not a new
//! engine. Formats with a Dirty bit ([`DirtyTracking`]) add dirty-page tracking.
//!
//! Leaves are 2 MiB where the address and the host address are both 2 MiB-aligned, at
//! least 2 MiB remain and the table's [`Geometry`] allows them; 4 KiB otherwise. Tables
//! come from a [`FrameSource`], so the engine runs on the host against a fake in tests.
#![forbid(unsafe_code)]

pub mod ept;
pub mod format;
pub mod npt;

#[cfg(test)]
pub(crate) mod conformance;

use core::marker::PhantomData;

use alloc::vec::Vec;

pub use format::{ADDR_MASK, DirtyTracking, PteFormat};

use super::addr::{GuestPhysAddr, HostPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
use super::frames::FrameSource;
use super::guest::{GuestMemoryMap, Perms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The frame source is exhausted.
    OutOfFrames,
    /// The depth is not one of 2..=6 levels.
    BadGeometry,
    /// Addresses or length are not 4 KiB-aligned, the length is 0, or an unmap would
    /// split a 2 MiB leaf.
    Misaligned { gpa: GuestPhysAddr },
    /// The range exceeds the table's address space or the host addresses it can name.
    OutOfRange { gpa: GuestPhysAddr },
    /// Part of the range is already mapped.
    AlreadyMapped { gpa: GuestPhysAddr },
    /// The format cannot express the rights asked for (stage-2 tables cannot map a
    /// page without read permission, DMA tables one with neither read nor write).
    BadPerms { gpa: GuestPhysAddr },
}

/// The shape of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Depth: 3 = 39-bit, 4 = 48-bit address space, up to 6.
    pub levels: u8,
    /// Whether 2 MiB leaves may be used.
    pub large_pages: bool,
    /// Exclusive end of the host-physical addresses entries may name.
    pub hpa_limit: u64,
}

/// A successful [`PageTable::translate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub hpa: HostPhysAddr,
    /// The rights of every level combined, as the hardware combines them.
    pub perms: Perms,
    pub page_size: u64,
}

/// A page table owning its table frames (not the frames it maps).
#[derive(Debug)]
pub struct PageTable<F> {
    root: HostPhysAddr,
    geometry: Geometry,
    _format: PhantomData<F>,
}

/// Index of `addr` in the table at `level` (1 = the table of 4 KiB leaves).
fn index(addr: u64, level: u8) -> usize {
    ((addr >> level_shift(level)) & 0x1ff) as usize
}

/// log2 of the bytes an entry at `level` covers.
fn level_shift(level: u8) -> u32 {
    12u32.wrapping_add(9u32.wrapping_mul(u32::from(level).wrapping_sub(1)))
}

impl<F: PteFormat> PageTable<F> {
    /// An empty table.
    pub fn new<M: FrameSource + ?Sized>(frames: &mut M, geometry: Geometry) -> Result<Self, MapError> {
        if !(2..=6).contains(&geometry.levels) {
            return Err(MapError::BadGeometry);
        }
        let root = frames.alloc_zeroed().ok_or(MapError::OutOfFrames)?;
        log::debug!(target: F::LOG_TARGET, "new {}, root {root}", F::NAME);
        Ok(Self { root, geometry, _format: PhantomData })
    }

    /// The root table: nCR3, the EPT pointer's or a context/device table entry's
    /// address field.
    pub fn root(&self) -> HostPhysAddr {
        self.root
    }

    pub fn levels(&self) -> u8 {
        self.geometry.levels
    }

    /// Exclusive end of the address space these tables translate.
    pub fn address_limit(&self) -> u64 {
        1u64.checked_shl(level_shift(self.geometry.levels.saturating_add(1))).unwrap_or(u64::MAX)
    }

    /// Maps every region of `map` with its rights. A region granting none of the
    /// rights the format has is left out: an absent entry already denies everything.
    /// On error the part already mapped stays mapped (the caller destroys the table).
    pub fn map_all<M: FrameSource + ?Sized>(&mut self, frames: &mut M, map: &GuestMemoryMap) -> Result<(), MapError> {
        self.map_regions(frames, map, None)
    }

    fn map_regions<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        map: &GuestMemoryMap,
        small_pages_at: Option<GuestPhysAddr>,
    ) -> Result<(), MapError> {
        for r in map.regions() {
            if !r.perms().and(F::RIGHTS).any() {
                continue;
            }
            let large = self.geometry.large_pages && Some(r.gpa()) != small_pages_at;
            self.map_range_with(frames, r.gpa(), r.hpa(), r.len_bytes(), r.perms(), large)?;
        }
        Ok(())
    }

    /// Maps `[gpa, gpa + len_bytes)` to `[hpa, ..)`. On error the part already mapped
    /// stays mapped (the caller unmaps it or destroys the table).
    pub fn map_range<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len_bytes: u64,
        perms: Perms,
    ) -> Result<(), MapError> {
        self.map_range_with(frames, gpa, hpa, len_bytes, perms, self.geometry.large_pages)
    }

    fn map_range_with<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len_bytes: u64,
        perms: Perms,
        large_pages: bool,
    ) -> Result<(), MapError> {
        let perms = perms.and(F::RIGHTS);
        if F::leaf(HostPhysAddr::new(0), 1, perms).is_none() {
            return Err(MapError::BadPerms { gpa });
        }
        if !gpa.is_aligned(PAGE_SIZE) || !hpa.is_aligned(PAGE_SIZE) || !len_bytes.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned { gpa });
        }
        if len_bytes == 0 {
            return Err(MapError::Misaligned { gpa });
        }
        let out_of_range = MapError::OutOfRange { gpa };
        let gpa_end = gpa.raw().checked_add(len_bytes).ok_or(out_of_range)?;
        let hpa_end = hpa.raw().checked_add(len_bytes).ok_or(out_of_range)?;
        if gpa_end > self.address_limit() || hpa_end > self.geometry.hpa_limit {
            return Err(out_of_range);
        }
        let (mut g, mut h) = (gpa.raw(), hpa.raw());
        let (mut large, mut small) = (0u64, 0u64);
        while g < gpa_end {
            let two_mib = large_pages
                && g.is_multiple_of(LARGE_PAGE_SIZE)
                && h.is_multiple_of(LARGE_PAGE_SIZE)
                && gpa_end.wrapping_sub(g) >= LARGE_PAGE_SIZE;
            let (level, step) = if two_mib { (2, LARGE_PAGE_SIZE) } else { (1, PAGE_SIZE) };
            let leaf = F::leaf(HostPhysAddr::new(h), level, perms).ok_or(MapError::BadPerms { gpa })?;
            self.set_leaf(frames, g, level, leaf)?;
            if two_mib {
                large = large.wrapping_add(1);
            } else {
                small = small.wrapping_add(1);
            }
            g = g.wrapping_add(step);
            h = h.wrapping_add(step);
        }
        log::debug!(target: F::LOG_TARGET, "mapped {gpa}+{len_bytes:#x} -> {hpa} ({large} x 2M, {small} x 4K)");
        Ok(())
    }

    /// Writes a leaf at `level` (1 = 4 KiB, 2 = 2 MiB), creating tables on the way.
    fn set_leaf<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        gpa: u64,
        level: u8,
        value: u64,
    ) -> Result<(), MapError> {
        let already = MapError::AlreadyMapped { gpa: GuestPhysAddr::new(gpa) };
        let mut table = self.root;
        let mut lvl = self.geometry.levels;
        while lvl > level {
            let idx = index(gpa, lvl);
            let current = *frames.table_mut(table).get(idx).ok_or(already)?;
            table = if !F::is_present(current) {
                let next = frames.alloc_zeroed().ok_or(MapError::OutOfFrames)?;
                if let Some(slot) = frames.table_mut(table).get_mut(idx) {
                    *slot = F::table(next, lvl);
                }
                next
            } else if F::is_leaf(current, lvl) {
                return Err(already);
            } else {
                HostPhysAddr::new(current & ADDR_MASK)
            };
            lvl = lvl.wrapping_sub(1);
        }
        let slot = frames.table_mut(table).get_mut(index(gpa, level)).ok_or(already)?;
        if F::is_present(*slot) {
            return Err(already);
        }
        *slot = value;
        Ok(())
    }

    /// Removes the leaves mapping `[gpa, gpa + len_bytes)`; unmapped pages in the range
    /// are skipped. A 2 MiB leaf must lie wholly inside the range (this never splits
    /// one): otherwise nothing after it is touched and `Misaligned` is returned. Tables
    /// stay allocated (freed by [`Self::destroy`]). The caller flushes the TLBs.
    pub fn unmap_range<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        gpa: GuestPhysAddr,
        len_bytes: u64,
    ) -> Result<(), MapError> {
        if !gpa.is_aligned(PAGE_SIZE) || !len_bytes.is_multiple_of(PAGE_SIZE) || len_bytes == 0 {
            return Err(MapError::Misaligned { gpa });
        }
        let end = gpa.raw().checked_add(len_bytes).ok_or(MapError::OutOfRange { gpa })?;
        if end > self.address_limit() {
            return Err(MapError::OutOfRange { gpa });
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
                        return Err(MapError::Misaligned { gpa: GuestPhysAddr::new(g) });
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
        log::debug!(target: F::LOG_TARGET, "unmapped {gpa}+{len_bytes:#x}");
        Ok(())
    }

    /// Walks the table as the hardware would. `None` when `gpa` is unmapped or the
    /// walk grants no access.
    pub fn translate<M: FrameSource + ?Sized>(&self, frames: &mut M, gpa: GuestPhysAddr) -> Option<Translation> {
        if gpa.raw() >= self.address_limit() {
            return None;
        }
        let mut table = self.root;
        let mut perms = F::RIGHTS;
        for level in (1..=self.geometry.levels).rev() {
            let e = *frames.table_mut(table).get(index(gpa.raw(), level))?;
            if !F::is_present(e) {
                return None;
            }
            perms = perms.and(F::rights(e));
            if F::is_leaf(e, level) {
                let page_size = 1u64.checked_shl(level_shift(level))?;
                let base = e & ADDR_MASK & !page_size.wrapping_sub(1);
                let hpa = HostPhysAddr::new(base | (gpa.raw() & page_size.wrapping_sub(1)));
                return perms.any().then_some(Translation { hpa, perms, page_size });
            }
            table = HostPhysAddr::new(e & ADDR_MASK);
        }
        None
    }

    /// The table holding the leaf for `gpa` and its level (1 = a table of 4 KiB leaves,
    /// 2 = a table holding a 2 MiB leaf), if `gpa` is mapped below 1 GiB leaves.
    fn leaf_table<M: FrameSource + ?Sized>(&self, frames: &mut M, gpa: u64) -> Option<(HostPhysAddr, u8)> {
        let mut table = self.root;
        for level in (2..=self.geometry.levels).rev() {
            let e = *frames.table_mut(table).get(index(gpa, level))?;
            if !F::is_present(e) {
                return None;
            }
            if F::is_leaf(e, level) {
                return (level == 2).then_some((table, 2));
            }
            table = HostPhysAddr::new(e & ADDR_MASK);
        }
        Some((table, 1))
    }

    /// The table of 4 KiB leaves that holds `gpa`'s entry, made (with the tables
    /// above it) if missing; no leaf is written. Fails where a 2 MiB leaf covers
    /// `gpa`. A caller that fills the entries itself (an IOMMU's transfer window)
    /// writes them with the format's `leaf`.
    pub fn leaf_table_at<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        gpa: u64,
    ) -> Result<HostPhysAddr, MapError> {
        let at = GuestPhysAddr::new(gpa);
        if gpa >= self.address_limit() {
            return Err(MapError::OutOfRange { gpa: at });
        }
        let mut table = self.root;
        let mut lvl = self.geometry.levels;
        while lvl > 1 {
            let idx = index(gpa, lvl);
            let current = *frames.table_mut(table).get(idx).ok_or(MapError::OutOfRange { gpa: at })?;
            table = if !F::is_present(current) {
                let next = frames.alloc_zeroed().ok_or(MapError::OutOfFrames)?;
                if let Some(slot) = frames.table_mut(table).get_mut(idx) {
                    *slot = F::table(next, lvl);
                }
                next
            } else if F::is_leaf(current, lvl) {
                return Err(MapError::AlreadyMapped { gpa: at });
            } else {
                HostPhysAddr::new(current & ADDR_MASK)
            };
            lvl = lvl.wrapping_sub(1);
        }
        Ok(table)
    }

    /// Every table frame (for cache write-back on non-coherent IOMMUs).
    pub fn frames<M: FrameSource + ?Sized>(&self, frames: &mut M) -> Vec<HostPhysAddr> {
        let mut out = Vec::new();
        self.for_each_table(frames, &mut |_, table| out.push(table));
        out
    }

    /// Returns every table frame to `frames`.
    pub fn destroy<M: FrameSource + ?Sized>(self, frames: &mut M) {
        let mut freed = 0usize;
        self.for_each_table(frames, &mut |frames, table| {
            frames.free(table);
            freed = freed.wrapping_add(1);
        });
        log::debug!(target: F::LOG_TARGET, "{} {} freed ({freed} frames)", F::NAME, self.root);
    }

    /// Calls `visit` on every table, children before their parent (so it may free them).
    fn for_each_table<M: FrameSource + ?Sized>(&self, frames: &mut M, visit: &mut dyn FnMut(&mut M, HostPhysAddr)) {
        visit_tables::<F, M>(frames, self.root, self.geometry.levels, visit);
    }
}

impl<F: DirtyTracking> PageTable<F> {
    /// Like [`Self::map_all`], but the region starting at `tracked` (if any) gets 4 KiB
    /// leaves only, so [`Self::take_dirty`] can tell its pages apart.
    pub fn map_all_tracking<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        map: &GuestMemoryMap,
        tracked: Option<GuestPhysAddr>,
    ) -> Result<(), MapError> {
        self.map_regions(frames, map, tracked)
    }

    /// Reads and clears the Dirty bits of the `npages` 4 KiB pages from `gpa`: bit `i` of
    /// `bitmap` is set when page `i` was written since the last call (a 2 MiB leaf
    /// marks all its pages). Returns the number of dirty pages. The processor caches
    /// the Dirty state in its TLB (APM Vol. 2 15.25.5: nested table A/D bits are
    /// updated like host ones), so the caller must flush the guest's TLB before it runs
    /// again, or later writes go unnoticed.
    pub fn take_dirty<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        gpa: GuestPhysAddr,
        npages: usize,
        bitmap: &mut [u64],
    ) -> usize {
        self.visit_dirty(frames, gpa, npages, true, |page| set_bit(bitmap, page))
    }

    /// Whether any of the `npages` 4 KiB pages from `gpa` has its Dirty bit set, without
    /// clearing it. After a [`Self::take_dirty`] and the TLB flush it asks for, a page
    /// written again always gets its Dirty bit again (no TLB entry then holds it
    /// dirty), so "none" means nothing was written since, even by a vCPU running on
    /// another CPU meanwhile.
    pub fn any_dirty<M: FrameSource + ?Sized>(&mut self, frames: &mut M, gpa: GuestPhysAddr, npages: usize) -> bool {
        self.visit_dirty(frames, gpa, npages, false, |_| {}) > 0
    }

    /// Calls `mark` with the index of each dirty page among the `npages` from `gpa`,
    /// clearing the bits when `clear`; returns how many were dirty.
    fn visit_dirty<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        gpa: GuestPhysAddr,
        npages: usize,
        clear: bool,
        mut mark: impl FnMut(usize),
    ) -> usize {
        let mut dirty = 0usize;
        let mut page = 0usize;
        while page < npages {
            let Some(g) = (page as u64).checked_mul(PAGE_SIZE).and_then(|o| gpa.raw().checked_add(o)) else { break };
            // Pages until the end of this 2 MiB block (one table of 4 KiB leaves covers it).
            let in_block = ((LARGE_PAGE_SIZE.wrapping_sub(g % LARGE_PAGE_SIZE)) / PAGE_SIZE) as usize;
            let count = in_block.min(npages.wrapping_sub(page));
            match self.leaf_table(frames, g) {
                Some((table, 1)) => {
                    let first = index(g, 1);
                    for i in 0..count {
                        let Some(e) = frames.table_mut(table).get_mut(first.wrapping_add(i)) else { break };
                        if F::is_present(*e) && *e & F::DIRTY != 0 {
                            if clear {
                                *e &= !F::DIRTY;
                            }
                            mark(page.wrapping_add(i));
                            dirty = dirty.wrapping_add(1);
                        }
                    }
                }
                Some((table, _)) => {
                    if let Some(e) = frames.table_mut(table).get_mut(index(g, 2))
                        && *e & F::DIRTY != 0
                    {
                        if clear {
                            *e &= !F::DIRTY;
                        }
                        for i in 0..count {
                            mark(page.wrapping_add(i));
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
}

fn set_bit(bitmap: &mut [u64], bit: usize) {
    if let Some(word) = bitmap.get_mut(bit / 64) {
        *word |= 1u64 << (bit % 64);
    }
}

/// Visits the subtree below `table` (at `level`), children first. Entries are re-read
/// one at a time, so `visit` may free what it is given. Recursion is as deep as the
/// table (at most 6 levels).
fn visit_tables<F: PteFormat, M: FrameSource + ?Sized>(
    frames: &mut M,
    table: HostPhysAddr,
    level: u8,
    visit: &mut dyn FnMut(&mut M, HostPhysAddr),
) {
    if level > 1 {
        for i in 0..512 {
            let Some(&e) = frames.table_mut(table).get(i) else { break };
            if F::is_present(e) && !F::is_leaf(e, level) {
                visit_tables::<F, M>(frames, HostPhysAddr::new(e & ADDR_MASK), level.wrapping_sub(1), visit);
            }
        }
    }
    visit(frames, table);
}
