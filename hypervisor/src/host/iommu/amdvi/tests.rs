use alloc::vec;

use super::*;
use crate::host::acpi::ivrs::parse_ivrs;
use crate::host::iommu::amdvi::cmd::opcode;
use crate::host::iommu::amdvi::dte::QEMU72_RESERVED;
use crate::host::iommu::amdvi::fake::{FakeAmdVi, QEMU_EFR};
use crate::host::iommu::{FaultKind, Iommu};
use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::{GuestRegion, Perms};

const MIB: u64 = 1 << 20;

fn ivrs() -> Ivrs {
    parse_ivrs(include_bytes!("../../../../tests/fixtures/acpi/qemu-q35-amd-iommu/IVRS.bin")).unwrap()
}

fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(0, bus, dev, func)
}

fn map(gpa: u64, hpa: u64, len: u64, perms: Perms) -> GuestMemoryMap {
    GuestMemoryMap::new(vec![GuestRegion::new(GuestPhysAddr::new(gpa), HostPhysAddr::new(hpa), len, perms).unwrap()])
        .unwrap()
}

fn iommu() -> AmdViIommu<FakeAmdVi> {
    let mut iommu = AmdViIommu::new(FakeAmdVi::new(1, QEMU_EFR), &ivrs()).unwrap();
    iommu.enable().unwrap();
    iommu
}

fn assert_qemu_accepts(d: &Dte) {
    for (q, mask) in d.0.iter().zip(QEMU72_RESERVED) {
        assert_eq!(q & mask, 0, "{d:x?} sets bits QEMU 7.2 treats as reserved");
    }
}

#[test]
fn efr_decoding() {
    let efr = Efr(QEMU_EFR);
    assert!(efr.invalidate_all() && efr.ga() && !efr.xt());
    assert_eq!(efr.max_levels(), 6);
    assert_eq!(Efr(0).max_levels(), 4);
}

#[test]
fn enable_programs_rings_and_blocks_everything() {
    let mut amd = iommu();
    let hw = amd.hw_mut();
    let regs = &hw.units[0].regs;
    let ctl = regs.r64(regs::CONTROL);
    assert_eq!(ctl & 0x1005, control::IOMMU_EN | control::EVENT_LOG_EN | control::CMD_BUF_EN);
    assert_eq!(regs.r64(regs::COMMAND_BUFFER_BASE) >> 56, 8);
    // Buses 0 and 1 (IVRS range 0100-01ff): 512 entries, 4 pages.
    assert_eq!(regs.r64(regs::DEVICE_TABLE_BASE) & 0x1ff, 3);
    let ops: Vec<u8> = hw.units[0].commands.iter().map(|c| c.opcode()).collect();
    assert_eq!(ops, [opcode::INVALIDATE_IOMMU_ALL, opcode::COMPLETION_WAIT]);
    // Every device: DMA rejected, interrupts aborted.
    for devid in [0x0000u16, 0x0020, 0x0100, 0x00fa] {
        assert_eq!(hw.dma(0, devid, 0x1000, false), Err(()));
        assert_eq!(hw.msi(0, devid, 0xfee0_0000, 0x30), Err(()));
    }
    // The IOAPIC (special entry, requester 00:14.0) forwards interrupts unmapped.
    assert_eq!(hw.msi(0, 0x00a0, 0xfee0_1000, 0x30), Ok((0x30, 1)));
    let blocked = amd.dte(0, 0x0020).unwrap();
    assert!(blocked.valid() && blocked.translation_valid() && blocked.mode() == 0);
    assert!(!blocked.readable() && !blocked.writable() && blocked.interrupt_valid() && blocked.int_ctl() == 0);
    assert_qemu_accepts(&blocked);
    assert_qemu_accepts(&amd.dte(0, 0x00a0).unwrap());
}

#[test]
fn attached_device_reaches_exactly_its_vm() {
    let mut amd = iommu();
    let vm1 = amd.create_domain(&map(0, 0x1_0000_0000, 8 * MIB, Perms::RWX)).unwrap();
    let vm2 = amd.create_domain(&map(0, 0x2_0000_0000, 8 * MIB, Perms::RWX)).unwrap();
    let (nic, other) = (bdf(1, 0, 0), bdf(0, 4, 0));
    amd.attach(nic, vm1).unwrap();
    amd.attach(other, vm2).unwrap();
    let d = amd.dte(0, nic.requester_id()).unwrap();
    assert_eq!((d.mode(), d.domain(), d.int_ctl(), d.int_table_len_log2()), (4, vm1.0, 0b10, 8));
    assert_qemu_accepts(&d);
    let hw = amd.hw_mut();
    assert_eq!(hw.dma(0, 0x0100, 0x40_0123, true), Ok(0x1_0040_0123));
    assert_eq!(hw.dma(0, other.requester_id(), 0x40_0123, false), Ok(0x2_0040_0123));
    assert_eq!(hw.dma(0, 0x0100, 8 * MIB, false), Err(()));
    let faults = amd.poll_faults();
    assert_eq!(faults.len(), 1);
    assert_eq!((faults[0].bdf, faults[0].address, faults[0].kind), (nic, 8 * MIB, FaultKind::DmaRead));
    assert!(amd.poll_faults().is_empty());
    assert_eq!(amd.attach(nic, vm2), Err(IommuError::AlreadyAttached { bdf: nic, domain: vm1 }));
}

#[test]
fn read_only_regions_reject_device_writes() {
    let mut amd = iommu();
    let vm = amd.create_domain(&map(0, 0x1_0000_0000, 2 * MIB, Perms::RX)).unwrap();
    amd.attach(bdf(0, 4, 0), vm).unwrap();
    let devid = bdf(0, 4, 0).requester_id();
    assert_eq!(amd.hw_mut().dma(0, devid, 0x1000, false), Ok(0x1_0000_1000));
    assert_eq!(amd.hw_mut().dma(0, devid, 0x1000, true), Err(()));
    let f = amd.poll_faults();
    assert_eq!((f[0].kind, f[0].reason), (FaultKind::DmaWrite, "I/O page fault (permission)"));
}

#[test]
fn detach_restores_blocking_and_invalidates() {
    let mut amd = iommu();
    let vm = amd.create_domain(&map(0, 0x1_0000_0000, 2 * MIB, Perms::RWX)).unwrap();
    let nic = bdf(1, 0, 0);
    amd.attach(nic, vm).unwrap();
    let msg = amd.map_msi(nic, 3, MsiTarget { vector: 0x51, dest_apic_id: 1 }).unwrap();
    let before = amd.hw_mut().units[0].commands.len();
    amd.detach(nic).unwrap();
    let ops: Vec<u8> = amd.hw_mut().units[0].commands[before..].iter().map(|c| c.opcode()).collect();
    assert_eq!(
        ops,
        [
            opcode::INVALIDATE_DEVTAB_ENTRY,
            opcode::INVALIDATE_INTERRUPT_TABLE,
            opcode::INVALIDATE_IOMMU_PAGES,
            opcode::COMPLETION_WAIT
        ]
    );
    assert_eq!(amd.hw_mut().dma(0, 0x0100, 0x1000, false), Err(()));
    assert_eq!(amd.hw_mut().msi(0, 0x0100, msg.address, msg.data), Err(()));
    let live = amd.hw_mut().mem.live();
    amd.destroy_domain(vm).unwrap();
    assert!(amd.hw_mut().mem.live() < live);
    assert_eq!(amd.detach(nic), Err(IommuError::NotAttached(nic)));
}

#[test]
fn interrupts_remap_through_the_devices_own_table() {
    let mut amd = iommu();
    let vm = amd.create_domain(&map(0, 0x1_0000_0000, 2 * MIB, Perms::RWX)).unwrap();
    let (nic, other) = (bdf(1, 0, 0), bdf(0, 4, 0));
    amd.attach(nic, vm).unwrap();
    amd.attach(other, vm).unwrap();
    let target = MsiTarget { vector: 0x61, dest_apic_id: 2 };
    let msg = amd.map_msi(nic, 5, target).unwrap();
    assert_eq!(msg, MsiMessage { address: 0xfee0_0000, data: 5 });
    assert_eq!(amd.hw_mut().msi(0, 0x0100, msg.address, msg.data), Ok((0x61, 2)));
    // The same message from another device indexes that device's (empty) table.
    assert_eq!(amd.hw_mut().msi(0, other.requester_id(), msg.address, msg.data), Err(()));
    let f = amd.poll_faults();
    assert_eq!((f[0].bdf, f[0].kind), (other, FaultKind::Interrupt));
    amd.unmap_msi(nic, 5).unwrap();
    assert_eq!(amd.hw_mut().msi(0, 0x0100, msg.address, msg.data), Err(()));
    assert_eq!(amd.map_msi(nic, 256, target), Err(IommuError::NoInterruptEntries));
    assert!(matches!(amd.map_msi(nic, 0, MsiTarget { vector: 1, dest_apic_id: 256 }), Err(IommuError::Unsupported(_))));
    assert_eq!(amd.map_msi(bdf(0, 0x1f, 0), 0, target), Err(IommuError::NotAttached(bdf(0, 0x1f, 0))));
}

#[test]
fn domain_ids_avoid_bit_8() {
    let mut amd = iommu();
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(amd.create_domain(&map(0, 0x1_0000_0000, 4096, Perms::RWX)).unwrap().0);
    }
    assert!(ids.iter().all(|id| id & 0x100 == 0 && *id != 0));
    assert_eq!(ids[255], 0x200);
}

#[test]
fn coverage_and_errors() {
    let amd = AmdViIommu::new(FakeAmdVi::new(1, QEMU_EFR), &ivrs()).unwrap();
    assert!(amd.covers(bdf(0, 4, 0)) && amd.covers(bdf(1, 0, 0)));
    assert!(!amd.covers(bdf(2, 0, 0)), "bus 2 is in no IVHD entry");
    assert_eq!(AmdViIommu::new(FakeAmdVi::new(1, 0), &Ivrs::default()).err(), Some(IommuError::NoIommu));
    let mut stuck = FakeAmdVi::new(1, QEMU_EFR);
    stuck.units[0].stuck = true;
    let mut amd = AmdViIommu::new(stuck, &ivrs()).unwrap();
    assert_eq!(amd.enable(), Err(IommuError::Timeout("COMPLETION_WAIT store")));
}

#[test]
fn without_invalidate_all_every_entry_is_flushed() {
    let mut amd = AmdViIommu::new(FakeAmdVi::new(1, QEMU_EFR & !(1 << 6)), &ivrs()).unwrap();
    amd.enable().unwrap();
    let n = amd.hw_mut().units[0].commands.iter().filter(|c| c.opcode() == opcode::INVALIDATE_DEVTAB_ENTRY).count();
    assert_eq!(n, 512);
}

#[test]
fn event_decoding() {
    let f = event::decode_event(0, 0, 0x2u64 << 60 | 1 << 53 | 0x0100, 0xdead_b000);
    assert_eq!((f.bdf, f.kind, f.address, f.code), (bdf(1, 0, 0), FaultKind::DmaWrite, 0xdead_b000, 2));
    let f = event::decode_event(3, 2, 0x2u64 << 60 | 0x0100, 0);
    assert_eq!((f.unit, f.bdf), (3, Bdf::new(2, 1, 0, 0)));
    let f = event::decode_event(0, 0, 0x1u64 << 60 | 0x0020, 0);
    assert_eq!((f.kind, f.reason), (FaultKind::Other, "illegal device table entry"));
}

#[test]
fn command_encoding() {
    let c = AmdViCommand::completion_wait(HostPhysAddr::new(0x1234_5008), 7);
    assert_eq!(c.0, [0x1 << 60 | 0x1234_5008 | 1, 7]);
    let c = AmdViCommand::invalidate_domain(0x42);
    assert_eq!(c.0, [0x3 << 60 | 0x42 << 32, 0x7fff_ffff_ffff_f003]);
    assert_eq!(AmdViCommand::invalidate_devtab_entry(0x0100).0, [0x2 << 60 | 0x100, 0]);
    assert_eq!(AmdViCommand::invalidate_interrupt_table(0x0100).0, [0x5 << 60 | 0x100, 0]);
}
