use super::*;
use crate::host::iommu::FaultKind;
use crate::host::iommu::fake_mem::{pci_bridge, pci_dev};
use crate::host::pci::model::{Capability, CapabilityDetail};
use crate::hw::pci::cap_id;
use alloc::vec;

fn fault(unit: usize, bdf: Bdf) -> IommuFault {
    IommuFault { unit, bdf, address: 0x4000_0000, code: 5, reason: "write not permitted", kind: FaultKind::DmaWrite }
}

fn owned(vm: u32, bdf: Bdf, unit: usize) -> OwnedFunction {
    OwnedFunction { vm, bdf, ids: FaultIds { unit, aliases: vec![], behind: None } }
}

fn bdf(segment: u16, bus: u8, device: u8, function: u8) -> Bdf {
    Bdf::new(segment, bus, device, function)
}

#[test]
fn the_owner_on_the_reporting_unit_is_stopped_alone() {
    let vms = [owned(1, bdf(0, 0, 5, 0), 0), owned(2, bdf(0, 1, 0, 0), 0), owned(3, bdf(0, 0, 5, 1), 0)];
    let got = attribute(&fault(0, bdf(0, 0, 5, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![1], why: Why::Requester });
    let got = attribute(&fault(0, bdf(0, 1, 0, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![2], why: Why::Requester });
}

#[test]
fn the_same_bdf_on_another_segment_or_unit_is_not_matched() {
    // VM 1 owns 00:03.0 on segment 0 (unit 0); VM 2 owns 0001:00:03.0 (unit 1).
    let vms = [owned(1, bdf(0, 0, 3, 0), 0), owned(2, bdf(1, 0, 3, 0), 1)];
    let got = attribute(&fault(1, bdf(1, 0, 3, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![2], why: Why::Requester });
    // The same id from a unit neither function sits behind: nobody.
    let got = attribute(&fault(2, bdf(0, 0, 3, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![], why: Why::Unknown });
    // Unit 1 reporting a segment-0 id (no function there is translated by it).
    let got = attribute(&fault(1, bdf(0, 0, 3, 0)), &vms);
    assert_eq!(got.why, Why::Unknown);
}

#[test]
fn a_bus_0_fault_stops_only_its_owner_not_a_vm_with_the_same_devfn_elsewhere() {
    // The old rule matched a bus-0 fault against every function's device and
    // function and stopped the first VM found: here VM 1 (01:03.0, listed first),
    // although 00:03.0 is VM 2's; and a fault of 0001:00:03.0 went to VM 1 too.
    let vms = [owned(1, bdf(0, 1, 3, 0), 0), owned(2, bdf(0, 0, 3, 0), 0)];
    let got = attribute(&fault(0, bdf(0, 0, 3, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![2], why: Why::Requester });
    let got = attribute(&fault(0, bdf(1, 0, 3, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![], why: Why::Unknown });
}

#[test]
fn an_alias_several_vms_share_stops_every_candidate() {
    // Two functions behind a PCIe-to-PCI bridge at 00:1e.0 (secondary bus 2), given
    // to different VMs: their requests arrive as 02:00.0 or as the bridge's id.
    let behind = |vm, device| OwnedFunction {
        vm,
        bdf: bdf(0, 2, device, 0),
        ids: FaultIds {
            unit: 0,
            aliases: vec![bdf(0, 0, 0x1e, 0).requester_id(), bdf(0, 2, 0, 0).requester_id()],
            behind: Some((2, 2)),
        },
    };
    let vms = [owned(1, bdf(0, 0, 5, 0), 0), behind(2, 1), behind(3, 2)];
    let got = attribute(&fault(0, bdf(0, 0, 0x1e, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![2, 3], why: Why::Alias });
    // 02:00.0 is nobody's own function but both VMs' alias.
    let got = attribute(&fault(0, bdf(0, 2, 0, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![2, 3], why: Why::Alias });
    // An id below the bridge that is neither's own nor an alias: behind the bridge.
    let got = attribute(&fault(0, bdf(0, 2, 7, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![2, 3], why: Why::BehindBridge });
    // One VM's own id that is not an alias: that VM only.
    let got = attribute(&fault(0, bdf(0, 2, 1, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![2], why: Why::Requester });
    // An id that is one VM's own function and another's alias: both.
    let mut vms = vms.to_vec();
    vms.push(owned(4, bdf(0, 0, 0x1e, 0), 0));
    let got = attribute(&fault(0, bdf(0, 0, 0x1e, 0)), &vms);
    assert_eq!(got, Attribution { vms: vec![2, 3, 4], why: Why::Alias });
}

#[test]
fn an_alias_of_one_vm_only_stops_that_vm() {
    let f = OwnedFunction {
        vm: 7,
        bdf: bdf(0, 3, 0, 0),
        ids: FaultIds { unit: 0, aliases: vec![bdf(0, 0, 0x14, 4).requester_id()], behind: None },
    };
    let got = attribute(&fault(0, bdf(0, 0, 0x14, 4)), &[owned(1, bdf(0, 0, 0x14, 5), 0), f]);
    assert_eq!(got, Attribution { vms: vec![7], why: Why::Alias });
}

#[test]
fn a_source_no_vm_can_have_used_stops_nobody() {
    let vms = [owned(1, bdf(0, 0, 5, 0), 0), owned(2, bdf(0, 1, 0, 0), 0)];
    for source in [bdf(0, 0, 0, 0), bdf(0, 0, 5, 1), bdf(0, 1, 1, 0), bdf(0, 3, 0, 0)] {
        assert_eq!(attribute(&fault(0, source), &vms), Attribution { vms: vec![], why: Why::Unknown }, "{source}");
    }
    assert_eq!(attribute(&fault(0, bdf(0, 0, 5, 0)), &[]).why, Why::Unknown);
}

#[test]
fn fault_ids_follow_conventional_bridges_but_not_pcie_ports() {
    let mut root_port = pci_bridge(0, 3, 0, 1, 3);
    root_port.capabilities.push(Capability {
        id: cap_id::PCI_EXPRESS,
        offset: 0x40,
        detail: CapabilityDetail::PciExpress { port_type: 4 },
    });
    let mut pcie_to_pci = pci_bridge(1, 0, 0, 2, 3);
    pcie_to_pci.capabilities.push(Capability {
        id: cap_id::PCI_EXPRESS,
        offset: 0x40,
        detail: CapabilityDetail::PciExpress { port_type: 7 },
    });
    // A conventional PCI-PCI bridge below it (no PCIe capability).
    let conventional = pci_bridge(2, 4, 0, 3, 3);
    let inventory = PciInventory::new(
        vec![
            root_port,
            pcie_to_pci,
            conventional,
            pci_dev(2, 1, 0, [0x02, 0x00]),
            pci_dev(3, 2, 0, [0x02, 0x00]),
            pci_dev(0, 5, 0, [0x02, 0x00]),
        ],
        true,
    );
    let id = |b: u8, d: u8, f: u8| bdf(0, b, d, f).requester_id();
    // On the root bus, or behind a PCIe root port only: no alias.
    assert_eq!(fault_ids(&inventory, bdf(0, 0, 5, 0), 0, None), FaultIds { unit: 0, aliases: vec![], behind: None });
    assert_eq!(
        fault_ids(&inventory, bdf(0, 1, 0, 0), 0, Some(0x0101)),
        FaultIds { unit: 0, aliases: vec![0x0101], behind: None }
    );
    // Behind the PCIe-to-PCI bridge: its id and its secondary bus's 00.0.
    assert_eq!(
        fault_ids(&inventory, bdf(0, 2, 1, 0), 1, None),
        FaultIds { unit: 1, aliases: vec![id(1, 0, 0), id(2, 0, 0)], behind: Some((2, 3)) }
    );
    // Behind both bridges: every one of their ids; the topmost bridge's buses.
    assert_eq!(
        fault_ids(&inventory, bdf(0, 3, 2, 0), 0, None),
        FaultIds { unit: 0, aliases: vec![id(2, 4, 0), id(3, 0, 0), id(1, 0, 0), id(2, 0, 0)], behind: Some((2, 3)) }
    );
}
