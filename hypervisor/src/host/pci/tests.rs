use super::*;
use crate::host::pci::fake::FakeConfigSpace;
use crate::hw::pci::cap_id;
use crate::hw::pci::ext_cap_id;

const HOST_BRIDGE: [u8; 3] = [0x06, 0x00, 0x00];
const PCI_BRIDGE: [u8; 3] = [0x06, 0x04, 0x00];
const ETHERNET: [u8; 3] = [0x02, 0x00, 0x00];
const VGA: [u8; 3] = [0x03, 0x00, 0x00];

fn bdfs(devices: &[PciDevice]) -> Vec<alloc::string::String> {
    devices.iter().map(|d| alloc::format!("{}", d.bdf)).collect()
}

#[test]
fn follows_bridges_to_secondary_buses() {
    let fake = FakeConfigSpace::new();
    fake.add((0, 0, 0), 0x8086, 0x29c0, HOST_BRIDGE);
    fake.add((0, 1, 0), 0x1b36, 0x000c, PCI_BRIDGE).bridge(0, 1, 2);
    fake.add((1, 0, 0), 0x1b36, 0x000e, PCI_BRIDGE).bridge(1, 2, 2);
    fake.add((2, 3, 0), 0x8086, 0x10d3, ETHERNET);
    fake.add((0, 5, 0), 0x1af4, 0x1041, ETHERNET);
    // A device on a bus nothing leads to is not found.
    fake.add((7, 0, 0), 0x1234, 0x5678, ETHERNET);
    let devices = enumerate(&fake.config_space(false), 0);
    assert_eq!(bdfs(&devices), ["00:00.0", "00:01.0", "01:00.0", "02:03.0", "00:05.0"]);
    assert_eq!(devices[1].bridge, Some(BridgeBuses { primary: 0, secondary: 1, subordinate: 2 }));
    assert_eq!(devices[1].class_name(), "PCI bridge");
    assert_eq!(devices[3].vendor_id, 0x8086);
}

#[test]
fn bridge_loops_do_not_hang() {
    let fake = FakeConfigSpace::new();
    fake.add((0, 1, 0), 0x1b36, 0x000c, PCI_BRIDGE).bridge(0, 1, 1);
    fake.add((1, 0, 0), 0x1b36, 0x000c, PCI_BRIDGE).bridge(1, 0, 0); // points back up
    fake.add((1, 1, 0), 0x1b36, 0x000c, PCI_BRIDGE).bridge(1, 1, 1); // points at itself
    let devices = enumerate(&fake.config_space(false), 0);
    assert_eq!(bdfs(&devices), ["00:01.0", "01:00.0", "01:01.0"]);
}

#[test]
fn multifunction_devices() {
    let fake = FakeConfigSpace::new();
    fake.add((0, 0x1f, 0), 0x8086, 0x2918, [0x06, 0x01, 0x00]).multifunction();
    fake.add((0, 0x1f, 2), 0x8086, 0x2922, [0x01, 0x06, 0x01]);
    fake.add((0, 0x1f, 3), 0x8086, 0x2930, [0x0c, 0x05, 0x00]);
    // Single-function device that decodes function bits loosely: function 1 answers
    // too, but must not be reported.
    fake.add((0, 2, 0), 0x1234, 0x1111, VGA);
    fake.add((0, 2, 1), 0x1234, 0x1111, VGA);
    let devices = enumerate(&fake.config_space(false), 0);
    assert_eq!(bdfs(&devices), ["00:02.0", "00:1f.0", "00:1f.2", "00:1f.3"]);
    assert!(devices[1].multifunction && !devices[0].multifunction);
    assert_eq!(devices[2].class_name(), "SATA controller");
    assert_eq!(devices[3].class_name(), "SMBus");
}

#[test]
fn bars_are_sized_with_decode_off_and_restored() {
    let fake = FakeConfigSpace::new();
    fake.add((0, 3, 0), 0x10de, 0x2520, VGA)
        .bar32(0, 0, 0xfd00_0000, 16 << 20)
        .bar64(1, true, 0x40_0000_0000, 16 << 30)
        .bar64(3, false, 0xfe00_0000, 32 << 10)
        .bar32(5, 1, 0xc000, 128)
        .rom(0xfe10_0000, 128 << 10);
    fake.add((0, 4, 0), 0x8086, 0x10d3, ETHERNET).rom(0, 64 << 10);
    fake.add((0, 5, 0), 0x8086, 0x10d3, ETHERNET);
    let before: Vec<u32> = (0..0x40).step_by(4).map(|o| fake.reg((0, 3, 0), o)).collect();
    let devices = enumerate(&fake.config_space(false), 0);
    let bars = &devices[0].bars;
    assert_eq!(
        bars[..],
        [
            Bar { index: 0, kind: BarKind::Mem32, prefetchable: false, address: 0xfd00_0000, size: 16 << 20 },
            Bar { index: 1, kind: BarKind::Mem64, prefetchable: true, address: 0x40_0000_0000, size: 16 << 30 },
            Bar { index: 3, kind: BarKind::Mem64, prefetchable: false, address: 0xfe00_0000, size: 32 << 10 },
            Bar { index: 5, kind: BarKind::Io, prefetchable: false, address: 0xc000, size: 128 },
        ]
    );
    assert_eq!(devices[0].rom, Some(Rom { address: 0xfe10_0000, size: 128 << 10 }));
    assert_eq!(devices[1].rom, Some(Rom { address: 0, size: 64 << 10 }), "implemented but not placed by firmware");
    assert_eq!(devices[2].rom, None);
    assert_eq!(fake.probes_with_decode_on.get(), 0);
    let after: Vec<u32> = (0..0x40).step_by(4).map(|o| fake.reg((0, 3, 0), o)).collect();
    assert_eq!(before, after, "BARs and command register restored");
}

#[test]
fn odd_bars_do_not_panic() {
    let fake = FakeConfigSpace::new();
    fake.add((0, 4, 0), 0x1234, 0x0001, ETHERNET)
        .bar_raw(0, 0b110) // reserved memory type 11b
        .bar_raw(5, 0b100); // 64-bit type in the last slot: no upper half
    fake.add((0, 5, 0), 0x1234, 0x0002, PCI_BRIDGE).bridge(0, 0, 0).bar64(1, false, 0, 4096); // 64-bit BAR1 of 2
    let devices = enumerate(&fake.config_space(false), 0);
    assert!(devices[0].bars.is_empty());
    assert!(devices[1].bars.is_empty());
}

#[test]
fn capabilities_and_extended_capabilities() {
    let fake = FakeConfigSpace::new();
    let msix_control = 0x8000 | (64 - 1);
    fake.add((0, 2, 0), 0x8086, 0x10d3, ETHERNET)
        .cap(0xc8, cap_id::POWER_MANAGEMENT, 0x0003, &[])
        .cap(0xd0, cap_id::MSI, 0x0080 | (2 << 1), &[])
        .cap(0xe0, cap_id::PCI_EXPRESS, 0x0002, &[])
        .cap(0xa0, cap_id::MSIX, msix_control, &[0x0000_2003, 0x0000_3003])
        .ext_cap(0x100, ext_cap_id::AER, 0x140)
        .ext_cap(0x140, ext_cap_id::ACS, 0x150)
        .ext_cap(0x150, ext_cap_id::ATS, 0x160)
        .ext_cap(0x160, ext_cap_id::SRIOV, 0);
    let devices = enumerate(&fake.config_space(true), 0);
    let d = &devices[0];
    let ids: Vec<u8> = d.capabilities.iter().map(|c| c.id).collect();
    assert_eq!(ids, [cap_id::MSIX, cap_id::PCI_EXPRESS, cap_id::MSI, cap_id::POWER_MANAGEMENT]);
    assert_eq!(
        d.capability(cap_id::MSIX).unwrap().detail,
        CapabilityDetail::MsiX { table_size: 64, table_bar: 3, table_offset: 0x2000, pba_bar: 3, pba_offset: 0x3000 }
    );
    assert_eq!(
        d.capability(cap_id::MSI).unwrap().detail,
        CapabilityDetail::Msi { is_64bit: true, per_vector_mask: false, max_vectors: 4 }
    );
    let ext: Vec<u16> = d.ext_capabilities.iter().map(|c| c.id).collect();
    assert_eq!(ext, [ext_cap_id::AER, ext_cap_id::ACS, ext_cap_id::ATS, ext_cap_id::SRIOV]);
    assert!(d.summary().ends_with(" caps: msix,pcie,msi,pm ext: aer,acs,ats,sriov"), "{}", d.summary());
    // Without ECAM the extended space is not read.
    assert!(enumerate(&fake.config_space(false), 0)[0].ext_capabilities.is_empty());
}

#[test]
fn cyclic_capability_lists_terminate() {
    let fake = FakeConfigSpace::new();
    fake.add((0, 2, 0), 0x1234, 0x0001, ETHERNET)
        .cap(0x40, cap_id::VENDOR, 0, &[])
        .cap(0x50, cap_id::PCI_EXPRESS, 0, &[])
        .set(0x40, 0x5009) // 0x40 -> 0x50 -> 0x40 ...
        .ext_cap(0x100, ext_cap_id::AER, 0x100);
    let devices = enumerate(&fake.config_space(true), 0);
    assert!(devices[0].capabilities.len() <= 48);
    assert!(devices[0].ext_capabilities.len() <= 960);
}

#[test]
fn one_line_summary() {
    let fake = FakeConfigSpace::new();
    fake.add((0, 2, 0), 0x1234, 0x1111, VGA)
        .bar32(0, 0, 0x8000_0000, 16 << 20)
        .cap(0x50, cap_id::PCI_EXPRESS, 0, &[])
        .cap(0x40, cap_id::MSI, 0, &[]);
    let d = &enumerate(&fake.config_space(false), 0)[0];
    assert_eq!(d.summary(), "00:02.0 1234:1111 VGA compatible controller BAR0 mem32 0x80000000 16M caps: msi,pcie");
    assert_eq!(d.bdf.requester_id(), 0x0010);
}

#[test]
fn class_names() {
    assert_eq!(class_name(0x02, 0x00, 0), "Ethernet controller");
    assert_eq!(class_name(0x0c, 0x03, 0x30), "USB controller (xHCI)");
    assert_eq!(class_name(0x01, 0x08, 0x02), "Non-Volatile memory controller");
    assert_eq!(class_name(0x42, 0, 0), "Unknown device class");
}
