//! The Intel EPT entry format (SDM Vol. 3 29.3.2, Tables 29-1 to 29-6): read, write
//! and execute bits instead of PRESENT/USER/NX, the memory type in leaves, PS for a
//! 2 MiB leaf in a PDE, and the Dirty bit (bit 9) when the EPT pointer enables
//! accessed and dirty flags. An entry is present when any of R/W/X is set; a leaf must
//! allow reads (write-only or write-execute is a misconfiguration).
//!
//! Table entries grant R/W/X so that the leaf alone carries the rights, as with nested
//! paging. Guest RAM is write-back (memory type 6) and the leaf ignores the guest's
//! PAT for it only when the hypervisor decides so; here the guest's PAT applies.
#![forbid(unsafe_code)]

use super::{DirtyTracking, Geometry, PageTable, PteFormat};
use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::Perms;

/// EPT entry bits.
pub mod entry {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const EXECUTE: u64 = 1 << 2;
    /// Bits 5:3 of a leaf: the EPT memory type; 6 = write-back.
    pub const MEMTYPE_WB: u64 = 6 << 3;
    /// A 2 MiB leaf in a PDE (1 GiB in a PDPTE).
    pub const LARGE: u64 = 1 << 7;
    pub const ACCESSED: u64 = 1 << 8;
    pub const DIRTY: u64 = 1 << 9;
    pub const RWX: u64 = READ | WRITE | EXECUTE;
}

/// The EPT pointer (SDM Vol. 3 25.6.11): write-back paging structures, a 4-level
/// walk (bits 5:3 = 3), and accessed/dirty flags when `accessed_dirty`.
pub const fn eptp(root: HostPhysAddr, accessed_dirty: bool) -> u64 {
    let ad = if accessed_dirty { 1 << 6 } else { 0 };
    (root.raw() & super::ADDR_MASK) | (3 << 3) | 6 | ad
}

/// EPT: 4 levels (48-bit guest-physical addresses), 2 MiB leaves where possible.
pub const GEOMETRY: Geometry = Geometry { levels: 4, large_pages: true, hpa_limit: 1 << 52 };

/// EPT entries.
#[derive(Debug, Clone, Copy)]
pub struct Ept;

/// An extended page table: GPA → HPA with the guest's rights.
pub type ExtendedPageTable = PageTable<Ept>;

impl PteFormat for Ept {
    const NAME: &'static str = "extended page table";
    const LOG_TARGET: &'static str = "ept";
    const RIGHTS: Perms = Perms::RWX;

    fn table(next: HostPhysAddr, _level: u8) -> u64 {
        (next.raw() & super::ADDR_MASK) | entry::RWX
    }
    fn leaf(hpa: HostPhysAddr, level: u8, perms: Perms) -> Option<u64> {
        // Write without read is an EPT misconfiguration: not expressible.
        if !perms.read {
            return None;
        }
        let mut e = (hpa.raw() & super::ADDR_MASK) | entry::READ | entry::MEMTYPE_WB;
        if perms.write {
            e |= entry::WRITE;
        }
        if perms.exec {
            e |= entry::EXECUTE;
        }
        if level > 1 {
            e |= entry::LARGE;
        }
        Some(e)
    }
    fn is_present(e: u64) -> bool {
        e & entry::RWX != 0
    }
    fn is_leaf(e: u64, level: u8) -> bool {
        level == 1 || (level <= 3 && e & entry::LARGE != 0)
    }
    fn rights(e: u64) -> Perms {
        Perms { read: e & entry::READ != 0, write: e & entry::WRITE != 0, exec: e & entry::EXECUTE != 0 }
    }
}

impl DirtyTracking for Ept {
    const DIRTY: u64 = entry::DIRTY;
}

#[cfg(test)]
mod tests {
    use super::super::{MapError, conformance, index};
    use super::*;
    use crate::memory::addr::{GuestPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
    use crate::memory::fake_frames::FakeFrames;
    use crate::memory::frames::FrameSource;

    const MIB: u64 = 1 << 20;

    fn g(x: u64) -> GuestPhysAddr {
        GuestPhysAddr::new(x)
    }
    fn h(x: u64) -> HostPhysAddr {
        HostPhysAddr::new(x)
    }

    #[test]
    fn the_engine_contract_holds() {
        conformance::check_all::<Ept>(GEOMETRY);
    }

    #[test]
    fn leaves_carry_rights_memory_type_and_size() {
        let mut f = FakeFrames::new();
        let mut ept = ExtendedPageTable::new(&mut f, GEOMETRY).unwrap();
        ept.map_range(&mut f, g(0), h(16 * MIB), 2 * MIB, Perms::RWX).unwrap();
        ept.map_range(&mut f, g(4 * MIB), h(0x1000), 0x1000, Perms::R).unwrap();
        let big = ept.translate(&mut f, g(0x1234)).unwrap();
        assert_eq!((big.hpa, big.page_size, big.perms), (h(16 * MIB + 0x1234), LARGE_PAGE_SIZE, Perms::RWX));
        // Table entries grant RWX; the 2 MiB leaf is RWX | WB | PS.
        assert_eq!(f.table_mut(ept.root())[0] & 0x7, 0x7);
        let (pd, level) = ept.leaf_table(&mut f, 0).unwrap();
        assert_eq!(level, 2);
        assert_eq!(f.table_mut(pd)[0], (16 * MIB) | 0x7 | (6 << 3) | (1 << 7));
        // A read-only 4 KiB leaf: R and WB only, no PS.
        let (pt, _) = ept.leaf_table(&mut f, 4 * MIB).unwrap();
        assert_eq!(f.table_mut(pt)[index(4 * MIB, 1)], 0x1000 | 1 | (6 << 3));
        let small = ept.translate(&mut f, g(4 * MIB + 8)).unwrap();
        assert_eq!((small.page_size, small.perms), (PAGE_SIZE, Perms::R));
        // Nothing maps the hole, and a page without read cannot be mapped.
        assert_eq!(ept.translate(&mut f, g(3 * MIB)), None);
        let write_only = Perms { read: false, ..Perms::RW };
        assert_eq!(
            ept.map_range(&mut f, g(8 * MIB), h(0), 0x1000, write_only),
            Err(MapError::BadPerms { gpa: g(8 * MIB) })
        );
        ept.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }

    #[test]
    fn eptp_encodes_walk_length_memory_type_and_ad() {
        assert_eq!(eptp(h(0x1234_5000), false), 0x1234_5000 | 0x18 | 6);
        assert_eq!(eptp(h(0x1234_5000), true), 0x1234_5000 | 0x18 | 6 | 0x40);
    }
}
