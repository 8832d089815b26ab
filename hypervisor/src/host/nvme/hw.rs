//! The real controller behind [`NvmeHw`]: BAR0 through `BarMmio` (the 32-bit PCI hole,
//! which firmware's MTRRs make uncacheable, as for the IOMMU and ECAM windows), the DMA
//! region through the direct map, and the TSC as the clock.
#![deny(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use super::controller::NvmeHw;
use crate::host::dma_region::DmaRegion;
use crate::host::pci::access::BarMmio;
use crate::memory::addr::HostPhysAddr;

/// One controller's registers and DMA region. The region is RAM the hypervisor
/// allocated for this controller alone; device addresses equal host physical
/// addresses (the controller's DMA domain maps the region at its own address).
#[derive(Debug)]
pub struct HostNvmeHw {
    bar: BarMmio,
    bar_bytes: u64,
    dma: DmaRegion,
    ticks_per_us: u64,
}

impl HostNvmeHw {
    pub fn new(bar: BarMmio, bar_bytes: u64, dma: HostPhysAddr, dma_bytes: u64) -> Self {
        let ticks_per_us = (crate::arch::x86::tsc::cached_ticks_per_ms() / 1000).max(1);
        HostNvmeHw { bar, bar_bytes, dma: DmaRegion::new(dma, dma_bytes), ticks_per_us }
    }
}

impl NvmeHw for HostNvmeHw {
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

    #[allow(unsafe_code)]
    fn dma_bytes(&mut self, at: u64, len: usize) -> Option<&mut [u8]> {
        let pa = self.dma.inside(at, len)?;
        // The device may have written this memory behind the compiler's back.
        fence(Ordering::SeqCst);
        // SAFETY: the range lies inside the DMA region (`DmaRegion::inside`), RAM allocated for this
        // controller alone and kept mapped for as long as the driver lives. The only
        // other accesses to it from Rust go through `&mut self` (`dma_read`,
        // `dma_write`), so none can happen while the returned borrow lives. The driver
        // asks for the bounce region only between commands, and never once the drive
        // has failed (a timed-out command may still write there), so the device does
        // not touch it meanwhile either.
        Some(unsafe { crate::memory::direct_map::bytes_mut(pa, len) })
    }

    fn now_us(&mut self) -> u64 {
        crate::arch::x86::instr::rdtsc().checked_div(self.ticks_per_us).unwrap_or(0)
    }

    fn register_bytes(&self) -> u64 {
        self.bar_bytes
    }
}
