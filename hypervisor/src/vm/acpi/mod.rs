//! Per-VM ACPI tables for guests: RSDP (revision 2), XSDT, a hardware-reduced FADT,
//! MADT, MCFG and a DSDT, built from an [`AcpiConfig`] into one blob that the VM copies
//! to guest memory and hands to Linux through `boot_params.acpi_rsdp_addr`.
//!
//! The platform they describe (see `docs/guest-platform.md`):
//! - **Hardware-reduced ACPI.** No PM timer, GPEs, SCI, FACS or SMI command port.
//!   Power-off is a write of `SLP_EN | 5 << 2` (0x34) to the sleep control register
//!   (port 0x600) once OSPM has evaluated `\_S5_`; reset is a write of 0x01 to the
//!   reset register (port 0x604). Linux 6.1 on such a FADT installs the null legacy
//!   PIC and no PIT/HPET tick (`acpi_generic_reduced_hw_init`), so its only clock
//!   events are the local APIC timers, calibrated against the TSC (whose frequency
//!   kvmclock provides) or driven by TSC-deadline.
//! - **Interrupts.** One I/O APIC (GSI base 0), one local APIC (or x2APIC from ID 255)
//!   per vCPU, PIT on GSI 2 through an interrupt source override, NMI on LINT1.
//! - **PCI.** Segment 0, ECAM in MCFG and reserved by a `PNP0C02` device so Linux uses
//!   it, a `PNP0A08` host bridge with the bus range and I/O and MMIO windows.
//! - **Legacy devices** for Linux's PNP layer: COM1, the i8042 keyboard (and
//!   optionally mouse) port, the CMOS RTC.
//!
//! Building never reads guest memory and never panics on a validated configuration;
//! invalid ones are rejected with a [`GuestAcpiError`].
#![deny(unsafe_code)]

mod config;
mod dsdt;
mod tables;
#[cfg(test)]
mod tests;

pub use config::{
    AcpiConfig, AcpiPciHost, AcpiWindow, DEFAULT_TABLES_GPA, ECAM_BYTES_PER_BUS, GuestAcpiError, IoApicInfo,
    LegacyDevices, MAX_VCPUS, PciIntx, PowerPorts, S5_SLP_TYP,
};
pub use tables::{AcpiBlob, TableLocation, build_acpi_tables, checksum};
