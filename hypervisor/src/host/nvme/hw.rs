//! The real controller behind [`NvmeHw`]: BAR0 through `BarMmio` (the 32-bit PCI hole,
//! which firmware's MTRRs make uncacheable, as for the IOMMU and ECAM windows), the DMA
//! region through the direct map, and the TSC as the clock.
#![deny(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use super::controller::NvmeHw;
use crate::host::device_io::DeviceIo;
use crate::host::iommu::DomainId;
use crate::host::pci::access::BarMmio;
use crate::memory::addr::HostPhysAddr;

/// How the controller's DMA addresses reach memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaTranslation {
    /// No IOMMU unit translates its requests: device addresses are host physical
    /// addresses, and it can reach all memory whatever the driver does.
    Untranslated,
    /// Its DMA domain: only what is mapped there, each page at its host physical
    /// address.
    Domain(DomainId),
}

/// One controller's registers and DMA region. The region is RAM the hypervisor
/// allocated for this controller alone; device addresses equal host physical
/// addresses (the controller's DMA domain maps the region at its own address, and
/// a direct transfer's pages likewise for its duration).
#[derive(Debug)]
pub struct HostNvmeHw {
    io: DeviceIo,
    translation: DmaTranslation,
}

impl HostNvmeHw {
    pub fn new(bar: BarMmio, bar_bytes: u64, dma: HostPhysAddr, dma_bytes: u64, translation: DmaTranslation) -> Self {
        HostNvmeHw { io: DeviceIo::new(bar, bar_bytes, dma, dma_bytes), translation }
    }
}

fn host_ranges(pages: &[(u64, u64)]) -> alloc::vec::Vec<(HostPhysAddr, u64)> {
    pages.iter().map(|&(at, n)| (HostPhysAddr::new(at), n)).collect()
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
        // asks for the bounce region only between commands, and never once the drive
        // has failed (a timed-out command may still write there), so the device does
        // not touch it meanwhile either.
        Some(unsafe { crate::memory::direct_map::bytes_mut(pa, len) })
    }

    fn now_us(&mut self) -> u64 {
        self.io.now_us()
    }

    fn register_bytes(&self) -> u64 {
        self.io.register_bytes()
    }

    /// Untranslated: nothing to do (the drive reaches all memory anyway). In a
    /// domain: the pages are mapped there at their own addresses, read-only unless
    /// the drive writes them.
    fn map_direct(&mut self, pages: &[(u64, u64)], device_writes: bool) -> bool {
        match self.translation {
            DmaTranslation::Untranslated => true,
            DmaTranslation::Domain(domain) => {
                let ranges = host_ranges(pages);
                let mapped =
                    crate::vm::passthrough::with_iommu(|iommu| iommu.map_identity(domain, &ranges, device_writes));
                match mapped {
                    Some(Ok(())) => true,
                    Some(Err(e)) => {
                        crate::limited!(
                            crate::log_limit::Source::Emulation,
                            0,
                            log::warn!(target: "nvme", "cannot map a transfer's pages in the DMA domain: {e}")
                        );
                        false
                    }
                    None => false,
                }
            }
        }
    }

    fn unmap_direct(&mut self, pages: &[(u64, u64)]) {
        if let DmaTranslation::Domain(domain) = self.translation {
            let ranges = host_ranges(pages);
            if let Some(Err(e)) = crate::vm::passthrough::with_iommu(|iommu| iommu.unmap_identity(domain, &ranges)) {
                log::error!(target: "nvme", "cannot unmap a transfer's pages from the DMA domain: {e}");
            }
        }
    }
}
