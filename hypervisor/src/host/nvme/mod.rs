//! The hypervisor's own NVMe driver, for the data partition that holds the VMs'
//! disks (docs/nvme.md).
//!
//! Bounded and simple on purpose: one controller, one namespace, one I/O queue pair,
//! at most two commands in flight, completions polled (no interrupts), data through two
//! bounce buffers in a region the controller's DMA domain maps, or straight to and from
//! a VM's buffer pages, mapped in the domain's transfer window only for that transfer.
//! The protocol (`regs`,
//! `cmd`, `queue`, `prp`, `identify`, `controller`) is plain logic tested against a
//! fake controller; `hw.rs` is the one piece that touches the real device.
#![deny(unsafe_code)]

pub mod cmd;
pub mod controller;
mod hw;
pub mod identify;
mod namespace;
pub mod prp;
pub mod queue;
pub mod regs;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;

pub use controller::{Controller, NvmeError, NvmeHw, NvmeNamespace, Timing};
pub use hw::{DmaTranslation, HostNvmeHw};

use crate::host::iommu::{DomainId, Iommu, IommuError};
use crate::host::pci::{ConfigAccess, PciDevice, PciInventory};
use crate::hw::Bdf;
use crate::hw::pci::{CMD_BUS_MASTER, CMD_INTX_DISABLE, CMD_MEMORY, COMMAND, STS_ERRORS};
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr, PAGE_SIZE};
use crate::memory::guest::{GuestMemoryMap, GuestRegion, Perms};

/// PCI class 01h (mass storage), subclass 08h (non-volatile memory), interface 02h
/// (NVM Express I/O controller).
pub const NVME_CLASS: (u8, u8, u8) = (0x01, 0x08, 0x02);

/// The NVMe controllers in `inventory` the hypervisor may drive: every function of
/// the NVMe class that `assigned` (functions the policy gives to VMs) does not name.
pub fn candidates<'a>(inventory: &'a PciInventory, assigned: &[Bdf]) -> Vec<&'a PciDevice> {
    inventory
        .devices()
        .iter()
        .filter(|d| (d.class, d.subclass, d.prog_if) == NVME_CLASS)
        .filter(|d| !assigned.contains(&d.bdf))
        .collect()
}

/// Why a controller could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeError {
    /// BAR0 is not a memory BAR the hypervisor can reach (unprogrammed, misaligned).
    Bar,
    /// No memory for the queues and the bounce region.
    OutOfMemory,
    /// The IOMMU could not give the controller its DMA domain.
    Iommu(IommuError),
    Controller(NvmeError),
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::Bar => write!(f, "BAR0 is not a reachable memory BAR"),
            ProbeError::OutOfMemory => write!(f, "no memory for the queues and bounce region"),
            ProbeError::Iommu(e) => write!(f, "no DMA domain: {e}"),
            ProbeError::Controller(e) => write!(f, "{e}"),
        }
    }
}

/// The I/O address space the controller gets: exactly its DMA region, at the same
/// address as in host memory, read-write.
pub fn dma_domain_map(dma: HostPhysAddr, bytes: u64) -> Option<GuestMemoryMap> {
    let region = GuestRegion::new(GuestPhysAddr::new(dma.raw()), dma, bytes, Perms::RW).ok()?;
    GuestMemoryMap::new(alloc::vec![region]).ok()
}

/// Brings up the controller `dev` and opens its first active namespace: a DMA region,
/// a DMA domain mapping only that region when `iommu` covers the controller, memory
/// decoding and bus mastering on (INTx off: completions are polled).
///
/// On failure bus mastering is turned off again; the region and the domain stay
/// allocated (a controller in an unknown state may still write to them).
pub fn bring_up(
    dev: &PciDevice,
    config: &dyn ConfigAccess,
    iommu: Option<&mut dyn Iommu>,
    timing: Timing,
) -> Result<NvmeNamespace<HostNvmeHw>, ProbeError> {
    let bar = dev.bars.iter().find(|b| b.index == 0).ok_or(ProbeError::Bar)?;
    let bar_bytes = bar.size;
    let bar = crate::host::pci::access::BarMmio::for_own_device(bar).ok_or(ProbeError::Bar)?;
    let bytes = controller::DMA_BYTES.next_multiple_of(PAGE_SIZE);
    let dma = crate::memory::phys::alloc_contiguous(bytes, PAGE_SIZE).ok_or(ProbeError::OutOfMemory)?;
    let mut translation = DmaTranslation::Untranslated;
    if let Some(iommu) = iommu {
        let domain = attach_domain(iommu, dev.bdf, dma, bytes).map_err(|e| {
            crate::memory::phys::free_contiguous(dma, bytes);
            ProbeError::Iommu(e)
        })?;
        if let Some(d) = domain {
            // The window must not meet the region's own mapping.
            let clear = dma.raw().saturating_add(bytes) <= hw::TRANSFER_WINDOW;
            let window = clear && iommu.reserve_window(d, hw::TRANSFER_WINDOW, hw::WINDOW_PAGES).is_ok();
            log::info!(
                target: "nvme",
                "{}: DMA domain {} maps its {} KiB of queues and bounce region{}",
                dev.bdf, d.0, bytes >> 10,
                if window { ", and a VM's buffer pages only while a transfer to or from them runs" } else { "; no transfer window: every transfer bounces" }
            );
            translation = DmaTranslation::Domain { domain: d, window };
        }
    }
    if translation == DmaTranslation::Untranslated {
        log::info!(target: "nvme", "{}: no IOMMU translates its DMA: transfers to and from VMs' buffers need no mapping", dev.bdf);
    }
    let command = config.read16(dev.bdf, COMMAND);
    config.write16(dev.bdf, COMMAND, command | CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE, STS_ERRORS);
    let hw = HostNvmeHw::new(bar, bar_bytes, dma, bytes, translation);
    let result = Controller::enable(hw, dma.raw(), timing).and_then(Controller::open);
    result.map_err(|e| {
        config.write16(dev.bdf, COMMAND, command & !CMD_BUS_MASTER, STS_ERRORS);
        ProbeError::Controller(e)
    })
}

/// A domain mapping only the DMA region, with the controller attached, when the
/// IOMMU translates its requests; `None` when no unit covers it (its DMA is not
/// remapped, as without an IOMMU).
pub fn attach_domain(
    iommu: &mut dyn Iommu,
    bdf: Bdf,
    dma: HostPhysAddr,
    bytes: u64,
) -> Result<Option<DomainId>, IommuError> {
    if !iommu.covers(bdf) {
        return Ok(None);
    }
    let map = dma_domain_map(dma, bytes).ok_or(IommuError::BadMapping { gpa: dma.raw() })?;
    let domain = iommu.create_domain(&map)?;
    if let Err(e) = iommu.attach(bdf, domain) {
        let _ = iommu.destroy_domain(domain);
        return Err(e);
    }
    Ok(Some(domain))
}
