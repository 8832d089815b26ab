//! Host-test helpers for IOMMU drivers and PCI code: a register file for the simulated
//! units (`vtd::fake`, `amdvi::fake`, whose memory is `memory::fake_frames`) and PCI
//! function fixtures.

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
