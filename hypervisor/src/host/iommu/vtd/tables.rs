//! VT-d legacy-mode translation structures: root table, context tables (VT-d spec
//! §9.1, §9.3) and second-level page-table entries (§9.8).
#![forbid(unsafe_code)]

use core::mem::size_of;

use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::Perms;
use crate::memory::page_table::{ADDR_MASK, PteFormat};

/// A root entry (§9.1, Figure 9-"Root-Entry Format"): one per bus, pointing at the
/// bus's context table.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootEntry {
    /// Bit 0 Present; bits 63:12 Context-table Pointer.
    pub lo: u64,
    /// Reserved.
    pub hi: u64,
}

/// A context entry (§9.3, "Context-Entry Format"): one per device/function.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextEntry {
    /// Bit 0 Present, bit 1 Fault Processing Disable, bits 3:2 Translation Type,
    /// bits 63:12 Second-Level Page-Table Pointer.
    pub lo: u64,
    /// Bits 2:0 Address Width, bits 6:3 available, bits 23:8 Domain Identifier.
    pub hi: u64,
}

const _: () = assert!(size_of::<RootEntry>() == 16);
const _: () = assert!(size_of::<ContextEntry>() == 16);

/// Entries per root or context table (one 4 KiB page).
pub const ENTRIES: usize = 256;

const PRESENT: u64 = 1;

impl RootEntry {
    pub fn new(context_table: HostPhysAddr) -> Self {
        Self { lo: (context_table.raw() & ADDR_MASK) | PRESENT, hi: 0 }
    }
    pub fn present(self) -> bool {
        self.lo & PRESENT != 0
    }
    pub fn context_table(self) -> HostPhysAddr {
        HostPhysAddr::new(self.lo & ADDR_MASK)
    }
    pub fn words(self) -> [u64; 2] {
        [self.lo, self.hi]
    }
}

/// Translation types in a legacy context entry (§9.3, TT field).
pub mod tt {
    /// Untranslated requests are translated through the second-level tables;
    /// translated requests and translation requests (ATS) are blocked.
    pub const UNTRANSLATED_ONLY: u64 = 0b00;
    /// Untranslated requests pass through without translation (needs ECAP.PT).
    pub const PASS_THROUGH: u64 = 0b10;
}

impl ContextEntry {
    /// A present entry translating through `slptptr` with `levels`-level tables for
    /// domain `did`. ATS is not offered (TT = 00).
    pub fn translated(slptptr: HostPhysAddr, levels: u8, did: u16) -> Self {
        let aw = address_width(levels);
        Self {
            lo: (slptptr.raw() & ADDR_MASK) | (tt::UNTRANSLATED_ONLY << 2) | PRESENT,
            hi: u64::from(did) << 8 | u64::from(aw),
        }
    }
    pub fn present(self) -> bool {
        self.lo & PRESENT != 0
    }
    pub fn translation_type(self) -> u64 {
        (self.lo >> 2) & 0b11
    }
    pub fn slptptr(self) -> HostPhysAddr {
        HostPhysAddr::new(self.lo & ADDR_MASK)
    }
    pub fn address_width(self) -> u8 {
        (self.hi & 0x7) as u8
    }
    pub fn domain_id(self) -> u16 {
        (self.hi >> 8) as u16
    }
    pub fn words(self) -> [u64; 2] {
        [self.lo, self.hi]
    }
    pub fn from_words(w: [u64; 2]) -> Self {
        Self { lo: w[0], hi: w[1] }
    }
}

/// AW field for a table depth (§9.3): 1 = 39-bit/3-level, 2 = 48-bit/4-level,
/// 3 = 57-bit/5-level.
pub fn address_width(levels: u8) -> u8 {
    levels.saturating_sub(2)
}

/// Second-level paging entries (§9.8, "Format for Second-Level Paging Entries"), a
/// format for the page-table engine in `memory::page_table`. There is no present bit:
/// an entry is present when R or W is set. Non-leaf entries grant R+W and leaves carry
/// the mapping's rights (rights combine across levels). No Dirty bit is used (it needs
/// ECAP.SLADS and is not enabled), so these tables offer no dirty tracking.
#[derive(Debug, Clone, Copy)]
pub struct SecondLevel;

pub mod sl {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    /// Page Size: this PDE (or PDPE) maps a 2 MiB (1 GiB) page.
    pub const PAGE_SIZE: u64 = 1 << 7;
}

impl PteFormat for SecondLevel {
    const NAME: &'static str = "VT-d second-level table";
    const LOG_TARGET: &'static str = "iommu";
    const RIGHTS: Perms = Perms::RW;

    fn table(next: HostPhysAddr, _level: u8) -> u64 {
        (next.raw() & ADDR_MASK) | sl::READ | sl::WRITE
    }
    fn leaf(hpa: HostPhysAddr, level: u8, perms: Perms) -> Option<u64> {
        // Without R and W the entry would read as not present.
        if !perms.read && !perms.write {
            return None;
        }
        let mut e = hpa.raw() & ADDR_MASK;
        if perms.read {
            e |= sl::READ;
        }
        if perms.write {
            e |= sl::WRITE;
        }
        if level > 1 {
            e |= sl::PAGE_SIZE;
        }
        Some(e)
    }
    fn is_present(entry: u64) -> bool {
        entry & (sl::READ | sl::WRITE) != 0
    }
    fn is_leaf(entry: u64, level: u8) -> bool {
        level == 1 || entry & sl::PAGE_SIZE != 0
    }
    fn rights(entry: u64) -> Perms {
        Perms { read: entry & sl::READ != 0, write: entry & sl::WRITE != 0, exec: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::addr::GuestPhysAddr;
    use crate::memory::fake_frames::FakeFrames;
    use crate::memory::frames::FrameSource;
    use crate::memory::page_table::{Geometry, PageTable, conformance};

    const QEMU: Geometry = Geometry { levels: 3, large_pages: true, hpa_limit: 1 << 39 };

    #[test]
    fn second_level_tables_meet_the_engine_contract() {
        conformance::check_all::<SecondLevel>(QEMU);
        conformance::check_all::<SecondLevel>(Geometry { large_pages: false, ..QEMU });
        conformance::check_all::<SecondLevel>(Geometry { levels: 4, hpa_limit: 1 << 46, ..QEMU });
    }

    /// The transfer window builds 4 KiB leaves as the frame's address ORed with the
    /// bits of a leaf at address 0 (`Domains::map_window`).
    #[test]
    fn small_leaves_are_the_address_with_the_permission_bits() {
        for perms in [Perms::RW, Perms::R] {
            let bits = SecondLevel::leaf(HostPhysAddr::new(0), 1, perms).unwrap();
            for hpa in [0x1000u64, 0x1_2345_6000, 0xf_ffff_f000] {
                assert_eq!(SecondLevel::leaf(HostPhysAddr::new(hpa), 1, perms), Some(bits | hpa));
            }
        }
    }

    #[test]
    fn second_level_entries_are_encoded_per_spec() {
        let mut f = FakeFrames::new();
        let mut t = PageTable::<SecondLevel>::new(&mut f, QEMU).unwrap();
        t.map_range(&mut f, GuestPhysAddr::new(0x20_0000), HostPhysAddr::new(0x60_0000), 0x20_1000, Perms::RW).unwrap();
        // Execute means nothing to DMA: a read-execute region is read-only.
        t.map_range(&mut f, GuestPhysAddr::new(0x50_0000), HostPhysAddr::new(0x9000), 0x1000, Perms::RX).unwrap();
        let l3 = f.table_mut(t.root())[0];
        assert_eq!(l3 & !ADDR_MASK, sl::READ | sl::WRITE);
        let l2 = HostPhysAddr::new(l3 & ADDR_MASK);
        // 2 MiB leaf: PS and both rights.
        assert_eq!(f.table_mut(l2)[1], 0x60_0000 | sl::PAGE_SIZE | sl::READ | sl::WRITE);
        let l1 = HostPhysAddr::new(f.table_mut(l2)[2] & ADDR_MASK);
        assert_eq!(f.table_mut(l2)[2] & !ADDR_MASK, sl::READ | sl::WRITE);
        assert_eq!(f.table_mut(l1)[0], 0x80_0000 | sl::READ | sl::WRITE);
        assert_eq!(f.table_mut(l1)[0x100], 0x9000 | sl::READ);
        t.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }
}
