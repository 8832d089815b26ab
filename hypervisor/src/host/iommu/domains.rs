//! The domains one IOMMU driver keeps, whatever its kind: an I/O page table per
//! domain id mapping one VM's GPA→HPA, the devices attached to it, and the id
//! allocator. The drivers add only their hardware steps (cache flushes, invalidation).
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{DomainId, IdAllocator, IommuError};
use crate::hw::Bdf;
use crate::memory::addr::{HostPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
use crate::memory::frames::{FrameSource, Table};
use crate::memory::guest::{GuestMemoryMap, Perms};
use crate::memory::page_table::{PageTable, PteFormat};

#[derive(Debug)]
pub(crate) struct Domain<F> {
    pub table: PageTable<F>,
    pub devices: Vec<Bdf>,
    /// I/O addresses set aside for a host driver's transfers, if any.
    pub window: Option<Window>,
}

#[derive(Debug)]
pub(crate) struct Domains<F> {
    domains: BTreeMap<u16, Domain<F>>,
    ids: IdAllocator,
}

impl<F: PteFormat> Domains<F> {
    pub fn new(ids: IdAllocator) -> Self {
        Self { domains: BTreeMap::new(), ids }
    }

    /// Fills `table` with `map` and gives it a domain id; on failure the table is
    /// freed and nothing is kept.
    pub fn create<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        mut table: PageTable<F>,
        map: &GuestMemoryMap,
    ) -> Result<(u16, &PageTable<F>), IommuError> {
        if let Err(e) = table.map_all(frames, map) {
            table.destroy(frames);
            return Err(e.into());
        }
        let Some(id) = self.ids.alloc() else {
            table.destroy(frames);
            return Err(IommuError::NoDomainIds);
        };
        let domain = self.domains.entry(id).or_insert(Domain { table, devices: Vec::new(), window: None });
        Ok((id, &domain.table))
    }

    /// Frees a domain no device is attached to (its table and its id).
    pub fn remove_idle<M: FrameSource + ?Sized>(&mut self, frames: &mut M, domain: DomainId) -> Result<(), IommuError> {
        let d = self.domains.get(&domain.0).ok_or(IommuError::UnknownDomain(domain))?;
        if !d.devices.is_empty() {
            return Err(IommuError::DomainBusy(domain));
        }
        if let Some(d) = self.domains.remove(&domain.0) {
            d.table.destroy(frames);
        }
        self.ids.free(domain.0);
        Ok(())
    }

    /// Every table frame of `domain` (write-back on non-coherent units).
    pub fn frames<M: FrameSource + ?Sized>(
        &self,
        frames: &mut M,
        domain: DomainId,
    ) -> Result<Vec<HostPhysAddr>, IommuError> {
        Ok(self.domains.get(&domain.0).ok_or(IommuError::UnknownDomain(domain))?.table.frames(frames))
    }

    /// The root of `domain`'s page table.
    pub fn root(&self, domain: DomainId) -> Result<HostPhysAddr, IommuError> {
        Ok(self.domains.get(&domain.0).ok_or(IommuError::UnknownDomain(domain))?.table.root())
    }

    /// Records `bdf` as attached to domain `id`.
    pub fn add_device(&mut self, id: u16, bdf: Bdf) {
        if let Some(d) = self.domains.get_mut(&id) {
            d.devices.push(bdf);
        }
    }

    /// Records `bdf` as no longer attached to domain `id`.
    pub fn remove_device(&mut self, id: u16, bdf: Bdf) {
        if let Some(d) = self.domains.get_mut(&id) {
            d.devices.retain(|b| *b != bdf);
        }
    }

    /// Sets aside `pages` (at most 512) I/O addresses from `iova` (2 MiB-aligned,
    /// nothing mapped there) in domain `id` as its transfer window: the leaf table is
    /// made now, its entries are filled per transfer. Returns the table frames made.
    pub fn reserve_window<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        id: DomainId,
        iova: u64,
        pages: usize,
    ) -> Result<Vec<HostPhysAddr>, IommuError> {
        let bad = IommuError::BadMapping { gpa: iova };
        if !iova.is_multiple_of(LARGE_PAGE_SIZE) || pages == 0 || pages > ENTRIES {
            return Err(bad);
        }
        let d = self.domains.get_mut(&id.0).ok_or(IommuError::UnknownDomain(id))?;
        if d.window.is_some() {
            return Err(bad);
        }
        let mut recording = Recording { inner: frames, new: Vec::new() };
        let leaf = d.table.leaf_table_at(&mut recording, iova)?;
        let new = recording.new;
        if frames.table_mut(leaf).iter().take(pages).any(|e| *e != 0) {
            return Err(bad);
        }
        d.window = Some(Window { iova, leaf, pages, used: 0 });
        Ok(new)
    }

    /// Maps the pages of `ranges` (host page ranges, in order) at consecutive slots of
    /// domain `id`'s window from its start, readable and, when `writable`, writable by
    /// the device: it sees them as one run of I/O addresses. Refused (nothing mapped)
    /// when the window is in use or too small. Returns the window's I/O address and the
    /// entries written (leaf table, first index, count).
    pub fn map_window<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        id: DomainId,
        ranges: &[(HostPhysAddr, u64)],
        writable: bool,
    ) -> Result<(u64, WindowEntries), IommuError> {
        let perms = if writable { Perms::RW } else { Perms::R };
        let d = self.domains.get_mut(&id.0).ok_or(IommuError::UnknownDomain(id))?;
        let w = d.window.as_mut().ok_or(IommuError::UnknownDomain(id))?;
        let busy = IommuError::BadMapping { gpa: w.iova };
        let total = ranges.iter().try_fold(0u64, |n, &(hpa, len)| {
            let ok = hpa.is_aligned(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE);
            ok.then(|| n.checked_add(len / PAGE_SIZE)).flatten()
        });
        let pages = total.and_then(|n| usize::try_from(n).ok()).ok_or(busy)?;
        if w.used != 0 || pages > w.pages || pages == 0 {
            return Err(busy);
        }
        let Some(flags) = F::leaf(HostPhysAddr::new(0), 1, perms) else { return Err(busy) };
        // Both formats put the frame's address next to the permission bits, so a leaf
        // is the address ORed with the bits (checked here, or each leaf is built).
        let additive = F::leaf(HostPhysAddr::new(PAGE_SIZE), 1, perms) == Some(flags | PAGE_SIZE);
        let table = frames.table_mut(w.leaf);
        let mut slot = 0usize;
        for &(hpa, len) in ranges {
            // `pages` (the sum) fits the window, itself inside the table.
            let n = (len / PAGE_SIZE) as usize;
            let Some(entries) = table.get_mut(slot..slot.saturating_add(n)) else { return Err(busy) };
            let mut page = hpa.raw();
            for e in entries {
                *e = if additive { flags | page } else { F::leaf(HostPhysAddr::new(page), 1, perms).unwrap_or(0) };
                page = page.wrapping_add(PAGE_SIZE);
            }
            slot = slot.saturating_add(n);
        }
        w.used = slot;
        Ok((w.iova, WindowEntries { table: w.leaf, count: slot }))
    }

    /// Clears the window's entries in use; returns them (for write-back) if any were.
    pub fn unmap_window<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        id: DomainId,
    ) -> Result<WindowEntries, IommuError> {
        let d = self.domains.get_mut(&id.0).ok_or(IommuError::UnknownDomain(id))?;
        let w = d.window.as_mut().ok_or(IommuError::UnknownDomain(id))?;
        let count = core::mem::take(&mut w.used);
        frames.table_mut(w.leaf).iter_mut().take(count).for_each(|e| *e = 0);
        Ok(WindowEntries { table: w.leaf, count })
    }

    /// The ids of every domain.
    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.domains.keys().copied()
    }
}

/// A domain's transfer window: `pages` I/O addresses from `iova`, whose entries are
/// the first `pages` of the leaf table `leaf`; `used` are mapped now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    iova: u64,
    leaf: HostPhysAddr,
    pages: usize,
    used: usize,
}

/// Entries a window operation wrote: the first `count` of leaf table `table`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowEntries {
    pub table: HostPhysAddr,
    pub count: usize,
}

/// Entries in one table.
const ENTRIES: usize = 512;

/// A frame source that notes the frames it hands out.
struct Recording<'a, M: ?Sized> {
    inner: &'a mut M,
    new: Vec<HostPhysAddr>,
}

impl<M: FrameSource + ?Sized> FrameSource for Recording<'_, M> {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        let frame = self.inner.alloc_zeroed()?;
        self.new.push(frame);
        Some(frame)
    }

    fn free(&mut self, frame: HostPhysAddr) {
        self.inner.free(frame);
    }

    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table {
        self.inner.table_mut(frame)
    }
}
