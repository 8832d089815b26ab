//! The x86-64 long-mode entry format as AMD nested paging uses it (APM Vol. 2
//! 15.25.5): every guest access is treated as a user access, so USER must be set at
//! every level, and the permissions of all levels are combined, so non-leaf entries
//! grant everything (PRESENT | WRITABLE | USER) and the leaf carries the region's rights
//! (WRITABLE, NX). Leaves have a Dirty bit, so nested tables can track written pages.
#![forbid(unsafe_code)]

use super::{DirtyTracking, Geometry, PageTable, PteFormat};
use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::Perms;

/// Long-mode page-table entry bits (APM Vol. 2 5.3.3, Figure 5-18 to 5-24).
pub mod entry {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// Page size: a 2 MiB leaf in a PDE, 1 GiB in a PDPTE.
    pub const HUGE: u64 = 1 << 7;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Permissions of intermediate entries.
    pub const TABLE: u64 = PRESENT | WRITABLE | USER;
}

/// Guest-physical addresses at and above this are not translatable with 4-level tables.
pub const GPA_LIMIT: u64 = 1 << 48;
/// Host-physical addresses must fit the entry's address field.
pub const HPA_LIMIT: u64 = 1 << 52;

/// Nested page tables: 4 levels, 2 MiB leaves where possible.
pub const GEOMETRY: Geometry = Geometry { levels: 4, large_pages: true, hpa_limit: HPA_LIMIT };

/// Long-mode entries for AMD nested paging.
#[derive(Debug, Clone, Copy)]
pub struct Npt;

/// A nested page table: GPA → HPA with the guest's rights.
pub type NestedPageTable = PageTable<Npt>;

impl PteFormat for Npt {
    const NAME: &'static str = "nested page table";
    const LOG_TARGET: &'static str = "npt";
    const RIGHTS: Perms = Perms::RWX;

    fn table(next: HostPhysAddr, _level: u8) -> u64 {
        (next.raw() & super::ADDR_MASK) | entry::TABLE
    }
    fn leaf(hpa: HostPhysAddr, level: u8, perms: Perms) -> Option<u64> {
        // Every present entry allows reads: a page without read cannot be expressed.
        if !perms.read {
            return None;
        }
        let mut e = (hpa.raw() & super::ADDR_MASK) | entry::PRESENT | entry::USER;
        if perms.write {
            e |= entry::WRITABLE;
        }
        if !perms.exec {
            e |= entry::NO_EXECUTE;
        }
        if level > 1 {
            e |= entry::HUGE;
        }
        Some(e)
    }
    fn is_present(e: u64) -> bool {
        e & entry::PRESENT != 0
    }
    fn is_leaf(e: u64, level: u8) -> bool {
        // PS is reserved in a PML4E (and beyond); a PDE or PDPTE with PS maps a page.
        level == 1 || (level <= 3 && e & entry::HUGE != 0)
    }
    fn rights(e: u64) -> Perms {
        if e & entry::USER == 0 {
            return Perms::NONE;
        }
        Perms { read: true, write: e & entry::WRITABLE != 0, exec: e & entry::NO_EXECUTE == 0 }
    }
}

impl DirtyTracking for Npt {
    const DIRTY: u64 = entry::DIRTY;
}

#[cfg(test)]
mod tests {
    use super::super::{MapError, conformance, index};
    use super::*;
    use crate::memory::addr::{GuestPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
    use crate::memory::fake_frames::FakeFrames;
    use crate::memory::frames::FrameSource;
    use crate::memory::guest::{GuestMemoryMap, GuestRegion};
    use alloc::vec;

    const MIB: u64 = 1 << 20;

    fn g(x: u64) -> GuestPhysAddr {
        GuestPhysAddr::new(x)
    }
    fn h(x: u64) -> HostPhysAddr {
        HostPhysAddr::new(x)
    }
    fn new(f: &mut FakeFrames) -> NestedPageTable {
        NestedPageTable::new(f, GEOMETRY).unwrap()
    }

    #[test]
    fn the_engine_contract_holds() {
        conformance::check_all::<Npt>(GEOMETRY);
    }

    #[test]
    fn aligned_ranges_use_2m_pages() {
        let mut f = FakeFrames::new();
        let mut npt = new(&mut f);
        npt.map_range(&mut f, g(0), h(16 * MIB), 8 * MIB, Perms::RWX).unwrap();
        // PML4 + PDPT + PD only.
        assert_eq!(f.live(), 3);
        let t = npt.translate(&mut f, g(0x20_1234)).unwrap();
        assert_eq!(t.hpa, h(16 * MIB + 0x20_1234));
        assert_eq!(t.page_size, LARGE_PAGE_SIZE);
        assert_eq!(t.perms, Perms::RWX);
        assert_eq!(npt.translate(&mut f, g(8 * MIB)), None);
        // USER + WRITABLE + PRESENT at every level; the 2 MiB leaf has PS.
        let pml4e = f.table_mut(npt.root())[0];
        assert_eq!(pml4e & 0x7, 0x7);
        let (pd, level) = npt.leaf_table(&mut f, 0x20_0000).unwrap();
        assert_eq!(level, 2);
        let pde = f.table_mut(pd)[1];
        assert_eq!(pde, (18 * MIB) | entry::PRESENT | entry::WRITABLE | entry::USER | entry::HUGE);
    }

    #[test]
    fn misaligned_parts_fall_back_to_4k() {
        let mut f = FakeFrames::new();
        let mut npt = new(&mut f);
        // GPA 1M..5M -> HPA 33M..37M: 1M of 4K pages, one 2M page (2M..4M), 1M of 4K.
        npt.map_range(&mut f, g(MIB), h(33 * MIB), 4 * MIB, Perms::RW).unwrap();
        let a = npt.translate(&mut f, g(MIB + 0x5000)).unwrap();
        assert_eq!((a.hpa, a.page_size), (h(33 * MIB + 0x5000), PAGE_SIZE));
        let b = npt.translate(&mut f, g(3 * MIB)).unwrap();
        assert_eq!((b.hpa, b.page_size), (h(35 * MIB), LARGE_PAGE_SIZE));
        let c = npt.translate(&mut f, g(4 * MIB + 0xfff)).unwrap();
        assert_eq!((c.hpa, c.page_size), (h(36 * MIB + 0xfff), PAGE_SIZE));
        assert!(!c.perms.exec && c.perms.write);
        // HPA not 2M-aligned relative to GPA: all 4K.
        let mut npt2 = new(&mut f);
        npt2.map_range(&mut f, g(0), h(0x1000), 2 * MIB, Perms::R).unwrap();
        let d = npt2.translate(&mut f, g(0x1f_f000)).unwrap();
        assert_eq!((d.hpa, d.page_size, d.perms.write), (h(0x20_0000), PAGE_SIZE, false));
        // The read-only, no-execute 4 KiB leaf: no W, NX, no PS.
        let (pt, _) = npt2.leaf_table(&mut f, 0x1f_f000).unwrap();
        let pte = f.table_mut(pt)[index(0x1f_f000, 1)];
        assert_eq!(pte, 0x20_0000 | entry::PRESENT | entry::USER | entry::NO_EXECUTE);
    }

    #[test]
    fn map_all_regions_and_teardown_returns_every_frame() {
        let mut f = FakeFrames::new();
        let map = GuestMemoryMap::new(vec![
            GuestRegion::new(g(0), h(64 * MIB), 4 * MIB, Perms::RWX).unwrap(),
            GuestRegion::new(g(0xfff0_0000), h(0x7000_0000), MIB, Perms::RX).unwrap(),
            GuestRegion::new(g(1 << 40), h(128 * MIB), 0x3000, Perms::RW).unwrap(),
        ])
        .unwrap();
        let mut npt = new(&mut f);
        npt.map_all(&mut f, &map).unwrap();
        assert_eq!(npt.translate(&mut f, g(0xfff0_1008)).unwrap().hpa, h(0x7000_1008));
        assert!(!npt.translate(&mut f, g(0xfff0_1008)).unwrap().perms.write);
        assert_eq!(npt.translate(&mut f, g((1 << 40) + 0x2004)).unwrap().hpa, h(128 * MIB + 0x2004));
        assert!(f.live() > 3);
        npt.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }

    /// Sets the Dirty bit of the leaf mapping `gpa`, as the processor does on a write.
    fn write_to(f: &mut FakeFrames, npt: &NestedPageTable, gpa: u64) {
        let (table, level) = npt.leaf_table(f, gpa).unwrap();
        f.table_mut(table)[index(gpa, level)] |= entry::DIRTY | entry::ACCESSED;
    }

    #[test]
    fn tracked_regions_use_4k_pages_and_report_dirty_pages_once() {
        let mut f = FakeFrames::new();
        let fb = g(0xb000_0000);
        let map = GuestMemoryMap::new(vec![
            GuestRegion::new(g(0), h(64 * MIB), 4 * MIB, Perms::RWX).unwrap(),
            GuestRegion::new(fb, h(128 * MIB), 4 * MIB, Perms::RW).unwrap(),
        ])
        .unwrap();
        let mut npt = new(&mut f);
        npt.map_all_tracking(&mut f, &map, Some(fb)).unwrap();
        assert_eq!(npt.translate(&mut f, g(0x1000)).unwrap().page_size, LARGE_PAGE_SIZE);
        assert_eq!(npt.translate(&mut f, fb).unwrap().page_size, PAGE_SIZE);
        let npages = 1024;
        let mut bits = [0u64; 16];
        assert_eq!(npt.take_dirty(&mut f, fb, npages, &mut bits), 0);
        assert!(!npt.any_dirty(&mut f, fb, npages));
        for page in [0u64, 1, 511, 512, 1023] {
            write_to(&mut f, &npt, fb.raw() + page * PAGE_SIZE + 8);
        }
        assert!(npt.any_dirty(&mut f, fb, npages));
        assert!(npt.any_dirty(&mut f, fb, npages), "looking clears nothing");
        assert_eq!(npt.take_dirty(&mut f, fb, npages, &mut bits), 5);
        assert!(!npt.any_dirty(&mut f, fb, npages));
        assert_eq!(bits[0], 0b11);
        assert_eq!(bits[7], 1 << 63);
        assert_eq!(bits[8], 1);
        assert_eq!(bits[15], 1 << 63);
        // Read and cleared: nothing new until the next write.
        let mut again = [0u64; 16];
        assert_eq!(npt.take_dirty(&mut f, fb, npages, &mut again), 0);
        assert_eq!(again, [0; 16]);
        // A 2 MiB leaf marks all of its pages; an unmapped range reports nothing.
        write_to(&mut f, &npt, 0x20_0000);
        let mut big = [0u64; 16];
        assert_eq!(npt.take_dirty(&mut f, g(0), npages, &mut big), 512);
        assert_eq!(&big[..8], &[0; 8]);
        assert_eq!(&big[8..], &[u64::MAX; 8]);
        assert_eq!(npt.take_dirty(&mut f, g(1 << 40), 4, &mut big), 0);
        npt.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }

    #[test]
    fn unmapping_removes_leaves_and_allows_a_new_mapping() {
        let mut f = FakeFrames::new();
        let mut npt = new(&mut f);
        // A BAR-like range: one 2 MiB leaf and 4 KiB leaves on either side.
        npt.map_range(&mut f, g(0xc01f_f000), h(0xfd1f_f000), 2 * MIB + 0x2000, Perms::RW).unwrap();
        assert_eq!(npt.translate(&mut f, g(0xc020_0000)).unwrap().page_size, LARGE_PAGE_SIZE);
        // Cutting into the 2 MiB leaf is refused rather than splitting it.
        assert_eq!(npt.unmap_range(&mut f, g(0xc030_0000), 0x1000), Err(MapError::Misaligned { gpa: g(0xc030_0000) }));
        assert!(npt.translate(&mut f, g(0xc030_0000)).is_some());
        npt.unmap_range(&mut f, g(0xc01f_f000), 2 * MIB + 0x2000).unwrap();
        for a in [0xc01f_f000, 0xc020_0000, 0xc03f_ffff, 0xc040_0000] {
            assert_eq!(npt.translate(&mut f, g(a)), None, "{a:#x}");
        }
        // Unmapped pages are skipped; the range can be mapped again elsewhere.
        npt.unmap_range(&mut f, g(0xd000_0000), 0x1000).unwrap();
        npt.map_range(&mut f, g(0xc020_0000), h(0xfd20_0000), 2 * MIB, Perms::RW).unwrap();
        assert_eq!(npt.translate(&mut f, g(0xc020_0010)).unwrap().hpa, h(0xfd20_0010));
        assert_eq!(npt.unmap_range(&mut f, g(0x800), 0x1000), Err(MapError::Misaligned { gpa: g(0x800) }));
        let top = g(GPA_LIMIT - 0x1000);
        assert_eq!(npt.unmap_range(&mut f, top, 0x2000), Err(MapError::OutOfRange { gpa: top }));
        npt.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let mut f = FakeFrames::new();
        let mut npt = new(&mut f);
        assert_eq!(
            npt.map_range(&mut f, g(0x800), h(0), 0x1000, Perms::RW),
            Err(MapError::Misaligned { gpa: g(0x800) })
        );
        let top = g(GPA_LIMIT - 0x1000);
        assert_eq!(npt.map_range(&mut f, top, h(0), 0x2000, Perms::RW), Err(MapError::OutOfRange { gpa: top }));
        let no_read = Perms { read: false, ..Perms::RW };
        assert_eq!(npt.map_range(&mut f, g(0), h(0), 0x1000, no_read), Err(MapError::BadPerms { gpa: g(0) }));
        npt.map_range(&mut f, g(0), h(0), 2 * MIB, Perms::RW).unwrap();
        assert_eq!(
            npt.map_range(&mut f, g(0x1000), h(0), 0x1000, Perms::RW),
            Err(MapError::AlreadyMapped { gpa: g(0x1000) })
        );
        f.limit = Some(f.live());
        assert_eq!(npt.map_range(&mut f, g(1 << 39), h(0), 0x1000, Perms::RW), Err(MapError::OutOfFrames));
        npt.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }
}
