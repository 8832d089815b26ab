//! I/O page tables: a domain's DMA address (the guest-physical address) → host
//! physical, built from a VM's [`GuestMemoryMap`]. One generic builder over
//! [`PteFormat`]; VT-d second-level tables (VT-d spec §9.8) and AMD-Vi I/O page
//! tables (AMD IOMMU spec §2.2.3) differ only in the entry encoding.
//!
//! Leaves are 2 MiB where GPA and HPA are both 2 MiB-aligned, at least 2 MiB remain
//! and the format allows it; 4 KiB otherwise. Tables come from a [`FrameSource`].
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use core::marker::PhantomData;

use alloc::vec::Vec;

use crate::host::iommu::IommuError;
use crate::memory::addr::{HostPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
use crate::memory::frames::FrameSource;
use crate::memory::guest::GuestMemoryMap;

/// DMA permissions of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaPerms {
    pub read: bool,
    pub write: bool,
}

impl DmaPerms {
    pub const RW: DmaPerms = DmaPerms { read: true, write: true };
    pub const R: DmaPerms = DmaPerms { read: true, write: false };
}

/// Physical address bits 51:12 of an entry (both formats).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// How one vendor encodes page-table entries.
pub trait PteFormat {
    /// A non-leaf entry at `level` (2..) pointing at the table for `level - 1`.
    fn table(next: HostPhysAddr, level: u8) -> u64;
    /// A leaf at `level` (1 = 4 KiB, 2 = 2 MiB).
    fn leaf(hpa: HostPhysAddr, level: u8, perms: DmaPerms) -> u64;
    fn is_present(entry: u64) -> bool;
    /// Whether a present entry at `level` maps a page (rather than a table).
    fn is_leaf(entry: u64, level: u8) -> bool;
    fn perms(entry: u64) -> DmaPerms;
}

/// A walk result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoTranslation {
    pub hpa: HostPhysAddr,
    pub perms: DmaPerms,
    pub page_size: u64,
}

/// An I/O page table owning its table frames.
#[derive(Debug)]
pub struct IoPageTable<F> {
    root: HostPhysAddr,
    levels: u8,
    large_pages: bool,
    /// Exclusive end of the host-physical addresses the unit can reach.
    hpa_limit: u64,
    _format: PhantomData<F>,
}

fn index(addr: u64, level: u8) -> usize {
    let shift = 12u32.wrapping_add(9u32.wrapping_mul(u32::from(level).wrapping_sub(1)));
    ((addr >> shift) & 0x1ff) as usize
}

impl<F: PteFormat> IoPageTable<F> {
    /// An empty table of `levels` (3 = 39-bit, 4 = 48-bit, up to 6) levels.
    pub fn new<M: FrameSource + ?Sized>(
        frames: &mut M,
        levels: u8,
        large_pages: bool,
        hpa_limit: u64,
    ) -> Result<Self, IommuError> {
        if !(2..=6).contains(&levels) {
            return Err(IommuError::Unsupported("page-table depth"));
        }
        let root = frames.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
        Ok(Self { root, levels, large_pages, hpa_limit, _format: PhantomData })
    }

    pub fn root(&self) -> HostPhysAddr {
        self.root
    }

    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Exclusive end of the DMA address space these tables translate.
    pub fn address_limit(&self) -> u64 {
        let bits = 12u32.saturating_add(9u32.saturating_mul(u32::from(self.levels)));
        1u64.checked_shl(bits).unwrap_or(u64::MAX)
    }

    /// Maps every region of `map` with its read/write rights (execute is meaningless
    /// for DMA). Regions without read permission are not mapped.
    pub fn map_all<M: FrameSource + ?Sized>(&mut self, frames: &mut M, map: &GuestMemoryMap) -> Result<(), IommuError> {
        for r in map.regions() {
            let perms = DmaPerms { read: r.perms().read, write: r.perms().write };
            if !perms.read && !perms.write {
                continue;
            }
            self.map_range(frames, r.gpa().raw(), r.hpa(), r.len_bytes(), perms)?;
        }
        Ok(())
    }

    /// Maps `[gpa, gpa + len_bytes)` to `[hpa, ..)`. On error the part already mapped
    /// stays mapped (the caller destroys the table).
    pub fn map_range<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        gpa: u64,
        hpa: HostPhysAddr,
        len_bytes: u64,
        perms: DmaPerms,
    ) -> Result<(), IommuError> {
        if !gpa.is_multiple_of(PAGE_SIZE)
            || !hpa.is_aligned(PAGE_SIZE)
            || !len_bytes.is_multiple_of(PAGE_SIZE)
            || len_bytes == 0
        {
            return Err(IommuError::BadMapping { gpa });
        }
        let gpa_end = gpa.checked_add(len_bytes).ok_or(IommuError::AddressOutOfRange { gpa })?;
        let hpa_end = hpa.raw().checked_add(len_bytes).ok_or(IommuError::AddressOutOfRange { gpa })?;
        if gpa_end > self.address_limit() || hpa_end > self.hpa_limit {
            return Err(IommuError::AddressOutOfRange { gpa });
        }
        let (mut g, mut h) = (gpa, hpa.raw());
        while g < gpa_end {
            let remaining = gpa_end.wrapping_sub(g);
            let large = self.large_pages
                && g.is_multiple_of(LARGE_PAGE_SIZE)
                && h.is_multiple_of(LARGE_PAGE_SIZE)
                && remaining >= LARGE_PAGE_SIZE;
            let (level, step) = if large { (2, LARGE_PAGE_SIZE) } else { (1, PAGE_SIZE) };
            self.set_leaf(frames, g, level, F::leaf(HostPhysAddr::new(h), level, perms))?;
            g = g.wrapping_add(step);
            h = h.wrapping_add(step);
        }
        Ok(())
    }

    fn set_leaf<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        gpa: u64,
        level: u8,
        value: u64,
    ) -> Result<(), IommuError> {
        let overlap = IommuError::BadMapping { gpa };
        let mut table = self.root;
        let mut lvl = self.levels;
        while lvl > level {
            let idx = index(gpa, lvl);
            let current = *frames.table_mut(table).get(idx).ok_or(overlap)?;
            table = if !F::is_present(current) {
                let next = frames.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
                if let Some(slot) = frames.table_mut(table).get_mut(idx) {
                    *slot = F::table(next, lvl);
                }
                next
            } else if F::is_leaf(current, lvl) {
                return Err(overlap);
            } else {
                HostPhysAddr::new(current & ADDR_MASK)
            };
            lvl = lvl.wrapping_sub(1);
        }
        let slot = frames.table_mut(table).get_mut(index(gpa, level)).ok_or(overlap)?;
        if F::is_present(*slot) {
            return Err(overlap);
        }
        *slot = value;
        Ok(())
    }

    /// Walks the table as the IOMMU would.
    pub fn translate<M: FrameSource + ?Sized>(&self, frames: &mut M, gpa: u64) -> Option<IoTranslation> {
        if gpa >= self.address_limit() {
            return None;
        }
        let mut table = self.root;
        let mut level = self.levels;
        while level >= 1 {
            let e = *frames.table_mut(table).get(index(gpa, level))?;
            if !F::is_present(e) {
                return None;
            }
            if F::is_leaf(e, level) {
                let shift = 12u32.wrapping_add(9u32.wrapping_mul(u32::from(level).wrapping_sub(1)));
                let page_size = 1u64.checked_shl(shift)?;
                let base = e & ADDR_MASK & !page_size.wrapping_sub(1);
                let hpa = HostPhysAddr::new(base | (gpa & page_size.wrapping_sub(1)));
                return Some(IoTranslation { hpa, perms: F::perms(e), page_size });
            }
            table = HostPhysAddr::new(e & ADDR_MASK);
            level = level.wrapping_sub(1);
        }
        None
    }

    /// Every table frame (for cache write-back on non-coherent units).
    pub fn frames<M: FrameSource + ?Sized>(&self, frames: &mut M) -> Vec<HostPhysAddr> {
        let mut out = Vec::new();
        collect::<F, M>(frames, self.root, self.levels, &mut out);
        out
    }

    /// Returns every table frame to `frames`.
    pub fn destroy<M: FrameSource + ?Sized>(self, frames: &mut M) {
        for frame in self.frames(frames) {
            frames.free(frame);
        }
    }
}

fn collect<F: PteFormat, M: FrameSource + ?Sized>(
    frames: &mut M,
    table: HostPhysAddr,
    level: u8,
    out: &mut Vec<HostPhysAddr>,
) {
    out.push(table);
    if level <= 1 {
        return;
    }
    let children: Vec<HostPhysAddr> = frames
        .table_mut(table)
        .iter()
        .filter(|e| F::is_present(**e) && !F::is_leaf(**e, level))
        .map(|e| HostPhysAddr::new(*e & ADDR_MASK))
        .collect();
    for child in children {
        collect::<F, M>(frames, child, level.wrapping_sub(1), out);
    }
}
