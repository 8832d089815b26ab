use alloc::vec;

use super::*;
use crate::host::acpi::dmar::parse_dmar;
use crate::host::iommu::fake_mem::qemu_q35_inventory;
use crate::host::iommu::vtd::fake::{FakeVtd, QEMU_CAP, QEMU_ECAP};
use crate::host::iommu::{FaultKind, Iommu};
use crate::memory::guest::{GuestRegion, Perms};

const MIB: u64 = 1 << 20;

fn dmar() -> Dmar {
    parse_dmar(include_bytes!("../../../../tests/fixtures/acpi/qemu-q35-intel-iommu/DMAR.bin")).unwrap()
}

fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(0, bus, dev, func)
}

fn map(gpa: u64, hpa: u64, len: u64) -> GuestMemoryMap {
    GuestMemoryMap::new(vec![
        GuestRegion::new(crate::memory::addr::GuestPhysAddr::new(gpa), HostPhysAddr::new(hpa), len, Perms::RWX)
            .unwrap(),
    ])
    .unwrap()
}

fn iommu(hw: FakeVtd, config: VtdConfig) -> VtdIommu<FakeVtd> {
    let mut iommu = VtdIommu::new(hw, &dmar(), &qemu_q35_inventory(), config).unwrap();
    iommu.enable().unwrap();
    iommu
}

#[test]
fn capability_decoding() {
    let cap = Cap(QEMU_CAP);
    assert_eq!((cap.sagaw(), cap.levels(), cap.mgaw()), (0b0010, Some(3), 39));
    assert_eq!((cap.fault_record_offset(), cap.fault_records(), cap.domain_ids()), (0x220, 1, 65536));
    assert_eq!(cap.sllps(), 0b11);
    let ecap = Ecap(QEMU_ECAP);
    assert!(ecap.queued_invalidation() && ecap.interrupt_remapping() && !ecap.coherent());
    assert_eq!(ecap.iotlb_offset(), 0x200);
    assert_eq!(Cap(QEMU_CAP | 0b0100 << 8).levels(), Some(4));
    assert_eq!(Cap(0).levels(), None);
}

#[test]
fn enable_programs_root_queue_and_remapping() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig::default());
    assert_eq!(vtd.levels(), 3);
    let hw = vtd.hw_mut();
    let gsts = hw.units[0].regs.r32(regs::GSTS);
    assert_eq!(gsts & (gcmd::TE | gcmd::QIE | gcmd::IRE), gcmd::TE | gcmd::QIE | gcmd::IRE);
    assert_eq!(gsts & gcmd::CFI, 0, "compatibility-format interrupts stay blocked");
    assert_ne!(hw.units[0].root, 0);
    let kinds: Vec<u64> = hw.units[0].descriptors.iter().map(|d| d.kind()).collect();
    use qi::kind::*;
    assert_eq!(kinds, [CONTEXT_CACHE, IOTLB, WAIT, INTERRUPT_ENTRY_CACHE, WAIT]);
    assert_eq!(hw.units[0].regs.r64(regs::IRTA) & 0xf, 9, "1024 entries");
    // Enabling again is a no-op.
    vtd.enable().unwrap();
}

#[test]
fn unattached_devices_are_blocked() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig::default());
    let sid = bdf(0, 4, 0).requester_id();
    assert_eq!(vtd.hw_mut().dma(0, sid, 0x1000, false), Err(0x01));
    let faults = vtd.poll_faults();
    assert_eq!(faults.len(), 1);
    assert_eq!((faults[0].bdf, faults[0].address, faults[0].kind), (bdf(0, 4, 0), 0x1000, FaultKind::DmaRead));
    assert_eq!(faults[0].reason, "root entry not present");
    assert!(vtd.poll_faults().is_empty(), "records are cleared once read");
}

#[test]
fn attached_device_reaches_exactly_its_vm() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig::default());
    let vm1 = vtd.create_domain(&map(0, 0x1_0000_0000, 16 * MIB)).unwrap();
    let vm2 = vtd.create_domain(&map(0, 0x2_0000_0000, 16 * MIB)).unwrap();
    let nic = bdf(1, 0, 0);
    let other = bdf(0, 4, 0);
    vtd.attach(nic, vm1).unwrap();
    vtd.attach(other, vm2).unwrap();
    let ce = vtd.context_entry(nic).unwrap();
    assert!(ce.present());
    assert_eq!((ce.address_width(), ce.domain_id(), ce.translation_type()), (1, vm1.0, 0));
    let hw = vtd.hw_mut();
    assert_eq!(hw.dma(0, nic.requester_id(), 0x20_1234, true), Ok(0x1_0020_1234));
    assert_eq!(hw.dma(0, other.requester_id(), 0x20_1234, false), Ok(0x2_0020_1234));
    // Beyond the VM's 16 MiB: nothing is mapped.
    assert_eq!(hw.dma(0, nic.requester_id(), 16 * MIB, false), Err(0x06));
    assert_eq!(vtd.domain_of(nic), Some(vm1));
    assert_eq!(vtd.attach(nic, vm2), Err(IommuError::AlreadyAttached { bdf: nic, domain: vm1 }));
    assert_eq!(vtd.attach(nic, vm1), Ok(()));
}

#[test]
fn detach_blocks_again_and_invalidates() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig::default());
    let vm = vtd.create_domain(&map(0, 0x1_0000_0000, 4 * MIB)).unwrap();
    let nic = bdf(1, 0, 0);
    vtd.attach(nic, vm).unwrap();
    let before = vtd.hw_mut().units[0].descriptors.len();
    assert_eq!(vtd.destroy_domain(vm), Err(IommuError::DomainBusy(vm)));
    vtd.detach(nic).unwrap();
    let descs = &vtd.hw_mut().units[0].descriptors[before..];
    assert_eq!(descs[0], qi::InvDesc::context_device(vm.0, nic.requester_id()));
    assert_eq!(descs[1], qi::InvDesc::iotlb_domain(vm.0));
    assert_eq!(vtd.hw_mut().dma(0, nic.requester_id(), 0x1000, false), Err(0x02));
    assert_eq!(vtd.detach(nic), Err(IommuError::NotAttached(nic)));
    let live = vtd.hw_mut().mem.live();
    vtd.destroy_domain(vm).unwrap();
    assert!(vtd.hw_mut().mem.live() < live, "page-table frames returned");
    assert_eq!(vtd.destroy_domain(vm), Err(IommuError::UnknownDomain(vm)));
}

#[test]
fn large_pages_and_address_width() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig::default());
    // 3-level tables cannot reach GPA 2^39.
    assert_eq!(
        vtd.create_domain(&map(1 << 39, 0x1_0000_0000, 2 * MIB)),
        Err(IommuError::AddressOutOfRange { gpa: 1 << 39 })
    );
    // Host addresses beyond the DMAR's 39-bit host address width are refused.
    assert!(matches!(vtd.create_domain(&map(0, 1 << 40, 2 * MIB)), Err(IommuError::AddressOutOfRange { .. })));
    // 4-level unit: 48-bit space; 2M pages when both sides are aligned.
    let mut hw = FakeVtd::new(1, QEMU_CAP | 0b0110 << 8, QEMU_ECAP);
    hw.units[0].regs.w64(regs::CAP, QEMU_CAP | 0b0110 << 8);
    let mut vtd = iommu(hw, VtdConfig::default());
    assert_eq!(vtd.levels(), 4);
    let vm = vtd.create_domain(&map(1 << 40, 0x1_0000_0000, 4 * MIB)).unwrap();
    vtd.attach(bdf(0, 4, 0), vm).unwrap();
    assert_eq!(vtd.context_entry(bdf(0, 4, 0)).unwrap().address_width(), 2);
    let sid = bdf(0, 4, 0).requester_id();
    assert_eq!(vtd.hw_mut().dma(0, sid, (1 << 40) + 0x30_0008, true), Ok(0x1_0030_0008));
}

#[test]
fn interrupts_are_remapped_per_device() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig::default());
    let vm = vtd.create_domain(&map(0, 0x1_0000_0000, 4 * MIB)).unwrap();
    let nic = bdf(1, 0, 0);
    let target = MsiTarget { vector: 0x41, dest_apic_id: 1 };
    assert_eq!(vtd.map_msi(nic, 0, target), Err(IommuError::NotAttached(nic)));
    vtd.attach(nic, vm).unwrap();
    let msg = vtd.map_msi(nic, 0, target).unwrap();
    assert_eq!(msg.address & 0xfff0_0010, 0xfee0_0010, "remappable format");
    let sid = nic.requester_id();
    assert_eq!(vtd.hw_mut().msi(0, sid, msg.address, msg.data), Ok((0x41, 1)));
    // Another device replaying the same message fails source-id verification.
    let spoof = bdf(0, 4, 0).requester_id();
    assert_eq!(vtd.hw_mut().msi(0, spoof, msg.address, msg.data), Err(0x26));
    // A compatibility-format MSI straight at a vector is blocked.
    assert_eq!(vtd.hw_mut().msi(0, sid, 0xfee0_1000, 0x30), Err(0x25));
    let faults = vtd.poll_faults();
    assert_eq!(faults[0].kind, FaultKind::Interrupt);
    assert_eq!(faults[0].bdf, bdf(0, 4, 0));
    // Re-mapping the same vector reuses the entry; unmapping makes it not present.
    let again = vtd.map_msi(nic, 0, MsiTarget { vector: 0x42, dest_apic_id: 0 }).unwrap();
    assert_eq!(again, msg);
    assert_eq!(vtd.hw_mut().msi(0, sid, msg.address, 0), Ok((0x42, 0)));
    vtd.unmap_msi(nic, 0).unwrap();
    assert_eq!(vtd.hw_mut().msi(0, sid, msg.address, 0), Err(0x22));
    // Detach drops every entry of the device.
    let m1 = vtd.map_msi(nic, 1, target).unwrap();
    vtd.detach(nic).unwrap();
    assert_eq!(vtd.hw_mut().msi(0, sid, m1.address, 0), Err(0x22));
    assert_eq!(vtd.map_msi(nic, 0, MsiTarget { vector: 1, dest_apic_id: 300 }), Err(IommuError::NotAttached(nic)));
}

#[test]
fn compat_interrupts_allowed_on_request() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig { allow_compat_interrupts: true, x2apic: false });
    assert_eq!(vtd.hw_mut().msi(0, 0x00f8, 0xfee0_1000, 0x30), Ok((0x30, 1)));
}

#[test]
fn x2apic_mode_uses_extended_destinations_and_blocks_compat_format() {
    // CFI requested, but with EIME the unit blocks compatibility format anyway.
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig { allow_compat_interrupts: true, x2apic: true });
    assert_ne!(vtd.hw_mut().units[0].regs.r64(regs::IRTA) & (1 << 11), 0, "EIME set");
    let nic = bdf(0, 4, 0);
    let vm = vtd.create_domain(&map(0, 0x1_0000_0000, 4 * MIB)).unwrap();
    vtd.attach(nic, vm).unwrap();
    let msg = vtd.map_msi(nic, 0, MsiTarget { vector: 0x41, dest_apic_id: 0x1_0002 }).unwrap();
    let sid = nic.requester_id();
    assert_eq!(vtd.hw_mut().msi(0, sid, msg.address, msg.data), Ok((0x41, 0x1_0002)), "32-bit destination");
    assert_eq!(vtd.hw_mut().msi(0, sid, 0xfee0_1000, 0x30), Err(0x25), "compatibility format blocked");
    // Without EIM on the unit, x2APIC mode falls back to xAPIC destinations.
    let mut no_eim =
        iommu(FakeVtd::new(1, QEMU_CAP, QEMU_ECAP & !(1 << 4)), VtdConfig { x2apic: true, ..VtdConfig::default() });
    assert_eq!(no_eim.hw_mut().units[0].regs.r64(regs::IRTA) & (1 << 11), 0);
    let vm = no_eim.create_domain(&map(0, 0x1_0000_0000, 4 * MIB)).unwrap();
    no_eim.attach(nic, vm).unwrap();
    let target = MsiTarget { vector: 0x41, dest_apic_id: 0x100 };
    assert_eq!(no_eim.map_msi(nic, 0, target), Err(IommuError::Unsupported("x2APIC interrupt destinations")));
}

#[test]
fn units_without_queue_or_remapping() {
    // No QI, no IR: register-based invalidation, and no interrupt remapping.
    let mut vtd = iommu(FakeVtd::new(1, QEMU_CAP, (0x200 / 16) << 8), VtdConfig::default());
    assert!(vtd.hw_mut().units[0].register_invalidations >= 2);
    let vm = vtd.create_domain(&map(0, 0x1_0000_0000, 4 * MIB)).unwrap();
    vtd.attach(bdf(0, 4, 0), vm).unwrap();
    let target = MsiTarget { vector: 0x41, dest_apic_id: 0 };
    assert_eq!(vtd.map_msi(bdf(0, 4, 0), 0, target), Err(IommuError::NoInterruptRemapping));
    assert_eq!(vtd.hw_mut().dma(0, bdf(0, 4, 0).requester_id(), 0x2000, false), Ok(0x1_0000_2000));
}

#[test]
fn construction_errors() {
    let inv = qemu_q35_inventory();
    let empty = Dmar::default();
    assert_eq!(VtdIommu::new(FakeVtd::qemu(1), &empty, &inv, VtdConfig::default()).err(), Some(IommuError::NoIommu));
    let no_sagaw = FakeVtd::new(1, QEMU_CAP & !(0x1f << 8), QEMU_ECAP);
    assert!(matches!(VtdIommu::new(no_sagaw, &dmar(), &inv, VtdConfig::default()), Err(IommuError::Unsupported(_))));
    let mut stuck = FakeVtd::qemu(1);
    stuck.units[0].stuck = true;
    let mut vtd = VtdIommu::new(stuck, &dmar(), &inv, VtdConfig::default()).unwrap();
    assert_eq!(vtd.enable(), Err(IommuError::Timeout("GSTS.RTPS")));
}

#[test]
fn coverage_follows_dmar_scopes() {
    let vtd = VtdIommu::new(FakeVtd::qemu(1), &dmar(), &qemu_q35_inventory(), VtdConfig::default()).unwrap();
    // Endpoints listed explicitly, and bus 1 through the root port's sub-hierarchy.
    assert!(vtd.covers(bdf(0, 4, 0)) && vtd.covers(bdf(1, 0, 0)) && vtd.covers(bdf(0, 0x1f, 3)));
    // QEMU's DMAR has no INCLUDE_PCI_ALL: an unlisted slot is not covered.
    assert!(!vtd.covers(bdf(0, 5, 0)));
    assert_eq!(vtd.unit_base(bdf(1, 0, 0)), Some(0xfed9_0000));
}

#[test]
fn frame_exhaustion_is_an_error() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig::default());
    let live = vtd.hw_mut().mem.live();
    vtd.hw_mut().mem.limit = Some(live + 1);
    assert_eq!(vtd.create_domain(&map(0, 0x1_0000_0000, 64 * MIB)).err(), Some(IommuError::OutOfMemory));
    assert_eq!(vtd.hw_mut().mem.live(), live, "partial tables freed");
}

#[test]
fn fault_record_decoding() {
    let f = fault::decode_frcd(0, 0, 0x1234_5000, 1 << 63 | 1 << 62 | 0x06 << 32 | 0x0100).unwrap();
    assert_eq!((f.bdf, f.address, f.kind, f.code), (bdf(1, 0, 0), 0x1234_5000, FaultKind::DmaRead, 6));
    // The reporting unit and its segment travel with the fault.
    let f = fault::decode_frcd(2, 1, 0x1234_5000, 1 << 63 | 0x05 << 32 | 0x0100).unwrap();
    assert_eq!((f.unit, f.bdf, f.kind), (2, Bdf::new(1, 1, 0, 0), FaultKind::DmaWrite));
    let f = fault::decode_frcd(0, 0, 7 << 48, 1 << 63 | 0x22 << 32 | 0x0020).unwrap();
    assert_eq!((f.address, f.kind, f.reason), (7, FaultKind::Interrupt, "interrupt remapping entry not present"));
    assert_eq!(fault::decode_frcd(0, 0, 0, 0x05 << 32), None, "F clear: no fault");
}

#[test]
fn remappable_message_roundtrip() {
    for handle in [0u16, 1, 0x7fff, 0x8000, 0xffff] {
        let m = irte::remappable_msi(handle);
        assert_eq!(irte::decode_remappable(m.address, m.data), Some(handle));
    }
    assert_eq!(irte::decode_remappable(0xfee0_0000, 0x30), None);
    assert_eq!(irte::irta(0x5000, 256, false), 0x5007);
    assert_eq!(irte::irta(0x5000, 1024, true), 0x5809);
}

#[test]
fn ioapic_pins_get_remapping_entries_checked_against_the_ioapic() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig::default());
    // QEMU's DMAR lists I/O APIC 0 in the unit's scope.
    let sid = vtd.scopes[0].ioapics.first().expect("an I/O APIC scope").1.requester_id();
    let target = MsiTarget { vector: 0x21, dest_apic_id: 0 };
    let keyboard = IoapicPin { ioapic_id: 0, pin: 1, level: false };
    let handle = vtd.map_ioapic_pin(keyboard, target).unwrap().expect("remapped");
    let msg = irte::remappable_msi(handle);
    assert_eq!(vtd.hw_mut().msi(0, sid, msg.address, msg.data), Ok((0x21, 0)));
    assert_eq!(vtd.hw_mut().msi(0, bdf(0, 4, 0).requester_id(), msg.address, msg.data), Err(0x26), "only the I/O APIC");
    assert_eq!(vtd.map_ioapic_pin(keyboard, target), Ok(Some(handle)), "the same pin keeps its entry");
    let unknown = IoapicPin { ioapic_id: 9, ..keyboard };
    assert!(matches!(vtd.map_ioapic_pin(unknown, target), Err(IommuError::Unsupported(_))), "unknown I/O APIC");
    // A PCI INTx line: the entry delivers level-triggered, so the EOI reaches the I/O APIC.
    let intx = IoapicPin { ioapic_id: 0, pin: 22, level: true };
    let handle = vtd.map_ioapic_pin(intx, target).unwrap().expect("remapped");
    assert!(vtd.hw_mut().irte(0, handle).is_level());
    let keyboard_handle = vtd.map_ioapic_pin(keyboard, target).unwrap().unwrap();
    assert!(!vtd.hw_mut().irte(0, keyboard_handle).is_level());
}

#[test]
fn transfer_pages_are_reachable_only_between_map_and_unmap() {
    let mut vtd = iommu(FakeVtd::qemu(1), VtdConfig::default());
    // A host driver's domain: its own region at its own address, and a window.
    let own = vtd.create_domain(&map(0x40_0000, 0x40_0000, 4 * 4096)).unwrap();
    let nvme = bdf(0, 4, 0);
    vtd.attach(nvme, own).unwrap();
    let sid = nvme.requester_id();
    let window = 1u64 << 38;
    assert!(vtd.map_window(own, &[(HostPhysAddr::new(0x1_0000_0000), 4096)], true).is_err(), "no window yet");
    vtd.reserve_window(own, window, 512).unwrap();
    assert!(vtd.reserve_window(own, window, 512).is_err(), "one window per domain");
    assert!(vtd.hw_mut().dma(0, sid, window, false).is_err(), "nothing mapped in it yet");
    // Two buffers: two pages, then one; they appear as three consecutive pages.
    let pages = [(HostPhysAddr::new(0x1_0000_0000), 2 * 4096), (HostPhysAddr::new(0x2_0030_0000), 4096)];
    let flushed = vtd.hw_mut().flushed;
    assert_eq!(vtd.map_window(own, &pages, true), Ok(window));
    assert!(vtd.hw_mut().flushed > flushed, "non-coherent unit: the entries are written back");
    let hw = vtd.hw_mut();
    assert_eq!(hw.dma(0, sid, window + 0x1ff8, true), Ok(0x1_0000_1ff8));
    assert_eq!(hw.dma(0, sid, window + 0x2010, true), Ok(0x2_0030_0010));
    assert!(hw.dma(0, sid, window + 0x3000, false).is_err(), "only the pages given");
    assert!(hw.dma(0, sid, 0x1_0000_0000, false).is_err(), "not at their own address");
    assert_eq!(hw.dma(0, sid, 0x40_0000, true), Ok(0x40_0000), "its own region stays");
    // One transfer at a time.
    assert!(vtd.map_window(own, &pages[1..], true).is_err());
    let before = vtd.hw_mut().units[0].descriptors.len();
    vtd.unmap_window(own).unwrap();
    let hw = vtd.hw_mut();
    assert!(hw.units[0].descriptors[before..].contains(&qi::InvDesc::iotlb_domain(own.0)), "IOTLB invalidated");
    assert!(hw.dma(0, sid, window, false).is_err());
    assert!(hw.dma(0, sid, window + 0x2000, false).is_err());
    assert_eq!(hw.dma(0, sid, 0x40_3000, false), Ok(0x40_3000));
    // Read-only for a device that only reads them (a write to the drive).
    assert_eq!(vtd.map_window(own, &pages[..1], false), Ok(window));
    assert_eq!(vtd.hw_mut().dma(0, sid, window, false), Ok(0x1_0000_0000));
    assert!(vtd.hw_mut().dma(0, sid, window, true).is_err());
    vtd.unmap_window(own).unwrap();
    // More pages than the window holds: refused, nothing mapped.
    let big = [(HostPhysAddr::new(0x1_0000_0000), 513 * 4096)];
    assert!(vtd.map_window(own, &big, true).is_err());
    assert!(vtd.hw_mut().dma(0, sid, window, false).is_err());
}
