use super::*;
use crate::pci::assign::IommuCoverage;
use crate::pci::reset::ResetMethod;
use crate::vm::config::parse;

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
    let vms = parse(
        "vm a image=x memory=16M devices=8086:10d3\nvm b image=x memory=16M devices=8086:10d3\nvm c image=x memory=16M",
    )
    .unwrap();
    let got = resolve(&vms, &machine(), true).unwrap();
    assert_eq!(got, vec![vec![Bdf::new(0, 0, 3, 0)], vec![Bdf::new(0, 1, 0, 0)], vec![]]);
    let vms = parse("vm a image=x memory=16M devices=01:00.0").unwrap();
    assert_eq!(resolve(&vms, &machine(), true).unwrap(), vec![vec![Bdf::new(0, 1, 0, 0)]]);
}

#[test]
fn refuses_with_a_reason_before_anything_starts() {
    let no_iommu = parse("vm a image=x memory=16M devices=00:03.0").unwrap();
    assert!(resolve(&no_iommu, &machine(), false).unwrap_err().contains("needs an IOMMU"));
    let chipset = parse("vm a image=x memory=16M devices=00:00.0").unwrap();
    assert!(resolve(&chipset, &machine(), true).unwrap_err().contains("chipset function"));
    let no_reset = parse("vm a image=x memory=16M devices=1234:11e8").unwrap();
    assert!(resolve(&no_reset, &machine(), true).unwrap_err().contains("no reset method"));
    let absent = parse("vm a image=x memory=16M devices=00:1f.0").unwrap();
    assert!(resolve(&absent, &machine(), true).unwrap_err().contains("not in this machine"));
    let twice = parse("vm a image=x memory=16M devices=00:03.0\nvm b image=x memory=16M devices=00:03.0").unwrap();
    assert!(resolve(&twice, &machine(), true).unwrap_err().contains("VM b"));
    let none = parse("vm a image=x memory=16M").unwrap();
    assert_eq!(resolve(&none, &[], false).unwrap(), vec![Vec::<Bdf>::new()]);
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
