//! The FADT ("FACP", ACPI 6.5 §5.2.9): the fixed power-management registers Bulkhead
//! needs for shutdown and reset, plus the DSDT address.
//!
//! Decoded from bytes with explicit length checks: firmware ships FADTs from revision 1
//! (116 bytes) to 6.5 (276 bytes), and fields past the declared length do not exist.
#![forbid(unsafe_code)]

use core::fmt;

use crate::host::acpi::TableError;
use crate::host::acpi::bytes::{array_at, checked_table, u8_at, u16_at, u32_at, u64_at};

/// Field offsets (ACPI 6.5 Table 5.9).
mod off {
    pub const DSDT: usize = 40;
    pub const SCI_INT: usize = 46;
    pub const SMI_CMD: usize = 48;
    pub const ACPI_ENABLE: usize = 52;
    pub const PM1A_CNT_BLK: usize = 64;
    pub const PM1B_CNT_BLK: usize = 68;
    pub const PM1_CNT_LEN: usize = 89;
    pub const FLAGS: usize = 112;
    pub const RESET_REG: usize = 116;
    pub const RESET_VALUE: usize = 128;
    pub const X_DSDT: usize = 140;
    pub const X_PM1A_CNT_BLK: usize = 172;
    pub const X_PM1B_CNT_BLK: usize = 184;
}

// The X_ blocks are consecutive 12-byte GASes; RESET_REG is one too.
const _: () = assert!(off::X_PM1B_CNT_BLK - off::X_PM1A_CNT_BLK == GAS_LEN);
const _: () = assert!(off::RESET_VALUE - off::RESET_REG == GAS_LEN);

/// FADT fixed feature flags (ACPI 6.5 Table 5.10).
const FLAG_RESET_REG_SUP: u32 = 1 << 10;
const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;

/// Length of a Generic Address Structure (ACPI 6.5 §5.2.3.2).
const GAS_LEN: usize = 12;

/// Address space of a Generic Address Structure (ACPI 6.5 Table 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSpace {
    SystemMemory,
    SystemIo,
    /// PCI configuration space of segment 0, bus 0; the address packs
    /// `device << 32 | function << 16 | offset`.
    PciConfig,
    Other(u8),
}

impl From<u8> for AddressSpace {
    fn from(raw: u8) -> Self {
        match raw {
            0 => Self::SystemMemory,
            1 => Self::SystemIo,
            2 => Self::PciConfig,
            other => Self::Other(other),
        }
    }
}

/// A Generic Address Structure (ACPI 6.5 §5.2.3.2): where a fixed register lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gas {
    pub space: AddressSpace,
    pub bit_width: u8,
    pub bit_offset: u8,
    /// 0 undefined (legacy), 1 byte, 2 word, 3 dword, 4 qword.
    pub access_size: u8,
    pub address: u64,
}

impl Gas {
    /// Decodes the 12-byte structure at `offset`.
    pub fn parse(bytes: &[u8], offset: usize) -> Result<Self, TableError> {
        let raw: [u8; GAS_LEN] = array_at(bytes, offset)?;
        Ok(Self {
            space: raw[0].into(),
            bit_width: raw[1],
            bit_offset: raw[2],
            access_size: raw[3],
            address: u64_at(&raw, 4)?,
        })
    }

    /// A legacy 32-bit I/O block address (`PM1a_CNT_BLK` etc.) of `len_bytes`.
    pub fn legacy_io(port: u32, len_bytes: u8) -> Self {
        Self {
            space: AddressSpace::SystemIo,
            bit_width: len_bytes.saturating_mul(8),
            bit_offset: 0,
            access_size: 0,
            address: port.into(),
        }
    }

    /// Access width in bytes: from `access_size` when given, else from `bit_width`.
    pub fn access_bytes(&self) -> u8 {
        match self.access_size {
            // In 1..=4 here, so the shift is 0..=3.
            1..=4 => 1 << self.access_size.wrapping_sub(1),
            _ => match self.bit_width {
                0..=8 => 1,
                9..=16 => 2,
                17..=32 => 4,
                _ => 8,
            },
        }
    }
}

impl fmt::Display for Gas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.space {
            AddressSpace::SystemIo => write!(f, "io {:#x}", self.address),
            AddressSpace::SystemMemory => write!(f, "mem {:#x}", self.address),
            AddressSpace::PciConfig => write!(f, "pcicfg {:#x}", self.address),
            AddressSpace::Other(s) => write!(f, "space{s} {:#x}", self.address),
        }
    }
}

/// The FADT reset register and the value that resets the machine (ACPI 6.5 §4.8.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetRegister {
    pub register: Gas,
    pub value: u8,
}

/// What Bulkhead keeps from the FADT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fadt {
    pub revision: u8,
    /// SCI interrupt (GSI on APIC systems).
    pub sci_irq: u16,
    /// SMI command port and the value that hands ACPI hardware to the OS (0 = already
    /// in ACPI mode / not supported).
    pub smi_cmd: u32,
    pub acpi_enable: u8,
    pub pm1a_control: Option<Gas>,
    pub pm1b_control: Option<Gas>,
    /// The reset register, when the table is long enough to carry one and it is not
    /// all zeroes. Use only when [`Fadt::reset_supported`] is set.
    pub reset: Option<ResetRegister>,
    /// RESET_REG_SUP: firmware says the reset register works.
    pub reset_supported: bool,
    /// HW_REDUCED_ACPI: no PM1 blocks; sleep goes through the sleep control register.
    pub hardware_reduced: bool,
    /// Physical address of the DSDT (X_DSDT preferred when non-zero).
    pub dsdt_address: u64,
}

/// An address field that is 0 means "not present".
fn present(gas: Gas) -> Option<Gas> {
    (gas.address != 0).then_some(gas)
}

/// Decodes a whole FADT (header included).
pub fn parse_fadt(bytes: &[u8]) -> Result<Fadt, TableError> {
    let t = checked_table(bytes, b"FACP")?;
    let has = |offset: usize, len: usize| offset.checked_add(len).is_some_and(|end| end <= t.len());
    let cnt_len = if has(off::PM1_CNT_LEN, 1) { u8_at(t, off::PM1_CNT_LEN)? } else { 2 };

    let mut pm1a_control = present(Gas::legacy_io(u32_at(t, off::PM1A_CNT_BLK)?, cnt_len));
    let mut pm1b_control = present(Gas::legacy_io(u32_at(t, off::PM1B_CNT_BLK)?, cnt_len));
    if has(off::X_PM1A_CNT_BLK, GAS_LEN) {
        pm1a_control = present(Gas::parse(t, off::X_PM1A_CNT_BLK)?).or(pm1a_control);
    }
    if has(off::X_PM1B_CNT_BLK, GAS_LEN) {
        pm1b_control = present(Gas::parse(t, off::X_PM1B_CNT_BLK)?).or(pm1b_control);
    }

    let flags = if has(off::FLAGS, 4) { u32_at(t, off::FLAGS)? } else { 0 };
    let reset = if has(off::RESET_VALUE, 1) {
        let value = u8_at(t, off::RESET_VALUE)?;
        present(Gas::parse(t, off::RESET_REG)?).map(|register| ResetRegister { register, value })
    } else {
        None
    };
    let mut dsdt_address = u64::from(u32_at(t, off::DSDT)?);
    if has(off::X_DSDT, 8) && u64_at(t, off::X_DSDT)? != 0 {
        dsdt_address = u64_at(t, off::X_DSDT)?;
    }

    Ok(Fadt {
        revision: u8_at(t, 8)?,
        sci_irq: u16_at(t, off::SCI_INT)?,
        smi_cmd: u32_at(t, off::SMI_CMD)?,
        acpi_enable: u8_at(t, off::ACPI_ENABLE)?,
        pm1a_control,
        pm1b_control,
        reset,
        reset_supported: flags & FLAG_RESET_REG_SUP != 0,
        hardware_reduced: flags & FLAG_HW_REDUCED_ACPI != 0,
        dsdt_address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::acpi::test_util::{qemu_table, sdt};

    #[test]
    fn qemu_q35_fadt() {
        let fadt = parse_fadt(&qemu_table("qemu-q35", b"FACP")).unwrap();
        assert_eq!(fadt.revision, 3);
        assert_eq!(fadt.sci_irq, 9);
        assert_eq!(fadt.pm1a_control.map(|g| (g.space, g.address)), Some((AddressSpace::SystemIo, 0x604)));
        assert_eq!(fadt.pm1a_control.unwrap().access_bytes(), 2);
        assert_eq!(fadt.pm1b_control, None);
        let reset = fadt.reset.unwrap();
        assert!(fadt.reset_supported);
        assert_eq!((reset.register.space, reset.register.address, reset.value), (AddressSpace::SystemIo, 0xcf9, 0x0f));
        assert!(!fadt.hardware_reduced);
        assert_ne!(fadt.dsdt_address, 0);
    }

    #[test]
    fn revision_1_fadt_has_no_reset_register() {
        // 116-byte ACPI 1.0 FADT: PM1a_CNT_BLK at 0xb004, nothing past the flags.
        let mut body = alloc::vec![0u8; 116 - 36];
        body[64 - 36..68 - 36].copy_from_slice(&0xb004u32.to_le_bytes());
        body[89 - 36] = 2;
        body[40 - 36] = 0x10; // DSDT at 0x10
        let fadt = parse_fadt(&sdt(b"FACP", 1, &body)).unwrap();
        assert_eq!(fadt.pm1a_control.unwrap().address, 0xb004);
        assert_eq!(fadt.reset, None);
        assert!(!fadt.reset_supported);
        assert_eq!(fadt.dsdt_address, 0x10);
    }

    #[test]
    fn truncated_fadt_is_an_error() {
        assert!(parse_fadt(&sdt(b"FACP", 1, &[0u8; 20])).is_err());
    }

    #[test]
    fn access_width() {
        let mut g = Gas::legacy_io(0x604, 2);
        assert_eq!(g.access_bytes(), 2);
        g.access_size = 3;
        assert_eq!(g.access_bytes(), 4);
        g.access_size = 9;
        g.bit_width = 8;
        assert_eq!(g.access_bytes(), 1);
    }
}
