//! Where the platform devices sit in the guest's physical and port address spaces.
//!
//! | What | Where | Size |
//! |---|---|---|
//! | PCI ECAM (MCFG) | GPA 0xE000_0000 | 256 MiB (ends at 0xF000_0000) |
//! | Scratch MMIO | GPA 0xFEB0_0000 | 1 MiB |
//! | IOAPIC (82093AA) | GPA 0xFEC0_0000 | 4 KiB, 24 GSIs |
//! | Local APIC (xAPIC page) | GPA 0xFEE0_0000 | 4 KiB |
//! | 8259A master | ports 0x20-0x21 | |
//! | 8254 PIT | ports 0x40-0x43 | |
//! | NMI status / speaker (PIT gate 2, OUT2) | port 0x61 | |
//! | 8259A slave | ports 0xA0-0xA1 | |
//! | ELCR (edge/level control) | ports 0x4D0-0x4D1 | |
//!
//! The virtual framebuffer sits above 4 GiB. The MADT describes the IOAPIC with GSI
//! base 0 and an interrupt source override ISA IRQ0 → GSI 2 (edge, active high); see
//! [`irq`](super::irq).
#![forbid(unsafe_code)]

/// Local APIC MMIO page (IA32_APIC_BASE default; SDM Vol. 3 11.4.1).
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
pub const LAPIC_SIZE: u64 = 0x1000;

/// IOAPIC register window (82093AA 3.0: IOREGSEL at +0x00, IOWIN at +0x10).
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Redirection entries, hence GSIs 0..24, handled by the one IOAPIC.
pub const IOAPIC_GSIS: u32 = 24;
/// The IOAPIC's ID in its ID register and the MADT.
pub const IOAPIC_ID: u8 = 0;

/// PCI ECAM window; owned by the PCI code, listed to keep the map in one place.
pub const PCI_ECAM_BASE: u64 = 0xE000_0000;
pub const PCI_ECAM_SIZE: u64 = 0x1000_0000;
/// Scratch MMIO window for test devices.
pub const SCRATCH_MMIO_BASE: u64 = 0xFEB0_0000;
pub const SCRATCH_MMIO_SIZE: u64 = 0x10_0000;

/// 8259A master command/data ports.
pub const PIC_MASTER_CMD: u16 = 0x20;
pub const PIC_MASTER_DATA: u16 = 0x21;
/// 8259A slave command/data ports.
pub const PIC_SLAVE_CMD: u16 = 0xA0;
pub const PIC_SLAVE_DATA: u16 = 0xA1;
/// Edge/level control registers for IRQ 0-7 and 8-15.
pub const ELCR_MASTER: u16 = 0x4D0;
pub const ELCR_SLAVE: u16 = 0x4D1;

/// 8254 counters 0-2 and the control word register.
pub const PIT_CHANNEL0: u16 = 0x40;
pub const PIT_CHANNEL1: u16 = 0x41;
pub const PIT_CHANNEL2: u16 = 0x42;
pub const PIT_COMMAND: u16 = 0x43;
/// System control port B: PIT gate 2, speaker enable, OUT2 status.
pub const SYSTEM_CONTROL_B: u16 = 0x61;

// Everything here sits below 4 GiB, where 32-bit guests and the MADT can reach it.
const _: () = assert!(LAPIC_BASE + LAPIC_SIZE <= 1 << 32);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::devices::bus::BusRange;

    #[test]
    fn mmio_windows_do_not_overlap() {
        let ranges = [
            BusRange::new(PCI_ECAM_BASE, PCI_ECAM_SIZE).unwrap(),
            BusRange::new(SCRATCH_MMIO_BASE, SCRATCH_MMIO_SIZE).unwrap(),
            BusRange::new(IOAPIC_BASE, IOAPIC_SIZE).unwrap(),
            BusRange::new(LAPIC_BASE, LAPIC_SIZE).unwrap(),
        ];
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
        assert_eq!(PCI_ECAM_BASE + PCI_ECAM_SIZE, 0xF000_0000);
    }

    #[test]
    fn port_ranges_do_not_overlap() {
        let ranges = [
            BusRange::new(u64::from(PIC_MASTER_CMD), 2).unwrap(),
            BusRange::new(u64::from(PIT_CHANNEL0), 4).unwrap(),
            BusRange::new(u64::from(SYSTEM_CONTROL_B), 1).unwrap(),
            BusRange::new(u64::from(PIC_SLAVE_CMD), 2).unwrap(),
            BusRange::new(u64::from(ELCR_MASTER), 2).unwrap(),
        ];
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
        assert_eq!(PIT_COMMAND, PIT_CHANNEL0 + 3);
        assert_eq!(PIT_CHANNEL2, PIT_CHANNEL1 + 1);
        assert_eq!((PIC_MASTER_DATA, PIC_SLAVE_DATA, ELCR_SLAVE), (0x21, 0xA1, 0x4D1));
    }
}
