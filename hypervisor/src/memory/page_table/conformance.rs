//! What every format must get from the engine, checked by each format's own tests
//! (`npt.rs`, and the VT-d and AMD-Vi formats in `iommu/`) on the shared fake frames.

use alloc::vec;

use super::{Geometry, MapError, PageTable, PteFormat};
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
use crate::memory::fake_frames::FakeFrames;
use crate::memory::guest::{GuestMemoryMap, GuestRegion, Perms};

const MIB: u64 = 1 << 20;

fn g(x: u64) -> GuestPhysAddr {
    GuestPhysAddr::new(x)
}
fn h(x: u64) -> HostPhysAddr {
    HostPhysAddr::new(x)
}

/// Runs every check for format `F` in tables of `geometry`.
pub(crate) fn check_all<F: PteFormat>(geometry: Geometry) {
    maps_translates_and_frees::<F>(geometry);
    rights_follow_the_mapping::<F>(geometry);
    overlaps_and_limits_are_errors::<F>(geometry);
    unmap_and_map_again::<F>(geometry);
    exhaustion_leaks_nothing::<F>(geometry);
}

fn maps_translates_and_frees<F: PteFormat>(geometry: Geometry) {
    let mut f = FakeFrames::new();
    let mut t = PageTable::<F>::new(&mut f, geometry).unwrap();
    // 8 KiB below a 2 MiB boundary to 8 KiB above the next one, HPA congruent mod 2 MiB.
    let (start, len, hpa) = (2 * MIB - 0x2000, 2 * MIB + 0x4000, 64 * MIB - 0x2000);
    t.map_range(&mut f, g(start), h(hpa), len, Perms::RW).unwrap();
    for a in [start, start + 0x1fff, 2 * MIB, 3 * MIB + 0x123, 4 * MIB - 1, 4 * MIB, start + len - 1] {
        let tr = t.translate(&mut f, g(a)).unwrap();
        assert_eq!(tr.hpa, h(hpa + a - start), "{a:#x}");
        let large = geometry.large_pages && (2 * MIB..4 * MIB).contains(&a);
        assert_eq!(tr.page_size, if large { LARGE_PAGE_SIZE } else { PAGE_SIZE }, "{a:#x}");
        assert_eq!(tr.perms, Perms::RW.and(F::RIGHTS));
    }
    assert_eq!(t.translate(&mut f, g(start - 1)), None);
    assert_eq!(t.translate(&mut f, g(start + len)), None);
    assert_eq!(t.translate(&mut f, g(t.address_limit())), None);
    // Tables: the root, one per level down to the 2 MiB leaves, two tables of 4 KiB
    // leaves (one without 2 MiB leaves: the middle block's).
    let tables = usize::from(geometry.levels) - 1 + if geometry.large_pages { 2 } else { 3 };
    assert_eq!(f.live(), tables);
    let mut listed = t.frames(&mut f);
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), tables);
    assert!(listed.contains(&t.root()));
    t.destroy(&mut f);
    assert_eq!(f.live(), 0);
    assert_eq!(PageTable::<F>::new(&mut f, Geometry { levels: 7, ..geometry }).err(), Some(MapError::BadGeometry));
    assert_eq!(PageTable::<F>::new(&mut f, Geometry { levels: 1, ..geometry }).err(), Some(MapError::BadGeometry));
}

fn rights_follow_the_mapping<F: PteFormat>(geometry: Geometry) {
    let mut f = FakeFrames::new();
    let none = GuestRegion::new(g(8 * MIB), h(8 * MIB), PAGE_SIZE, Perms::NONE).unwrap();
    let map = GuestMemoryMap::new(vec![
        GuestRegion::new(g(0), h(16 * MIB), 2 * MIB, Perms::RX).unwrap(),
        GuestRegion::new(g(4 * MIB), h(32 * MIB), 0x3000, Perms::RW).unwrap(),
        none,
    ])
    .unwrap();
    let mut t = PageTable::<F>::new(&mut f, geometry).unwrap();
    t.map_all(&mut f, &map).unwrap();
    let ro = t.translate(&mut f, g(0x1234)).unwrap();
    assert_eq!((ro.hpa, ro.perms), (h(16 * MIB + 0x1234), Perms::RX.and(F::RIGHTS)));
    assert!(ro.perms.read && !ro.perms.write);
    let rw = t.translate(&mut f, g(4 * MIB + 0x2008)).unwrap();
    assert_eq!((rw.hpa, rw.perms), (h(32 * MIB + 0x2008), Perms::RW.and(F::RIGHTS)));
    // A region granting nothing is not mapped at all.
    assert_eq!(t.translate(&mut f, g(8 * MIB)), None);
    t.destroy(&mut f);
    assert_eq!(f.live(), 0);
}

fn overlaps_and_limits_are_errors<F: PteFormat>(geometry: Geometry) {
    let mut f = FakeFrames::new();
    let mut t = PageTable::<F>::new(&mut f, geometry).unwrap();
    assert_eq!(t.map_range(&mut f, g(0x800), h(0), PAGE_SIZE, Perms::RW), Err(MapError::Misaligned { gpa: g(0x800) }));
    assert_eq!(t.map_range(&mut f, g(0), h(0x800), PAGE_SIZE, Perms::RW), Err(MapError::Misaligned { gpa: g(0) }));
    assert_eq!(t.map_range(&mut f, g(0), h(0), 0, Perms::RW), Err(MapError::Misaligned { gpa: g(0) }));
    let top = g(t.address_limit() - PAGE_SIZE);
    assert_eq!(t.map_range(&mut f, top, h(0), 2 * PAGE_SIZE, Perms::RW), Err(MapError::OutOfRange { gpa: top }));
    let hpa_top = h(geometry.hpa_limit - PAGE_SIZE);
    assert_eq!(t.map_range(&mut f, g(0), hpa_top, 2 * PAGE_SIZE, Perms::RW), Err(MapError::OutOfRange { gpa: g(0) }));
    t.map_range(&mut f, top, hpa_top, PAGE_SIZE, Perms::R).unwrap();
    assert_eq!(t.translate(&mut f, top).unwrap().hpa, hpa_top);
    t.map_range(&mut f, g(2 * MIB), h(2 * MIB), 2 * MIB, Perms::RW).unwrap();
    for at in [2 * MIB, 3 * MIB] {
        assert_eq!(
            t.map_range(&mut f, g(at), h(0), PAGE_SIZE, Perms::RW),
            Err(MapError::AlreadyMapped { gpa: g(at) }),
            "{at:#x}"
        );
    }
    t.destroy(&mut f);
    assert_eq!(f.live(), 0);
}

fn unmap_and_map_again<F: PteFormat>(geometry: Geometry) {
    let mut f = FakeFrames::new();
    let mut t = PageTable::<F>::new(&mut f, geometry).unwrap();
    t.map_range(&mut f, g(0xc01f_f000), h(0xfd1f_f000), 2 * MIB + 0x2000, Perms::RW).unwrap();
    if geometry.large_pages {
        // Cutting into a 2 MiB leaf is refused rather than splitting it.
        let inside = g(0xc030_0000);
        assert_eq!(t.unmap_range(&mut f, inside, PAGE_SIZE), Err(MapError::Misaligned { gpa: inside }));
        assert!(t.translate(&mut f, inside).is_some());
    }
    t.unmap_range(&mut f, g(0xc01f_f000), 2 * MIB + 0x2000).unwrap();
    for a in [0xc01f_f000, 0xc020_0000, 0xc03f_ffff, 0xc040_0000] {
        assert_eq!(t.translate(&mut f, g(a)), None, "{a:#x}");
    }
    t.unmap_range(&mut f, g(0x1000), PAGE_SIZE).unwrap();
    t.map_range(&mut f, g(0xc020_0000), h(0xfe20_0000), 2 * MIB, Perms::RW).unwrap();
    assert_eq!(t.translate(&mut f, g(0xc020_0010)).unwrap().hpa, h(0xfe20_0010));
    t.destroy(&mut f);
    assert_eq!(f.live(), 0);
}

fn exhaustion_leaks_nothing<F: PteFormat>(geometry: Geometry) {
    let mut f = FakeFrames::new();
    f.limit = Some(0);
    assert_eq!(PageTable::<F>::new(&mut f, geometry).err(), Some(MapError::OutOfFrames));
    f.limit = Some(2);
    let mut t = PageTable::<F>::new(&mut f, geometry).unwrap();
    // The root and one more table: the walk to the first leaf runs out.
    assert_eq!(t.map_range(&mut f, g(0), h(0), PAGE_SIZE, Perms::RW), Err(MapError::OutOfFrames));
    t.destroy(&mut f);
    assert_eq!(f.live(), 0);
}
