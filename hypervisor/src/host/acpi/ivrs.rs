//! The IVRS table (AMD I/O Virtualization Technology (IOMMU) Specification, pub.
//! 48882 rev 3.08, §5.2): IOMMU hardware definition blocks (IVHD) with their device
//! entries, and I/O virtualization memory definitions (IVMD).
//!
//! A pure decoder over the table bytes; every length comes from firmware and is
//! checked before use.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::host::acpi::TableError;
use crate::host::acpi::bytes::{
    SDT_HEADER_LEN, array_at, checked_table, offset_plus, slice_at, u8_at, u16_at, u32_at, u64_at, walk_structures,
};

/// IVRS header: SDT header, IVinfo (4), reserved (8) (§5.2.1, Table 89).
const BLOCKS_OFFSET: usize = SDT_HEADER_LEN + 12;
const _: () = assert!(BLOCKS_OFFSET == 48);

/// IVHD device entries start after a 24-byte (type 10h) or 40-byte (11h, 40h) header
/// (§5.2.2.1, Tables 91 and 92).
const IVHD10_ENTRIES_OFFSET: usize = 24;
const IVHD11_ENTRIES_OFFSET: usize = 40;
/// IVMD blocks are 32 bytes (§5.2.3, Table 101).
const IVMD_LEN: usize = 32;

/// Device entry types (§5.2.2.2, Table 94).
mod entry {
    pub const PAD4: u8 = 0x00;
    pub const ALL: u8 = 0x01;
    pub const SELECT: u8 = 0x02;
    pub const START_OF_RANGE: u8 = 0x03;
    pub const END_OF_RANGE: u8 = 0x04;
    pub const PAD8: u8 = 0x40;
    pub const ALIAS_SELECT: u8 = 0x42;
    pub const ALIAS_START_OF_RANGE: u8 = 0x43;
    pub const EXT_SELECT: u8 = 0x46;
    pub const EXT_START_OF_RANGE: u8 = 0x47;
    pub const SPECIAL: u8 = 0x48;
    pub const ACPI_HID: u8 = 0xf0;
}

/// IVinfo (§5.2.1, Table 90).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IvInfo {
    pub raw: u32,
    /// EFRSup: IVHD types 11h/40h carry an EFR register image.
    pub efr_sup: bool,
    /// Guest virtual address size, physical address size and virtual address size.
    pub gva_size: u8,
    pub pa_size: u8,
    pub va_size: u8,
}

impl From<u32> for IvInfo {
    fn from(raw: u32) -> Self {
        Self {
            raw,
            efr_sup: raw & 1 != 0,
            gva_size: ((raw >> 5) & 0x7) as u8,
            pa_size: ((raw >> 8) & 0x7f) as u8,
            va_size: ((raw >> 15) & 0x7f) as u8,
        }
    }
}

/// What a special device entry names (§5.2.2.2, Table 97 "Variety").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialVariety {
    IoApic,
    Hpet,
    Other(u8),
}

/// One IVHD device entry, with start/end-of-range pairs folded into ranges. `data` is
/// the DTE setting byte (INITPass, EIntPass, NMIPass, SysMgt, Lint0/1Pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvhdEntry {
    /// Applies to every device id.
    All {
        data: u8,
    },
    Select {
        devid: u16,
        data: u8,
    },
    /// `first..=last`.
    Range {
        first: u16,
        last: u16,
        data: u8,
    },
    /// Requests from `devid` arrive with `alias` as their requester id.
    AliasSelect {
        devid: u16,
        alias: u16,
        data: u8,
    },
    AliasRange {
        first: u16,
        last: u16,
        alias: u16,
        data: u8,
    },
    ExtSelect {
        devid: u16,
        data: u8,
        ext: u32,
    },
    ExtRange {
        first: u16,
        last: u16,
        data: u8,
        ext: u32,
    },
    /// An IOAPIC or HPET: `handle` is its APIC/HPET id, `devid` its requester id.
    Special {
        variety: SpecialVariety,
        handle: u8,
        devid: u16,
        data: u8,
    },
    /// An ACPI device named by `_HID`/`_CID`/`_UID` (type F0h).
    AcpiHid {
        devid: u16,
        data: u8,
        hid: [u8; 8],
        cid: [u8; 8],
        uid: Vec<u8>,
    },
}

/// An IOMMU hardware definition block (§5.2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ivhd {
    /// 10h (legacy), 11h or 40h (extended headers with an EFR image).
    pub block_type: u8,
    pub flags: u8,
    /// PCI requester id (BDF) of the IOMMU function itself.
    pub iommu_devid: u16,
    /// Offset of the IOMMU capability block in the function's config space.
    pub capability_offset: u16,
    /// Physical base of the IOMMU MMIO registers.
    pub base_address: u64,
    pub segment: u16,
    /// IOMMU info: MSI number and UnitID.
    pub iommu_info: u16,
    /// Type 10h: IOMMU feature reporting; 11h/40h: IOMMU attributes.
    pub feature_info: u32,
    /// Extended Feature Register image (types 11h/40h only).
    pub efr_image: Option<u64>,
    pub entries: Vec<IvhdEntry>,
}

/// An IVMD memory definition (§5.2.3): a region devices must be able to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ivmd {
    /// 20h all devices, 21h one device, 22h a device range.
    pub block_type: u8,
    pub flags: u8,
    pub devid: u16,
    /// Last device id of a 22h range (auxiliary data), else 0.
    pub aux: u16,
    pub start: u64,
    pub len_bytes: u64,
}

/// The decoded IVRS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ivrs {
    pub revision: u8,
    pub info: IvInfo,
    pub ivhds: Vec<Ivhd>,
    pub ivmds: Vec<Ivmd>,
    pub skipped_blocks: usize,
}

impl Ivrs {
    /// The IVHDs that describe distinct IOMMUs. Firmware usually lists each IOMMU
    /// twice or three times (10h plus 11h and/or 40h); an OS uses the newest type it
    /// understands. We keep, per (segment, devid), the block with the highest type.
    pub fn units(&self) -> Vec<&Ivhd> {
        let mut units: Vec<&Ivhd> = Vec::new();
        for ivhd in &self.ivhds {
            match units.iter_mut().find(|u| u.segment == ivhd.segment && u.iommu_devid == ivhd.iommu_devid) {
                Some(u) if u.block_type < ivhd.block_type => *u = ivhd,
                Some(_) => {}
                None => units.push(ivhd),
            }
        }
        units
    }
}

/// Decodes a whole IVRS (header included).
pub fn parse_ivrs(bytes: &[u8]) -> Result<Ivrs, TableError> {
    let table = checked_table(bytes, b"IVRS")?;
    let mut ivrs = Ivrs { revision: u8_at(table, 8)?, info: u32_at(table, SDT_HEADER_LEN)?.into(), ..Ivrs::default() };
    let header = |b: &[u8], o: usize| Ok((u8_at(b, o)?.into(), usize::from(u16_at(b, offset_plus(o, 2)?)?)));
    walk_structures(table, BLOCKS_OFFSET, 4, header, |kind, b, _| {
        match kind as u8 {
            t @ (0x10 | 0x11 | 0x40) => ivrs.ivhds.push(parse_ivhd(t, b)?),
            t @ 0x20..=0x22 => {
                let block = slice_at(b, 0, IVMD_LEN)?;
                ivrs.ivmds.push(Ivmd {
                    block_type: t,
                    flags: u8_at(block, 1)?,
                    devid: u16_at(block, 4)?,
                    aux: u16_at(block, 6)?,
                    start: u64_at(block, 16)?,
                    len_bytes: u64_at(block, 24)?,
                });
            }
            _ => ivrs.skipped_blocks = ivrs.skipped_blocks.saturating_add(1),
        }
        Ok(())
    })?;
    Ok(ivrs)
}

fn parse_ivhd(block_type: u8, b: &[u8]) -> Result<Ivhd, TableError> {
    let (entries_offset, efr_image) =
        if block_type == 0x10 { (IVHD10_ENTRIES_OFFSET, None) } else { (IVHD11_ENTRIES_OFFSET, Some(u64_at(b, 24)?)) };
    Ok(Ivhd {
        block_type,
        flags: u8_at(b, 1)?,
        iommu_devid: u16_at(b, 4)?,
        capability_offset: u16_at(b, 6)?,
        base_address: u64_at(b, 8)?,
        segment: u16_at(b, 16)?,
        iommu_info: u16_at(b, 18)?,
        feature_info: u32_at(b, 20)?,
        efr_image,
        entries: parse_entries(slice_at(b, entries_offset, b.len().saturating_sub(entries_offset))?)?,
    })
}

/// Byte length of a device entry of type `t` at `offset`: fixed by the top bits of the
/// type for 00h-7Fh; for F0h from its UID length; other variable types are unknown.
fn entry_len(e: &[u8], offset: usize) -> Result<usize, TableError> {
    let t = u8_at(e, offset)?;
    match t {
        0x00..=0x3f => Ok(4),
        0x40..=0x7f => Ok(8),
        // At most 22 + 255: cannot overflow.
        entry::ACPI_HID => Ok(usize::from(u8_at(e, offset_plus(offset, 21)?)?).wrapping_add(22)),
        _ => Err(TableError::UnknownEntry { offset, kind: t }),
    }
}

fn parse_entries(e: &[u8]) -> Result<Vec<IvhdEntry>, TableError> {
    let mut out = Vec::new();
    // A pending start-of-range: (type, first devid, data, alias or ext).
    let mut open: Option<(u8, u16, u8, u32)> = None;
    let mut offset = 0;
    while offset < e.len() {
        let len = entry_len(e, offset)?;
        let d = slice_at(e, offset, len).map_err(|_| TableError::BadEntryLength { offset, len })?;
        let (t, devid, data) = (u8_at(d, 0)?, u16_at(d, 1)?, u8_at(d, 3)?);
        if open.is_some() && t != entry::END_OF_RANGE {
            return Err(TableError::UnterminatedRange { offset });
        }
        match t {
            entry::PAD4 | entry::PAD8 => {}
            entry::ALL => out.push(IvhdEntry::All { data }),
            entry::SELECT => out.push(IvhdEntry::Select { devid, data }),
            entry::START_OF_RANGE => open = Some((t, devid, data, 0)),
            entry::ALIAS_START_OF_RANGE => open = Some((t, devid, data, u16_at(d, 5)?.into())),
            entry::EXT_START_OF_RANGE => open = Some((t, devid, data, u32_at(d, 4)?)),
            entry::END_OF_RANGE => {
                let (start, first, data, extra) = open.take().ok_or(TableError::UnterminatedRange { offset })?;
                let last = devid;
                out.push(match start {
                    entry::ALIAS_START_OF_RANGE => IvhdEntry::AliasRange { first, last, alias: extra as u16, data },
                    entry::EXT_START_OF_RANGE => IvhdEntry::ExtRange { first, last, data, ext: extra },
                    _ => IvhdEntry::Range { first, last, data },
                });
            }
            entry::ALIAS_SELECT => out.push(IvhdEntry::AliasSelect { devid, alias: u16_at(d, 5)?, data }),
            entry::EXT_SELECT => out.push(IvhdEntry::ExtSelect { devid, data, ext: u32_at(d, 4)? }),
            entry::SPECIAL => out.push(IvhdEntry::Special {
                handle: u8_at(d, 4)?,
                devid: u16_at(d, 5)?,
                variety: match u8_at(d, 7)? {
                    1 => SpecialVariety::IoApic,
                    2 => SpecialVariety::Hpet,
                    v => SpecialVariety::Other(v),
                },
                data,
            }),
            entry::ACPI_HID => out.push(IvhdEntry::AcpiHid {
                devid,
                data,
                hid: array_at(d, 4)?,
                cid: array_at(d, 12)?,
                uid: d.get(22..).ok_or(TableError::Truncated { offset: 22 })?.to_vec(),
            }),
            // Reserved fixed-length types: skip, their length is known.
            _ => {}
        }
        // `d` is `len` bytes inside `e`, so this is at most `e.len()`.
        offset = offset.wrapping_add(len);
    }
    match open {
        Some(_) => Err(TableError::UnterminatedRange { offset }),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests;
