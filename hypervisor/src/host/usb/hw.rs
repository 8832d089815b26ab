//! The real controller behind [`XhciHw`]: its registers through `BarMmio` (mapped
//! uncacheable above 4 GiB when the firmware put the BAR there), the DMA region through
//! the direct map, and the TSC as the clock.
#![forbid(unsafe_code)]

use super::controller::XhciHw;
use crate::host::device_io::DeviceIo;
use crate::host::dma_region::DmaRegion;
use crate::host::pci::access::BarMmio;
use crate::memory::addr::HostPhysAddr;

/// One controller's registers and DMA region. The region is RAM the hypervisor
/// allocated for this controller alone; device addresses equal host physical
/// addresses (the controller's DMA domain maps the region at its own address).
#[derive(Debug)]
pub struct HostXhciHw {
    io: DeviceIo,
}

impl HostXhciHw {
    pub fn new(bar: BarMmio, bar_bytes: u64, dma: HostPhysAddr, dma_bytes: u64) -> Self {
        HostXhciHw { io: DeviceIo::new(bar, bar_bytes, dma, dma_bytes) }
    }

    /// The DMA region, once it is allocated (the capability registers say how large).
    pub fn set_dma(&mut self, dma: HostPhysAddr, dma_bytes: u64) {
        self.io.dma = DmaRegion::new(dma, dma_bytes);
    }
}

impl XhciHw for HostXhciHw {
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

    fn now_us(&mut self) -> u64 {
        self.io.now_us()
    }

    fn register_bytes(&self) -> u64 {
        self.io.register_bytes()
    }
}
