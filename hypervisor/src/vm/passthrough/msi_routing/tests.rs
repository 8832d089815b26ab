//! Routing against the simulated VT-d unit: what the device is given, what its
//! message turns into, and what a device can no longer reach.

use crate::vm::passthrough::host_vectors::{Fired, resolve};
use alloc::vec;

use super::*;
use crate::arch::x86::device_vectors::{COUNT, FIRST};
use crate::host::acpi::dmar::parse_dmar;
use crate::host::iommu::fake_mem::qemu_q35_inventory;
use crate::host::iommu::vtd::fake::FakeVtd;
use crate::host::iommu::vtd::{VtdConfig, VtdIommu, irte};
use crate::hw::Bdf;
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr};
use crate::memory::guest::{GuestMemoryMap, GuestRegion, Perms};
use crate::vm::passthrough::host_vectors::VECTORS_PER_VM;

/// The CPU that runs VMs.
const CPU: u32 = 0;

struct Setup {
    vtd: VtdIommu<FakeVtd>,
    table: HostVectorTable,
    settled: Vec<u8>,
}

fn nic() -> Bdf {
    Bdf::new(0, 0, 4, 0)
}

fn edu() -> Bdf {
    Bdf::new(0, 1, 0, 0)
}

fn owner(vm: u32, bdf: Bdf, index: u16) -> VectorOwner {
    VectorOwner { vm, bdf, index }
}

fn guest(vector: u8) -> Option<MsiRoute> {
    MsiRoute::decode(0xfee0_0000, u32::from(vector))
}

/// VM 0 owns 00:04.0, VM 1 owns 01:00.0, each in its own domain.
fn setup() -> Setup {
    let dmar = parse_dmar(include_bytes!("../../../../tests/fixtures/acpi/qemu-q35-intel-iommu/DMAR.bin")).unwrap();
    let mut vtd = VtdIommu::new(FakeVtd::qemu(1), &dmar, &qemu_q35_inventory(), VtdConfig::default()).unwrap();
    vtd.enable().unwrap();
    for (i, bdf) in [nic(), edu()].into_iter().enumerate() {
        let hpa = HostPhysAddr::new(0x1_0000_0000 + i as u64 * 0x100_0000);
        let region = GuestRegion::new(GuestPhysAddr::new(0), hpa, 16 << 20, Perms::RWX).unwrap();
        let domain = vtd.create_domain(&GuestMemoryMap::new(vec![region]).unwrap()).unwrap();
        vtd.attach(bdf, domain).unwrap();
    }
    Setup { vtd, table: HostVectorTable::new(), settled: Vec::new() }
}

impl Setup {
    fn route(&mut self, o: VectorOwner, r: Option<MsiRoute>) -> Option<MsiMessage> {
        let settled = &mut self.settled;
        route(&mut self.table, &mut self.vtd, o, r, CPU, &mut |v| settled.push(v))
    }

    /// What the unit makes of `bdf` sending `m`: (host vector, CPU) or a fault reason.
    fn send(&mut self, bdf: Bdf, m: MsiMessage) -> Result<(u8, u32), u8> {
        self.vtd.hw_mut().msi(0, bdf.requester_id(), m.address, m.data)
    }

    fn descriptors(&mut self) -> usize {
        self.vtd.hw_mut().units[0].descriptors.len()
    }
}

#[test]
fn an_enabled_vector_reaches_its_vm_on_its_own_host_vector() {
    let mut s = setup();
    let m = s.route(owner(1, edu(), 0), guest(0x51)).unwrap();
    assert!(irte::decode_remappable(m.address, m.data).is_some(), "the device only gets a remappable message");
    let (host, cpu) = s.send(edu(), m).unwrap();
    assert_eq!((host, cpu), (FIRST, CPU));
    let fired = resolve(&s.table, &[host]);
    assert_eq!(fired, [Fired { host_vector: host, vm: 1, target: GuestTarget::Msi(guest(0x51).unwrap()) }]);
}

#[test]
fn a_device_cannot_raise_another_devices_vectors_or_unremapped_ones() {
    let mut s = setup();
    let edu_msg = s.route(owner(1, edu(), 0), guest(0x51)).unwrap();
    let nic_msg = s.route(owner(0, nic(), 0), guest(0x51)).unwrap();
    assert_ne!(s.send(edu(), edu_msg).unwrap().0, s.send(nic(), nic_msg).unwrap().0, "one host vector each");
    // The NIC (VM 0) replays the message VM 1's device was given: source-id check.
    assert_eq!(s.send(nic(), edu_msg), Err(0x26));
    // A compatibility-format message aimed straight at a host vector (the timer's, or
    // one of VM 1's) is blocked.
    assert_eq!(s.send(nic(), MsiMessage { address: 0xfee0_0000, data: 0x20 }), Err(0x25));
    assert_eq!(s.send(nic(), MsiMessage { address: 0xfee0_0000, data: u32::from(FIRST) }), Err(0x25));
}

#[test]
fn a_new_guest_vector_changes_only_the_table() {
    let mut s = setup();
    let m = s.route(owner(1, edu(), 0), guest(0x51)).unwrap();
    let before = s.descriptors();
    let again = s.route(owner(1, edu(), 0), MsiRoute::decode(0xfee0_1004, 0x0152)).unwrap();
    assert_eq!(again, m, "the device keeps its message");
    assert_eq!(s.descriptors(), before, "no IOMMU work");
    let (host, _) = s.send(edu(), m).unwrap();
    let fired = resolve(&s.table, &[host]);
    assert_eq!(fired[0].target, GuestTarget::Msi(MsiRoute { vector: 0x52, dest: 1, logical: true, delivery: 1 }));
}

#[test]
fn disabling_a_vector_removes_its_entry_and_frees_its_host_vector() {
    let mut s = setup();
    let m = s.route(owner(1, edu(), 0), guest(0x51)).unwrap();
    let (host, _) = s.send(edu(), m).unwrap();
    assert_eq!(s.route(owner(1, edu(), 0), None), None);
    assert_eq!(s.send(edu(), m), Err(0x22), "entry not present");
    assert_eq!(s.settled, [host], "in-flight interrupts settled before the vector is freed");
    assert_eq!(s.table.used(), 0);
    assert!(resolve(&s.table, &[host]).is_empty(), "a late interrupt on the freed vector goes nowhere");
    // Disabling what was never enabled does nothing.
    assert_eq!(s.route(owner(1, edu(), 1), None), None);
    assert_eq!(s.settled.len(), 1);
}

#[test]
fn vm_teardown_removes_every_vector_of_that_vm_only() {
    let mut s = setup();
    let a = s.route(owner(1, edu(), 0), guest(0x51)).unwrap();
    let b = s.route(owner(1, edu(), 3), guest(0x52)).unwrap();
    let n = s.route(owner(0, nic(), 0), guest(0x51)).unwrap();
    let settled = &mut s.settled;
    assert_eq!(unroute_vm(&mut s.table, &mut s.vtd, 1, &mut |v| settled.push(v)), 2);
    assert_eq!((s.send(edu(), a), s.send(edu(), b)), (Err(0x22), Err(0x22)));
    assert!(s.send(nic(), n).is_ok(), "the other VM's vector still works");
    assert_eq!(s.table.used(), 1);
    assert_eq!(s.settled.len(), 2);
}

#[test]
fn failures_keep_the_vector_masked_and_free() {
    let mut s = setup();
    // A device that is not attached to any domain has no remapping table entry to get.
    let stray = Bdf::new(0, 0x1f, 3, 0);
    assert_eq!(s.route(owner(0, stray, 0), guest(0x51)), None);
    assert_eq!(s.table.used(), 0);
    // One VM cannot take more than its share of host vectors...
    for i in 0..VECTORS_PER_VM {
        assert!(s.route(owner(0, nic(), i as u16), guest(0x40)).is_some(), "vector {i}");
    }
    assert_eq!(s.route(owner(0, nic(), 999), guest(0x40)), None);
    assert_eq!(s.table.used(), VECTORS_PER_VM);
    // ... and once every vector is taken, the next one stays masked (VMs 2 and 3 as
    // if they owned other vectors of the same function, to fill the table).
    for vm in 2..(COUNT / VECTORS_PER_VM + 1) as u32 {
        for i in 0..VECTORS_PER_VM {
            assert!(s.route(owner(vm, nic(), (vm * 100) as u16 + i as u16), guest(0x40)).is_some());
        }
    }
    assert_eq!(s.table.used(), COUNT);
    assert_eq!(s.route(owner(1, edu(), 0), guest(0x51)), None);
}

mod end_to_end {
    //! A guest's MSI-X table write, through the filtered function, the router and the
    //! IOMMU, to the vector its handler runs on.
    use alloc::collections::BTreeMap;
    use alloc::rc::Rc;
    use core::cell::RefCell;

    use super::*;
    use crate::devices::irq::ApicSink;
    use crate::devices::vpci::host_bridge::VirtualPciFunction;
    use crate::devices::vpci::msi::{BarRegisters, InterruptRouter, program_msix_entry};
    use crate::devices::vpci::passthrough::PassthroughFunction;
    use crate::host::pci::fake_cfg::FakeCfg;
    use crate::host::pci::{Bar, BarKind, Capability, CapabilityDetail};
    use crate::hw::AccessSize;
    use crate::hw::pci::cap_id;
    use crate::vm::payload_irqs::PendingIrqs;

    const TABLE: u64 = 0x2000;

    #[derive(Default)]
    struct BarRegs(BTreeMap<u64, u32>);

    impl BarRegisters for BarRegs {
        fn write32(&mut self, offset: u64, value: u32) {
            self.0.insert(offset, value);
        }
    }

    /// The router a VM's function gets, over the test's unit and table.
    struct RouteLog {
        s: Rc<RefCell<Setup>>,
        bar: Rc<RefCell<BarRegs>>,
        vm: u32,
    }

    impl InterruptRouter for RouteLog {
        fn route(&mut self, bdf: Bdf, index: u16, r: Option<MsiRoute>) -> Option<MsiMessage> {
            self.s.borrow_mut().route(owner(self.vm, bdf, index), r)
        }
        fn write_msix_entry(&mut self, _bdf: Bdf, bar: u8, offset: u64, _index: u16, m: Option<MsiMessage>) {
            assert_eq!(bar, 0);
            program_msix_entry(&mut *self.bar.borrow_mut(), offset, m);
        }
    }

    #[test]
    fn a_guest_msix_entry_reaches_its_handler_vector_and_masking_stops_it() {
        let s = Rc::new(RefCell::new(setup()));
        let bar = Rc::new(RefCell::new(BarRegs::default()));
        let cfg = FakeCfg::default();
        let b = nic();
        cfg.add(b, 0x8086, 0x10d3, 0x02_00_00);
        cfg.bar(b, 0, 0xfebc_0000, 0xffff_c000);
        cfg.cap(b, 0xa0, cap_id::MSIX, 0x0003, &[TABLE as u32, 0x0000_3000]);
        let dev = crate::host::pci::PciDevice {
            bars: vec![Bar { index: 0, kind: BarKind::Mem32, prefetchable: false, address: 0xfebc_0000, size: 0x4000 }],
            capabilities: vec![Capability { id: cap_id::MSIX, offset: 0xa0, detail: CapabilityDetail::None }],
            ..crate::host::iommu::fake_mem::pci_dev(0, 4, 0, [0x02, 0x00])
        };
        let router = RouteLog { s: s.clone(), bar: bar.clone(), vm: 0 };
        let mut f = PassthroughFunction::new(&dev, &cfg, router).unwrap();
        // The guest fills entry 1 (vector 0x61, APIC 0) and turns MSI-X on.
        f.msix_table_write(16, AccessSize::Dword, 0xfee0_0000);
        f.msix_table_write(24, AccessSize::Dword, 0x61);
        f.msix_table_write(28, AccessSize::Dword, 0);
        f.config_write(0xa2, AccessSize::Word, 0x8000);
        // The exit ends: the table is brought in line.
        f.settle_msix();
        let entry = |off: u64| bar.borrow().0.get(&(TABLE + 16 + off)).copied();
        let message = MsiMessage { address: u64::from(entry(0).unwrap()), data: entry(8).unwrap() };
        assert_ne!(message.address, 0xfee0_0000, "the device holds the remapped message, not the guest's");
        assert_eq!(entry(12), Some(0), "unmasked on the device");
        // The device sends it: the unit remaps it to a host vector; the VM's vCPU gets 0x61.
        let (host, _) = s.borrow_mut().send(b, message).unwrap();
        let fired = resolve(&s.borrow().table, &[host]);
        let mut vcpu = PendingIrqs::default();
        let GuestTarget::Msi(route) = fired[0].target else { panic!("an MSI") };
        assert!(vcpu.deliver(&route.apic_message()));
        assert_eq!(vcpu.take_highest(), Some(0x61));
        // The guest masks the entry: masked on the device, then the entry is gone.
        f.msix_table_write(28, AccessSize::Dword, 1);
        assert_eq!(entry(12), Some(1));
        assert_eq!(s.borrow_mut().send(b, message), Err(0x22));
        assert_eq!(s.borrow().table.used(), 0);
    }
}
