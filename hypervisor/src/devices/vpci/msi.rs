//! MSI and MSI-X as an assigned device's VM sees them (PCI Local Bus Spec 3.0 §6.8):
//! the guest programs virtual registers; the device is programmed only with messages
//! the VM hands back after setting up interrupt remapping, never with the guest's
//! raw address/data.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;

use crate::devices::irq::{ApicMessage, DeliveryMode};
use crate::hw::Bdf;
use crate::hw::MsiMessage;

/// What the guest asked for, decoded from its MSI address/data (Intel SDM Vol. 3
/// §11.11.1-2): vector, destination APIC id (guest numbering), destination mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiRoute {
    pub vector: u8,
    pub dest: u32,
    pub logical: bool,
    /// Delivery mode (0 fixed, 1 lowest priority, ...).
    pub delivery: u8,
}

impl MsiRoute {
    /// `None` unless the address is in the 0xFEEx_xxxx interrupt window, the vector
    /// is a usable one (16..=255) and the delivery mode is fixed, lowest priority or
    /// NMI (SMI, INIT, SIPI and ExtINT from a device are never routed).
    pub fn decode(address: u64, data: u32) -> Option<Self> {
        if address >> 20 != 0xfee {
            return None;
        }
        let vector = data as u8;
        if vector < 16 {
            return None;
        }
        let delivery = ((data >> 8) & 7) as u8;
        let mode = DeliveryMode::from_bits(u32::from(delivery));
        if !matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority | DeliveryMode::Nmi) {
            return None;
        }
        Some(Self { vector, dest: ((address >> 12) & 0xff) as u32, logical: address & (1 << 2) != 0, delivery })
    }

    /// The message the guest's (virtual) local APIC receives: edge-triggered, 8-bit
    /// xAPIC destination as in the guest's MSI address.
    pub fn apic_message(&self) -> ApicMessage {
        ApicMessage {
            vector: self.vector,
            delivery: DeliveryMode::from_bits(u32::from(self.delivery)),
            logical: self.logical,
            dest: self.dest,
            short_dest: true,
            level: false,
        }
    }
}

/// The host MMIO of a device's BAR, as far as the hypervisor writes it (MSI-X
/// table entries); offsets are from the BAR's start, dword accesses.
pub trait BarRegisters {
    fn write32(&mut self, offset: u64, value: u32);
}

/// One MSI-X table entry as the device holds it (PCI Local Bus Spec 3.0 §6.8.2,
/// Figure 6-11 "MSI-X Table Structure"; §6.8.2.6-9 for the fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsixTableEntry {
    /// §6.8.2.6 Message Address (bits 1:0 reserved).
    pub address_lo: u32,
    /// §6.8.2.7 Message Upper Address.
    pub address_hi: u32,
    /// §6.8.2.8 Message Data.
    pub data: u32,
    /// §6.8.2.9 Vector Control (bit 0: Mask Bit).
    pub vector_control: u32,
}

const _: () = {
    assert!(core::mem::size_of::<MsixTableEntry>() == 16);
    assert!(core::mem::offset_of!(MsixTableEntry, address_lo) == 0x0);
    assert!(core::mem::offset_of!(MsixTableEntry, address_hi) == 0x4);
    assert!(core::mem::offset_of!(MsixTableEntry, data) == 0x8);
    assert!(core::mem::offset_of!(MsixTableEntry, vector_control) == 0xc);
};

/// Vector Control bit 0: the entry is masked (PCI 3.0 §6.8.2.9).
pub const MSIX_VECTOR_MASKED: u32 = 1;

/// Programs MSI-X table entry at `offset` of a BAR (§6.8.2.6-9): masks it first,
/// then with a message writes address and data and unmasks, so the device never
/// sends a half-written message. `None` only masks.
pub fn program_msix_entry(regs: &mut dyn BarRegisters, offset: u64, message: Option<MsiMessage>) {
    let at = |field: usize| offset.saturating_add(field as u64);
    regs.write32(at(core::mem::offset_of!(MsixTableEntry, vector_control)), MSIX_VECTOR_MASKED);
    if let Some(m) = message {
        let entry = MsixTableEntry {
            address_lo: m.address as u32,
            address_hi: (m.address >> 32) as u32,
            data: m.data,
            vector_control: 0,
        };
        regs.write32(at(core::mem::offset_of!(MsixTableEntry, address_lo)), entry.address_lo);
        regs.write32(at(core::mem::offset_of!(MsixTableEntry, address_hi)), entry.address_hi);
        regs.write32(at(core::mem::offset_of!(MsixTableEntry, data)), entry.data);
        regs.write32(at(core::mem::offset_of!(MsixTableEntry, vector_control)), entry.vector_control);
    }
}

/// The VM's side of an assigned device's interrupts.
pub trait InterruptRouter {
    /// The guest wants vector `index` of `bdf` delivered per `route` (`None`: the
    /// vector is disabled or masked). Returns the message to program into the
    /// device (from `Iommu::map_msi`), or `None` to keep the vector masked.
    /// Before `None` the device has already stopped sending the vector (MSI disabled,
    /// MSI-X entry masked), so tearing the route down cannot lose it a fault.
    fn route(&mut self, bdf: Bdf, index: u16, route: Option<MsiRoute>) -> Option<MsiMessage>;

    /// Writes entry `index` of the device's real MSI-X table, which lives at `offset`
    /// in BAR `bar` (host MMIO): the message and Vector Control = 0, or with `None`
    /// Vector Control = 1 (masked). See [`program_msix_entry`].
    fn write_msix_entry(&mut self, bdf: Bdf, bar: u8, offset: u64, index: u16, message: Option<MsiMessage>);
}

/// One MSI-X table entry as the guest wrote it (§6.8.2.6-9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixEntry {
    pub address: u64,
    pub data: u32,
    pub masked: bool,
}

/// The guest's MSI-X table, kept in the hypervisor; the VM traps the table's pages.
#[derive(Debug, Clone)]
pub struct MsixTable {
    pub bar: u8,
    pub table_offset: u32,
    pub entries: Vec<MsixEntry>,
    /// What the device currently has, per entry (to avoid rewriting unchanged ones).
    programmed: Vec<Option<MsiMessage>>,
}

impl MsixTable {
    pub fn new(bar: u8, table_offset: u32, size: u16) -> Self {
        let n = usize::from(size.clamp(1, 2048));
        Self {
            bar,
            table_offset,
            entries: vec![MsixEntry { address: 0, data: 0, masked: true }; n],
            programmed: vec![None; n],
        }
    }

    /// Table length in bytes.
    pub fn len_bytes(&self) -> u64 {
        (self.entries.len() as u64).saturating_mul(16)
    }

    /// A guest read inside the table (offset from the table start).
    pub fn read(&self, offset: u64, size: u8) -> u32 {
        let Some(e) = self.entries.get(usize::try_from(offset / 16).unwrap_or(usize::MAX)) else {
            return u32::MAX;
        };
        let dword = match (offset % 16) / 4 {
            0 => e.address as u32,
            1 => (e.address >> 32) as u32,
            2 => e.data,
            _ => u32::from(e.masked),
        };
        let shift = u32::try_from(offset % 4).unwrap_or(0).saturating_mul(8);
        let value = dword >> shift;
        match size {
            1 => value & 0xff,
            2 => value & 0xffff,
            _ => value,
        }
    }

    /// A guest write inside the table; returns the entry index touched.
    pub fn write(&mut self, offset: u64, size: u8, value: u32) -> Option<u16> {
        let index = usize::try_from(offset / 16).ok()?;
        let e = self.entries.get_mut(index)?;
        let shift = u32::try_from(offset % 4).unwrap_or(0).saturating_mul(8);
        let mask: u32 = match size {
            1 => 0xff,
            2 => 0xffff,
            _ => u32::MAX,
        };
        let merge = |old: u32| (old & !(mask << shift)) | ((value & mask) << shift);
        match (offset % 16) / 4 {
            0 => e.address = (e.address & !0xffff_ffff) | u64::from(merge(e.address as u32) & !3),
            1 => e.address = (e.address & 0xffff_ffff) | u64::from(merge((e.address >> 32) as u32)) << 32,
            2 => e.data = merge(e.data),
            _ => e.masked = merge(u32::from(e.masked)) & 1 != 0,
        }
        u16::try_from(index).ok()
    }

    /// Brings the device in line with the guest's table: entries that are enabled
    /// (MSI-X on, function not masked, entry not masked, valid address) are routed;
    /// the others are masked on the device.
    pub fn sync(&mut self, bdf: Bdf, enabled: bool, router: &mut dyn InterruptRouter, only: Option<u16>) {
        for (i, (e, programmed)) in self.entries.iter().zip(self.programmed.iter_mut()).enumerate() {
            let Ok(index) = u16::try_from(i) else { break };
            if only.is_some_and(|o| o != index) {
                continue;
            }
            let route = if enabled && !e.masked { MsiRoute::decode(e.address, e.data) } else { None };
            let offset = u64::from(self.table_offset).saturating_add(u64::from(index).saturating_mul(16));
            match route {
                Some(route) => {
                    // Route first, then give the device the remapped message.
                    let message = router.route(bdf, index, Some(route));
                    if message != *programmed {
                        router.write_msix_entry(bdf, self.bar, offset, index, message);
                        *programmed = message;
                    }
                }
                None if programmed.is_some() => {
                    // Mask on the device first, then tear the route down.
                    router.write_msix_entry(bdf, self.bar, offset, index, None);
                    *programmed = None;
                    router.route(bdf, index, None);
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_decoding() {
        assert_eq!(
            MsiRoute::decode(0xfee0_1000, 0x4041),
            Some(MsiRoute { vector: 0x41, dest: 1, logical: false, delivery: 0 })
        );
        assert_eq!(MsiRoute::decode(0xfee0_0004, 0x0130).map(|r| (r.logical, r.delivery)), Some((true, 1)));
        assert_eq!(MsiRoute::decode(0xdead_0000, 0x41), None, "not the interrupt window");
        assert_eq!(MsiRoute::decode(0xfee0_0000, 0x02), None, "reserved vector");
        assert_eq!(MsiRoute::decode(0xfee0_0000, 0x0441).map(|r| r.delivery), Some(4), "NMI");
        for mode in [2u32, 3, 5, 6, 7] {
            assert_eq!(MsiRoute::decode(0xfee0_0000, mode << 8 | 0x41), None, "delivery mode {mode} refused");
        }
    }

    #[test]
    fn apic_message_keeps_the_guests_destination() {
        let m = MsiRoute::decode(0xfee0_300c, 0x0151).unwrap().apic_message();
        assert_eq!(
            m,
            ApicMessage {
                vector: 0x51,
                delivery: DeliveryMode::LowestPriority,
                logical: true,
                dest: 3,
                short_dest: true,
                level: false
            }
        );
    }

    #[derive(Default)]
    struct Writes(Vec<(u64, u32)>);

    impl BarRegisters for Writes {
        fn write32(&mut self, offset: u64, value: u32) {
            self.0.push((offset, value));
        }
    }

    #[test]
    fn msix_entries_are_masked_while_written() {
        let mut w = Writes::default();
        program_msix_entry(&mut w, 0x2010, Some(MsiMessage { address: 0x1_fee0_0010, data: 7 }));
        assert_eq!(w.0, [(0x201c, 1), (0x2010, 0xfee0_0010), (0x2014, 1), (0x2018, 7), (0x201c, 0)]);
        let mut w = Writes::default();
        program_msix_entry(&mut w, 0x2010, None);
        assert_eq!(w.0, [(0x201c, 1)], "masking touches only Vector Control");
    }

    #[test]
    fn table_reads_and_writes() {
        let mut t = MsixTable::new(3, 0x2000, 4);
        assert_eq!(t.read(12, 4), 1, "entries start masked");
        assert_eq!(t.write(16, 4, 0xfee0_1000), Some(1));
        t.write(20, 4, 0);
        t.write(24, 2, 0x41);
        t.write(28, 4, 0);
        assert_eq!(t.entries[1], MsixEntry { address: 0xfee0_1000, data: 0x41, masked: false });
        assert_eq!(t.read(24, 1), 0x41);
        assert_eq!(t.write(64, 4, 0), None, "beyond the table");
        assert_eq!(t.read(64, 4), u32::MAX);
        assert_eq!(t.len_bytes(), 64);
    }
}
