//! What an IOMMU driver needs from the machine: the registers of its units and frames
//! for its tables. Drivers are generic over [`IommuHw`], so the same code drives the
//! real units (`mmio.rs`) and the simulated ones the host tests use.

use crate::memory::addr::{HostPhysAddr, PAGE_SIZE};
use crate::memory::frames::FrameSource;

/// Register access to the IOMMU units and the frames holding their tables.
///
/// Offsets are byte offsets into unit `unit`'s register block (units are numbered in
/// firmware-table order). Implementations ignore accesses outside the block (reads
/// return all-ones), so a bad offset derived from a capability register cannot fault.
pub trait IommuHw: FrameSource {
    /// `npages` physically contiguous, zeroed frames aligned to 4 KiB. Each page is
    /// reachable through [`FrameSource::table_mut`].
    fn alloc_contiguous(&mut self, npages: usize) -> Option<HostPhysAddr>;
    /// Returns memory from [`IommuHw::alloc_contiguous`].
    fn free_contiguous(&mut self, base: HostPhysAddr, npages: usize) {
        for i in 0..npages {
            let offset = (i as u64).wrapping_mul(PAGE_SIZE);
            self.free(HostPhysAddr::new(base.raw().wrapping_add(offset)));
        }
    }
    fn read32(&mut self, unit: usize, offset: usize) -> u32;
    fn write32(&mut self, unit: usize, offset: usize, value: u32);
    fn read64(&mut self, unit: usize, offset: usize) -> u64;
    fn write64(&mut self, unit: usize, offset: usize, value: u64);
    /// Writes modified table memory back from the CPU caches, for units whose table
    /// walks do not snoop (VT-d ECAP.C = 0).
    fn flush_cache(&mut self, hpa: HostPhysAddr, len_bytes: u64);
    /// One step of a polling loop (about a microsecond on hardware).
    fn relax(&mut self);
}

/// Polling budget for register handshakes and invalidation waits (about 1 s on
/// hardware; the VT-d spec gives no bound, Linux uses `DMAR_OPERATION_TIMEOUT`).
pub(crate) const POLL_LIMIT: u32 = 100_000;

/// Reads entry `index` (of `entry_bytes` = 8, 16 or 32) of a table that starts at
/// `base` and may span several contiguous frames, as `u64` words.
pub(crate) fn entry_words<H: FrameSource + ?Sized>(
    hw: &mut H,
    base: HostPhysAddr,
    index: usize,
    entry_bytes: usize,
) -> Option<(HostPhysAddr, usize)> {
    let byte = index.checked_mul(entry_bytes)?;
    let page = (byte / 4096) as u64;
    let frame = HostPhysAddr::new(base.raw().checked_add(page.checked_mul(PAGE_SIZE)?)?);
    let _ = hw;
    Some((frame, (byte % 4096) / 8))
}

/// Writes `words` at entry `index` of a table at `base` (see [`entry_words`]).
pub(crate) fn write_entry<H: FrameSource + ?Sized>(
    hw: &mut H,
    base: HostPhysAddr,
    index: usize,
    words: &[u64],
) -> bool {
    let Some((frame, first)) = entry_words(hw, base, index, words.len().wrapping_mul(8)) else {
        return false;
    };
    let table = hw.table_mut(frame);
    for (i, w) in words.iter().enumerate() {
        match table.get_mut(first.wrapping_add(i)) {
            Some(slot) => *slot = *w,
            None => return false,
        }
    }
    true
}

/// Reads `N` words of entry `index` of a table at `base`.
pub(crate) fn read_entry<H: FrameSource + ?Sized, const N: usize>(
    hw: &mut H,
    base: HostPhysAddr,
    index: usize,
) -> Option<[u64; N]> {
    let (frame, first) = entry_words(hw, base, index, N.wrapping_mul(8))?;
    let table = hw.table_mut(frame);
    let mut out = [0u64; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = *table.get(first.wrapping_add(i))?;
    }
    Some(out)
}
