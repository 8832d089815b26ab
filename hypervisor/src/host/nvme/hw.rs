//! The real controller behind [`NvmeHw`]: BAR0 through `BarMmio` (the 32-bit PCI hole,
//! which firmware's MTRRs make uncacheable, as for the IOMMU and ECAM windows), the DMA
//! region through the direct map, and the TSC as the clock.
#![deny(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use super::controller::NvmeHw;
use crate::host::device_io::DeviceIo;
use crate::host::pci::access::BarMmio;
use crate::memory::addr::HostPhysAddr;

/// One controller's registers and DMA region. The region is RAM the hypervisor
/// allocated for this controller alone; device addresses equal host physical
/// addresses (the controller's DMA domain maps the region at its own address).
#[derive(Debug)]
pub struct HostNvmeHw {
    io: DeviceIo,
}

impl HostNvmeHw {
    pub fn new(bar: BarMmio, bar_bytes: u64, dma: HostPhysAddr, dma_bytes: u64) -> Self {
        HostNvmeHw { io: DeviceIo::new(bar, bar_bytes, dma, dma_bytes) }
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
}
