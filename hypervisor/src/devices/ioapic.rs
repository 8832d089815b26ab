//! An 82093AA-style I/O APIC with 24 redirection entries, at
//! [`IOAPIC_BASE`](super::layout::IOAPIC_BASE). The guest selects a register through
//! IOREGSEL (+0x00) and reads or writes it through IOWIN (+0x10).
//!
//! A GSI's level comes in through [`Vioapic::set_level`]; the entry turns it into an
//! [`ApicMessage`] for the local APIC. Edge-triggered pins deliver on a rising edge
//! while unmasked (edges on masked pins are lost, 82093AA 3.2.4). Level-triggered pins
//! deliver while asserted, unmasked and with Remote IRR clear, then set Remote IRR
//! until the local APIC broadcasts the EOI for that vector ([`Vioapic::eoi`]); if the
//! line is still asserted then, the interrupt is delivered again.
//!
//! Levels are logical (asserted or not): the polarity bit is stored for the guest but
//! not applied, as in QEMU and KVM; devices report assertion, not voltage. The version
//! is 0x11, which has no EOI register, so Linux clears a stuck Remote IRR by switching
//! the entry to edge and back; switching to edge clears Remote IRR here as in KVM.
//!
//! Register writes through the [`MmioDevice`] form only change state; the owner calls
//! [`Vioapic::service`] afterwards so that a newly unmasked, asserted level pin is
//! delivered (the [`InterruptController`](super::platform_irq::InterruptController)
//! does this).
#![forbid(unsafe_code)]

use crate::devices::bus::MmioDevice;
use crate::devices::irq::{ApicMessage, ApicSink, DeliveryMode};
use crate::devices::layout::IOAPIC_GSIS;
use crate::hw::AccessSize;

/// The IOAPIC's state.
#[derive(Debug, Clone)]
pub struct Vioapic {
    /// IOAPICID[27:24].
    id: u8,
    /// IOREGSEL.
    select: u8,
    redirection: [RedirectionEntry; PINS],
    /// Line levels (bit per pin) as the devices drive them.
    asserted: u32,
    /// Deliveries refused by the local APIC (wrong destination, APIC disabled).
    undelivered: u64,
    /// Pins driven by a host device's INTx line: the guest's EOI lowers the line
    /// instead of redelivering it, and is reported ([`Vioapic::take_resampled`]) so the
    /// host pin can be unmasked and the device's real level sampled again.
    resample: u32,
    /// Resample pins the guest EOI'd since the last [`Vioapic::take_resampled`].
    resampled: u32,
}

/// One 64-bit redirection table entry (82093AA 3.2.4, Table 3.2.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedirectionEntry(u64);

const PINS: usize = IOAPIC_GSIS as usize;

/// Register offsets in the MMIO window (82093AA 3.0).
pub const IOREGSEL: u64 = 0x00;
pub const IOWIN: u64 = 0x10;

/// Register indices behind IOREGSEL (82093AA 3.1, 3.2).
pub mod index {
    pub const ID: u8 = 0x00;
    pub const VERSION: u8 = 0x01;
    pub const ARBITRATION: u8 = 0x02;
    /// Entry `n` is at `0x10 + 2n` (low dword) and `0x11 + 2n` (high dword).
    pub const REDIRECTION_FIRST: u8 = 0x10;
    pub const REDIRECTION_LAST: u8 = 0x3F;
}

/// IOAPICVER: version 0x11, maximum redirection entry 23 in bits 23:16 (82093AA 3.2.2).
pub const VERSION_VALUE: u32 = 0x11 | ((IOAPIC_GSIS - 1) << 16);

/// Redirection entry fields (82093AA 3.2.4).
pub mod rte {
    pub const VECTOR: u64 = 0xFF;
    pub const DELIVERY_MODE_SHIFT: u32 = 8;
    pub const DEST_LOGICAL: u64 = 1 << 11;
    pub const DELIVERY_STATUS: u64 = 1 << 12;
    pub const POLARITY_LOW: u64 = 1 << 13;
    pub const REMOTE_IRR: u64 = 1 << 14;
    pub const LEVEL: u64 = 1 << 15;
    pub const MASKED: u64 = 1 << 16;
    pub const DEST_SHIFT: u32 = 56;
    /// Bits the guest can write: all but delivery status and Remote IRR in the low
    /// dword, the destination in the high one.
    pub const WRITABLE: u64 = 0xFF00_0000_0001_AFFF;
}

impl RedirectionEntry {
    /// The reset value: masked, everything else 0 (82093AA 3.2.4).
    pub const RESET: RedirectionEntry = RedirectionEntry(rte::MASKED);

    pub const fn raw(self) -> u64 {
        self.0
    }
    pub const fn vector(self) -> u8 {
        (self.0 & rte::VECTOR) as u8
    }
    pub const fn masked(self) -> bool {
        self.0 & rte::MASKED != 0
    }
    pub const fn level(self) -> bool {
        self.0 & rte::LEVEL != 0
    }
    pub const fn remote_irr(self) -> bool {
        self.0 & rte::REMOTE_IRR != 0
    }
    pub const fn active_low(self) -> bool {
        self.0 & rte::POLARITY_LOW != 0
    }
    pub const fn dest(self) -> u8 {
        (self.0 >> rte::DEST_SHIFT) as u8
    }

    fn message(self) -> ApicMessage {
        ApicMessage {
            vector: self.vector(),
            delivery: DeliveryMode::from_bits((self.0 >> rte::DELIVERY_MODE_SHIFT) as u32),
            logical: self.0 & rte::DEST_LOGICAL != 0,
            dest: u32::from(self.dest()),
            short_dest: true,
            level: self.level(),
        }
    }
}

impl Default for Vioapic {
    fn default() -> Self {
        Vioapic::new(0)
    }
}

impl Vioapic {
    /// An IOAPIC after reset: every entry masked.
    pub fn new(id: u8) -> Vioapic {
        Vioapic {
            id: id & 0xF,
            select: 0,
            redirection: [RedirectionEntry::RESET; PINS],
            asserted: 0,
            undelivered: 0,
            resample: 0,
            resampled: 0,
        }
    }

    pub fn entry(&self, pin: u32) -> Option<RedirectionEntry> {
        self.redirection.get(usize::try_from(pin).ok()?).copied()
    }

    fn entry_mut(&mut self, pin: u32) -> Option<&mut RedirectionEntry> {
        self.redirection.get_mut(usize::try_from(pin).ok()?)
    }

    /// Deliveries the local APIC refused.
    pub fn undelivered(&self) -> u64 {
        self.undelivered
    }

    /// Whether `pin`'s line is asserted.
    pub fn is_asserted(&self, pin: u32) -> bool {
        pin < IOAPIC_GSIS && self.asserted & 1u32.wrapping_shl(pin) != 0
    }

    /// Drives GSI `pin` and delivers what that causes.
    pub fn set_level(&mut self, pin: u32, high: bool, apic: &mut dyn ApicSink) {
        let Some(entry) = self.entry(pin) else {
            log::debug!(target: "ioapic", "GSI {pin} has no pin");
            return;
        };
        let bit = 1u32.wrapping_shl(pin);
        let rising = high && self.asserted & bit == 0;
        if high {
            self.asserted |= bit;
        } else {
            self.asserted &= !bit;
        }
        if entry.level() {
            self.service_pin(pin, apic);
        } else if rising && !entry.masked() {
            self.send(entry, apic);
        }
    }

    /// Delivers every level-triggered pin that is asserted, unmasked and not waiting
    /// for an EOI. Call after register writes.
    pub fn service(&mut self, apic: &mut dyn ApicSink) {
        for pin in 0..IOAPIC_GSIS {
            self.service_pin(pin, apic);
        }
    }

    fn service_pin(&mut self, pin: u32, apic: &mut dyn ApicSink) {
        let Some(entry) = self.entry(pin) else { return };
        if !entry.level() || entry.masked() || entry.remote_irr() || !self.is_asserted(pin) {
            return;
        }
        if self.send(entry, apic)
            && let Some(e) = self.entry_mut(pin)
        {
            e.0 |= rte::REMOTE_IRR;
        }
    }

    fn send(&mut self, entry: RedirectionEntry, apic: &mut dyn ApicSink) -> bool {
        let accepted = apic.deliver(&entry.message());
        if !accepted {
            self.undelivered = self.undelivered.wrapping_add(1);
            if self.undelivered.is_power_of_two() {
                log::debug!(target: "ioapic", "entry {:#x} not accepted ({} so far)", entry.raw(), self.undelivered);
            }
        }
        accepted
    }

    /// The local APIC's EOI broadcast for `vector`: clears Remote IRR on every
    /// level-triggered entry with that vector, and redelivers lines still asserted.
    pub fn eoi(&mut self, vector: u8, apic: &mut dyn ApicSink) {
        for pin in 0..IOAPIC_GSIS {
            let Some(e) = self.entry_mut(pin) else { continue };
            if e.vector() == vector && e.level() && e.remote_irr() {
                e.0 &= !rte::REMOTE_IRR;
                self.end_of_interrupt(pin);
                self.service_pin(pin, apic);
            }
        }
    }

    /// Marks `pin` as driven by a host device's INTx line (or not).
    pub fn set_resample(&mut self, pin: u32, on: bool) {
        if pin >= IOAPIC_GSIS {
            return;
        }
        let bit = 1u32.wrapping_shl(pin);
        if on {
            self.resample |= bit;
        } else {
            self.resample &= !bit;
            self.resampled &= !bit;
        }
    }

    /// The resample pins the guest finished an interrupt on since the last call (bit
    /// per pin): their lines are low now; the host unmasks the device's real pin.
    pub fn take_resampled(&mut self) -> u32 {
        core::mem::take(&mut self.resampled)
    }

    /// Remote IRR of `pin` just cleared: a resample pin's line drops until the host
    /// samples the device again.
    fn end_of_interrupt(&mut self, pin: u32) {
        let bit = 1u32.wrapping_shl(pin);
        if self.resample & bit != 0 {
            self.asserted &= !bit;
            self.resampled |= bit;
        }
    }

    /// Reads the register IOREGSEL selects.
    pub fn read_register(&self, index: u8) -> u32 {
        match index {
            index::ID => u32::from(self.id) << 24,
            index::VERSION => VERSION_VALUE,
            index::ARBITRATION => u32::from(self.id) << 24,
            index::REDIRECTION_FIRST..=index::REDIRECTION_LAST => {
                let (pin, high) = redirection_slot(index);
                let raw = self.entry(pin).map_or(0, RedirectionEntry::raw);
                if high { (raw >> 32) as u32 } else { raw as u32 }
            }
            _ => 0,
        }
    }

    /// Writes the register IOREGSEL selects. Read-only bits and registers keep their
    /// value.
    pub fn write_register(&mut self, index: u8, value: u32) {
        match index {
            index::ID => self.id = ((value >> 24) & 0xF) as u8,
            index::REDIRECTION_FIRST..=index::REDIRECTION_LAST => {
                let (pin, high) = redirection_slot(index);
                let Some(e) = self.entry_mut(pin) else { return };
                let (keep, new) = if high {
                    (0x0000_0000_FFFF_FFFF, u64::from(value) << 32)
                } else {
                    (0xFFFF_FFFF_0000_0000, u64::from(value))
                };
                let writable = rte::WRITABLE & !keep;
                e.0 = (e.0 & !writable) | (new & writable);
                if !e.level() && e.remote_irr() {
                    e.0 &= !rte::REMOTE_IRR;
                    self.end_of_interrupt(pin);
                }
            }
            _ => log::debug!(target: "ioapic", "write of {value:#x} to read-only register {index:#x} ignored"),
        }
    }

    /// A read of the MMIO window.
    pub fn mmio_read(&mut self, offset: u64, size: AccessSize) -> u64 {
        match (offset, size) {
            (IOREGSEL, _) => u64::from(self.select),
            (IOWIN, AccessSize::Dword | AccessSize::Qword) => u64::from(self.read_register(self.select)),
            _ => 0,
        }
    }

    /// A write to the MMIO window; afterwards call [`Vioapic::service`].
    pub fn mmio_write(&mut self, offset: u64, size: AccessSize, value: u64) {
        match (offset, size) {
            (IOREGSEL, _) => self.select = value as u8,
            (IOWIN, AccessSize::Dword | AccessSize::Qword) => self.write_register(self.select, value as u32),
            _ => log::debug!(target: "ioapic", "dropping {}-byte write at {offset:#x}", size.bytes()),
        }
    }
}

/// Entry number and half of a redirection register index.
fn redirection_slot(index: u8) -> (u32, bool) {
    let rel = index.wrapping_sub(index::REDIRECTION_FIRST);
    (u32::from(rel >> 1), rel & 1 != 0)
}

/// The register window, for a [`MmioDevice`] bus; the owner must call
/// [`Vioapic::service`] after writes.
impl MmioDevice for Vioapic {
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        self.mmio_read(offset, size)
    }
    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        self.mmio_write(offset, size, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Records messages; accepts those to physical destination 0 or broadcast.
    #[derive(Default)]
    struct Apic(Vec<ApicMessage>);

    impl ApicSink for Apic {
        fn deliver(&mut self, msg: &ApicMessage) -> bool {
            let ours = msg.logical || msg.dest == 0 || msg.dest == 0xFF;
            if ours {
                self.0.push(*msg);
            }
            ours
        }
    }

    fn write_entry(io: &mut Vioapic, pin: u8, value: u64) {
        io.mmio_write(IOREGSEL, AccessSize::Dword, u64::from(0x11 + 2 * pin));
        io.mmio_write(IOWIN, AccessSize::Dword, value >> 32);
        io.mmio_write(IOREGSEL, AccessSize::Dword, u64::from(0x10 + 2 * pin));
        io.mmio_write(IOWIN, AccessSize::Dword, value & 0xFFFF_FFFF);
    }

    fn read_reg(io: &mut Vioapic, index: u8) -> u32 {
        io.mmio_write(IOREGSEL, AccessSize::Dword, u64::from(index));
        io.mmio_read(IOWIN, AccessSize::Dword) as u32
    }

    #[test]
    fn identification_registers() {
        let mut io = Vioapic::new(2);
        assert_eq!(read_reg(&mut io, 0), 2 << 24);
        assert_eq!(read_reg(&mut io, 1), 0x0017_0011);
        assert_eq!(read_reg(&mut io, 2), 2 << 24);
        assert_eq!(io.mmio_read(IOREGSEL, AccessSize::Dword), 2);
        io.write_register(index::ID, 0x0500_0000);
        io.write_register(index::VERSION, 0);
        assert_eq!(read_reg(&mut io, 0), 5 << 24);
        assert_eq!(read_reg(&mut io, 1), VERSION_VALUE);
        // Unknown indices and window offsets read 0; byte reads of IOWIN too.
        assert_eq!(read_reg(&mut io, 0x40), 0);
        assert_eq!(io.mmio_read(0x20, AccessSize::Dword), 0);
        assert_eq!(io.mmio_read(IOWIN, AccessSize::Byte), 0);
    }

    #[test]
    fn entries_reset_masked_and_keep_read_only_bits() {
        let mut io = Vioapic::default();
        for pin in 0..24 {
            assert_eq!(read_reg(&mut io, 0x10 + 2 * pin), 1 << 16);
            assert_eq!(read_reg(&mut io, 0x11 + 2 * pin), 0);
        }
        write_entry(&mut io, 5, u64::MAX);
        assert_eq!(io.entry(5).unwrap().raw(), rte::WRITABLE);
        assert!(io.entry(24).is_none());
        // Writing past the last entry's index does nothing.
        io.write_register(0x40, 1);
    }

    #[test]
    fn linux_pit_routing_edge() {
        let mut io = Vioapic::default();
        let mut apic = Apic::default();
        // Masked: the edge is lost.
        io.set_level(2, true, &mut apic);
        io.set_level(2, false, &mut apic);
        assert!(apic.0.is_empty());
        // ioapic_setup: vector 0x30, fixed, physical dest 0, edge, active high.
        write_entry(&mut io, 2, 0x30);
        io.service(&mut apic);
        assert!(apic.0.is_empty(), "edge pins are not re-sent on unmask");
        io.set_level(2, true, &mut apic);
        io.set_level(2, true, &mut apic); // no new edge
        io.set_level(2, false, &mut apic);
        assert_eq!(apic.0.len(), 1);
        assert_eq!(
            apic.0[0],
            ApicMessage {
                vector: 0x30,
                delivery: DeliveryMode::Fixed,
                logical: false,
                dest: 0,
                short_dest: true,
                level: false
            }
        );
        io.set_level(2, true, &mut apic);
        assert_eq!(apic.0.len(), 2);
    }

    #[test]
    fn resample_pins_drop_their_line_on_eoi_and_report_it() {
        let mut io = Vioapic::default();
        let mut apic = Apic::default();
        write_entry(&mut io, 17, rte::LEVEL | rte::POLARITY_LOW | 0x51);
        io.set_resample(17, true);
        io.set_level(17, true, &mut apic);
        assert_eq!(apic.0.len(), 1);
        assert_eq!(io.take_resampled(), 0, "nothing until the guest EOIs");
        io.eoi(0x51, &mut apic);
        // The line is low now: no redelivery; the host is told to sample the device.
        assert_eq!(apic.0.len(), 1);
        assert!(!io.is_asserted(17));
        assert_eq!(io.take_resampled(), 1 << 17);
        assert_eq!(io.take_resampled(), 0, "reported once");
        // The device still asserts: the host raises the line again, one more delivery.
        io.set_level(17, true, &mut apic);
        assert_eq!(apic.0.len(), 2);
        // Clearing Remote IRR by switching to edge (Linux's EOI for old I/O APICs)
        // counts as the end of the interrupt too.
        let low = read_reg(&mut io, 0x10 + 2 * 17);
        io.write_register(0x10 + 2 * 17, low & !(rte::LEVEL as u32));
        assert_eq!(io.take_resampled(), 1 << 17);
        // An ordinary level pin keeps redelivering while asserted.
        io.set_resample(17, false);
        write_entry(&mut io, 17, rte::LEVEL | 0x51);
        io.set_level(17, true, &mut apic);
        io.eoi(0x51, &mut apic);
        assert_eq!(apic.0.len(), 4);
        assert_eq!(io.take_resampled(), 0);
    }

    #[test]
    fn level_remote_irr_until_eoi() {
        let mut io = Vioapic::default();
        let mut apic = Apic::default();
        // Level, active low (a PCI INTx line), vector 0x41, logical dest 1.
        write_entry(&mut io, 16, (1 << 56) | rte::LEVEL | rte::POLARITY_LOW | rte::DEST_LOGICAL | 0x41);
        io.set_level(16, true, &mut apic);
        assert_eq!(apic.0.len(), 1);
        assert!(apic.0[0].level && apic.0[0].logical);
        assert!(io.entry(16).unwrap().remote_irr());
        assert_ne!(read_reg(&mut io, 0x30) & (1 << 14), 0);
        // Still asserted: nothing more until the EOI.
        io.set_level(16, true, &mut apic);
        io.service(&mut apic);
        assert_eq!(apic.0.len(), 1);
        // A guest write cannot clear Remote IRR while the entry stays level.
        let low = read_reg(&mut io, 0x30);
        io.write_register(0x30, low & !(1 << 14));
        assert!(io.entry(16).unwrap().remote_irr());
        // EOI for another vector changes nothing; the right one redelivers.
        io.eoi(0x42, &mut apic);
        assert_eq!(apic.0.len(), 1);
        io.eoi(0x41, &mut apic);
        assert_eq!(apic.0.len(), 2);
        // Deasserted before the EOI: Remote IRR clears, nothing is resent.
        io.set_level(16, false, &mut apic);
        io.eoi(0x41, &mut apic);
        assert!(!io.entry(16).unwrap().remote_irr());
        assert_eq!(apic.0.len(), 2);
    }

    #[test]
    fn level_pin_delivers_when_unmasked() {
        let mut io = Vioapic::default();
        let mut apic = Apic::default();
        write_entry(&mut io, 9, rte::MASKED | rte::LEVEL | 0x39);
        io.set_level(9, true, &mut apic);
        assert!(apic.0.is_empty());
        write_entry(&mut io, 9, rte::LEVEL | 0x39);
        io.service(&mut apic);
        assert_eq!(apic.0.len(), 1);
    }

    #[test]
    fn switching_to_edge_clears_remote_irr() {
        let mut io = Vioapic::default();
        let mut apic = Apic::default();
        write_entry(&mut io, 10, rte::LEVEL | 0x3A);
        io.set_level(10, true, &mut apic);
        assert!(io.entry(10).unwrap().remote_irr());
        // Linux's __eoi_ioapic_pin for version < 0x20: mask + edge, then restore.
        io.write_register(0x10 + 20, (rte::MASKED | 0x3A) as u32);
        assert!(!io.entry(10).unwrap().remote_irr());
        io.write_register(0x10 + 20, (rte::LEVEL | 0x3A) as u32);
        io.service(&mut apic);
        assert_eq!(apic.0.len(), 2, "still asserted: delivered again");
    }

    #[test]
    fn refused_deliveries_do_not_set_remote_irr() {
        let mut io = Vioapic::default();
        let mut apic = Apic::default();
        write_entry(&mut io, 3, (5u64 << 56) | rte::LEVEL | 0x33);
        io.set_level(3, true, &mut apic);
        assert!(apic.0.is_empty());
        assert!(!io.entry(3).unwrap().remote_irr());
        assert_eq!(io.undelivered(), 1);
        // Retargeted to this CPU: the next service delivers.
        write_entry(&mut io, 3, rte::LEVEL | 0x33);
        io.service(&mut apic);
        assert_eq!(apic.0.len(), 1);
    }

    #[test]
    fn out_of_range_pins_and_odd_accesses_are_harmless() {
        let mut io = Vioapic::default();
        let mut apic = Apic::default();
        io.set_level(24, true, &mut apic);
        io.set_level(u32::MAX, true, &mut apic);
        assert!(!io.is_asserted(24));
        io.mmio_write(0x14, AccessSize::Dword, 1);
        io.mmio_write(IOWIN, AccessSize::Byte, 1);
        io.mmio_write(IOREGSEL, AccessSize::Byte, 0x10);
        assert_eq!(io.mmio_read(IOWIN, AccessSize::Dword), 1 << 16);
        for sel in 0..=255u8 {
            io.mmio_write(IOREGSEL, AccessSize::Dword, u64::from(sel));
            io.mmio_write(IOWIN, AccessSize::Dword, 0xFFFF_FFFF);
            io.mmio_read(IOWIN, AccessSize::Dword);
        }
        io.service(&mut apic);
    }
}
