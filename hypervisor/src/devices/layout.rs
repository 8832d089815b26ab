//! Where the VM's emulated devices live: port numbers, guest-physical windows and
//! interrupt lines. The guest's ACPI tables (FADT, DSDT, MCFG, MADT) are generated from
//! these constants, so the tables and the device models cannot disagree.
#![forbid(unsafe_code)]

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
/// The ECAM (MMCONFIG) window for the MCFG table; 1 MiB per bus. Describe it in the MCFG
/// and reserve it in e820, or Linux falls back to mechanism #1.
pub const PCI_ECAM_BASE: u64 = 0xE000_0000;
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

/// The payload scratch MMIO window (4 KiB).
pub const SCRATCH_MMIO_BASE: u64 = bulkhead_abi::payload::SCRATCH_MMIO;
pub const SCRATCH_MMIO_LEN: u64 = bulkhead_abi::payload::SCRATCH_MMIO_LEN;

// ---------------------------------------------------------------------------------------
