//! The real controller behind [`NvmeHw`]: BAR0 through `BarMmio` (the 32-bit PCI hole,
//! which firmware's MTRRs make uncacheable, as for the IOMMU and ECAM windows), the DMA
//! region through the direct map, and the TSC as the clock.
#![deny(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use super::controller::NvmeHw;
use crate::host::device_io::DeviceIo;
use alloc::vec::Vec;

use bulkhead_vdisk::DmaSegment;

use super::prp::PAGE;
use crate::host::iommu::DomainId;
use crate::host::pci::access::BarMmio;
use crate::memory::addr::HostPhysAddr;

/// How the controller's DMA addresses reach memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaTranslation {
    /// No IOMMU unit translates its requests: device addresses are host physical
    /// addresses, and it can reach all memory whatever the driver does.
    Untranslated,
    /// Its DMA domain: its region at its own address, and, if `window`, a transfer
    /// window at [`TRANSFER_WINDOW`] where a direct transfer's pages are mapped for
    /// its duration.
    Domain { domain: DomainId, window: bool },
}

/// Where the controller's DMA domain keeps its transfer window: 256 GiB, above any
/// DMA region a laptop has (the region is mapped at its own address, checked), inside
/// every table depth the IOMMU drivers use (39 bits or more).
pub const TRANSFER_WINDOW: u64 = 1 << 38;
/// Pages in the window: one table of 4 KiB leaves, 2 MiB. A larger transfer (Linux
/// sends at most 1280 KiB by default) takes the bounce buffers.
pub const WINDOW_PAGES: usize = 512;

/// One controller's registers and DMA region. The region is RAM the hypervisor
/// allocated for this controller alone; the device addresses it at its host physical
/// address (the controller's DMA domain maps the region at its own address).
#[derive(Debug)]
pub struct HostNvmeHw {
    io: DeviceIo,
    translation: DmaTranslation,
    /// A direct transfer's page ranges, as the window is given them.
    ranges: Vec<(HostPhysAddr, u64)>,
}

impl HostNvmeHw {
    pub fn new(bar: BarMmio, bar_bytes: u64, dma: HostPhysAddr, dma_bytes: u64, translation: DmaTranslation) -> Self {
        HostNvmeHw { io: DeviceIo::new(bar, bar_bytes, dma, dma_bytes), translation, ranges: Vec::new() }
    }
}

impl NvmeHw for HostNvmeHw {
    fn read32(&mut self, offset: u64) -> u32 {
        self.io.read32(offset)
    }

    fn write32(&mut self, offset: u64, value: u32) {
        self.io.write32(offset, value);
    }

    fn dma_read(&mut self, at: u64, buf: &mut [u8]) -> bool {
        self.io.dma.read(at, buf)
    }

    fn dma_write(&mut self, at: u64, data: &[u8]) -> bool {
        self.io.dma.write(at, data)
    }

    #[allow(unsafe_code)]
    fn dma_bytes(&mut self, at: u64, len: usize) -> Option<&mut [u8]> {
        let pa = self.io.dma.inside(at, len)?;
        // The device may have written this memory behind the compiler's back.
        fence(Ordering::SeqCst);
        // SAFETY: the range lies inside the DMA region (`DmaRegion::inside`), RAM
        // allocated for this controller alone and kept mapped for as long as the driver
        // lives. The only
        // other accesses to it from Rust go through `&mut self` (`dma_read`,
        // `dma_write`), so none can happen while the returned borrow lives. The driver
        // asks for a bounce buffer or a PRP list page only while no command uses it,
        // and never once the drive has failed (a timed-out command may still read or
        // write there), so the device does not touch it meanwhile either.
        Some(unsafe { crate::memory::direct_map::bytes_mut(pa, len) })
    }

    fn now_us(&mut self) -> u64 {
        self.io.now_us()
    }

    fn register_bytes(&self) -> u64 {
        self.io.register_bytes()
    }

    /// Untranslated: the segments as they are (the drive reaches all memory anyway).
    /// In a domain: their pages mapped at consecutive slots of the transfer window,
    /// read-only unless the drive writes them, the transfer one run of I/O addresses.
    fn map_direct(&mut self, segments: &[DmaSegment], device_writes: bool, device: &mut Vec<DmaSegment>) -> bool {
        let domain = match self.translation {
            DmaTranslation::Untranslated => {
                device.extend_from_slice(segments);
                return true;
            }
            DmaTranslation::Domain { window: false, .. } => return false,
            DmaTranslation::Domain { domain, window: true } => domain,
        };
        let Some(first) = segments.first() else { return false };
        self.ranges.clear();
        for s in segments {
            let start = s.addr & !(PAGE - 1);
            let Some(end) = s.addr.checked_add(s.len as u64).and_then(|e| e.checked_next_multiple_of(PAGE)) else {
                return false;
            };
            self.ranges.push((HostPhysAddr::new(start), end.saturating_sub(start)));
        }
        let ranges = &self.ranges;
        match crate::host::iommu::shared::with_iommu(|iommu| iommu.map_window(domain, ranges, device_writes)) {
            Some(Ok(iova)) => {
                let len = segments.iter().fold(0usize, |n, s| n.saturating_add(s.len));
                device.push(DmaSegment { addr: iova.saturating_add(first.addr % PAGE), len });
                true
            }
            // Too many pages for the window: the bounce buffers take it.
            Some(Err(_)) | None => false,
        }
    }

    fn unmap_direct(&mut self) {
        if let DmaTranslation::Domain { domain, window: true } = self.translation
            && let Some(Err(e)) = crate::host::iommu::shared::with_iommu(|iommu| iommu.unmap_window(domain))
        {
            log::error!(target: "nvme", "cannot clear the transfer window of the DMA domain: {e}");
        }
    }
}
