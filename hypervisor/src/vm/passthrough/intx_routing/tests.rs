//! INTx routing against the simulated VT-d unit and a fake I/O APIC register file.

use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::vec;
use core::cell::RefCell;

use super::*;
use crate::host::acpi::dmar::parse_dmar;
use crate::host::ioapic::{HostIoapic, IoapicRouteError};
use crate::host::iommu::fake_mem::qemu_q35_inventory;
use crate::host::iommu::vtd::fake::FakeVtd;
use crate::host::iommu::vtd::{VtdConfig, VtdIommu};

/// A 24-pin I/O APIC's registers, shared with the test.
#[derive(Clone)]
struct IoapicRegFile(Rc<RefCell<Vec<u32>>>);

impl IoapicRegFile {
    fn new() -> IoapicRegFile {
        let mut regs = vec![0u32; 0x40];
        regs[1] = 23 << 16;
        IoapicRegFile(Rc::new(RefCell::new(regs)))
    }
    fn entry(&self, pin: usize) -> u64 {
        let r = self.0.borrow();
        u64::from(r[0x10 + 2 * pin]) | (u64::from(r[0x11 + 2 * pin]) << 32)
    }
    fn masked(&self, pin: usize) -> bool {
        self.entry(pin) & (1 << 16) != 0
    }
}

impl IoapicRegs for IoapicRegFile {
    fn read(&mut self, index: u32) -> u32 {
        self.0.borrow()[index as usize]
    }
    fn write(&mut self, index: u32, value: u32) {
        self.0.borrow_mut()[index as usize] = value;
    }
}

struct IntxSetup {
    vtd: VtdIommu<FakeVtd>,
    table: HostVectorTable,
    regs: IoapicRegFile,
    ioapics: HostIoapics<IoapicRegFile>,
}

/// QEMU's q35 with intel-iommu: I/O APIC 0 (GSI 0-23) in the DMAR's scope.
fn setup() -> IntxSetup {
    let dmar = parse_dmar(include_bytes!("../../../../tests/fixtures/acpi/qemu-q35-intel-iommu/DMAR.bin")).unwrap();
    let mut vtd = VtdIommu::new(FakeVtd::qemu(1), &dmar, &qemu_q35_inventory(), VtdConfig::default()).unwrap();
    vtd.enable().unwrap();
    let regs = IoapicRegFile::new();
    let ioapics = HostIoapics::new(vec![(0, HostIoapic::new(regs.clone(), 0))]);
    IntxSetup { vtd, table: HostVectorTable::new(), regs, ioapics }
}

fn owner(vm: u32, device: u8) -> VectorOwner {
    VectorOwner { vm, bdf: Bdf::new(0, 0, device, 0), index: 0 }
}

impl IntxSetup {
    fn route(&mut self, o: VectorOwner, gsi: u32, guest_gsi: u8) -> Result<u8, IntxRouteError> {
        let host = IntxRoute { gsi, level_triggered: true, active_low: true };
        route(&mut self.table, &mut self.vtd, &mut self.ioapics, o, host, guest_gsi, 0)
    }
}

#[test]
fn a_line_gets_a_level_vector_a_remapped_pin_and_its_guest_gsi() {
    let mut s = setup();
    let v = s.route(owner(1, 6), 22, 16).unwrap();
    assert!(device_vectors::LEVEL.contains(v), "the handler leaves its EOI");
    let e = s.regs.entry(22);
    assert_eq!(e & 0xff, u64::from(v), "the entry's vector matches the remapping entry's (level EOIs)");
    assert_ne!(e & (1 << 48), 0, "remappable format under VT-d");
    assert_ne!(e & (1 << 15), 0, "level");
    assert_ne!(e & (1 << 13), 0, "active low");
    assert!(!s.regs.masked(22));
    let entry = s.table.get(v).unwrap();
    assert_eq!(entry.target, GuestTarget::Intx { host_gsi: 22, guest_gsi: 16 });
    assert_eq!(entry.owner.index, INTX_INDEX);
    // Another device of the same VM on that line shares it; another VM's cannot.
    assert_eq!(s.route(owner(1, 7), 22, 16), Ok(v));
    let refused = s.route(owner(2, 8), 22, 16).unwrap_err();
    assert_eq!(refused, IntxRouteError::LineTaken { gsi: 22, other: Bdf::new(0, 0, 6, 0) });
    assert!(refused.to_string().contains("GSI 22") && refused.to_string().contains("MSI only"), "{refused}");
    // A GSI no I/O APIC serves.
    assert_eq!(
        s.route(owner(1, 9), 40, 17),
        Err(IntxRouteError::Ioapic { gsi: 40, error: IoapicRouteError::NoIoapic { gsi: 40 } })
    );
    assert_eq!(s.table.used(), 1);
}

#[test]
fn fired_lines_are_masked_until_their_guest_gsi_is_resampled() {
    let mut s = setup();
    let a = s.route(owner(1, 6), 20, 16).unwrap();
    let b = s.route(owner(1, 7), 21, 17).unwrap();
    let c = s.route(owner(2, 8), 22, 16).unwrap();
    let fired = crate::vm::passthrough::host_vectors::resolve(&s.table, &[a, b, c]);
    assert_eq!(mask_fired_lines(&mut s.ioapics, &fired), [a, b, c]);
    assert!(s.regs.masked(20) && s.regs.masked(21) && s.regs.masked(22));
    // VM 1 ends guest GSI 17: only its line behind 17 opens again.
    resample(&s.table, &mut s.ioapics, 1, 1 << 17);
    assert!(s.regs.masked(20) && !s.regs.masked(21) && s.regs.masked(22));
    // VM 2's guest GSI 16 is not VM 1's.
    resample(&s.table, &mut s.ioapics, 2, 1 << 16);
    assert!(s.regs.masked(20) && !s.regs.masked(22));
    // Unmasking keeps the routed entry.
    assert_eq!(s.regs.entry(21) & 0xff, u64::from(b));
}

#[test]
fn teardown_masks_and_frees_only_that_vms_lines() {
    let mut s = setup();
    let a = s.route(owner(1, 6), 20, 16).unwrap();
    let c = s.route(owner(2, 8), 22, 16).unwrap();
    let mut settled = Vec::new();
    assert_eq!(unroute_vm(&mut s.table, &mut s.ioapics, 1, &mut |v| settled.push(v)), 1);
    assert_eq!(settled, [a]);
    assert!(s.regs.masked(20) && !s.regs.masked(22));
    assert!(s.table.get(a).is_none() && !device_vectors::LEVEL.contains(a));
    assert!(s.table.get(c).is_some() && device_vectors::LEVEL.contains(c));
    // The line is free for another VM now.
    assert!(s.route(owner(3, 6), 20, 16).is_ok());
}

#[test]
fn guest_gsis_follow_host_lines() {
    assert_eq!(guest_gsi_for(&[], 22), Some(16));
    assert_eq!(guest_gsi_for(&[(22, 16)], 22), Some(16), "same host line, same guest line");
    assert_eq!(guest_gsi_for(&[(22, 16)], 23), Some(17));
    let full: Vec<(u32, u8)> = (0..8).map(|i| (30 + i, 16 + i as u8)).collect();
    assert_eq!(guest_gsi_for(&full, 50), None, "eight lines at most");
}
