//! The domains one IOMMU driver keeps, whatever its kind: an I/O page table per
//! domain id mapping one VM's GPA→HPA, the devices attached to it, and the id
//! allocator. The drivers add only their hardware steps (cache flushes, invalidation).
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{DomainId, IdAllocator, IommuError};
use crate::hw::Bdf;
use crate::memory::addr::HostPhysAddr;
use crate::memory::frames::FrameSource;
use crate::memory::guest::GuestMemoryMap;
use crate::memory::page_table::{PageTable, PteFormat};

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

    /// The ids of every domain.
    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.domains.keys().copied()
    }
}
