//! Condensing the UEFI memory map into Bulkhead's `MemoryRegion`s: classify each
//! descriptor, sort, and merge neighbours of the same kind.

use bulkhead_abi::{MemoryKind, MemoryRegion};

/// UEFI memory types (UEFI 2.10 §7.2, `EFI_MEMORY_TYPE`).
pub mod uefi_type {
    pub const RESERVED: u32 = 0;
    pub const LOADER_CODE: u32 = 1;
    pub const LOADER_DATA: u32 = 2;
    pub const BOOT_SERVICES_CODE: u32 = 3;
    pub const BOOT_SERVICES_DATA: u32 = 4;
    pub const RUNTIME_SERVICES_CODE: u32 = 5;
    pub const RUNTIME_SERVICES_DATA: u32 = 6;
    pub const CONVENTIONAL: u32 = 7;
    pub const UNUSABLE: u32 = 8;
    pub const ACPI_RECLAIM: u32 = 9;
    pub const ACPI_NVS: u32 = 10;
    pub const MMIO: u32 = 11;
    pub const MMIO_PORT_SPACE: u32 = 12;
    pub const PAL_CODE: u32 = 13;
    pub const PERSISTENT: u32 = 14;
    /// OS-defined types (0x8000_0000 and up): Bulkhead marks its own allocations so the
    /// hypervisor can tell them apart after ExitBootServices.
    pub const BULKHEAD_IMAGE: u32 = 0x8000_4248;
    pub const BULKHEAD_DATA: u32 = 0x8000_4249;
}

pub fn classify(uefi_type: u32) -> MemoryKind {
    use uefi_type::*;
    match uefi_type {
        CONVENTIONAL => MemoryKind::Usable,
        // The loader's own code and pool data (its stack lives in boot-services memory)
        // are dead once the hypervisor runs.
        LOADER_CODE | LOADER_DATA | BOOT_SERVICES_CODE | BOOT_SERVICES_DATA => MemoryKind::BootServices,
        BULKHEAD_IMAGE => MemoryKind::Hypervisor,
        BULKHEAD_DATA => MemoryKind::Loader,
        RUNTIME_SERVICES_CODE | RUNTIME_SERVICES_DATA => MemoryKind::RuntimeServices,
        ACPI_RECLAIM => MemoryKind::AcpiReclaimable,
        ACPI_NVS => MemoryKind::AcpiNvs,
        MMIO | MMIO_PORT_SPACE => MemoryKind::Mmio,
        UNUSABLE => MemoryKind::Unusable,
        PERSISTENT => MemoryKind::Persistent,
        _ => MemoryKind::Reserved,
    }
}

/// Writes the condensed map into `out` and returns how many entries it used. `input`
/// yields (physical start, page count, UEFI type). Entries that do not fit are dropped
/// from the end (the buffer is sized with slack, so this does not happen in practice).
pub fn condense(input: impl Iterator<Item = (u64, u64, u32)>, out: &mut [MemoryRegion]) -> usize {
    let mut n = 0;
    for (start, pages, ty) in input {
        if pages == 0 || n == out.len() {
            continue;
        }
        out[n] = MemoryRegion { start, len: pages.saturating_mul(4096), kind: classify(ty), _reserved: 0 };
        n += 1;
    }
    let used = &mut out[..n];
    used.sort_unstable_by_key(|r| r.start);
    let mut merged = 0;
    for i in 0..n {
        let region = used[i];
        if merged > 0 {
            let prev = &mut used[merged - 1];
            if prev.kind == region.kind && prev.end() == region.start {
                prev.len += region.len;
                continue;
            }
        }
        used[merged] = region;
        merged += 1;
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::uefi_type::*;
    use super::*;

    #[test]
    fn sorts_merges_and_classifies() {
        let input = [
            (0x10_0000, 16, CONVENTIONAL),
            (0x0, 160, CONVENTIONAL),
            (0x11_0000, 4, BOOT_SERVICES_DATA),
            (0x11_4000, 2, BOOT_SERVICES_CODE),
            (0x400_0000, 9, BULKHEAD_IMAGE),
            (0xfee0_0000, 1, MMIO),
            (0x20_0000, 0, CONVENTIONAL),
        ];
        let mut out = [MemoryRegion { start: 0, len: 0, kind: MemoryKind::Reserved, _reserved: 0 }; 8];
        let n = condense(input.into_iter(), &mut out);
        let got: Vec<_> = out[..n].iter().map(|r| (r.start, r.len, r.kind)).collect();
        assert_eq!(
            got,
            vec![
                (0x0, 160 * 4096, MemoryKind::Usable),
                (0x10_0000, 16 * 4096, MemoryKind::Usable),
                (0x11_0000, 6 * 4096, MemoryKind::BootServices),
                (0x400_0000, 9 * 4096, MemoryKind::Hypervisor),
                (0xfee0_0000, 4096, MemoryKind::Mmio),
            ]
        );
    }

    #[test]
    fn unknown_types_are_reserved() {
        assert_eq!(classify(0x7000_0000), MemoryKind::Reserved);
        assert_eq!(classify(PAL_CODE), MemoryKind::Reserved);
    }
}
