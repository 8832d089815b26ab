//! What a host controller driver needs from the machine, shared by the NVMe and xHCI
//! drivers: its registers through `BarMmio` (the 32-bit PCI hole, or a 64-bit BAR the
//! hypervisor mapped uncached), its DMA region, and the TSC as a microsecond clock.
#![forbid(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use crate::host::dma_region::DmaRegion;
use crate::host::pci::access::BarMmio;
use crate::memory::addr::HostPhysAddr;

#[derive(Debug)]
pub struct DeviceIo {
    bar: BarMmio,
    bar_bytes: u64,
    pub dma: DmaRegion,
    ticks_per_us: u64,
}

impl DeviceIo {
    pub fn new(bar: BarMmio, bar_bytes: u64, dma: HostPhysAddr, dma_bytes: u64) -> Self {
        let ticks_per_us = (crate::arch::x86::tsc::cached_ticks_per_ms() / 1000).max(1);
        DeviceIo { bar, bar_bytes, dma: DmaRegion::new(dma, dma_bytes), ticks_per_us }
    }

    pub fn read32(&mut self, offset: u64) -> u32 {
        self.bar.read(offset, 4) as u32
    }

    pub fn write32(&mut self, offset: u64, value: u32) {
        // Ring entries and lists written before are visible to the device before the
        // doorbell rings (x86 keeps stores in order; this keeps the compiler so).
        fence(Ordering::SeqCst);
        self.bar.write(offset, 4, u64::from(value));
    }

    pub fn now_us(&self) -> u64 {
        crate::arch::x86::instr::rdtsc().checked_div(self.ticks_per_us).unwrap_or(0)
    }

    pub fn register_bytes(&self) -> u64 {
        self.bar_bytes
    }
}
