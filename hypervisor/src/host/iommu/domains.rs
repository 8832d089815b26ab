//! The domains one IOMMU driver keeps, whatever its kind: an I/O page table per
//! domain id mapping one VM's GPA→HPA, the devices attached to it, and the id
//! allocator. The drivers add only their hardware steps (cache flushes, invalidation).
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{DomainId, IdAllocator, IommuError};
use crate::hw::Bdf;
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr, PAGE_SIZE};
use crate::memory::frames::{FrameSource, Table};
use crate::memory::guest::{GuestMemoryMap, Perms};
use crate::memory::page_table::{MapError, PageTable, PteFormat};

#[derive(Debug)]
pub(crate) struct Domain<F> {
    pub table: PageTable<F>,
    pub devices: Vec<Bdf>,
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
        let domain = self.domains.entry(id).or_insert(Domain { table, devices: Vec::new() });
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

    /// Maps each page range of `ranges` (host addresses and lengths, page-aligned, not
    /// overlapping) at its own address in domain `id`, with `perms`; all or nothing
    /// (what was mapped is unmapped again on failure). Returns the table memory a
    /// non-coherent unit must see written back: whole new table frames and the cache
    /// lines of the entries written.
    pub fn map_identity<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        id: DomainId,
        ranges: &[(HostPhysAddr, u64)],
        perms: Perms,
    ) -> Result<TableWrites, IommuError> {
        let d = self.domains.get_mut(&id.0).ok_or(IommuError::UnknownDomain(id))?;
        let mut recording = Recording { inner: frames, new: Vec::new() };
        for (i, &(hpa, len)) in ranges.iter().enumerate() {
            if let Err(e) = d.table.map_range(&mut recording, GuestPhysAddr::new(hpa.raw()), hpa, len, perms) {
                // The engine maps in address order: the failed range is ours up to the
                // page that was already mapped (not ours to remove), or up to where
                // frames ran out (nothing mapped after it: unmapping skips holes).
                let ours = match e {
                    MapError::AlreadyMapped { gpa } => gpa.raw().saturating_sub(hpa.raw()),
                    _ => len,
                };
                let earlier = ranges.iter().take(i).copied().chain(core::iter::once((hpa, ours)));
                for (h, l) in earlier.filter(|(_, l)| *l > 0) {
                    let _ = d.table.unmap_range(&mut *recording.inner, GuestPhysAddr::new(h.raw()), l);
                }
                return Err(e.into());
            }
        }
        let mut writes = TableWrites { new_frames: recording.new, lines: Vec::new() };
        entry_lines(&d.table, frames, ranges, &mut writes.lines);
        Ok(writes)
    }

    /// Removes what [`Self::map_identity`] mapped; returns the entry lines written.
    pub fn unmap_identity<M: FrameSource + ?Sized>(
        &mut self,
        frames: &mut M,
        id: DomainId,
        ranges: &[(HostPhysAddr, u64)],
    ) -> Result<Vec<HostPhysAddr>, IommuError> {
        let d = self.domains.get_mut(&id.0).ok_or(IommuError::UnknownDomain(id))?;
        let mut result = Ok(());
        for &(hpa, len) in ranges {
            if let Err(e) = d.table.unmap_range(frames, GuestPhysAddr::new(hpa.raw()), len) {
                result = Err(IommuError::from(e));
            }
        }
        let mut lines = Vec::new();
        entry_lines(&d.table, frames, ranges, &mut lines);
        result.map(|()| lines)
    }

    /// The ids of every domain.
    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.domains.keys().copied()
    }
}

/// Table memory written by an identity mapping.
#[derive(Debug, Default)]
pub(crate) struct TableWrites {
    /// Table frames allocated on the way (written whole: zeroed).
    pub new_frames: Vec<HostPhysAddr>,
    /// The 64-byte lines holding the entries on the walks of the pages mapped.
    pub lines: Vec<HostPhysAddr>,
}

/// The cache lines of the entries on the walk of every page of `ranges`, each line
/// once per run of pages that share it.
fn entry_lines<F: PteFormat, M: FrameSource + ?Sized>(
    table: &PageTable<F>,
    frames: &mut M,
    ranges: &[(HostPhysAddr, u64)],
    out: &mut Vec<HostPhysAddr>,
) {
    let mut last = [u64::MAX; 6];
    for &(hpa, len) in ranges {
        let mut page = hpa.raw();
        let end = hpa.raw().saturating_add(len);
        while page < end {
            for (slot, at) in last.iter_mut().zip(table.entry_addrs(frames, page)) {
                let line = at.raw() & !63;
                if *slot != line {
                    *slot = line;
                    out.push(HostPhysAddr::new(line));
                }
            }
            page = page.saturating_add(PAGE_SIZE);
        }
    }
}

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
