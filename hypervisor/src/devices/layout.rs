//! The guest's physical and port address spaces, in one place: RAM, the framebuffer,
//! the PCI windows, ECAM, the platform devices and the test scratch page. Every user
//! (device models, the VM's ACPI tables, e820 and the Linux zero page, BAR placement,
//! nested paging) reads these constants, so tables, models and mappings agree.
//!
//! | What | Where | Size |
//! |---|---|---|
//! | RAM (desktop VMs) | GPA 0 up to [`LOW_RAM_MAX`], the rest from [`HIGH_RAM_GPA`] | the VM's memory |
//! | RAM (payload VMs) | GPA 0, one block | the VM's memory |
//! | ACPI tables | GPA 0xE_0000 (reserved low area) | < 128 KiB |
//! | Framebuffer (desktop VMs) | GPA 0xB000_0000 | the mode's size |
//! | 32-bit PCI window (assigned BARs) | GPA 0xC000_0000-0xE000_0000 | 512 MiB |
//! | 64-bit PCI window | above RAM, from GPA 0x8_0000_0000 at the lowest, 1 GiB aligned | 32 GiB |
//! | PCI ECAM (MCFG) | GPA 0xE000_0000 | 256 MiB reserved (ends at 0xF000_0000), bus 0 decoded |
//! | Scratch MMIO (payload VMs) | GPA 0xFEB0_0000 | 4 KiB |
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
/// Scratch MMIO page for test payloads (the payload ABI names the same page).
pub const SCRATCH_MMIO_BASE: u64 = bulkhead_abi::payload::SCRATCH_MMIO;
pub const SCRATCH_MMIO_LEN: u64 = bulkhead_abi::payload::SCRATCH_MMIO_LEN;
/// A desktop VM's RAM fills GPA 0 up to here; the rest continues at [`HIGH_RAM_GPA`],
/// as on a PC with more than 3 GiB (the hole holds the framebuffer, the PCI window,
/// ECAM, the IOAPIC and the local APIC).
pub const LOW_RAM_MAX: u64 = FRAMEBUFFER_GPA;
/// Where RAM above the 32-bit hole starts.
pub const HIGH_RAM_GPA: u64 = 0x1_0000_0000;
/// The ACPI tables live in the reserved area below 1 MiB.
pub const ACPI_TABLES_GPA: u64 = 0xE_0000;
/// A desktop VM's framebuffer: below the 32-bit PCI window and above its low RAM.
pub const FRAMEBUFFER_GPA: u64 = 0xB000_0000;
/// The 32-bit PCI window (the DSDT's `PCI0._CRS`), where assigned 32-bit BARs go.
pub const PCI_MMIO32_START: u64 = 0xC000_0000;
pub const PCI_MMIO32_END: u64 = PCI_ECAM_BASE;
/// The 64-bit PCI window starts above the VM's RAM, never below this ...
pub const PCI_MMIO64_MIN_START: u64 = 0x8_0000_0000;
/// ... is this long ...
pub const PCI_MMIO64_LEN: u64 = 0x8_0000_0000;
/// ... and starts on this alignment.
pub const PCI_MMIO64_ALIGN: u64 = 1 << 30;

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

// Legacy devices, PCI configuration access and ACPI power control.
// ---------------------------------------------------------------------------------------
// Legacy PC devices, PCI configuration and ACPI power control
// (uart16550, i8042, rtc, pci_host, power, scratch).
// ---------------------------------------------------------------------------------------

/// COM1: a 16550A UART, 8 ports.
pub const COM1_PORT: u16 = 0x3F8;
pub const COM1_PORT_COUNT: u16 = 8;
/// COM1's ISA interrupt.
pub const COM1_IRQ: u8 = 4;

/// The i8042 keyboard controller: data port (read output buffer, write input buffer).
pub const I8042_DATA_PORT: u16 = 0x60;
/// The i8042 status (read) and command (write) port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// The keyboard's ISA interrupt. The DSDT should describe a `PNP0303` device with the two
/// ports above and this IRQ, and no `PNP0F13` (mouse): Linux then reports "PS/2 appears
/// to have AUX port disabled" and never probes the AUX port, which has no device here.
pub const I8042_KBD_IRQ: u8 = 1;

/// The MC146818 RTC/CMOS index port (bit 7 of the index is the NMI mask, ignored).
pub const RTC_INDEX_PORT: u16 = 0x70;
/// The RTC/CMOS data port.
pub const RTC_DATA_PORT: u16 = 0x71;
/// The RTC's ISA interrupt (not raised by this model; flags are polled).
pub const RTC_IRQ: u8 = 8;
/// The CMOS index of the century byte, for the FADT `CENTURY` field.
pub const RTC_CENTURY_INDEX: u8 = 0x32;

/// PCI configuration mechanism #1: the address register (32-bit accesses only).
pub const PCI_CONFIG_ADDRESS_PORT: u16 = 0xCF8;
/// PCI configuration mechanism #1: the data window (byte, word or dword).
pub const PCI_CONFIG_DATA_PORT: u16 = 0xCFC;
/// The ports claimed by the PCI host: 0xCF8..0xD00 (including 0xCF9, reset control).
pub const PCI_CONFIG_PORT_COUNT: u16 = 8;
/// Buses covered by the ECAM window (bus 0 only).
pub const PCI_ECAM_BUSES: u16 = 1;
/// Bytes of the ECAM window.
pub const PCI_ECAM_LEN: u64 = PCI_ECAM_BUSES as u64 * (1 << 20);

/// Intel-style reset control register (Linux `reboot=pci`). A byte port inside the PCI
/// configuration range, handled by the PCI host.
pub const RESET_CONTROL_PORT: u16 = 0xCF9;

/// Hardware-reduced ACPI: the FADT `SLEEP_CONTROL_REG` (System I/O, 8 bits).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// Hardware-reduced ACPI: the FADT `SLEEP_STATUS_REG` (System I/O, 8 bits).
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// The FADT `RESET_REG` (System I/O, 8 bits); set `RESET_REG_SUP` in the FADT flags.
pub const ACPI_RESET_PORT: u16 = 0x604;
/// The FADT `RESET_VALUE`.
pub const ACPI_RESET_VALUE: u8 = 0x01;
/// Ports claimed by the power-control device: 0x600..0x605.
pub const ACPI_POWER_PORT_COUNT: u16 = 5;
/// The SLP_TYP value of the DSDT's `_S5` package (`Name (_S5, Package () { 5, 5, 0, 0 })`).
pub const ACPI_S5_SLP_TYP: u8 = 5;

// ---------------------------------------------------------------------------------------

// Everything here sits below 4 GiB, where 32-bit guests and the MADT can reach it.
const _: () = assert!(LAPIC_BASE + LAPIC_SIZE <= 1 << 32);
// The RAM blocks stay out of the hole, and the 64-bit window above both.
const _: () = assert!(ACPI_TABLES_GPA < 1 << 20 && LOW_RAM_MAX <= FRAMEBUFFER_GPA);
const _: () = assert!(HIGH_RAM_GPA >= LAPIC_BASE + LAPIC_SIZE && PCI_MMIO64_MIN_START >= HIGH_RAM_GPA);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::BusRange;

    #[test]
    fn mmio_windows_do_not_overlap() {
        let ranges = [
            BusRange::new(PCI_ECAM_BASE, PCI_ECAM_SIZE).unwrap(),
            BusRange::new(SCRATCH_MMIO_BASE, SCRATCH_MMIO_LEN).unwrap(),
            BusRange::new(FRAMEBUFFER_GPA, PCI_MMIO32_START - FRAMEBUFFER_GPA).unwrap(),
            BusRange::new(PCI_MMIO32_START, PCI_MMIO32_END - PCI_MMIO32_START).unwrap(),
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
