//! End-to-end: QEMU's real tables, linked into fake physical memory, through the
//! `acpi` crate's discovery and our decoders.

use super::*;
use crate::host::acpi::test_util::{FakeHandler, RSDP_PHYS, link_qemu};
use alloc::boxed::Box;

fn platform(dir: &str) -> PlatformTables {
    let handler = FakeHandler(Box::leak(Box::new(link_qemu(dir))));
    // SAFETY: the fake memory holds a linked RSDP at RSDP_PHYS.
    let tables = unsafe { acpi::AcpiTables::from_rsdp(handler, RSDP_PHYS) }.unwrap();
    PlatformTables::from_raw(&handler::copy_tables(&handler, &tables)).unwrap()
}

fn lines(p: &PlatformTables) -> Vec<alloc::string::String> {
    p.summary_lines().into_iter().map(|(_, _, s)| s).collect()
}

#[test]
fn qemu_q35_with_intel_iommu() {
    let p = platform("qemu-q35-intel-iommu");
    assert_eq!(p.cpus().len(), 2);
    assert_eq!(p.ecam_regions(), [EcamRegion { base: 0xb000_0000, segment: 0, bus_start: 0, bus_end: 255 }]);
    assert_eq!(p.iommu(), IommuKind::VtD { units: 1 });
    assert_eq!(p.dmar().unwrap().units[0].register_base, 0xfed9_0000);
    assert!(p.ivrs().is_none());
    assert_eq!(p.s5(), Some(SleepType { slp_typ_a: 0, slp_typ_b: 0 }));
    assert_eq!(p.fadt().unwrap().pm1a_control.unwrap().address, 0x604);
    assert_eq!(p.hpet().map(|g| g.address), Some(0xfed0_0000));
    assert!(p.problems().is_empty());
    let l = lines(&p);
    assert!(l.contains(&"IOMMU: DMAR (VT-d) with 1 units".into()), "{l:#?}");
    assert!(l.contains(&"ECAM: segment 0 buses 00-ff at 0xb0000000".into()), "{l:#?}");
    assert!(
        l.contains(&"FADT rev 3: SCI 9, PM1a_CNT io 0x604, PM1b_CNT none, reset io 0xcf9 <- 0x0f".into()),
        "{l:#?}"
    );
}

#[test]
fn qemu_q35_with_amd_iommu() {
    let p = platform("qemu-q35-amd-iommu");
    assert_eq!(p.iommu(), IommuKind::AmdVi { units: 1 });
    assert_eq!(p.ivrs().unwrap().ivhds[0].base_address, 0xfed8_0000);
    assert!(lines(&p).contains(&"IOMMU: IVRS (AMD-Vi) with 1 IVHDs".into()));
}

#[test]
fn qemu_q35_without_iommu() {
    let p = platform("qemu-q35");
    assert_eq!(p.iommu(), IommuKind::None);
    assert!(p.dmar().is_none() && p.ivrs().is_none());
    assert!(lines(&p).contains(&"IOMMU: no IOMMU table (passthrough disabled)".into()));
}

#[test]
fn missing_optional_tables_are_reported_not_fatal() {
    let madt = include_bytes!("../../../tests/fixtures/acpi/qemu-q35/APIC.bin").to_vec();
    let p = PlatformTables::from_raw(&RawTables { madt: Some(madt), ..RawTables::default() }).unwrap();
    assert!(p.ecam_regions().is_empty() && p.fadt().is_none() && p.s5().is_none() && p.hpet().is_none());
    let l = lines(&p);
    for expected in [
        "no MCFG: PCI config space through ports 0xcf8/0xcfc (no extended capabilities)",
        "no FADT: ACPI shutdown and reset registers unavailable",
        "no \\_S5_ package found: ACPI soft-off unavailable",
        "no HPET table",
        "IOMMU: no IOMMU table (passthrough disabled)",
    ] {
        assert!(l.contains(&expected.into()), "missing {expected:?} in {l:#?}");
    }
}

#[test]
fn malformed_optional_tables_are_dropped_with_a_warning() {
    let madt = include_bytes!("../../../tests/fixtures/acpi/qemu-q35/APIC.bin").to_vec();
    let mut dmar = include_bytes!("../../../tests/fixtures/acpi/qemu-q35-intel-iommu/DMAR.bin").to_vec();
    dmar[50] = 0;
    dmar[51] = 0;
    let p = PlatformTables::from_raw(&RawTables {
        madt: Some(madt),
        dmar: Some(dmar),
        mcfg: Some(alloc::vec![0; 3]),
        ..RawTables::default()
    })
    .unwrap();
    assert_eq!(p.iommu(), IommuKind::None);
    assert_eq!(p.problems().len(), 2);
    assert!(
        p.summary_lines().iter().any(|(lvl, _, s)| *lvl == log::Level::Warn && s.starts_with("DMAR table malformed"))
    );
}

#[test]
fn missing_or_bad_madt_is_an_error() {
    assert_eq!(PlatformTables::from_raw(&RawTables::default()).unwrap_err(), AcpiError::MissingMadt);
    let bad = RawTables { madt: Some(alloc::vec![b'A', b'P', b'I', b'C']), ..RawTables::default() };
    assert!(matches!(PlatformTables::from_raw(&bad), Err(AcpiError::BadMadt(_))));
}

#[test]
fn rsdp_at_address_zero_is_rejected_not_dereferenced() {
    // The identity map stands in a zeroed block for address 0, which fails validation.
    assert_eq!(PlatformTables::from_rsdp(0).unwrap_err(), AcpiError::InvalidRsdp);
}

#[test]
fn corrupt_rsdp_is_an_error() {
    let mut mem = link_qemu("qemu-q35");
    mem.regions[0].1[8] ^= 0xff; // break the checksum
    let handler = FakeHandler(Box::leak(Box::new(mem)));
    // SAFETY: the fake memory holds an RSDP-sized region at RSDP_PHYS.
    let err = unsafe { acpi::AcpiTables::from_rsdp(handler, RSDP_PHYS) }.unwrap_err();
    assert_eq!(AcpiError::from(err), AcpiError::InvalidRsdp);
}
