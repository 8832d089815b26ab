//! The DMAR table (Intel VT-d spec rev 4.1, chapter 8): DMA-remapping hardware units,
//! their device scopes, reserved memory regions and ATS reporting.
//!
//! A pure decoder over the table bytes; every length comes from firmware and is
//! checked before use.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::host::acpi::TableError;
use crate::host::acpi::bytes::{SDT_HEADER_LEN, checked_table, offset_plus, u8_at, u16_at, u64_at, walk_structures};

/// DMAR header: SDT header, host address width (1), flags (1), reserved (10)
/// (VT-d §8.1, Table 8-1).
const STRUCTURES_OFFSET: usize = SDT_HEADER_LEN + 12;
const _: () = assert!(STRUCTURES_OFFSET == 48);

/// Remapping structure types (VT-d §8.2, Table 8-2).
const TYPE_DRHD: u16 = 0;
const TYPE_RMRR: u16 = 1;
const TYPE_ATSR: u16 = 2;

/// Fixed part of each structure before its device scopes (VT-d §8.3, §8.4, §8.5).
const DRHD_SCOPES_OFFSET: usize = 16;
const RMRR_SCOPES_OFFSET: usize = 24;
const ATSR_SCOPES_OFFSET: usize = 8;
/// Device scope header before the path (VT-d §8.3.1, Table 8-6).
const SCOPE_PATH_OFFSET: usize = 6;

/// DMAR flags (VT-d §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DmarFlags {
    /// INTR_REMAP: interrupt remapping is supported.
    pub intr_remap: bool,
    /// X2APIC_OPT_OUT: firmware asks the OS not to enable x2APIC mode.
    pub x2apic_opt_out: bool,
    /// DMA_CTRL_PLATFORM_OPT_IN_FLAG: firmware set up DMA protection at boot.
    pub dma_ctrl_platform_opt_in: bool,
}

/// The kind of device a scope names (VT-d §8.3.1, Table 8-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    PciEndpoint,
    /// A PCI-PCI bridge and everything below it.
    PciSubHierarchy,
    IoApic,
    /// An HPET timer block (MSI-capable).
    Hpet,
    AcpiNamespaceDevice,
    Other(u8),
}

impl From<u8> for ScopeKind {
    fn from(raw: u8) -> Self {
        match raw {
            1 => Self::PciEndpoint,
            2 => Self::PciSubHierarchy,
            3 => Self::IoApic,
            4 => Self::Hpet,
            5 => Self::AcpiNamespaceDevice,
            other => Self::Other(other),
        }
    }
}

/// One hop of a device scope path: device and function on the current bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathEntry {
    pub device: u8,
    pub function: u8,
}

/// A device scope entry (VT-d §8.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceScope {
    pub kind: ScopeKind,
    /// I/O APIC id, HPET number or ACPI device number, depending on `kind`.
    pub enumeration_id: u8,
    pub start_bus: u8,
    /// Hops from `start_bus` down through bridges to the device.
    pub path: Vec<PathEntry>,
}

/// A DMA remapping hardware unit (DRHD, VT-d §8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drhd {
    /// Physical base of the unit's register set.
    pub register_base: u64,
    pub segment: u16,
    /// INCLUDE_PCI_ALL: the unit covers every device of the segment not claimed by
    /// another unit's scope.
    pub include_pci_all: bool,
    /// Register set size: 2^size 4 KiB pages (0 on tables older than VT-d 2.x).
    pub size_pages_log2: u8,
    pub scopes: Vec<DeviceScope>,
}

/// A reserved memory region that devices in its scope may DMA into at any time
/// (RMRR, VT-d §8.4). `limit` is inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rmrr {
    pub segment: u16,
    pub base: u64,
    pub limit: u64,
    pub scopes: Vec<DeviceScope>,
}

/// Root-port ATS capability reporting (ATSR, VT-d §8.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Atsr {
    pub segment: u16,
    /// ALL_PORTS: every root port of the segment supports ATS.
    pub all_ports: bool,
    pub scopes: Vec<DeviceScope>,
}

/// The decoded DMAR.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dmar {
    /// Maximum DMA physical address width in bits (the table stores width − 1).
    pub host_address_width: u8,
    pub flags: DmarFlags,
    pub units: Vec<Drhd>,
    pub rmrrs: Vec<Rmrr>,
    pub atsrs: Vec<Atsr>,
    /// RHSA, ANDD, SATC, SIDP and unknown structures, by count.
    pub skipped_structures: usize,
}

/// Decodes a whole DMAR (header included).
pub fn parse_dmar(bytes: &[u8]) -> Result<Dmar, TableError> {
    let table = checked_table(bytes, b"DMAR")?;
    let flags = u8_at(table, SDT_HEADER_LEN + 1)?;
    let mut dmar = Dmar {
        host_address_width: u8_at(table, SDT_HEADER_LEN)?.saturating_add(1),
        flags: DmarFlags {
            intr_remap: flags & 1 != 0,
            x2apic_opt_out: flags & 2 != 0,
            dma_ctrl_platform_opt_in: flags & 4 != 0,
        },
        ..Dmar::default()
    };
    let header = |b: &[u8], o: usize| Ok((u16_at(b, o)?, usize::from(u16_at(b, offset_plus(o, 2)?)?)));
    walk_structures(table, STRUCTURES_OFFSET, 4, header, |kind, s, _| {
        match kind {
            TYPE_DRHD => dmar.units.push(Drhd {
                include_pci_all: u8_at(s, 4)? & 1 != 0,
                size_pages_log2: u8_at(s, 5)? & 0xf,
                segment: u16_at(s, 6)?,
                register_base: u64_at(s, 8)?,
                scopes: parse_scopes(s, DRHD_SCOPES_OFFSET)?,
            }),
            TYPE_RMRR => dmar.rmrrs.push(Rmrr {
                segment: u16_at(s, 6)?,
                base: u64_at(s, 8)?,
                limit: u64_at(s, 16)?,
                scopes: parse_scopes(s, RMRR_SCOPES_OFFSET)?,
            }),
            TYPE_ATSR => dmar.atsrs.push(Atsr {
                all_ports: u8_at(s, 4)? & 1 != 0,
                segment: u16_at(s, 6)?,
                scopes: parse_scopes(s, ATSR_SCOPES_OFFSET)?,
            }),
            _ => dmar.skipped_structures = dmar.skipped_structures.saturating_add(1),
        }
        Ok(())
    })?;
    Ok(dmar)
}

/// Decodes the device scopes from `start` to the end of structure `s`.
fn parse_scopes(s: &[u8], start: usize) -> Result<Vec<DeviceScope>, TableError> {
    if start > s.len() {
        return Err(TableError::Truncated { offset: start });
    }
    let mut scopes = Vec::new();
    let header = |b: &[u8], o: usize| Ok((u8_at(b, o)?.into(), usize::from(u8_at(b, offset_plus(o, 1)?)?)));
    walk_structures(s, start, SCOPE_PATH_OFFSET, header, |kind, e, offset| {
        let path_bytes = e.get(SCOPE_PATH_OFFSET..).ok_or(TableError::Truncated { offset: SCOPE_PATH_OFFSET })?;
        if path_bytes.len() % 2 != 0 {
            return Err(TableError::BadEntryLength { offset, len: e.len() });
        }
        scopes.push(DeviceScope {
            kind: (kind as u8).into(),
            enumeration_id: u8_at(e, 4)?,
            start_bus: u8_at(e, 5)?,
            path: path_bytes
                .chunks_exact(2)
                .filter_map(|p| match *p {
                    [device, function] => Some(PathEntry { device, function }),
                    _ => None,
                })
                .collect(),
        });
        Ok(())
    })?;
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::acpi::test_util::sdt;
    use alloc::vec;

    fn scope(kind: ScopeKind, id: u8, bus: u8, path: &[(u8, u8)]) -> DeviceScope {
        DeviceScope {
            kind,
            enumeration_id: id,
            start_bus: bus,
            path: path.iter().map(|&(device, function)| PathEntry { device, function }).collect(),
        }
    }

    #[test]
    fn qemu_q35_intel_iommu() {
        let dmar = parse_dmar(include_bytes!("../../../tests/fixtures/acpi/qemu-q35-intel-iommu/DMAR.bin")).unwrap();
        assert_eq!(dmar.host_address_width, 39);
        assert_eq!(dmar.flags, DmarFlags { intr_remap: true, x2apic_opt_out: false, dma_ctrl_platform_opt_in: false });
        assert_eq!(dmar.units.len(), 1);
        let unit = &dmar.units[0];
        // QEMU lists every device explicitly instead of setting INCLUDE_PCI_ALL.
        assert_eq!((unit.register_base, unit.segment, unit.include_pci_all), (0xfed9_0000, 0, false));
        use ScopeKind::*;
        assert_eq!(
            unit.scopes,
            [
                scope(IoApic, 0, 0xff, &[(0, 0)]),
                scope(PciEndpoint, 0, 0, &[(0, 0)]),
                scope(PciSubHierarchy, 0, 0, &[(3, 0)]),
                scope(PciEndpoint, 0, 0, &[(4, 0)]),
                scope(PciEndpoint, 0, 0, &[(0x1f, 0)]),
                scope(PciEndpoint, 0, 0, &[(0x1f, 2)]),
                scope(PciEndpoint, 0, 0, &[(0x1f, 3)]),
            ]
        );
        assert!(dmar.rmrrs.is_empty() && dmar.atsrs.is_empty());
        assert_eq!(dmar.skipped_structures, 0);
    }

    /// A laptop-shaped DMAR built from VT-d §8: a graphics unit scoped to 00:02.0, a
    /// catch-all unit with the IOAPIC and HPET, an RMRR for USB behind a bridge, and an
    /// ATSR, plus an RHSA that we skip.
    #[test]
    fn spec_shaped_dmar() {
        let mut body = vec![38, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        // DRHD 1: gfx, not INCLUDE_PCI_ALL, one endpoint scope 00:02.0.
        body.extend_from_slice(&[0, 0, 24, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&0xfed9_0000u64.to_le_bytes());
        body.extend_from_slice(&[1, 8, 0, 0, 0, 0, 2, 0]);
        // DRHD 2: INCLUDE_PCI_ALL, IOAPIC id 2 at f0:1f.0, HPET 0 at 00:1f.0.
        body.extend_from_slice(&[0, 0, 32, 0, 1, 0, 0, 0]);
        body.extend_from_slice(&0xfed9_1000u64.to_le_bytes());
        body.extend_from_slice(&[3, 8, 0, 0, 2, 0xf0, 0x1f, 0, 4, 8, 0, 0, 0, 0, 0x1f, 0]);
        // RMRR: 0x7c000000..=0x7c7fffff for 00:14.0 -> 01:00.0 (two-hop path).
        body.extend_from_slice(&[1, 0, 34, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&0x7c00_0000u64.to_le_bytes());
        body.extend_from_slice(&0x7c7f_ffffu64.to_le_bytes());
        body.extend_from_slice(&[1, 10, 0, 0, 0, 0, 0x14, 0, 0, 0]);
        // ATSR: ALL_PORTS, segment 0, no scopes.
        body.extend_from_slice(&[2, 0, 8, 0, 1, 0, 0, 0]);
        // RHSA (type 3, 20 bytes): skipped.
        body.extend_from_slice(&[3, 0, 20, 0]);
        body.extend_from_slice(&[0; 16]);
        let dmar = parse_dmar(&sdt(b"DMAR", 1, &body)).unwrap();
        assert_eq!(dmar.host_address_width, 39);
        assert_eq!(dmar.flags, DmarFlags { intr_remap: true, x2apic_opt_out: false, dma_ctrl_platform_opt_in: true });
        assert_eq!(dmar.units.len(), 2);
        assert!(!dmar.units[0].include_pci_all);
        assert_eq!(dmar.units[0].scopes, [scope(ScopeKind::PciEndpoint, 0, 0, &[(2, 0)])]);
        assert_eq!(
            dmar.units[1].scopes,
            [scope(ScopeKind::IoApic, 2, 0xf0, &[(0x1f, 0)]), scope(ScopeKind::Hpet, 0, 0, &[(0x1f, 0)])]
        );
        assert_eq!(dmar.rmrrs.len(), 1);
        assert_eq!((dmar.rmrrs[0].base, dmar.rmrrs[0].limit), (0x7c00_0000, 0x7c7f_ffff));
        assert_eq!(dmar.rmrrs[0].scopes[0].path.len(), 2);
        assert_eq!(dmar.atsrs, [Atsr { segment: 0, all_ports: true, scopes: vec![] }]);
        assert_eq!(dmar.skipped_structures, 1);
    }

    #[test]
    fn malformed_dmar_is_an_error() {
        let base = include_bytes!("../../../tests/fixtures/acpi/qemu-q35-intel-iommu/DMAR.bin");
        // Structure length 0 (would loop forever).
        let mut t = base.to_vec();
        t[50] = 0;
        t[51] = 0;
        assert!(matches!(parse_dmar(&t), Err(TableError::BadEntryLength { .. })));
        // Scope length past the end of its DRHD.
        let mut t = base.to_vec();
        t[0x41] = 0x80;
        assert!(matches!(parse_dmar(&t), Err(TableError::BadEntryLength { .. })));
        // Odd path length.
        let mut t = base.to_vec();
        t[0x41] = 7;
        assert!(parse_dmar(&t).is_err());
        // Header length larger than the data we have.
        let mut t = base.to_vec();
        t[4] = 0xff;
        assert!(matches!(parse_dmar(&t), Err(TableError::BadLength { .. })));
        // Every truncation of the table fails cleanly or decodes a prefix; none panics.
        for len in 0..base.len() {
            let mut t = base[..len].to_vec();
            if len >= 8 {
                t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            }
            let _ = parse_dmar(&t);
        }
    }
}
