use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::host::acpi::RawTables;
use crate::host::iommu::fake_mem::{pci_bridge, pci_dev, qemu_q35_inventory};
use crate::host::pci::fake_cfg::{FakeCfg, bdf};
use crate::host::pci::{Capability, ExtCapability};

fn fixture(dir: &str, sig: &str) -> Vec<u8> {
    std::fs::read(alloc::format!("{}/tests/fixtures/acpi/{dir}/{sig}.bin", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn tables(dir: &str) -> PlatformTables {
    let raw = RawTables {
        madt: Some(fixture(dir, "APIC")),
        dmar: (dir == "qemu-q35-intel-iommu").then(|| fixture(dir, "DMAR")),
        ivrs: (dir == "qemu-q35-amd-iommu").then(|| fixture(dir, "IVRS")),
        ..RawTables::default()
    };
    PlatformTables::from_raw(&raw).unwrap()
}

fn acs(mut d: PciDevice) -> PciDevice {
    d.ext_capabilities.push(ExtCapability { id: ext_cap_id::ACS, version: 1, offset: 0x148 });
    d
}

fn pcie(mut d: PciDevice, port_type: u8) -> PciDevice {
    d.capabilities.push(Capability {
        id: cap_id::PCI_EXPRESS,
        offset: 0xe0,
        detail: CapabilityDetail::PciExpress { port_type },
    });
    d
}

/// Config space for the q35 fixture inventory: the e1000e has FLR; nothing else
/// offers a reset.
fn q35_config() -> FakeCfg {
    let cfg = FakeCfg::default();
    for d in qemu_q35_inventory().devices() {
        cfg.add(d.bdf, d.vendor_id, d.device_id, 0);
    }
    cfg.cap(bdf(1, 0, 0), 0xe0, cap_id::PCI_EXPRESS, 0x0002, &[1 << 28]);
    cfg
}

fn q35_inventory() -> PciInventory {
    let mut devs = qemu_q35_inventory().devices().to_vec();
    devs[1] = acs(pcie(devs[1].clone(), 4));
    devs[2] = pcie(devs[2].clone(), 0);
    PciInventory::new(devs, true)
}

#[test]
fn qemu_q35_with_intel_iommu() {
    let reports = assignability(&q35_inventory(), &tables("qemu-q35-intel-iommu"), &q35_config());
    let line = |b: Bdf| reports.iter().find(|r| r.bdf == b).unwrap();
    let nic = line(bdf(1, 0, 0));
    assert_eq!(nic.iommu_coverage, IommuCoverage::Vtd { index: 0, register_base: 0xfed9_0000 });
    assert_eq!(nic.reset_method, ResetMethod::Flr { pcie: 0xe0 });
    assert!(nic.assignable());
    assert_eq!(
        alloc::format!("{nic}"),
        "01:00.0 8086:1000 Ethernet controller: group 2, reset flr, iommu DRHD0@0xfed90000, acs no -> assignable"
    );
    // virtio-net on the root bus: covered, but no reset method.
    assert_eq!(line(bdf(0, 4, 0)).refusal, Some("no reset method"));
    assert_eq!(line(bdf(0, 3, 0)).refusal, Some("bridge"));
    assert_eq!(line(bdf(0, 0, 0)).refusal, Some("chipset function"));
    // The ICH9 functions share one group (multifunction, no ACS).
    let ich9: Vec<u32> = [0, 2, 3].iter().map(|f| line(bdf(0, 0x1f, *f)).isolation_group).collect();
    assert!(ich9.iter().all(|g| *g == ich9[0]));
    assert_ne!(ich9[0], nic.isolation_group);
    log_report(&reports);
}

#[test]
fn qemu_q35_with_amd_iommu_and_without() {
    let reports = assignability(&q35_inventory(), &tables("qemu-q35-amd-iommu"), &q35_config());
    let nic = reports.iter().find(|r| r.bdf == bdf(1, 0, 0)).unwrap();
    assert_eq!(nic.iommu_coverage, IommuCoverage::AmdVi { index: 0, base: 0xfed8_0000 });
    assert!(nic.assignable());
    let reports = assignability(&q35_inventory(), &tables("qemu-q35"), &q35_config());
    assert!(reports.iter().all(|r| !r.assignable()));
    let nic = reports.iter().find(|r| r.bdf == bdf(1, 0, 0)).unwrap();
    assert_eq!(nic.refusal, Some("no IOMMU translates it"));
}

#[test]
fn devices_named_by_an_ivmd_are_refused() {
    let mut ivrs = tables("qemu-q35-amd-iommu").ivrs().unwrap().clone();
    let nic = bdf(1, 0, 0);
    let block = |block_type, devid, aux| crate::host::acpi::ivrs::Ivmd {
        block_type,
        flags: 0,
        devid,
        aux,
        start: 0x7c00_0000,
        len_bytes: 0x10_0000,
    };
    for (ivmd, refused) in [
        (block(0x21, nic.requester_id(), 0), true),
        (block(0x22, 0x00f0, 0x0108), true),
        (block(0x21, 0x0200, 0), false),
        (block(0x22, 0x0200, 0x0300), false),
    ] {
        ivrs.ivmds = alloc::vec![ivmd];
        let reports = assignability_with(&q35_inventory(), None, Some(&ivrs), &q35_config());
        let line = reports.iter().find(|r| r.bdf == nic).unwrap();
        let want = refused.then_some("firmware-reserved DMA region (IVMD)");
        assert_eq!(line.refusal, want, "{ivmd:?}");
        assert_eq!(line.rmrr, refused);
    }
}

#[test]
fn groups_follow_acs() {
    // Root port A (ACS) with a switch below: upstream 02:00.0 (ACS),
    // downstream ports 03:00.0 (ACS) and 03:01.0 (no ACS), each with one endpoint;
    // root port B without ACS with two endpoints; a PCIe-to-PCI bridge with two
    // conventional devices; a multifunction endpoint with ACS on the root bus.
    let mut mf0 = acs(pci_dev(0, 0x10, 0, [0x02, 0x00]));
    mf0.multifunction = true;
    let mut mf1 = acs(pci_dev(0, 0x10, 1, [0x02, 0x00]));
    mf1.multifunction = true;
    let devs = vec![
        acs(pcie(pci_bridge(0, 1, 0, 1, 6), 4)),
        acs(pcie(pci_bridge(1, 0, 0, 2, 6), 5)),
        acs(pcie(pci_bridge(2, 0, 0, 3, 3), 6)),
        pcie(pci_bridge(2, 1, 0, 4, 4), 6),
        pci_dev(3, 0, 0, [0x02, 0x00]),
        pci_dev(4, 0, 0, [0x02, 0x00]),
        pcie(pci_bridge(0, 2, 0, 7, 7), 4),
        pci_dev(7, 0, 0, [0x02, 0x00]),
        pci_dev(7, 1, 0, [0x02, 0x00]),
        pcie(pci_bridge(0, 3, 0, 8, 8), 7),
        pci_dev(8, 1, 0, [0x02, 0x00]),
        pci_dev(8, 2, 0, [0x02, 0x00]),
        mf0,
        mf1,
    ];
    let inv = PciInventory::new(devs, true);
    let g = isolation_groups(&inv);
    let group = |b: Bdf| g[inv.devices().iter().position(|d| d.bdf == b).unwrap()];
    assert_ne!(group(bdf(3, 0, 0)), group(bdf(4, 0, 0)), "switch ports with ACS isolate");
    assert_eq!(group(bdf(7, 0, 0)), group(bdf(7, 1, 0)), "root port without ACS");
    assert_eq!(group(bdf(8, 1, 0)), group(bdf(8, 2, 0)), "conventional PCI shares a group");
    assert_eq!(group(bdf(8, 1, 0)), group(bdf(0, 3, 0)), "with its PCIe-to-PCI bridge");
    assert_ne!(group(bdf(0, 0x10, 0)), group(bdf(0, 0x10, 1)), "multifunction with ACS");
    assert_ne!(group(bdf(3, 0, 0)), group(bdf(7, 0, 0)));
}

#[test]
fn the_display_adapter_of_the_boot_framebuffer_is_refused() {
    use crate::host::pci::{Bar, BarKind};
    // QEMU q35 with -vga std at 00:02.0 (framebuffer BAR0 at 0xc000_0000, where GOP
    // put the boot framebuffer) and a bochs-display behind a root port on bus 1.
    let mut devs = q35_inventory().devices().to_vec();
    let mut vga = pci_dev(0, 2, 0, [0x03, 0x00]);
    vga.bars = vec![
        Bar { index: 0, kind: BarKind::Mem32, prefetchable: true, address: 0xc000_0000, size: 16 << 20 },
        Bar { index: 2, kind: BarKind::Mem32, prefetchable: false, address: 0xc211_2000, size: 0x1000 },
    ];
    let mut bochs = pci_dev(1, 0, 0, [0x03, 0x80]);
    bochs.bars = vec![Bar { index: 0, kind: BarKind::Mem32, prefetchable: true, address: 0xc100_0000, size: 16 << 20 }];
    devs[2] = bochs;
    devs.push(vga);
    let inv = PciInventory::new(devs, true);
    let cfg = q35_config();
    cfg.add(bdf(0, 2, 0), 0x1234, 0x1111, 0);
    let mut reports = assignability(&inv, &tables("qemu-q35-intel-iommu"), &cfg);
    assert!(reports.iter().find(|r| r.bdf == bdf(1, 0, 0)).unwrap().assignable());
    // A framebuffer in the middle of the BAR (GOP may use an offset) names it too.
    assert_eq!(refuse_screen(&mut reports, &inv, 0xc000_3000), Some(bdf(0, 2, 0)));
    let vga = reports.iter().find(|r| r.bdf == bdf(0, 2, 0)).unwrap();
    assert_eq!(vga.refusal, Some(SHOWS_THE_SCREEN));
    assert!(alloc::format!("{vga}").ends_with("-> shows the hypervisor's screen"));
    assert!(reports.iter().find(|r| r.bdf == bdf(1, 0, 0)).unwrap().assignable(), "the other adapter stays free");
    assert_eq!(refuse_screen(&mut reports, &inv, 0x8000_0000), None, "a framebuffer in no BAR names nothing");
}
