//! The IOMMU layer's only `unsafe`: the units' register blocks (volatile access goes
//! through `hw::mmio`),
//! physically contiguous table memory from the global frame allocator, and cache
//! write-back for units whose table walks do not snoop.

use crate::hw::mmio::MmioRegion;
use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{DynIommu, IommuError, IommuHw};
use crate::host::acpi::{IommuKind, PlatformTables};
use crate::host::iommu::amdvi::AmdViIommu;
use crate::host::iommu::vtd::{VtdConfig, VtdIommu};
use crate::host::pci::PciInventory;
use crate::memory::addr::{HostPhysAddr, PAGE_SIZE};
use crate::memory::frames::{FrameSource, Table};
use crate::memory::phys::{self, GlobalFrames};

/// Size of an AMD-Vi register window (AMD IOMMU spec §3.4: 16 KiB, registers up to
/// 0x2000 + the head/tail block).
const AMDVI_WINDOW: usize = 0x4000;

/// The real machine: identity-mapped register blocks and the global frame allocator.
#[derive(Debug)]
pub struct HostIommuHw {
    frames: GlobalFrames,
    units: Vec<MmioRegion>,
}

impl HostIommuHw {
    /// # Safety
    /// Every `(base, len)` must be one IOMMU unit's register block as firmware
    /// describes it (DRHD register base, IVHD base address), identity-mapped
    /// uncacheable, and used by nothing but the returned value.
    pub unsafe fn new(blocks: &[(u64, usize)]) -> Self {
        let units = blocks
            .iter()
            // SAFETY: the caller's contract, block by block.
            .map(|&(base, len)| unsafe { MmioRegion::new(base, len as u64) })
            .collect();
        Self { frames: GlobalFrames, units }
    }
}

impl FrameSource for HostIommuHw {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        self.frames.alloc_zeroed()
    }
    fn free(&mut self, frame: HostPhysAddr) {
        self.frames.free(frame)
    }
    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table {
        self.frames.table_mut(frame)
    }
}

impl IommuHw for HostIommuHw {
    fn alloc_contiguous(&mut self, npages: usize) -> Option<HostPhysAddr> {
        phys::alloc_contiguous((npages as u64).checked_mul(PAGE_SIZE)?, PAGE_SIZE)
    }

    fn free_contiguous(&mut self, base: HostPhysAddr, npages: usize) {
        phys::free_contiguous(base, (npages as u64).saturating_mul(PAGE_SIZE));
    }

    fn read32(&mut self, unit: usize, offset: usize) -> u32 {
        self.units.get(unit).map_or(u32::MAX, |r| r.read(offset as u64))
    }

    fn write32(&mut self, unit: usize, offset: usize, value: u32) {
        if let Some(r) = self.units.get(unit) {
            r.write(offset as u64, value);
        }
    }

    fn read64(&mut self, unit: usize, offset: usize) -> u64 {
        self.units.get(unit).map_or(u64::MAX, |r| r.read(offset as u64))
    }

    fn write64(&mut self, unit: usize, offset: usize, value: u64) {
        if let Some(r) = self.units.get(unit) {
            r.write(offset as u64, value);
        }
    }

    fn flush_cache(&mut self, hpa: HostPhysAddr, len_bytes: u64) {
        let start = hpa.raw() & !63;
        let end = hpa.raw().saturating_add(len_bytes);
        let mut line = start;
        while line < end {
            // SAFETY: CLFLUSH of a mapped address only writes back and evicts a cache
            // line; `hpa` is table memory the driver owns (identity-mapped RAM).
            unsafe { core::arch::x86_64::_mm_clflush(line as *const u8) };
            line = line.saturating_add(64);
        }
        // SAFETY: MFENCE orders the flushes before the register write that follows.
        unsafe { core::arch::x86_64::_mm_mfence() };
    }

    fn relax(&mut self) {
        for _ in 0..64 {
            core::hint::spin_loop();
        }
    }
}

/// Builds the driver for the IOMMU the firmware describes. Fails with
/// [`IommuError::NoIommu`] when there is none: passthrough is then refused.
pub fn from_platform(
    tables: &PlatformTables,
    inventory: &PciInventory,
    config: VtdConfig,
) -> Result<DynIommu, IommuError> {
    match tables.iommu() {
        IommuKind::None => {
            log::warn!(target: "iommu", "no DMAR or IVRS: device passthrough disabled");
            Err(IommuError::NoIommu)
        }
        IommuKind::VtD { .. } => {
            let dmar = tables.dmar().ok_or(IommuError::NoIommu)?;
            let blocks: Vec<(u64, usize)> =
                dmar.units.iter().map(|u| (u.register_base, crate::host::iommu::vtd::regs::REGISTER_WINDOW)).collect();
            // SAFETY: the bases come from the validated DMAR; the hypervisor identity-maps
            // MMIO uncacheable and nothing else drives the remapping units.
            let hw = unsafe { HostIommuHw::new(&blocks) };
            Ok(Box::new(VtdIommu::new(hw, dmar, inventory, config)?))
        }
        IommuKind::AmdVi { .. } => {
            let ivrs = tables.ivrs().ok_or(IommuError::NoIommu)?;
            let blocks: Vec<(u64, usize)> = ivrs.units().iter().map(|u| (u.base_address, AMDVI_WINDOW)).collect();
            // SAFETY: as above, from the validated IVRS.
            let hw = unsafe { HostIommuHw::new(&blocks) };
            Ok(Box::new(AmdViIommu::new(hw, ivrs)?))
        }
    }
}
