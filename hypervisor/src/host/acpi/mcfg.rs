//! The MCFG (PCI Firmware Spec 3.3 §4.1.2): where each PCI segment's ECAM window is.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::host::acpi::TableError;
use crate::host::acpi::bytes::{SDT_HEADER_LEN, checked_table, u8_at, u16_at, u64_at};

/// MCFG header: SDT header + 8 reserved bytes; then 16-byte allocation entries.
const ENTRIES_OFFSET: usize = SDT_HEADER_LEN + 8;
const ENTRY_LEN: usize = 16;
const _: () = assert!(ENTRIES_OFFSET == 44);

/// One ECAM window: configuration space of `bus_start..=bus_end` on `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcamRegion {
    /// Physical address that corresponds to bus 0 of the segment (even when
    /// `bus_start` is not 0), per the PCI Firmware Spec.
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

impl EcamRegion {
    /// Physical address of `offset` in the configuration space of `bus:dev.func`, or
    /// `None` when the bus is outside this window or an argument is out of range.
    pub fn config_address(&self, bus: u8, device: u8, function: u8, offset: u16) -> Option<u64> {
        if bus < self.bus_start || bus > self.bus_end || device >= 32 || function >= 8 || offset >= 4096 {
            return None;
        }
        let rel = u64::from(bus) << 20 | u64::from(device) << 15 | u64::from(function) << 12 | u64::from(offset);
        self.base.checked_add(rel)
    }

    /// Size of the window in bytes (1 MiB per bus).
    pub fn len_bytes(&self) -> u64 {
        // At most 256 buses: cannot overflow.
        u64::from(self.bus_end.saturating_sub(self.bus_start)).wrapping_add(1) << 20
    }
}

/// Decodes a whole MCFG (header included). Trailing bytes shorter than an entry are
/// ignored; entries with `bus_end < bus_start` are dropped.
pub fn parse_mcfg(bytes: &[u8]) -> Result<Vec<EcamRegion>, TableError> {
    let table = checked_table(bytes, b"MCFG")?;
    let mut regions = Vec::new();
    let entries = table.get(ENTRIES_OFFSET..).unwrap_or_default();
    for entry in entries.chunks_exact(ENTRY_LEN) {
        let region = EcamRegion {
            base: u64_at(entry, 0)?,
            segment: u16_at(entry, 8)?,
            bus_start: u8_at(entry, 10)?,
            bus_end: u8_at(entry, 11)?,
        };
        if region.bus_end >= region.bus_start {
            regions.push(region);
        }
    }
    Ok(regions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: &[u8] = include_bytes!("../../../tests/fixtures/acpi/qemu-q35/MCFG.bin");

    #[test]
    fn qemu_q35_mcfg() {
        let regions = parse_mcfg(QEMU).unwrap();
        assert_eq!(regions, [EcamRegion { base: 0xb000_0000, segment: 0, bus_start: 0, bus_end: 0xff }]);
        assert_eq!(regions[0].len_bytes(), 256 << 20);
    }

    #[test]
    fn config_address_layout() {
        let r = EcamRegion { base: 0xe000_0000, segment: 0, bus_start: 0, bus_end: 3 };
        assert_eq!(r.config_address(1, 2, 3, 0x100), Some(0xe000_0000 + (1 << 20 | 2 << 15 | 3 << 12 | 0x100)));
        assert_eq!(r.config_address(4, 0, 0, 0), None);
        assert_eq!(r.config_address(0, 32, 0, 0), None);
        assert_eq!(r.config_address(0, 0, 0, 4096), None);
        let top = EcamRegion { base: u64::MAX - 10, segment: 0, bus_start: 0, bus_end: 255 };
        assert_eq!(top.config_address(255, 0, 0, 0), None);
    }

    #[test]
    fn short_table_yields_no_regions() {
        assert_eq!(parse_mcfg(&QEMU[..44]).map_err(|_| ()), Err(()));
        let mut t = QEMU[..50].to_vec();
        t[4..8].copy_from_slice(&50u32.to_le_bytes());
        assert_eq!(parse_mcfg(&t), Ok(Vec::new()));
    }
}
