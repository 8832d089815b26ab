//! Host-test memory for IOMMU drivers: 4 KiB pages in a map keyed by fake physical
//! address, with contiguous allocation, plus a register file helper. The simulated
//! units (`vtd::fake`, `amdvi::fake`) embed it and read the tables from it exactly as
//! the hardware would.
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::expect_used, clippy::unwrap_used)]

use alloc::boxed::Box;
use std::collections::BTreeMap;

use crate::memory::addr::{HostPhysAddr, PAGE_SIZE};
use crate::memory::frames::{FrameSource, Table};

#[derive(Debug, Default)]
pub struct FakeMem {
    pages: BTreeMap<u64, Box<Table>>,
    next: u64,
    /// Pages handed out and not freed.
    pub live: usize,
    /// Fail allocations once this many pages are live.
    pub limit: Option<usize>,
    /// Ranges passed to `flush_cache`.
    pub flushed: usize,
}

impl FakeMem {
    pub fn new() -> Self {
        Self { next: 0x4000_0000, ..Self::default() }
    }

    pub fn alloc_pages(&mut self, npages: usize) -> Option<HostPhysAddr> {
        if self.limit.is_some_and(|l| self.live + npages > l) {
            return None;
        }
        let base = self.next;
        for i in 0..npages as u64 {
            self.pages.insert(base + i * PAGE_SIZE, Box::new([0; 512]));
        }
        self.next += npages as u64 * PAGE_SIZE;
        self.live += npages;
        Some(HostPhysAddr::new(base))
    }

    pub fn read_u64(&self, pa: u64) -> u64 {
        self.pages.get(&(pa & !0xfff)).map_or(u64::MAX, |p| p[((pa & 0xfff) / 8) as usize])
    }

    pub fn write_u64(&mut self, pa: u64, value: u64) {
        if let Some(p) = self.pages.get_mut(&(pa & !0xfff)) {
            p[((pa & 0xfff) / 8) as usize] = value;
        }
    }

    pub fn write_u32(&mut self, pa: u64, value: u32) {
        let word = self.read_u64(pa & !7);
        let shift = (pa & 4) * 8;
        self.write_u64(pa & !7, (word & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift));
    }

    pub fn read_u32(&self, pa: u64) -> u32 {
        (self.read_u64(pa & !7) >> ((pa & 4) * 8)) as u32
    }
}

impl FrameSource for FakeMem {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        self.alloc_pages(1)
    }
    fn free(&mut self, frame: HostPhysAddr) {
        assert!(self.pages.remove(&frame.raw()).is_some(), "free of unknown frame {frame}");
        self.live -= 1;
    }
    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table {
        self.pages.get_mut(&frame.raw()).expect("live frame")
    }
}

/// A little-endian register block.
#[derive(Debug, Clone)]
pub struct Regs(pub alloc::vec::Vec<u8>);

impl Regs {
    pub fn new(len: usize) -> Self {
        Self(alloc::vec![0; len])
    }
    pub fn r32(&self, off: usize) -> u32 {
        self.0.get(off..off + 4).map_or(u32::MAX, |b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    pub fn r64(&self, off: usize) -> u64 {
        self.0.get(off..off + 8).map_or(u64::MAX, |b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    pub fn w32(&mut self, off: usize, v: u32) {
        if let Some(b) = self.0.get_mut(off..off + 4) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }
    pub fn w64(&mut self, off: usize, v: u64) {
        if let Some(b) = self.0.get_mut(off..off + 8) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// A PCI function for test inventories.
pub fn pci_dev(bus: u8, device: u8, function: u8, class: [u8; 2]) -> crate::host::pci::PciDevice {
    crate::host::pci::PciDevice {
        bdf: crate::hw::Bdf::new(0, bus, device, function),
        vendor_id: 0x8086,
        device_id: 0x1000 + u16::from(device),
        revision: 0,
        class: class[0],
        subclass: class[1],
        prog_if: 0,
        header_type: 0,
        multifunction: false,
        interrupt_pin: 1,
        interrupt_line: 11,
        bars: alloc::vec::Vec::new(),
        rom: None,
        capabilities: alloc::vec::Vec::new(),
        ext_capabilities: alloc::vec::Vec::new(),
        bridge: None,
    }
}

/// A PCI-PCI bridge (root port) with the given bus numbers.
pub fn pci_bridge(bus: u8, device: u8, function: u8, secondary: u8, subordinate: u8) -> crate::host::pci::PciDevice {
    let mut d = pci_dev(bus, device, function, [0x06, 0x04]);
    d.header_type = 1;
    d.bridge = Some(crate::host::pci::BridgeBuses { primary: bus, secondary, subordinate });
    d
}

/// QEMU's q35 layout of the ACPI fixtures: host bridge, root port 00:03.0 with an
/// e1000e at 01:00.0, virtio-net at 00:04.0, and the ICH9 functions at 00:1f.
pub fn qemu_q35_inventory() -> crate::host::pci::PciInventory {
    let mut lpc = pci_dev(0, 0x1f, 0, [0x06, 0x01]);
    lpc.multifunction = true;
    let mut sata = pci_dev(0, 0x1f, 2, [0x01, 0x06]);
    sata.multifunction = true;
    let mut smbus = pci_dev(0, 0x1f, 3, [0x0c, 0x05]);
    smbus.multifunction = true;
    crate::host::pci::PciInventory::new(
        alloc::vec![
            pci_dev(0, 0, 0, [0x06, 0x00]),
            pci_bridge(0, 3, 0, 1, 1),
            pci_dev(1, 0, 0, [0x02, 0x00]),
            pci_dev(0, 4, 0, [0x02, 0x00]),
            lpc,
            sata,
            smbus,
        ],
        true,
    )
}
