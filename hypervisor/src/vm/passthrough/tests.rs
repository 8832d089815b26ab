use super::mappings::without_pages;
use super::*;
use crate::host::pci::assign::IommuCoverage;
use crate::host::pci::reset::ResetMethod;
use crate::hw::Bdf;
use crate::vm::acpi::PciIntx;
use crate::vm::config::testing::{vm, vm_configs, with_devices};
use alloc::string::ToString;
use bulkhead_policy::model::VmKind;

fn report(bus: u8, device: u8, ids: (u16, u16), refusal: Option<&'static str>) -> DeviceReport {
    DeviceReport {
        bdf: Bdf::new(0, bus, device, 0),
        vendor_id: ids.0,
        device_id: ids.1,
        class_name: "test",
        reset_method: ResetMethod::Flr { pcie: 0x40 },
        iommu_coverage: IommuCoverage::Vtd { index: 0, register_base: 0xfed9_0000 },
        acs: false,
        isolation_group: u32::from(device),
        rmrr: false,
        refusal,
    }
}

fn machine() -> Vec<DeviceReport> {
    vec![
        report(0, 0, (0x8086, 0x29c0), Some("chipset function")),
        report(0, 3, (0x8086, 0x10d3), None),
        report(1, 0, (0x8086, 0x10d3), None),
        report(0, 4, (0x1234, 0x11e8), Some("no reset method")),
    ]
}

#[test]
fn selects_by_address_and_by_id_without_double_assignment() {
    let vms =
        vm_configs(vec![with_devices("a", &["8086:10d3"]), with_devices("b", &["8086:10d3"]), with_devices("c", &[])]);
    let got = resolve(&vms, &machine(), true).unwrap();
    assert_eq!(got, vec![vec![Bdf::new(0, 0, 3, 0)], vec![Bdf::new(0, 1, 0, 0)], vec![]]);
    let vms = vm_configs(vec![with_devices("a", &["01:00.0"])]);
    assert_eq!(resolve(&vms, &machine(), true).unwrap(), vec![vec![Bdf::new(0, 1, 0, 0)]]);
}

#[test]
fn refuses_with_a_reason_before_anything_starts() {
    let no_iommu = vm_configs(vec![with_devices("a", &["00:03.0"])]);
    assert_eq!(resolve(&no_iommu, &machine(), false), Err(PassthroughError::NeedsIommu { vm: "a".into() }));
    let chipset = vm_configs(vec![with_devices("a", &["00:00.0"])]);
    let e = resolve(&chipset, &machine(), true).unwrap_err();
    assert_eq!(
        e,
        PassthroughError::NotAssignable {
            vm: "a".into(),
            device: chipset[0].devices[0],
            bdf: Bdf::new(0, 0, 0, 0),
            why: "chipset function"
        }
    );
    assert_eq!(e.to_string(), "VM a: device 00:00.0 (00:00.0) cannot be assigned: chipset function");
    let no_reset = vm_configs(vec![with_devices("a", &["1234:11e8"])]);
    let e = resolve(&no_reset, &machine(), true).unwrap_err();
    assert!(matches!(e, PassthroughError::NotAssignable { why: "no reset method", .. }), "{e:?}");
    let absent = vm_configs(vec![with_devices("a", &["00:1f.0"])]);
    let e = resolve(&absent, &machine(), true).unwrap_err();
    assert_eq!(e, PassthroughError::NotPresent { vm: "a".into(), device: absent[0].devices[0] });
    assert_eq!(e.to_string(), "VM a: device 00:1f.0 is not in this machine (or already given to a VM)");
    let twice = vm_configs(vec![with_devices("a", &["00:03.0"]), with_devices("b", &["00:03.0"])]);
    assert!(matches!(resolve(&twice, &machine(), true), Err(PassthroughError::NotPresent { vm, .. }) if vm == "b"));
    let none = vm_configs(vec![with_devices("a", &[])]);
    assert_eq!(resolve(&none, &[], false).unwrap(), vec![Vec::<Bdf>::new()]);
}

#[test]
fn claimed_functions_are_what_resolve_assigns_or_every_named_one() {
    let vms = vm_configs(vec![with_devices("a", &["8086:10d3"]), with_devices("b", &[])]);
    assert_eq!(claimed(&vms, &machine(), true), [Bdf::new(0, 0, 3, 0)], "one selector, the first assignable");
    // No IOMMU: nothing starts, and both functions the selector names stay untouched.
    assert_eq!(claimed(&vms, &machine(), false), [Bdf::new(0, 0, 3, 0), Bdf::new(0, 1, 0, 0)]);
    let none = vm_configs(vec![with_devices("a", &[])]);
    assert!(claimed(&none, &machine(), true).is_empty());
}

#[test]
fn msix_table_pages_are_cut_out_of_the_bar_mapping() {
    let bar = |index: u8, len_bytes: u64| BarMapping {
        bar: index,
        guest_addr: 0xc000_0000,
        host_addr: 0xfe00_0000,
        len_bytes,
        space: BarSpace::Mmio,
    };
    // Table in the middle page of a 16 KiB BAR: two mappings around it.
    let got = without_pages(vec![bar(0, 0x4000), bar(3, 0x1000)], 0, 0x2010, 0x30);
    assert_eq!(got.len(), 3);
    assert_eq!((got[0].bar, got[0].guest_addr, got[0].len_bytes), (0, 0xc000_0000, 0x2000));
    assert_eq!((got[1].guest_addr, got[1].host_addr, got[1].len_bytes), (0xc000_3000, 0xfe00_3000, 0x1000));
    assert_eq!((got[2].bar, got[2].len_bytes), (3, 0x1000));
    // Table covering the whole BAR, or lying past its end: nothing of it is mapped / all of it is.
    assert!(without_pages(vec![bar(0, 0x1000)], 0, 0, 0x1000).is_empty());
    assert_eq!(without_pages(vec![bar(0, 0x1000)], 0, 0x8000, 0x10)[0].len_bytes, 0x1000);
}

#[test]
fn by_vendor_and_device_the_assignable_function_wins() {
    // Two display adapters with the same ids (QEMU's std VGA and bochs-display): the
    // first shows the hypervisor's screen and is refused, the second is assignable.
    let reports = vec![
        report(0, 1, (0x1234, 0x1111), Some("shows the hypervisor's screen")),
        report(1, 0, (0x1234, 0x1111), None),
    ];
    let vms = vm_configs(vec![with_devices("a", &["1234:1111"])]);
    assert_eq!(resolve(&vms, &reports, true).unwrap(), vec![vec![Bdf::new(0, 1, 0, 0)]]);
    // Asked for by a second VM, only the refused one is left: its reason is given.
    let twice = vm_configs(vec![with_devices("a", &["1234:1111"]), with_devices("b", &["1234:1111"])]);
    let e = resolve(&twice, &reports, true).unwrap_err().to_string();
    assert!(e.contains("VM b") && e.contains("hypervisor's screen"), "{e}");
    let by_address = vm_configs(vec![with_devices("a", &["00:01.0"])]);
    let e = resolve(&by_address, &reports, true).unwrap_err();
    assert!(matches!(e, PassthroughError::NotAssignable { why: "shows the hypervisor's screen", .. }), "{e:?}");
}

/// The windows of a small VM (RAM below 4 GiB).
const WINDOWS: Windows = Windows {
    mmio32: MMIO32_WINDOW,
    mmio64: BarWindow {
        start: crate::devices::layout::PCI_MMIO64_MIN_START,
        end: crate::devices::layout::PCI_MMIO64_MIN_START + crate::devices::layout::PCI_MMIO64_LEN,
    },
};

#[test]
fn the_windows_are_the_ones_the_vm_acpi_tables_offer() {
    let acpi = crate::vm::acpi::AcpiConfig::default();
    assert_eq!(windows_above(0), WINDOWS);
    assert_eq!(WINDOWS.mmio32.start, u64::from(acpi.pci.mmio32.start));
    assert_eq!(WINDOWS.mmio32.end, u64::from(acpi.pci.mmio32.end) + 1);
    const { assert!(WINDOWS.mmio64.start >= 1 << 32 && WINDOWS.mmio64.end <= 1 << 36) };
    // Nothing of a desktop VM's low layout (RAM, framebuffer, ECAM, APICs) is in them.
    for (start, len) in
        [(0, crate::devices::layout::LOW_RAM_MAX), (0xe000_0000, 1 << 20), (0xfec0_0000, 0x1000), (0xfee0_0000, 0x1000)]
    {
        assert!(!WINDOWS.mmio32.contains(start, len) && !WINDOWS.mmio64.contains(start, len));
        assert!(start + len <= WINDOWS.mmio32.start || start >= WINDOWS.mmio32.end, "{start:#x}");
    }
}

/// Every RAM block of a desktop VM of `memory` bytes, as `[start, end)`.
fn desktop_ram(memory: u64) -> Vec<(u64, u64)> {
    crate::vm::desktop::vm_ram_blocks(crate::vm::config::Kind::Linux, memory)
        .map(|(gpa, _, len)| (gpa, gpa + len))
        .collect()
}

#[test]
fn the_64_bit_window_lies_above_the_vm_ram_whatever_its_size() {
    use crate::vm::config::MAX_MEMORY;
    let gib = 1u64 << 30;
    for memory in [16 << 20, 384 << 20, 3 * gib, 8 * gib, 28 * gib + (2 << 20), 29 * gib, 32 * gib, MAX_MEMORY] {
        let linux = bulkhead_policy::model::Vm {
            devices: vec!["00:03.0".into()],
            ..vm("a", VmKind::Linux, (memory >> 20) as u32)
        };
        let vm = &vm_configs(vec![linux])[0];
        let w = vm_windows(vm).unwrap();
        for (start, end) in desktop_ram(memory) {
            assert!(end <= w.mmio64.start || start >= w.mmio64.end, "{memory:#x}: RAM {start:#x}-{end:#x} in {w:?}");
            assert!(end <= w.mmio32.start || start >= w.mmio32.end, "{memory:#x}: RAM in the 32-bit window");
        }
        assert_eq!(ram_end(vm), desktop_ram(memory).last().unwrap().1);
        assert_eq!(w.mmio64.end - w.mmio64.start, crate::devices::layout::PCI_MMIO64_LEN);
        assert!(
            w.mmio64.start.is_multiple_of(crate::devices::layout::PCI_MMIO64_ALIGN)
                && w.mmio64.start >= crate::devices::layout::PCI_MMIO64_MIN_START
        );
        // Within the 40 address bits QEMU's and most laptops' processors offer.
        assert!(w.mmio64.end <= 1 << 40);
    }
    // Up to 28.75 GiB of RAM ends below 32 GiB: the window stays where it always was.
    let small = &vm_configs(vec![vm("a", VmKind::Linux, 29440)])[0];
    assert_eq!(vm_windows(small).unwrap(), WINDOWS);
    // The largest VM: RAM ends at 65.25 GiB, the window is 66-98 GiB.
    let largest = &vm_configs(vec![vm("a", VmKind::Linux, 64 * 1024)])[0];
    assert_eq!(ram_end(largest), 0x10_5000_0000);
    assert_eq!(vm_windows(largest).unwrap().mmio64, BarWindow { start: 0x10_8000_0000, end: 0x18_8000_0000 });
    // A payload VM's RAM is one block from 0: reaching the 32-bit window is refused.
    let payload = &vm_configs(vec![bulkhead_policy::model::Vm {
        devices: vec!["00:03.0".into()],
        ..vm("p", VmKind::Payload, 3074)
    }])[0];
    let e = vm_windows(payload).unwrap_err();
    assert_eq!(e, PassthroughError::RamInWindow { vm: "p".into(), ram: (0, 3074 << 20), window: MMIO32_WINDOW });
    assert!(e.to_string().contains("VM p") && e.to_string().contains("PCI window"), "{e}");
    let fits = &vm_configs(vec![vm("p", VmKind::Payload, 3072)])[0];
    assert!(vm_windows(fits).is_ok());
}

/// A bochs-display-like function on guest 00:03.0 and a NIC-like one with an MSI-X
/// table (BAR3, offset 0x2000) and a 64-bit BAR on 00:04.0.
fn assigned() -> Vec<Assigned> {
    let bar =
        |index: u8, kind: BarKind, address: u64, size: u64| Bar { index, kind, prefetchable: false, address, size };
    vec![
        Assigned {
            host: Bdf::new(0, 1, 0, 0),
            guest: Bdf::checked(0, 3, 0).unwrap(),
            bars: vec![bar(0, BarKind::Mem32, 0xc100_0000, 16 << 20), bar(2, BarKind::Mem32, 0xc200_0000, 0x1000)],
            placed: vec![(0, 0xc000_0000), (2, 0xc100_0000)],
            msix: None,
            intx: None,
            rom: None,
            fault_ids: fault_attribution::FaultIds { unit: 0, aliases: vec![], behind: None },
        },
        Assigned {
            host: Bdf::new(0, 2, 0, 0),
            guest: Bdf::checked(0, 4, 0).unwrap(),
            bars: vec![bar(0, BarKind::Mem64, 0x80_0000_0000, 0x4000), bar(3, BarKind::Mem32, 0xc210_0000, 0x4000)],
            placed: vec![(0, 0x8_0000_0000), (3, 0xc101_0000)],
            msix: Some((3, 0x2000, 0x50)),
            intx: None,
            rom: None,
            fault_ids: fault_attribution::FaultIds { unit: 0, aliases: vec![], behind: None },
        },
    ]
}

#[test]
fn intx_lines_get_guest_gsis_shared_per_host_line_and_appear_in_the_prt() {
    let line = |gsi| Some(IntxRoute { gsi, level_triggered: true, active_low: true });
    let mut devices = assigned();
    let mut dev = crate::host::iommu::fake_mem::pci_dev(0, 6, 0, [0x02, 0x00]);
    // No pin: no line. No `_PRT` route: none either.
    dev.interrupt_pin = 0;
    assert_eq!(plan_intx("vm", &devices, &dev, line(22)), None);
    dev.interrupt_pin = 2;
    assert_eq!(plan_intx("vm", &devices, &dev, None), None);
    // The first line gets GSI 16; a second device on the same host line shares it, one
    // on another host line gets 17.
    devices[0].intx = plan_intx("vm", &devices, &dev, line(22));
    assert_eq!(devices[0].intx.map(|i| (i.guest_gsi, i.pin)), Some((16, 2)));
    dev.interrupt_pin = 1;
    assert_eq!(plan_intx("vm", &devices, &dev, line(22)).map(|i| i.guest_gsi), Some(16));
    devices[1].intx = plan_intx("vm", &devices, &dev, line(23));
    assert_eq!(devices[1].intx.map(|i| i.guest_gsi), Some(17));
    assert_eq!(
        guest_prt(&devices),
        [PciIntx { device: 3, pin: 1, gsi: 16 }, PciIntx { device: 4, pin: 0, gsi: 17 }],
        "slot, pin from 0 (INTB = 1), guest GSI"
    );
}

fn region(dev: u8, index: u8, address: u64, size: u64, enabled: bool) -> (Bdf, BarRegion) {
    let kind = vpci::VBarKind::Memory32 { prefetchable: false };
    (Bdf::checked(0, dev, 0).unwrap(), BarRegion { index, kind, address, size, enabled })
}

#[test]
fn a_rom_copy_maps_read_only_while_the_guest_decodes_it() {
    let mut devices = assigned();
    devices[0].rom = Some(RomCopy { hpa: 0x7654_0000, len: 0x10000 });
    let rom = |enabled| region(3, ROM_INDEX, 0xc108_0000, 0x10000, enabled);
    let (want, refused) = desired_mappings(&devices, &[rom(true)], &WINDOWS);
    assert!(refused.is_empty(), "{refused:?}");
    let r = want[0].range;
    assert_eq!((r.guest_addr, r.host_addr, r.len_bytes, r.space), (0xc108_0000, 0x7654_0000, 0x10000, BarSpace::Rom));
    let (want, _) = desired_mappings(&devices, &[rom(false)], &WINDOWS);
    assert!(want.is_empty(), "decode off: nothing mapped");
    // A function without a copy maps nothing for a ROM region.
    let (want, _) = desired_mappings(&devices, &[region(4, ROM_INDEX, 0xc108_0000, 0x10000, true)], &WINDOWS);
    assert!(want.is_empty());
}

#[test]
fn mappings_follow_the_bars_as_the_guest_programs_them() {
    let devices = assigned();
    let firmware = [
        region(3, 0, 0xc000_0000, 16 << 20, true),
        region(3, 2, 0xc100_0000, 0x1000, true),
        region(4, 0, 0x8_0000_0000, 0x4000, true),
        region(4, 3, 0xc101_0000, 0x4000, true),
    ];
    let (want, refused) = desired_mappings(&devices, &firmware, &WINDOWS);
    assert!(refused.is_empty(), "{refused:?}");
    let ranges: Vec<(u64, u64, u64)> =
        want.iter().map(|m| (m.range.guest_addr, m.range.host_addr, m.range.len_bytes)).collect();
    assert_eq!(
        ranges,
        [
            (0xc000_0000, 0xc100_0000, 16 << 20),
            (0xc100_0000, 0xc200_0000, 0x1000),
            (0x8_0000_0000, 0x80_0000_0000, 0x4000),
            // The MSI-X table page (0x2000) is cut out of BAR3.
            (0xc101_0000, 0xc210_0000, 0x2000),
            (0xc101_3000, 0xc210_3000, 0x1000),
        ]
    );
    // The guest turns decode off (sizing), moves the framebuffer BAR, and puts the
    // register BAR over its own RAM, outside the window and at a wrong page offset.
    let moved = [
        region(3, 0, 0xd000_0000, 16 << 20, true),
        region(3, 2, 0x0010_0000, 0x1000, true),
        region(4, 0, 0x8_0000_0000, 0x4000, false),
        region(4, 3, 0xc101_0800, 0x4000, true),
    ];
    let (want, refused) = desired_mappings(&devices, &moved, &WINDOWS);
    let ranges: Vec<(u64, u64)> = want.iter().map(|m| (m.range.guest_addr, m.range.host_addr)).collect();
    assert_eq!(ranges, [(0xd000_0000, 0xc100_0000)]);
    let why: Vec<(u8, &str)> = refused.iter().map(|r| (r.bar, r.why)).collect();
    assert_eq!(
        why,
        [(2, "it lies outside the VM's PCI windows"), (3, "its offset within a page differs from the device's"),]
    );
    // Two BARs on top of each other: the second is not mapped.
    let clash = [region(3, 0, 0xc000_0000, 16 << 20, true), region(3, 2, 0xc000_1000, 0x1000, true)];
    let (want, refused) = desired_mappings(&devices, &clash, &WINDOWS);
    assert_eq!(want.len(), 1);
    assert_eq!((refused[0].bar, refused[0].why), (2, "it overlaps another BAR"));
    // BARs of functions the VM does not own are ignored.
    let (want, refused) = desired_mappings(&devices, &[region(5, 0, 0xc000_0000, 0x1000, true)], &WINDOWS);
    assert!(want.is_empty() && refused.is_empty());
}

#[test]
fn a_guest_moving_bars_to_ever_new_bad_addresses_does_not_grow_the_refusal_list() {
    let mut refused = Vec::new();
    let r = |addr: u64| Unmappable { host: Bdf::new(0, 1, 0, 0), bar: 0, guest_addr: addr, why: "outside" };
    let logged = (0..10_000u64).filter(|i| remember_refusal(&mut refused, r(i << 12))).count();
    assert_eq!(logged, REFUSALS_REMEMBERED);
    assert_eq!(refused.len(), REFUSALS_REMEMBERED);
    // A known one is not logged again.
    let mut fresh = Vec::new();
    assert!(remember_refusal(&mut fresh, r(0x1000)));
    assert!(!remember_refusal(&mut fresh, r(0x1000)));
}
