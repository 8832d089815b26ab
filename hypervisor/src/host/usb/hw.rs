//! The real controller behind [`XhciHw`]: its registers through `BarMmio` (mapped
//! uncacheable above 4 GiB when the firmware put the BAR there), the DMA region through
//! the direct map, and the TSC as the clock.
#![forbid(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use super::controller::XhciHw;
use crate::host::dma_region::DmaRegion;
use crate::host::pci::access::BarMmio;
use crate::memory::addr::HostPhysAddr;

/// One controller's registers and DMA region. The region is RAM the hypervisor
/// allocated for this controller alone; device addresses equal host physical
/// addresses (the controller's DMA domain maps the region at its own address).
#[derive(Debug)]
pub struct HostXhciHw {
    bar: BarMmio,
    bar_bytes: u64,
    dma: DmaRegion,
    ticks_per_us: u64,
}

impl HostXhciHw {
    pub fn new(bar: BarMmio, bar_bytes: u64, dma: HostPhysAddr, dma_bytes: u64) -> Self {
        let ticks_per_us = (crate::arch::x86::tsc::cached_ticks_per_ms() / 1000).max(1);
        HostXhciHw { bar, bar_bytes, dma: DmaRegion::new(dma, dma_bytes), ticks_per_us }
    }

    /// The DMA region, once it is allocated (the capability registers say how large).
    pub fn set_dma(&mut self, dma: HostPhysAddr, dma_bytes: u64) {
        self.dma = DmaRegion::new(dma, dma_bytes);
    }
}

impl XhciHw for HostXhciHw {
    fn read32(&mut self, offset: u64) -> u32 {
        self.bar.read(offset, 4) as u32
    }

    fn write32(&mut self, offset: u64, value: u32) {
        // Queue entries and PRP lists written before are visible to the device before
        // the doorbell rings (x86 keeps stores in order; this keeps the compiler so).
        fence(Ordering::SeqCst);
        self.bar.write(offset, 4, u64::from(value));
    }

    fn dma_read(&mut self, at: u64, buf: &mut [u8]) -> bool {
        self.dma.read(at, buf)
    }

    fn dma_write(&mut self, at: u64, data: &[u8]) -> bool {
        self.dma.write(at, data)
    }

    fn now_us(&mut self) -> u64 {
        crate::arch::x86::instr::rdtsc().checked_div(self.ticks_per_us).unwrap_or(0)
    }

    fn register_bytes(&self) -> u64 {
        self.bar_bytes
    }
}
