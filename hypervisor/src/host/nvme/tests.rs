//! The driver against the fake controller: bring-up, transfers split by the bounce
//! region and MDTS (with PRP lists), flush, and every failure ending in an error
//! instead of a hang.

use super::cmd::{admin, nvm};
use super::controller::{BOUNCE_BYTES, DMA_BYTES, QUEUE_ENTRIES};
use super::fake::FakeNvme;
use super::*;
use bulkhead_vdisk::{BlockDevice, DeviceError, DmaSegment};

const BASE: u64 = 0x40_0000;
const MIB: usize = 1 << 20;

fn fake(lbads: u8) -> FakeNvme {
    FakeNvme::new(BASE, DMA_BYTES as usize, 4 * MIB, lbads)
}

fn open(f: FakeNvme) -> NvmeNamespace<FakeNvme> {
    Controller::enable(f, BASE, Timing::default()).and_then(Controller::open).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

#[test]
fn bring_up_identifies_the_controller_and_its_namespace() {
    let mut f = fake(9);
    f.cc = regs::cc::ENABLED; // left enabled by firmware: reset first
    f.csts = regs::csts::RDY;
    let ns = open(f);
    assert_eq!(ns.info.model.as_str(), "Fake NVMe");
    assert_eq!(ns.info.serial.as_str(), "FAKE0001");
    assert!(ns.info.volatile_write_cache);
    assert_eq!((ns.nsid, ns.block_size(), ns.blocks()), (1, 512, 8192));
    assert_eq!(ns.capacity_bytes(), 4 * MIB as u64);
    let seen: Vec<u8> = ns.controller().hw().seen.iter().map(|(_, s)| s.opcode()).collect();
    assert_eq!(
        seen,
        [
            admin::IDENTIFY,
            admin::SET_FEATURES,
            admin::CREATE_IO_CQ,
            admin::CREATE_IO_SQ,
            admin::IDENTIFY,
            admin::IDENTIFY
        ]
    );
    let hw = ns.controller().hw();
    assert_eq!(hw.aqa, regs::aqa(QUEUE_ENTRIES));
    assert_eq!((hw.asq, hw.acq), (BASE, BASE + 4096));
}

#[test]
fn large_transfers_are_split_and_use_prp_lists() {
    for lbads in [9u8, 12] {
        let mut ns = open(fake(lbads));
        let bs = ns.block_size() as usize;
        // 300 KiB from block 3 (4Kn: from block 3 too): three commands of at most
        // 128 KiB, the middle ones with a PRP list of 31 entries.
        let data = pattern(300 * 1024, lbads);
        ns.write(3, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        ns.read(3, &mut back).unwrap();
        assert_eq!(back, data);
        let hw = ns.controller().hw();
        assert_eq!(&hw.disk[3 * bs..3 * bs + data.len()], &data[..], "the medium holds what was written");
        let io = hw.io_commands();
        let want_blocks = |bytes: usize| (bytes / bs) as u64;
        assert_eq!(
            io,
            [
                (nvm::WRITE, want_blocks(128 * 1024)),
                (nvm::WRITE, want_blocks(128 * 1024)),
                (nvm::WRITE, want_blocks(44 * 1024)),
                (nvm::READ, want_blocks(128 * 1024)),
                (nvm::READ, want_blocks(128 * 1024)),
                (nvm::READ, want_blocks(44 * 1024)),
            ]
        );
        assert_eq!(ns.max_transfer_bytes(), BOUNCE_BYTES);
    }
}

#[test]
fn transfers_through_the_bounce_region_in_place_match_read_and_write() {
    for lbads in [9u8, 12] {
        let mut ns = open(fake(lbads));
        let bs = ns.block_size() as usize;
        let data = pattern(300 * 1024, lbads ^ 0x33);
        // The writer sees each chunk's offset in order and fills it.
        let mut offsets = Vec::new();
        ns.write_with(5, data.len(), &mut |at, chunk| {
            offsets.push((at, chunk.len()));
            chunk.copy_from_slice(&data[at..at + chunk.len()]);
            true
        })
        .unwrap();
        assert_eq!(offsets, [(0, 128 * 1024), (128 * 1024, 128 * 1024), (256 * 1024, 44 * 1024)]);
        assert_eq!(&ns.controller().hw().disk[5 * bs..5 * bs + data.len()], &data[..]);
        let mut back = vec![0u8; data.len()];
        ns.read_with(5, data.len(), &mut |at, chunk| {
            back[at..at + chunk.len()].copy_from_slice(chunk);
            true
        })
        .unwrap();
        assert_eq!(back, data);
    }
}

#[test]
fn two_commands_in_flight_may_complete_in_any_order() {
    for lbads in [9u8, 12] {
        let mut f = fake(lbads);
        f.reorder_io = true;
        let mut ns = open(f);
        let data = pattern(600 * 1024, lbads);
        ns.write(2, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        ns.read(2, &mut back).unwrap();
        assert_eq!(back, data);
        let hw = ns.controller().hw();
        assert_eq!(hw.most_in_flight, 2, "the next chunk is sent before the previous one completes");
        assert!(ns.controller().failure().is_none());
    }
}

#[test]
fn an_error_with_two_in_flight_waits_for_both_and_the_drive_keeps_working() {
    let mut f = fake(9);
    f.reorder_io = true;
    let mut ns = open(f);
    let data = pattern(256 * 1024, 5);
    ns.write(0, &data).unwrap();
    // The first of two reads fails: the error is reported once the second is back.
    ns.controller_hw_mut().fail_next_io = Some(0x281);
    let mut back = vec![0u8; data.len()];
    assert_eq!(ns.read(0, &mut back), Err(DeviceError::Medium { status: 0x281 }));
    assert!(ns.controller().failure().is_none());
    ns.read(0, &mut back).unwrap();
    assert_eq!(back, data, "no completion of the failed read is left to confuse the next");
}

#[test]
fn a_refusing_callback_stops_the_transfer_and_nothing_unfilled_is_written() {
    let mut ns = open(fake(9));
    let sent = ns.controller().hw().io_commands().len();
    let refused = ns.write_with(0, 256 * 1024, &mut |at, chunk| {
        chunk.fill(7);
        at == 0
    });
    assert_eq!(refused, Err(DeviceError::Buffers));
    let hw = ns.controller().hw();
    assert_eq!(hw.io_commands().len(), sent + 1, "only the filled first chunk was sent");
    assert!(hw.disk[128 * 1024..256 * 1024].iter().all(|&b| b == 0));
    assert_eq!(ns.read_with(0, 512, &mut |_, _| false), Err(DeviceError::Buffers));
    assert_eq!(ns.read_with(8192, 512, &mut |_, _| true), Err(DeviceError::OutOfRange));
}

#[test]
fn mdts_bounds_each_command() {
    let mut f = fake(9);
    f.mdts = 1; // 8 KiB
    let mut ns = open(f);
    assert_eq!(ns.max_transfer_bytes(), 8192);
    let data = pattern(20 * 1024, 7);
    ns.write(100, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    ns.read(100, &mut back).unwrap();
    assert_eq!(back, data);
    let io = ns.controller().hw().io_commands();
    assert_eq!(io.len(), 6);
    assert!(io.iter().all(|&(_, blocks)| blocks <= 16), "{io:?}");
}

#[test]
fn many_commands_wrap_the_queues() {
    let mut ns = open(fake(9));
    for i in 0..(3 * QUEUE_ENTRIES as u64) {
        let block = pattern(512, i as u8);
        ns.write(i, &block).unwrap();
        let mut back = [0u8; 512];
        ns.read(i, &mut back).unwrap();
        assert_eq!(&back[..], &block[..], "command {i}");
    }
}

#[test]
fn flush_makes_writes_durable() {
    let mut ns = open(fake(9));
    ns.write(10, &[0xAB; 1024]).unwrap();
    assert_eq!(ns.controller().hw().durable[10 * 512], 0, "cached, not yet durable");
    ns.flush().unwrap();
    assert_eq!(&ns.controller().hw().durable[10 * 512..12 * 512], &[0xAB; 1024][..]);
    assert_eq!(ns.controller().hw().io_commands().last(), Some(&(nvm::FLUSH, 1)));

    // Without a volatile write cache no Flush is sent.
    let mut f = fake(9);
    f.vwc = false;
    let mut ns = open(f);
    ns.flush().unwrap();
    assert!(ns.controller().hw().io_commands().is_empty());
}

#[test]
fn ranges_are_checked_before_anything_is_sent() {
    let mut ns = open(fake(12));
    let blocks = ns.blocks();
    assert_eq!(ns.read(blocks, &mut [0u8; 4096]), Err(DeviceError::OutOfRange));
    assert_eq!(ns.write(0, &[0u8; 512]), Err(DeviceError::Misaligned));
    assert!(ns.controller().hw().io_commands().is_empty());
}

#[test]
fn an_error_status_is_a_medium_error_and_the_drive_keeps_working() {
    let mut f = fake(9);
    f.fail_next_io = Some(0x281); // media: unrecovered read error
    let mut ns = open(f);
    assert_eq!(ns.read(0, &mut [0u8; 512]), Err(DeviceError::Medium { status: 0x281 }));
    assert!(ns.controller().failure().is_none());
    ns.read(0, &mut [0u8; 512]).unwrap();
}

#[test]
fn a_command_that_never_completes_times_out_and_fails_the_drive() {
    let mut f = fake(9);
    f.stall_io_opcode = Some(nvm::WRITE);
    let mut ns = open(f);
    assert_eq!(ns.write(0, &[1u8; 512]), Err(DeviceError::Timeout));
    assert_eq!(ns.controller().failure(), Some(NvmeError::Timeout { admin: false, opcode: nvm::WRITE }));
    // The fake clock moves 10 µs per reading: the wait ended near the 5 s deadline.
    let waited = ns.controller().hw().now;
    assert!((5_000_000..6_000_000).contains(&waited), "{waited}");
    let sent = ns.controller().hw().seen.len();
    assert_eq!(ns.read(0, &mut [0u8; 512]), Err(DeviceError::Timeout));
    assert_eq!(ns.flush(), Err(DeviceError::Timeout));
    let mut touched = false;
    let mut mark = |_: usize, _: &mut [u8]| {
        touched = true;
        true
    };
    assert_eq!(ns.write_with(0, 512, &mut mark), Err(DeviceError::Timeout));
    assert_eq!(ns.read_with(0, 512, &mut mark), Err(DeviceError::Timeout));
    assert!(!touched, "the bounce region of a failed drive is not handed out");
    assert_eq!(ns.controller().hw().seen.len(), sent, "nothing more is sent to a failed drive");
}

#[test]
fn controller_fatal_status_fails_the_drive_without_waiting_out_the_timeout() {
    let mut f = fake(9);
    f.fatal_on_io = true;
    let mut ns = open(f);
    assert_eq!(ns.read(0, &mut [0u8; 512]), Err(DeviceError::Timeout));
    assert_eq!(ns.controller().failure(), Some(NvmeError::Fatal));
    assert!(ns.controller().hw().now < 1000, "noticed at once");
}

#[test]
fn bring_up_failures_are_errors() {
    let mut f = fake(9);
    f.ready_delay = u32::MAX;
    let e = Controller::enable(f, BASE, Timing::default()).unwrap_err();
    assert_eq!(e, NvmeError::NotReady { ready: true, waited_ms: 500 });

    let mut f = fake(9);
    f.cap |= 1 << 48; // MPSMIN 8 KiB
    assert_eq!(
        Controller::enable(f, BASE, Timing::default()).unwrap_err(),
        NvmeError::Unsupported("4 KiB memory pages")
    );

    let mut f = fake(9);
    f.cap = u64::MAX; // the device is gone
    assert_eq!(Controller::enable(f, BASE, Timing::default()).unwrap_err(), NvmeError::Fatal);

    let mut f = fake(9);
    f.refuse_admin = Some(admin::CREATE_IO_CQ);
    let e = Controller::enable(f, BASE, Timing::default()).and_then(Controller::open).unwrap_err();
    assert_eq!(e, NvmeError::Status { admin: true, opcode: admin::CREATE_IO_CQ, status: 1 });

    // A refused Set Features (Number of Queues) is not fatal.
    let mut f = fake(9);
    f.refuse_admin = Some(admin::SET_FEATURES);
    assert!(Controller::enable(f, BASE, Timing::default()).and_then(Controller::open).is_ok());

    // An older controller without the active namespace list: NSID 1 is used.
    let mut f = fake(9);
    f.no_active_list = true;
    let ns = Controller::enable(f, BASE, Timing::default()).and_then(Controller::open).unwrap();
    assert_eq!(ns.nsid, 1);
    let seen = &ns.controller().hw().seen;
    assert_eq!(
        seen.iter().filter(|(_, s)| s.opcode() == admin::IDENTIFY).map(|(_, s)| s.cdw10).collect::<Vec<_>>(),
        [1, 2, 0]
    );

    // A namespace whose block size is not 512 or 4096 is refused, by its NSID.
    let mut f = fake(9);
    f.lbads = 10;
    let e = Controller::enable(f, BASE, Timing::default()).and_then(Controller::open).unwrap_err();
    assert_eq!(e, NvmeError::Namespace { nsid: 1, why: identify::NamespaceRefusal::BlockSize(10) });
}

#[test]
fn the_dma_domain_maps_exactly_the_region() {
    let map = dma_domain_map(HostPhysAddr::new(0x80_0000), 0x2_6000).unwrap();
    assert_eq!(map.regions().len(), 1);
    let r = map.regions()[0];
    assert_eq!((r.gpa().raw(), r.hpa().raw(), r.len_bytes()), (0x80_0000, 0x80_0000, 0x2_6000));
    assert_eq!(r.perms(), Perms::RW);
    assert!(dma_domain_map(HostPhysAddr::new(0x80_0800), 0x1000).is_none(), "unaligned");
}

/// Attaches the controller `bdf` to a domain for its DMA region and checks, through
/// the fake unit (`dma(iommu, addr)`: does a read of `addr` by the controller go
/// through?), that exactly the region is reachable.
fn check_domain<I: Iommu>(iommu: &mut I, bdf: Bdf, dma: impl Fn(&mut I, u64) -> bool) {
    let base = 0x80_0000;
    let domain = attach_domain(iommu, bdf, HostPhysAddr::new(base), 0x2_6000).unwrap().unwrap();
    assert_eq!(iommu.domain_of(bdf), Some(domain));
    assert!(dma(iommu, base));
    assert!(dma(iommu, base + 0x2_5ff8));
    assert!(!dma(iommu, base + 0x2_6000), "nothing past the region");
    assert!(!dma(iommu, base - 0x1000), "nothing before it");
    assert!(!dma(iommu, 0x1000), "no other memory");
}

#[test]
fn the_dma_domain_is_attached_through_vtd() {
    use crate::host::iommu::vtd::fake::FakeVtd;
    use crate::host::iommu::vtd::{VtdConfig, VtdIommu};
    let dmar = crate::host::acpi::dmar::parse_dmar(include_bytes!(
        "../../../tests/fixtures/acpi/qemu-q35-intel-iommu/DMAR.bin"
    ))
    .unwrap();
    let inventory = crate::host::iommu::fake_mem::qemu_q35_inventory();
    let mut vtd = VtdIommu::new(FakeVtd::qemu(1), &dmar, &inventory, VtdConfig::default()).unwrap();
    vtd.enable().unwrap();
    let bdf = Bdf::new(0, 0, 3, 0);
    check_domain(&mut vtd, bdf, |v, addr| v.hw_mut().dma(0, bdf.requester_id(), addr, false) == Ok(addr));
}

#[test]
fn the_dma_domain_is_attached_through_amdvi() {
    use crate::host::iommu::amdvi::AmdViIommu;
    use crate::host::iommu::amdvi::fake::{FakeAmdVi, QEMU_EFR};
    let ivrs =
        crate::host::acpi::ivrs::parse_ivrs(include_bytes!("../../../tests/fixtures/acpi/qemu-q35-amd-iommu/IVRS.bin"))
            .unwrap();
    let mut amd = AmdViIommu::new(FakeAmdVi::new(1, QEMU_EFR), &ivrs).unwrap();
    amd.enable().unwrap();
    let bdf = Bdf::new(0, 0, 3, 0);
    check_domain(&mut amd, bdf, |a, addr| a.hw_mut().dma(0, bdf.requester_id(), addr, false) == Ok(addr));
}

#[test]
fn only_unassigned_nvme_functions_are_candidates() {
    use crate::host::pci::PciDevice;
    let dev = |device: u8, class: (u8, u8, u8)| PciDevice {
        bdf: Bdf::new(0, 0, device, 0),
        vendor_id: 0x1b36,
        device_id: 0x0010,
        revision: 0,
        class: class.0,
        subclass: class.1,
        prog_if: class.2,
        header_type: 0,
        multifunction: false,
        interrupt_pin: 0,
        interrupt_line: 0,
        bars: Vec::new(),
        rom: None,
        capabilities: Vec::new(),
        ext_capabilities: Vec::new(),
        bridge: None,
    };
    let inv =
        PciInventory::new(vec![dev(2, NVME_CLASS), dev(3, (1, 6, 1)), dev(4, NVME_CLASS), dev(5, (1, 8, 3))], true);
    let all: Vec<Bdf> = candidates(&inv, &[]).iter().map(|d| d.bdf).collect();
    assert_eq!(all, [Bdf::new(0, 0, 2, 0), Bdf::new(0, 0, 4, 0)]);
    let free: Vec<Bdf> = candidates(&inv, &[Bdf::new(0, 0, 2, 0)]).iter().map(|d| d.bdf).collect();
    assert_eq!(free, [Bdf::new(0, 0, 4, 0)]);
}

/// A controller behind a simulated IOMMU, with 1 MiB of "VM memory" after its DMA
/// region that it reaches only through what the driver maps for a transfer.
fn fake_with_guest(lbads: u8) -> (FakeNvme, u64) {
    let region = DMA_BYTES.next_multiple_of(4096);
    let mut f = FakeNvme::new(BASE, region as usize + MIB, 4 * MIB, lbads);
    f.region_bytes = region;
    f.mapped = Some(Vec::new());
    f.mdts = 7;
    (f, BASE + region)
}

fn guest_bytes(ns: &NvmeNamespace<FakeNvme>, at: u64, len: usize) -> Vec<u8> {
    let hw = ns.controller().hw();
    let off = (at - hw.mem_base) as usize;
    hw.mem[off..off + len].to_vec()
}

#[test]
fn direct_transfers_point_the_prps_at_the_callers_pages_and_unmap_them() {
    for lbads in [9u8, 12] {
        let (f, guest) = fake_with_guest(lbads);
        let mut ns = open(f);
        let bs = ns.block_size() as usize;
        // 600 KiB in three buffers: the first starts 0x200 into a page (a 4Kn drive
        // needs whole blocks, so there it starts on a page), the others on pages.
        let first_off = if bs == 512 { 0x200 } else { 0 };
        let segs = [
            DmaSegment { addr: guest + first_off, len: 0x1000 - first_off as usize },
            DmaSegment { addr: guest + 0x8_0000, len: 0x6_0000 },
            DmaSegment { addr: guest + 0x2_0000, len: 0x3_6000 + first_off as usize },
        ];
        let total: usize = segs.iter().map(|s| s.len).sum();
        assert_eq!(total % bs, 0);
        let data = pattern(total, lbads);
        let mut at = 0;
        for s in &segs {
            let off = (s.addr - BASE) as usize;
            ns.controller_hw_mut().mem[off..off + s.len].copy_from_slice(&data[at..at + s.len]);
            at += s.len;
        }
        let lba = 5;
        let w = ns.write_direct(lba, &segs);
        assert_eq!(w, Some(Ok(())), "{:?} {:?}", ns.controller().failure(), ns.controller().hw().io_commands());
        let mut back = vec![0u8; total];
        ns.read(lba, &mut back).unwrap();
        assert_eq!(back, data, "written straight from the segments");
        // Clear the buffers, read straight into them.
        for s in &segs {
            let off = (s.addr - BASE) as usize;
            ns.controller_hw_mut().mem[off..off + s.len].fill(0);
        }
        assert_eq!(ns.read_direct(lba, &segs), Some(Ok(())));
        let mut got = Vec::new();
        for s in &segs {
            got.extend(guest_bytes(&ns, s.addr, s.len));
        }
        assert_eq!(got, data, "read straight into the segments");
        let hw = ns.controller().hw();
        assert_eq!((hw.maps, hw.faults, hw.bad_unmaps), (2, 0, 0));
        assert!(hw.mapped.as_ref().unwrap().is_empty(), "every page unmapped after the transfer");
        // MDTS 7: commands of up to 512 KiB, not the bounce buffer's 128 KiB.
        let reads: Vec<u64> = hw.io_commands().iter().filter(|c| c.0 == nvm::READ).map(|c| c.1).collect();
        assert!(reads.contains(&(512 * 1024 / bs as u64)), "{reads:?}");
    }
}

#[test]
fn direct_transfers_decline_what_prps_cannot_describe_or_the_domain_cannot_map() {
    let (f, guest) = fake_with_guest(9);
    let mut ns = open(f);
    let sent = |ns: &NvmeNamespace<FakeNvme>| ns.controller().hw().io_commands().len();
    let before = sent(&ns);
    // Two buffers meeting inside a page.
    let split = [DmaSegment { addr: guest, len: 0x200 }, DmaSegment { addr: guest + 0x4000, len: 0x200 }];
    assert_eq!(ns.read_direct(0, &split), None);
    // A buffer on the driver's own queues and PRP lists.
    let own = [DmaSegment { addr: BASE, len: 0x1000 }];
    assert_eq!(ns.read_direct(0, &own), None);
    // Past the namespace: refused as a range error, nothing mapped.
    let one = [DmaSegment { addr: guest, len: 0x1000 }];
    assert_eq!(ns.read_direct(8192, &one), Some(Err(DeviceError::OutOfRange)));
    // A controller the driver cannot map pages for.
    ns.controller_hw_mut().mapped = None;
    assert_eq!(ns.read_direct(0, &one), None);
    assert_eq!(sent(&ns), before, "nothing was sent");
    assert_eq!(ns.controller().hw().maps, 0);
}

#[test]
fn a_failed_direct_command_still_unmaps_the_pages() {
    let (mut f, guest) = fake_with_guest(9);
    f.mdts = 5;
    let mut ns = open(f);
    ns.controller_hw_mut().fail_next_io = Some(0x281);
    let segs = [DmaSegment { addr: guest, len: 0x6_0000 }];
    assert!(matches!(ns.read_direct(0, &segs), Some(Err(DeviceError::Medium { .. }))));
    let hw = ns.controller().hw();
    assert!(hw.mapped.as_ref().unwrap().is_empty());
    assert_eq!((hw.faults, hw.bad_unmaps), (0, 0));
    // A transfer the driver did not map for faults in the simulated IOMMU: the check
    // above would catch a driver that sent commands after unmapping.
    assert_eq!(ns.read_direct(0, &segs), Some(Ok(())));
}
