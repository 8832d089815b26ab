//! The MADT ("APIC" table, ACPI 6.5 §5.2.12): CPUs, I/O APICs, interrupt source
//! overrides and local APIC NMI wiring, decoded into owned data.
//!
//! Parsed from bytes rather than through `acpi::madt::Madt::entries()`: that iterator
//! trusts each entry's length byte, so a zero-length entry makes it spin forever and an
//! overlong one makes it read past the table.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::host::acpi::TableError;
use crate::host::acpi::bytes::{
    SDT_HEADER_LEN, checked_table, offset_plus, u8_at, u16_at, u32_at, u64_at, walk_structures,
};

/// MADT entry types (ACPI 6.5 Table 5.21).
const LOCAL_APIC: u16 = 0x0;
const IO_APIC: u16 = 0x1;
const INTERRUPT_SOURCE_OVERRIDE: u16 = 0x2;
const LOCAL_APIC_NMI: u16 = 0x4;
const LOCAL_APIC_ADDRESS_OVERRIDE: u16 = 0x5;
const LOCAL_X2APIC: u16 = 0x9;
const LOCAL_X2APIC_NMI: u16 = 0xa;

/// Local APIC flags (ACPI 6.5 Table 5.23).
const FLAG_ENABLED: u32 = 1 << 0;
const FLAG_ONLINE_CAPABLE: u32 = 1 << 1;

/// Byte offset of the first interrupt controller structure (ACPI 6.5 Table 5.20).
const ENTRIES_OFFSET: usize = SDT_HEADER_LEN + 8;
const _: () = assert!(ENTRIES_OFFSET == 44);

/// One logical processor as firmware describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    /// ACPI processor UID (matches `Processor`/`Device` objects in the namespace).
    pub uid: u32,
    /// Local APIC or x2APIC id.
    pub apic_id: u32,
    /// Usable now.
    pub enabled: bool,
    /// Disabled now but may be brought online (hot-add); meaningless when `enabled`.
    pub online_capable: bool,
    /// Described by a Local x2APIC structure (id may exceed 254).
    pub x2apic: bool,
}

/// An I/O APIC (ACPI 6.5 §5.2.12.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApic {
    pub id: u8,
    pub address: u32,
    /// First global system interrupt this I/O APIC serves.
    pub gsi_base: u32,
}

/// An ISA IRQ routed to a different GSI or with non-default polarity/trigger
/// (ACPI 6.5 §5.2.12.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterruptOverride {
    pub bus: u8,
    pub source_irq: u8,
    pub gsi: u32,
    /// MPS INTI flags: bits 1:0 polarity, bits 3:2 trigger mode (ACPI 6.5 Table 5.26).
    pub flags: u16,
}

impl InterruptOverride {
    /// Polarity is active-low (`11b`).
    pub fn active_low(&self) -> bool {
        self.flags & 0b11 == 0b11
    }
    /// Trigger mode is level (`11b`).
    pub fn level_triggered(&self) -> bool {
        (self.flags >> 2) & 0b11 == 0b11
    }
}

/// A local APIC LINT pin wired to NMI (ACPI 6.5 §5.2.12.7 / §5.2.12.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LapicNmi {
    /// Processor UID, or `u32::MAX` for all processors (0xff in the xAPIC form).
    pub uid: u32,
    pub lint: u8,
    pub flags: u16,
}

/// The decoded MADT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Madt {
    /// Local APIC MMIO base (after any address override entry).
    pub local_apic_address: u64,
    /// PCAT_COMPAT: a dual 8259 PIC is present and must be masked.
    pub pcat_compat: bool,
    pub cpus: Vec<Cpu>,
    pub io_apics: Vec<IoApic>,
    pub overrides: Vec<InterruptOverride>,
    pub nmis: Vec<LapicNmi>,
    /// Entry types we do not decode (GIC, SAPIC, wakeup mailbox, OEM), by count.
    pub skipped_entries: usize,
}

impl Madt {
    /// The APIC ids of the processors to start, in table order: every local APIC and
    /// local x2APIC entry that is enabled or online-capable, each id once (a firmware
    /// may describe a processor in both forms), without the xAPIC form's "no
    /// processor" id 0xFF.
    pub fn startable_apic_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::new();
        for cpu in self.cpus.iter().filter(|c| c.enabled || c.online_capable) {
            let placeholder = !cpu.x2apic && cpu.apic_id == 0xff;
            if !placeholder && !ids.contains(&cpu.apic_id) {
                ids.push(cpu.apic_id);
            }
        }
        ids
    }
}

/// Decodes a whole MADT (header included).
pub fn parse_madt(bytes: &[u8]) -> Result<Madt, TableError> {
    let table = checked_table(bytes, b"APIC")?;
    let mut madt = Madt {
        local_apic_address: u32_at(table, SDT_HEADER_LEN)?.into(),
        pcat_compat: u32_at(table, SDT_HEADER_LEN + 4)? & 1 != 0,
        ..Madt::default()
    };
    let header = |b: &[u8], o: usize| Ok((u8_at(b, o)?.into(), usize::from(u8_at(b, offset_plus(o, 1)?)?)));
    walk_structures(table, ENTRIES_OFFSET, 2, header, |kind, e, _| {
        match kind {
            LOCAL_APIC => {
                let flags = u32_at(e, 4)?;
                madt.cpus.push(Cpu {
                    uid: u8_at(e, 2)?.into(),
                    apic_id: u8_at(e, 3)?.into(),
                    enabled: flags & FLAG_ENABLED != 0,
                    online_capable: flags & FLAG_ONLINE_CAPABLE != 0,
                    x2apic: false,
                });
            }
            LOCAL_X2APIC => {
                let flags = u32_at(e, 8)?;
                madt.cpus.push(Cpu {
                    uid: u32_at(e, 12)?,
                    apic_id: u32_at(e, 4)?,
                    enabled: flags & FLAG_ENABLED != 0,
                    online_capable: flags & FLAG_ONLINE_CAPABLE != 0,
                    x2apic: true,
                });
            }
            IO_APIC => madt.io_apics.push(IoApic { id: u8_at(e, 2)?, address: u32_at(e, 4)?, gsi_base: u32_at(e, 8)? }),
            INTERRUPT_SOURCE_OVERRIDE => madt.overrides.push(InterruptOverride {
                bus: u8_at(e, 2)?,
                source_irq: u8_at(e, 3)?,
                gsi: u32_at(e, 4)?,
                flags: u16_at(e, 8)?,
            }),
            LOCAL_APIC_NMI => {
                let uid = u8_at(e, 2)?;
                madt.nmis.push(LapicNmi {
                    uid: if uid == 0xff { u32::MAX } else { uid.into() },
                    flags: u16_at(e, 3)?,
                    lint: u8_at(e, 5)?,
                });
            }
            LOCAL_X2APIC_NMI => {
                madt.nmis.push(LapicNmi { flags: u16_at(e, 2)?, uid: u32_at(e, 4)?, lint: u8_at(e, 8)? })
            }
            LOCAL_APIC_ADDRESS_OVERRIDE => madt.local_apic_address = u64_at(e, 4)?,
            _ => madt.skipped_entries = madt.skipped_entries.saturating_add(1),
        }
        Ok(())
    })?;
    Ok(madt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::acpi::test_util::sdt;

    #[test]
    fn qemu_q35_madt() {
        let madt = parse_madt(include_bytes!("../../../tests/fixtures/acpi/qemu-q35-intel-iommu/APIC.bin")).unwrap();
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        assert!(madt.pcat_compat);
        assert_eq!(madt.cpus.len(), 2);
        assert_eq!(madt.cpus[1], Cpu { uid: 1, apic_id: 1, enabled: true, online_capable: false, x2apic: false });
        assert_eq!(madt.io_apics, [IoApic { id: 0, address: 0xfec0_0000, gsi_base: 0 }]);
        // QEMU routes IRQ0 to GSI2 and makes 5, 9, 10, 11 level/active-high (flags 0xd).
        assert_eq!(madt.overrides.len(), 5);
        assert_eq!(madt.overrides[0], InterruptOverride { bus: 0, source_irq: 0, gsi: 2, flags: 0 });
        assert!(madt.overrides[1].level_triggered() && !madt.overrides[1].active_low());
        assert_eq!(madt.nmis, [LapicNmi { uid: u32::MAX, lint: 1, flags: 0 }]);
    }

    #[test]
    fn startable_processors_are_enabled_or_online_capable_and_listed_once() {
        let madt = parse_madt(include_bytes!("../../../tests/fixtures/acpi/qemu-q35-intel-iommu/APIC.bin")).unwrap();
        assert_eq!(madt.startable_apic_ids(), [0, 1]);
        let cpu = |apic_id, enabled, online_capable, x2apic| Cpu { uid: 0, apic_id, enabled, online_capable, x2apic };
        let madt = Madt {
            cpus: alloc::vec![
                cpu(0, true, false, false),
                cpu(2, false, false, false), // disabled, not hot-pluggable
                cpu(4, false, true, false),  // online-capable
                cpu(0xff, true, false, false),
                cpu(4, true, false, true), // the same processor again, as x2APIC
                cpu(300, true, false, true),
                cpu(0xff, true, false, true), // an x2APIC id 0xFF is a real processor
            ],
            ..Madt::default()
        };
        assert_eq!(madt.startable_apic_ids(), [0, 4, 300, 0xff]);
    }

    #[test]
    fn x2apic_entries_and_address_override() {
        let mut body = alloc::vec![0x00, 0x00, 0xe0, 0xfe, 0, 0, 0, 0];
        // Local x2APIC: id 300, online-capable but not enabled, UID 7.
        body.extend_from_slice(&[9, 16, 0, 0, 0x2c, 0x01, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0]);
        // Local APIC address override.
        body.extend_from_slice(&[5, 12, 0, 0, 0, 0, 0xd0, 0xfe, 1, 0, 0, 0]);
        let madt = parse_madt(&sdt(b"APIC", 3, &body)).unwrap();
        assert_eq!(madt.cpus, [Cpu { uid: 7, apic_id: 300, enabled: false, online_capable: true, x2apic: true }]);
        assert_eq!(madt.local_apic_address, 0x1_fed0_0000);
        assert!(!madt.pcat_compat);
    }

    #[test]
    fn malformed_entries_are_errors() {
        let zero_len = sdt(b"APIC", 1, &[0, 0, 0xe0, 0xfe, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(parse_madt(&zero_len), Err(TableError::BadEntryLength { len: 0, .. })));
        let overlong = sdt(b"APIC", 1, &[0, 0, 0xe0, 0xfe, 0, 0, 0, 0, 1, 40, 0, 0]);
        assert!(matches!(parse_madt(&overlong), Err(TableError::BadEntryLength { len: 40, .. })));
        // Declared length smaller than the type needs: the field read fails cleanly.
        let short = sdt(b"APIC", 1, &[0, 0, 0xe0, 0xfe, 0, 0, 0, 0, 1, 4, 0, 0]);
        assert!(matches!(parse_madt(&short), Err(TableError::Truncated { .. })));
        assert!(parse_madt(&[0u8; 10]).is_err());
    }
}
