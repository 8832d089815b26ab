//! Interrupt plumbing shared by the device models.
//!
//! - A device raises an interrupt through a [`GsiSink`]: it drives a global system
//!   interrupt (GSI) line. Levels are *logical* (asserted or not); electrical polarity
//!   is the IOAPIC entry's business, which stores it for the guest but does not invert
//!   it (as QEMU and KVM do). Edge-triggered devices call [`GsiSink::pulse`].
//! - The IOAPIC turns a GSI into an [`ApicMessage`] (vector, destination, delivery and
//!   trigger mode) and hands it to an [`ApicSink`], which the virtual local APIC
//!   implements.
//! - ISA IRQs map to GSIs the way the MADT describes them to the guest: IRQ0 (the PIT)
//!   is overridden to GSI 2, IRQ 1 and 3..=15 are identity-mapped, IRQ2 is the 8259
//!   cascade and has no GSI.
//! - Devices that sit on a [`DeviceBus`](super::bus::DeviceBus) cannot reach the
//!   interrupt controller from inside a port or MMIO access; they hold a clone of a
//!   [`GsiLines`] latch instead, and the VM drains it into the controller after each
//!   exit.
#![forbid(unsafe_code)]

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};

/// Something that takes interrupt line levels: the interrupt controller, or a latch.
pub trait GsiSink {
    /// Drives `gsi` to `high` (asserted) or low (deasserted).
    fn set_level(&mut self, gsi: u32, high: bool);

    /// One edge: assert, then deassert.
    fn pulse(&mut self, gsi: u32) {
        self.set_level(gsi, true);
        self.set_level(gsi, false);
    }
}

/// Number of ISA IRQ lines (two cascaded 8259As).
pub const ISA_IRQS: u8 = 16;
/// The 8259 master input the slave is cascaded into.
pub const PIC_CASCADE_IRQ: u8 = 2;
/// The GSI the PIT's IRQ0 is routed to (MADT interrupt source override).
pub const PIT_GSI: u32 = 2;

/// The GSI an ISA IRQ is wired to; `None` for the cascade and numbers above 15.
pub const fn isa_irq_to_gsi(irq: u8) -> Option<u32> {
    match irq {
        0 => Some(PIT_GSI),
        PIC_CASCADE_IRQ => None,
        1..=15 => Some(irq as u32),
        _ => None,
    }
}

/// The ISA IRQ behind a GSI; `None` for GSI 0 (unused: IRQ0 is overridden) and GSIs
/// above 15, which only the IOAPIC has.
pub const fn gsi_to_isa_irq(gsi: u32) -> Option<u8> {
    match gsi {
        PIT_GSI => Some(0),
        1 | 3..=15 => Some(gsi as u8),
        _ => None,
    }
}

/// APIC delivery mode (SDM Vol. 3 11.6.1, ICR bits 10:8; 82093AA 3.2.4, bits 10:8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    ExtInt,
    Reserved,
}

impl DeliveryMode {
    /// From the three-bit field (the value's low three bits).
    pub const fn from_bits(bits: u32) -> DeliveryMode {
        match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            7 => DeliveryMode::ExtInt,
            _ => DeliveryMode::Reserved,
        }
    }
}

/// An interrupt message on the (virtual) APIC bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApicMessage {
    pub vector: u8,
    pub delivery: DeliveryMode,
    /// Logical (true) or physical destination mode.
    pub logical: bool,
    /// The destination. From the IOAPIC and the xAPIC ICR it is 8 bits wide, and 0xFF
    /// is a broadcast even to an x2APIC (as with KVM's 8-bit IOAPIC destinations).
    pub dest: u32,
    /// Whether `dest` is an 8-bit (xAPIC-format) destination.
    pub short_dest: bool,
    /// Level-triggered: the local APIC sets the TMR bit and broadcasts the EOI.
    pub level: bool,
}

/// A local APIC as seen from the interrupt sources.
pub trait ApicSink {
    /// Offers `msg` to the APIC. `true` if it was accepted (destination matched and
    /// the APIC was enabled); the IOAPIC sets Remote IRR only then.
    fn deliver(&mut self, msg: &ApicMessage) -> bool;
}

/// A shared latch of GSI levels and edges for devices that live on a bus and cannot
/// call the interrupt controller directly. Clones share state. Covers GSIs 0..=31.
///
/// Devices call [`GsiSink::set_level`]/[`GsiSink::pulse`] on their clone; the VM
/// calls [`GsiLines::drain_into`] with the interrupt controller after each exit (and
/// after device timers fire), which forwards level changes and pending edges.
#[derive(Debug, Clone, Default)]
pub struct GsiLines {
    inner: Arc<LinesInner>,
}

#[derive(Debug, Default)]
struct LinesInner {
    /// Current line levels as the devices set them.
    levels: AtomicU32,
    /// Levels as last forwarded to the controller.
    forwarded: AtomicU32,
    /// Edges (pulses) not yet forwarded.
    pulses: AtomicU32,
    /// Lines that dropped and rose again while the controller saw them high (the
    /// i8042 output buffer refilled as it was read): forwarded as low-then-high, so an
    /// edge-triggered pin sees the new edge.
    glitches: AtomicU32,
}

/// GSIs a [`GsiLines`] latch can carry.
pub const GSI_LINES: u32 = 32;

impl GsiLines {
    pub fn new() -> GsiLines {
        GsiLines::default()
    }

    /// Forwards every level change and pending pulse since the last drain.
    pub fn drain_into(&self, sink: &mut dyn GsiSink) {
        let levels = self.inner.levels.load(Ordering::Acquire);
        let before = self.inner.forwarded.swap(levels, Ordering::AcqRel);
        let pulses = self.inner.pulses.swap(0, Ordering::AcqRel);
        let glitches = self.inner.glitches.swap(0, Ordering::AcqRel);
        for gsi in 0..GSI_LINES {
            let bit = 1u32.wrapping_shl(gsi);
            if (levels ^ before) & bit != 0 {
                sink.set_level(gsi, levels & bit != 0);
            } else if glitches & levels & bit != 0 {
                sink.set_level(gsi, false);
                sink.set_level(gsi, true);
            }
            if pulses & bit != 0 {
                sink.pulse(gsi);
            }
        }
    }

    /// Whether a drain would forward anything.
    pub fn is_dirty(&self) -> bool {
        self.inner.pulses.load(Ordering::Acquire) != 0
            || self.inner.glitches.load(Ordering::Acquire) != 0
            || self.inner.levels.load(Ordering::Acquire) != self.inner.forwarded.load(Ordering::Acquire)
    }
}

impl GsiSink for GsiLines {
    fn set_level(&mut self, gsi: u32, high: bool) {
        let Some(bit) = 1u32.checked_shl(gsi) else {
            log::warn!(target: "irq", "GSI {gsi} is beyond the latch's {GSI_LINES} lines");
            return;
        };
        if high {
            let was = self.inner.levels.fetch_or(bit, Ordering::AcqRel);
            if was & bit == 0 && self.inner.forwarded.load(Ordering::Acquire) & bit != 0 {
                self.inner.glitches.fetch_or(bit, Ordering::AcqRel);
            }
        } else {
            self.inner.levels.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    fn pulse(&mut self, gsi: u32) {
        match 1u32.checked_shl(gsi) {
            Some(bit) => {
                self.inner.pulses.fetch_or(bit, Ordering::AcqRel);
            }
            None => log::warn!(target: "irq", "GSI {gsi} is beyond the latch's {GSI_LINES} lines"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[derive(Default)]
    struct LineRecorder(Vec<(u32, bool)>);

    impl GsiSink for LineRecorder {
        fn set_level(&mut self, gsi: u32, high: bool) {
            self.0.push((gsi, high));
        }
    }

    #[test]
    fn isa_routing_matches_the_madt_override() {
        assert_eq!(isa_irq_to_gsi(0), Some(2));
        assert_eq!(isa_irq_to_gsi(1), Some(1));
        assert_eq!(isa_irq_to_gsi(2), None);
        assert_eq!(isa_irq_to_gsi(15), Some(15));
        assert_eq!(isa_irq_to_gsi(16), None);
        assert_eq!(gsi_to_isa_irq(2), Some(0));
        assert_eq!(gsi_to_isa_irq(0), None);
        assert_eq!(gsi_to_isa_irq(4), Some(4));
        assert_eq!(gsi_to_isa_irq(16), None);
        for irq in (0..ISA_IRQS).filter(|&i| i != PIC_CASCADE_IRQ) {
            assert_eq!(gsi_to_isa_irq(isa_irq_to_gsi(irq).unwrap()), Some(irq));
        }
    }

    #[test]
    fn pulse_is_assert_then_deassert() {
        let mut r = LineRecorder::default();
        r.pulse(4);
        assert_eq!(r.0, [(4, true), (4, false)]);
    }

    #[test]
    fn delivery_modes_decode() {
        assert_eq!(DeliveryMode::from_bits(0), DeliveryMode::Fixed);
        assert_eq!(DeliveryMode::from_bits(0x704), DeliveryMode::Nmi);
        assert_eq!(DeliveryMode::from_bits(3), DeliveryMode::Reserved);
        assert_eq!(DeliveryMode::from_bits(7), DeliveryMode::ExtInt);
    }

    #[test]
    fn latch_forwards_changes_and_pulses_once() {
        let lines = GsiLines::new();
        let mut device = lines.clone();
        assert!(!lines.is_dirty());
        device.set_level(4, true);
        device.pulse(1);
        device.set_level(40, true); // out of range: dropped
        device.pulse(99);
        assert!(lines.is_dirty());
        let mut r = LineRecorder::default();
        lines.drain_into(&mut r);
        assert_eq!(r.0, [(1, true), (1, false), (4, true)]);
        assert!(!lines.is_dirty());
        // Nothing new: nothing forwarded.
        let mut r = LineRecorder::default();
        lines.drain_into(&mut r);
        assert!(r.0.is_empty());
        // A level that goes up and down between drains is not forwarded at all.
        device.set_level(5, true);
        device.set_level(5, false);
        device.set_level(4, false);
        lines.drain_into(&mut r);
        assert_eq!(r.0, [(4, false)]);
    }

    #[test]
    fn a_line_dropped_and_raised_again_between_drains_gives_a_new_edge() {
        let lines = GsiLines::new();
        let mut device = lines.clone();
        device.set_level(1, true);
        let mut r = LineRecorder::default();
        lines.drain_into(&mut r);
        assert_eq!(r.0, [(1, true)]);
        // The guest reads a byte and the next one is loaded at once.
        device.set_level(1, false);
        device.set_level(1, true);
        assert!(lines.is_dirty());
        let mut r = LineRecorder::default();
        lines.drain_into(&mut r);
        assert_eq!(r.0, [(1, false), (1, true)]);
        // Dropped for good after a glitch: just the fall.
        device.set_level(1, false);
        device.set_level(1, true);
        device.set_level(1, false);
        let mut r = LineRecorder::default();
        lines.drain_into(&mut r);
        assert_eq!(r.0, [(1, false)]);
        assert!(!lines.is_dirty());
    }
}
