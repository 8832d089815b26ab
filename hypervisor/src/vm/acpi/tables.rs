//! The fixed-format tables (RSDP, XSDT, FADT, MADT, MCFG), written byte by byte at the
//! offsets of the ACPI 6.5 specification, and the blob that holds them with the DSDT.
//!
//! These are written here rather than with `acpi_tables`' builders because those fix
//! the MADT flags to 0 (no PCAT_COMPAT), have no interrupt source override, local APIC
//! NMI or x2APIC structures, and stamp their own creator ID. The DSDT's AML does use
//! `acpi_tables` (see `dsdt.rs`).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::config::{AcpiConfig, GuestAcpiError};
use super::dsdt::build_dsdt_aml;
use crate::memory::addr::{GuestPhysAddr, PAGE_SIZE};

/// Table header fields shared by every table (ACPI 6.5 §5.2.6).
pub const OEM_ID: [u8; 6] = *b"BULKHD";
pub const OEM_TABLE_ID: [u8; 8] = *b"BULKHEAD";
pub const OEM_REVISION: u32 = 1;
pub const CREATOR_ID: [u8; 4] = *b"BLKH";
pub const CREATOR_REVISION: u32 = 1;

/// System description table header, ACPI 6.5 §5.2.6 (Table 5.4).
mod header {
    pub const LENGTH: usize = 4;
    pub const REVISION: usize = 8;
    pub const CHECKSUM: usize = 9;
    pub const OEM_ID: usize = 10;
    pub const OEM_TABLE_ID: usize = 16;
    pub const OEM_REVISION: usize = 24;
    pub const CREATOR_ID: usize = 28;
    pub const CREATOR_REVISION: usize = 32;
    pub const SIZE: usize = 36;
}

/// A table under construction: little-endian puts at fixed offsets or appends.
struct AcpiTable {
    bytes: Vec<u8>,
}

impl AcpiTable {
    /// A zeroed table of `len` bytes with its header filled in.
    fn new(signature: &[u8; 4], revision: u8, len: usize) -> AcpiTable {
        let mut t = AcpiTable { bytes: alloc::vec![0; len.max(header::SIZE)] };
        t.put(0, signature);
        t.put(header::REVISION, &[revision]);
        t.put(header::OEM_ID, &OEM_ID);
        t.put(header::OEM_TABLE_ID, &OEM_TABLE_ID);
        t.put(header::OEM_REVISION, &OEM_REVISION.to_le_bytes());
        t.put(header::CREATOR_ID, &CREATOR_ID);
        t.put(header::CREATOR_REVISION, &CREATOR_REVISION.to_le_bytes());
        t
    }

    fn put(&mut self, offset: usize, data: &[u8]) {
        let end = offset.saturating_add(data.len());
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        if let Some(dst) = self.bytes.get_mut(offset..end) {
            dst.copy_from_slice(data);
        }
    }

    fn append(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
    }

    /// Sets the length and the checksum (all bytes sum to 0).
    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        self.put(header::LENGTH, &len.to_le_bytes());
        self.put(header::CHECKSUM, &[0]);
        let sum = checksum(&self.bytes);
        self.put(header::CHECKSUM, &[sum]);
        self.bytes
    }
}

/// The byte that makes `bytes` sum to 0 (mod 256) when stored in a zeroed checksum field.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b)).wrapping_neg()
}

/// Generic Address Structure, ACPI 6.5 §5.2.3.2 (Table 5.1): an 8-bit register in
/// system I/O space, accessed by byte.
fn gas_io8(port: u16) -> [u8; 12] {
    const SYSTEM_IO: u8 = 1;
    const BYTE_ACCESS: u8 = 1;
    let mut g = [0u8; 12];
    g[0] = SYSTEM_IO;
    g[1] = 8; // register bit width
    g[2] = 0; // bit offset
    g[3] = BYTE_ACCESS;
    g[4..].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// RSDP, ACPI 6.5 §5.2.5.3 (Table 5.3), revision 2: 36 bytes, the first 20 covered by
/// `checksum`, all 36 by `extended_checksum`. RSDT address 0: XSDT only.
fn rsdp(xsdt: GuestPhysAddr) -> [u8; 36] {
    let mut r = [0u8; 36];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(&OEM_ID);
    r[15] = 2; // revision
    r[20..24].copy_from_slice(&36u32.to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.raw().to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// XSDT, ACPI 6.5 §5.2.8: the header, then 64-bit table addresses.
fn xsdt(entries: &[GuestPhysAddr]) -> Vec<u8> {
    let mut t = AcpiTable::new(b"XSDT", 1, header::SIZE);
    for e in entries {
        t.append(&e.raw().to_le_bytes());
    }
    t.finish()
}

/// FADT, ACPI 6.5 §5.2.9 (Table 5.9). Offsets of the fields this builder sets.
mod fadt {
    pub const SIZE: usize = 276;
    pub const REVISION: u8 = 6;
    pub const MINOR_REVISION: u8 = 5;
    pub const PREFERRED_PM_PROFILE: usize = 45;
    pub const P_LVL2_LAT: usize = 96;
    pub const P_LVL3_LAT: usize = 98;
    pub const IAPC_BOOT_ARCH: usize = 109;
    pub const FLAGS: usize = 112;
    pub const RESET_REG: usize = 116;
    pub const RESET_VALUE: usize = 128;
    pub const MINOR_VERSION: usize = 131;
    pub const X_DSDT: usize = 140;
    pub const SLEEP_CONTROL_REG: usize = 244;
    pub const SLEEP_STATUS_REG: usize = 256;
    pub const HYPERVISOR_VENDOR_ID: usize = 268;

    /// Fixed feature flags, ACPI 6.5 §5.2.9 (Table 5.10).
    pub mod flags {
        /// WBINVD flushes all caches (it is intercepted and completes).
        pub const WBINVD: u32 = 1 << 0;
        /// C1 (HLT) works on all processors.
        pub const PROC_C1: u32 = 1 << 2;
        /// No fixed-feature power button (set means "control method or none").
        pub const PWR_BUTTON: u32 = 1 << 4;
        /// No fixed-feature sleep button.
        pub const SLP_BUTTON: u32 = 1 << 5;
        /// RESET_REG is supported.
        pub const RESET_REG_SUP: u32 = 1 << 10;
        /// Hardware-reduced ACPI: no PM1/GPE blocks, PM timer, SCI or FACS; sleep goes
        /// through the sleep control/status registers.
        pub const HW_REDUCED_ACPI: u32 = 1 << 20;
    }

    /// IA-PC boot architecture flags, ACPI 6.5 §5.2.9.3 (Table 5.11).
    pub mod boot_arch {
        pub const LEGACY_DEVICES: u16 = 1 << 0;
        pub const I8042: u16 = 1 << 1;
        pub const VGA_NOT_PRESENT: u16 = 1 << 2;
        pub const CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
    }
}

/// The FADT of a hardware-reduced platform.
///
/// FIRMWARE_CTRL and X_FIRMWARE_CTRL stay 0: with HW_REDUCED_ACPI there is no FACS
/// (ACPI 6.5 §5.2.9: "If the HARDWARE_REDUCED_ACPI flag is set, and both this field
/// and the X_FIRMWARE_CTRL field are zero, there is no FACS available"); ACPICA does
/// not look for one on reduced hardware. SCI_INT, SMI_CMD and every PM1/PM2/PM timer/
/// GPE block are 0 for the same reason. Only X_DSDT is set (the 32-bit DSDT field must
/// be 0 when X_DSDT is used).
fn fadt(config: &AcpiConfig, dsdt: GuestPhysAddr) -> Vec<u8> {
    use fadt::{boot_arch, flags};
    let mut t = AcpiTable::new(b"FACP", fadt::REVISION, fadt::SIZE);
    // Unspecified profile: the guest has no battery or lid of its own.
    t.put(fadt::PREFERRED_PM_PROFILE, &[0]);
    // C2/C3 latencies above 100/1000 us mean "not supported".
    t.put(fadt::P_LVL2_LAT, &101u16.to_le_bytes());
    t.put(fadt::P_LVL3_LAT, &1001u16.to_le_bytes());
    // Legacy devices exist (COM1, i8042, RTC); there is no VGA; MSI works, so
    // MSI_NOT_SUPPORTED (bit 3) stays clear, as does PCIE_ASPM_CONTROLS (bit 4).
    let mut boot = boot_arch::LEGACY_DEVICES | boot_arch::VGA_NOT_PRESENT;
    if config.legacy.ps2_keyboard || config.legacy.ps2_mouse {
        boot |= boot_arch::I8042;
    }
    if !config.legacy.rtc {
        boot |= boot_arch::CMOS_RTC_NOT_PRESENT;
    }
    t.put(fadt::IAPC_BOOT_ARCH, &boot.to_le_bytes());
    let f = flags::WBINVD
        | flags::PROC_C1
        | flags::PWR_BUTTON
        | flags::SLP_BUTTON
        | flags::RESET_REG_SUP
        | flags::HW_REDUCED_ACPI;
    t.put(fadt::FLAGS, &f.to_le_bytes());
    t.put(fadt::RESET_REG, &gas_io8(config.power.reset));
    t.put(fadt::RESET_VALUE, &[config.power.reset_value]);
    t.put(fadt::MINOR_VERSION, &[fadt::MINOR_REVISION]);
    t.put(fadt::X_DSDT, &dsdt.raw().to_le_bytes());
    t.put(fadt::SLEEP_CONTROL_REG, &gas_io8(config.power.sleep_control));
    t.put(fadt::SLEEP_STATUS_REG, &gas_io8(config.power.sleep_status));
    t.put(fadt::HYPERVISOR_VENDOR_ID, b"Bulkhead");
    t.finish()
}

/// MADT, ACPI 6.5 §5.2.12 (Table 5.19), revision 5 (ACPI 6.3+: the local APIC
/// "Online Capable" flag is defined; Linux reads it from revision 5).
mod madt {
    pub const REVISION: u8 = 5;
    pub const LOCAL_APIC_ADDRESS: usize = 36;
    pub const FLAGS: usize = 40;
    pub const ENTRIES: usize = 44;
    /// "The system also has a PC-AT-compatible dual-8259 setup."
    pub const PCAT_COMPAT: u32 = 1 << 0;
    /// Local APIC flags (Table 5.22).
    pub const ENABLED: u32 = 1 << 0;
    /// Structure types (Table 5.20).
    pub const LOCAL_APIC: u8 = 0;
    pub const IO_APIC: u8 = 1;
    pub const INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
    pub const LOCAL_APIC_NMI: u8 = 4;
    pub const LOCAL_X2APIC: u8 = 9;
    pub const LOCAL_X2APIC_NMI: u8 = 0xa;
    /// xAPIC entries carry 8-bit IDs; 0xFF is the broadcast ID, so IDs from 255 up need
    /// x2APIC entries (§5.2.12.12).
    pub const FIRST_X2APIC_ID: u32 = 255;
}

/// The MADT. PCAT_COMPAT is set because the VM has a (masked) pair of 8259s: an OS that
/// honours the flag masks them before using the I/O APIC, and newer Linux kernels skip
/// their i8259 probe when it is set. Linux 6.1 on a hardware-reduced FADT does not touch
/// the 8259 at all (`acpi_generic_reduced_hw_init` installs the null legacy PIC).
fn madt(config: &AcpiConfig) -> Vec<u8> {
    let mut t = AcpiTable::new(b"APIC", madt::REVISION, madt::ENTRIES);
    t.put(madt::LOCAL_APIC_ADDRESS, &config.lapic_base.to_le_bytes());
    t.put(madt::FLAGS, &madt::PCAT_COMPAT.to_le_bytes());
    for id in 0..config.vcpus {
        match u8::try_from(id) {
            // Processor Local APIC, §5.2.12.2 (Table 5.21): type, length, processor
            // UID, APIC ID, flags.
            Ok(id8) if id < madt::FIRST_X2APIC_ID => {
                t.append(&[madt::LOCAL_APIC, 8, id8, id8]);
                t.append(&madt::ENABLED.to_le_bytes());
            }
            // Processor Local x2APIC, §5.2.12.12 (Table 5.37): type, length, reserved,
            // x2APIC ID, flags, processor UID.
            _ => {
                t.append(&[madt::LOCAL_X2APIC, 16, 0, 0]);
                t.append(&id.to_le_bytes());
                t.append(&madt::ENABLED.to_le_bytes());
                t.append(&id.to_le_bytes());
            }
        }
    }
    // I/O APIC, §5.2.12.3 (Table 5.23): type, length, ID, reserved, address, GSI base.
    t.append(&[madt::IO_APIC, 12, config.ioapic.id, 0]);
    t.append(&config.ioapic.base.to_le_bytes());
    t.append(&config.ioapic.gsi_base.to_le_bytes());
    if config.pit_on_gsi2 {
        // Interrupt Source Override, §5.2.12.5 (Table 5.25): type, length, bus (0 =
        // ISA), source IRQ, GSI, MPS INTI flags (0 = conforms to the bus: edge, high).
        t.append(&[madt::INTERRUPT_SOURCE_OVERRIDE, 10, 0, 0]);
        t.append(&2u32.to_le_bytes());
        t.append(&0u16.to_le_bytes());
    }
    // Local APIC NMI, §5.2.12.7 (Table 5.28): every processor (UID 0xFF), flags
    // conforming, LINT1 (the PC wiring of the NMI line).
    t.append(&[madt::LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    if config.vcpus > madt::FIRST_X2APIC_ID {
        // Local x2APIC NMI, §5.2.12.13 (Table 5.38): flags, UID 0xFFFFFFFF (all), LINT1.
        t.append(&[madt::LOCAL_X2APIC_NMI, 12, 0, 0]);
        t.append(&u32::MAX.to_le_bytes());
        t.append(&[1, 0, 0, 0]);
    }
    t.finish()
}

/// MCFG, PCI Firmware Specification 3.3 §4.1.2 (Table 4-2/4-3): header, 8 reserved
/// bytes, then one allocation: base (of bus 0), segment, start bus, end bus, reserved.
fn mcfg(config: &AcpiConfig) -> Vec<u8> {
    let mut t = AcpiTable::new(b"MCFG", 1, header::SIZE + 8);
    t.append(&config.pci.ecam_base.to_le_bytes());
    t.append(&0u16.to_le_bytes()); // PCI segment group 0
    t.append(&[config.pci.buses.start, config.pci.buses.end]);
    t.append(&[0; 4]);
    t.finish()
}

/// DSDT, ACPI 6.5 §5.2.11.1. Revision 2: AML integers are 64 bits wide.
fn dsdt(config: &AcpiConfig) -> Vec<u8> {
    let mut t = AcpiTable::new(b"DSDT", 2, header::SIZE);
    t.append(&build_dsdt_aml(config));
    t.finish()
}

/// Where one table ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLocation {
    pub signature: [u8; 4],
    pub gpa: GuestPhysAddr,
    pub len_bytes: u64,
}

/// A VM's ACPI tables, laid out to be copied to guest memory at `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiBlob {
    pub bytes: Vec<u8>,
    pub base: GuestPhysAddr,
    /// For `boot_params.acpi_rsdp_addr` (or a UEFI configuration table).
    pub rsdp_gpa: GuestPhysAddr,
    /// Every table but the RSDP, in blob order.
    pub tables: Vec<TableLocation>,
}

impl AcpiBlob {
    /// The page-aligned guest range the blob occupies: to be backed by memory and
    /// marked reserved (or ACPI) in the VM's e820 map.
    pub fn reserved_range(&self) -> (GuestPhysAddr, u64) {
        let start = self.base.align_down(PAGE_SIZE);
        let end = self.base.raw().saturating_add(self.bytes.len() as u64).next_multiple_of(PAGE_SIZE);
        (start, end.saturating_sub(start.raw()))
    }

    pub fn table(&self, signature: &[u8; 4]) -> Option<&TableLocation> {
        self.tables.iter().find(|t| &t.signature == signature)
    }
}

/// Tables start on 16-byte boundaries (the RSDP needs that; the others are aligned to
/// keep 64-bit fields naturally aligned).
const TABLE_ALIGN: usize = 16;

/// Builds RSDP (revision 2), XSDT, FADT, MADT, MCFG and DSDT for `config`, to be
/// placed at `base`. Layout: RSDP at `base`, then XSDT, FADT, MADT, MCFG, DSDT, each
/// 16-byte aligned.
pub fn build_acpi_tables(config: &AcpiConfig, base: GuestPhysAddr) -> Result<AcpiBlob, GuestAcpiError> {
    config.validate(base)?;
    let bad_base = GuestAcpiError::BadBase(base.raw());
    let at = |offset: usize| base.checked_add(offset as u64).ok_or(bad_base);
    let align = |offset: usize| offset.next_multiple_of(TABLE_ALIGN);
    // The next table's offset: aligned, after `len` bytes at `offset`. The tables are a
    // few KiB at most; an overflow would mean they cannot be placed at all.
    let after = |offset: usize, len: usize| {
        offset.checked_add(len).and_then(|end| end.checked_next_multiple_of(TABLE_ALIGN)).ok_or(bad_base)
    };

    // Tables that point nowhere are sized first; the XSDT's size depends only on its
    // entry count, so every address is known before anything is written.
    let dsdt = dsdt(config);
    let madt = madt(config);
    let mcfg = mcfg(config);
    const XSDT_ENTRIES: usize = 3; // FADT, MADT, MCFG
    const XSDT_SIZE: usize = header::SIZE + 8 * XSDT_ENTRIES;
    let xsdt_off = align(36);
    let fadt_off = after(xsdt_off, XSDT_SIZE)?;
    let madt_off = after(fadt_off, fadt::SIZE)?;
    let mcfg_off = after(madt_off, madt.len())?;
    let dsdt_off = after(mcfg_off, mcfg.len())?;
    let fadt = fadt(config, at(dsdt_off)?);
    let xsdt = xsdt(&[at(fadt_off)?, at(madt_off)?, at(mcfg_off)?]);
    let rsdp = rsdp(at(xsdt_off)?);

    let mut bytes = Vec::with_capacity(dsdt_off.saturating_add(dsdt.len()));
    let mut tables = Vec::new();
    let mut place = |offset: usize, table: &[u8], bytes: &mut Vec<u8>| -> Result<(), GuestAcpiError> {
        bytes.resize(offset, 0);
        bytes.extend_from_slice(table);
        if let Some(sig) = table.first_chunk::<4>()
            && offset != 0
        {
            tables.push(TableLocation { signature: *sig, gpa: at(offset)?, len_bytes: table.len() as u64 });
        }
        Ok(())
    };
    place(0, &rsdp, &mut bytes)?;
    place(xsdt_off, &xsdt, &mut bytes)?;
    place(fadt_off, &fadt, &mut bytes)?;
    place(madt_off, &madt, &mut bytes)?;
    place(mcfg_off, &mcfg, &mut bytes)?;
    place(dsdt_off, &dsdt, &mut bytes)?;
    debug_assert_eq!(xsdt.len(), XSDT_SIZE);
    debug_assert_eq!(fadt.len(), fadt::SIZE);
    Ok(AcpiBlob { bytes, base, rsdp_gpa: base, tables })
}
