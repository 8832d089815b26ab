use super::*;
use crate::devices::shared::Shared;
use crate::devices::virtio::blk_backend::{ID_BYTES, MemoryBackend};
use crate::devices::virtio::blk_request::{blk_status, req_type};
use crate::devices::virtio::blk_serve::{BYTES_PER_POLL, REQUESTS_PER_POLL, Served};
use crate::devices::virtio::fake_driver::{DriverRings, bring_up, guest_map, guest_memory};
use crate::devices::virtio::pci_transport::{BAR_SIZE, MODERN_DEVICE_BASE};
use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::{GuestMemory, GuestMemoryAccess, VecHostMemory, read_obj, write_obj};

const GUEST_BYTES: u64 = 0x80_0000;
const HEADER_AT: u64 = 0x1_0000;
const STATUS_AT: u64 = 0x1_8000;
const DATA_AT: u64 = 0x2_0000;
const SERIAL: [u8; ID_BYTES] = *b"bulkhead-disk-0001\0\0";

/// A running device over a shared memory disk, and the driver's rings.
struct BlkRig {
    disk: Shared<MemoryBackend>,
    blk: VirtioBlk,
    rings: DriverRings,
}

fn rig(sectors: u64, read_only: bool) -> BlkRig {
    rig_with(sectors, read_only, false)
}

/// A rig whose disk takes the guest's buffers straight (`direct`) or goes through the
/// device's bounce buffer.
fn rig_with(sectors: u64, read_only: bool, direct: bool) -> BlkRig {
    let mut backend = MemoryBackend::new(sectors, read_only, SERIAL);
    backend.direct = direct;
    let disk = Shared::new(backend);
    let mut blk = VirtioBlk::new(Box::new(disk.clone())).unwrap();
    let rings = DriverRings::new(0x1000, QUEUE_SIZE);
    bring_up(&mut blk, &[&rings]);
    assert!(blk.is_running());
    BlkRig { disk, blk, rings }
}

impl BlkRig {
    /// Adds a request: header, the given data buffers, a 1-byte status (set to 0xff so
    /// a test sees whether the device wrote it).
    fn request(&mut self, mem: &mut impl GuestMemoryAccess, req: u32, sector: u64, data: &[(u64, u32, bool)]) -> u16 {
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&req.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_bytes(GuestPhysAddr::new(HEADER_AT), &header).unwrap();
        write_obj(mem, GuestPhysAddr::new(STATUS_AT), 0xffu8).unwrap();
        let mut chain = alloc::vec![(HEADER_AT, 16, false)];
        chain.extend_from_slice(data);
        chain.push((STATUS_AT, 1, true));
        self.rings.add_chain(mem, &chain)
    }

    /// Serves the queue and returns the one used element and the status byte.
    fn complete_one(&mut self, mem: &mut GuestMemory<'_, VecHostMemory>) -> (u32, u8) {
        let served = self.blk.serve(mem);
        assert_eq!(served.requests, 1, "{served:?}");
        let used = self.rings.take_used(mem);
        assert_eq!(used.len(), 1);
        (used[0].1, read_obj(mem, GuestPhysAddr::new(STATUS_AT)).unwrap())
    }

    fn backend_calls(&self) -> (u64, u64, u64) {
        let d = self.disk.lock();
        (d.reads, d.writes, d.flushes)
    }
}

fn fill(mem: &mut impl GuestMemoryAccess, at: u64, len: usize, seed: u8) {
    let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
    mem.write_bytes(GuestPhysAddr::new(at), &bytes).unwrap();
}

fn read_back(mem: &impl GuestMemoryAccess, at: u64, len: usize) -> Vec<u8> {
    let mut out = alloc::vec![0u8; len];
    mem.read_bytes(GuestPhysAddr::new(at), &mut out).unwrap();
    out
}

#[test]
fn configuration_holds_capacity_seg_max_and_block_size() {
    let mut r = rig(2048, false);
    let cfg = |blk: &mut VirtioBlk, at: u64, size| blk.read(0x1000 + at, size);
    assert_eq!(cfg(&mut r.blk, 0, AccessSize::Qword), 2048);
    assert_eq!(cfg(&mut r.blk, 8, AccessSize::Dword), u64::from(SIZE_MAX));
    assert_eq!(cfg(&mut r.blk, 12, AccessSize::Dword), u64::from(SEG_MAX));
    assert_eq!(cfg(&mut r.blk, 20, AccessSize::Dword), 512);
    assert_eq!(cfg(&mut r.blk, 24, AccessSize::Dword), 0, "past the fields offered");
    assert_eq!(r.blk.config_read(2, AccessSize::Word), u32::from(MODERN_DEVICE_BASE + 2));
    assert_eq!(r.blk.bars()[0].size, BAR_SIZE);
    assert_eq!(r.blk.negotiated(), BLK_FEATURES);
    let ro = rig(8, true);
    assert_eq!(ro.blk.negotiated(), BLK_FEATURES | blk_feature::RO);
    // The rig's driver enabled a queue of QUEUE_SIZE; a fresh device offers that much.
    let fresh = VirtioBlk::new(Box::new(MemoryBackend::new(8, false, SERIAL))).unwrap();
    assert_eq!(fresh.transport().queue(0).map(|q| q.size), Some(QUEUE_SIZE));
}

#[test]
fn write_then_read_back_across_odd_buffers() {
    for direct in [false, true] {
        write_then_read_back_across_odd_buffers_with(direct);
    }
}

fn write_then_read_back_across_odd_buffers_with(direct: bool) {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig_with(64, false, direct);
    // 3 sectors in buffers that do not follow sector boundaries.
    fill(&mut mem, DATA_AT, 1536, 3);
    let (used, status) =
        r.request_and_complete(&mut mem, req_type::OUT, 5, &[(DATA_AT, 700, false), (DATA_AT + 700, 836, false)]);
    assert_eq!((used, status), (1, blk_status::OK));
    assert_eq!(&r.disk.lock().bytes()[5 * 512..8 * 512], &read_back(&mem, DATA_AT, 1536)[..]);
    // Read sectors 4..9 back into a fresh place, in three buffers.
    let back = DATA_AT + 0x1_0000;
    let (used, status) = r.request_and_complete(
        &mut mem,
        req_type::IN,
        4,
        &[(back, 100, true), (back + 100, 1948, true), (back + 2048, 512, true)],
    );
    assert_eq!((used, status), (2560 + 1, blk_status::OK));
    let got = read_back(&mem, back, 2560);
    assert!(got[..512].iter().all(|&b| b == 0) && got[2048..].iter().all(|&b| b == 0));
    assert_eq!(&got[512..2048], &read_back(&mem, DATA_AT, 1536)[..]);
    let c = r.blk.counters();
    assert_eq!((c.reads, c.writes, c.bytes_read, c.bytes_written, c.io_errors), (1, 1, 2560, 1536, 0));
}

impl BlkRig {
    fn request_and_complete(
        &mut self,
        mem: &mut GuestMemory<'_, VecHostMemory>,
        req: u32,
        sector: u64,
        data: &[(u64, u32, bool)],
    ) -> (u32, u8) {
        self.request(mem, req, sector, data);
        self.complete_one(mem)
    }
}

#[test]
fn a_large_request_crosses_the_bounce_buffer() {
    for direct in [false, true] {
        a_large_request_with(direct);
    }
}

fn a_large_request_with(direct: bool) {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig_with(1024, false, direct);
    // 40 buffers of 4 KiB: 160 KiB, more than two bounce buffers.
    let bufs: Vec<(u64, u32, bool)> = (0..40).map(|i| (DATA_AT + i * 0x1000, 0x1000, false)).collect();
    fill(&mut mem, DATA_AT, 40 * 4096, 9);
    assert_eq!(r.request_and_complete(&mut mem, req_type::OUT, 100, &bufs), (1, blk_status::OK));
    let expected = read_back(&mem, DATA_AT, 40 * 4096);
    assert_eq!(&r.disk.lock().bytes()[100 * 512..100 * 512 + 40 * 4096], &expected[..]);
    let back: Vec<(u64, u32, bool)> = (0..40).map(|i| (0x10_0000 + i * 0x1000, 0x1000, true)).collect();
    assert_eq!(r.request_and_complete(&mut mem, req_type::IN, 100, &back), (40 * 4096 + 1, blk_status::OK));
    assert_eq!(read_back(&mem, 0x10_0000, 40 * 4096), expected);
    // Through the bounce buffer: one backend call per 64 KiB; straight: one per request.
    let calls = if direct { (1, 1, 0) } else { (3, 3, 0) };
    assert_eq!(r.backend_calls(), calls);
}

#[test]
fn a_direct_backend_never_sees_buffers_outside_the_guest() {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig_with(64, false, true);
    // The second buffer runs past the end of guest RAM: refused before the backend.
    let bufs = [(DATA_AT, 512, true), (GUEST_BYTES - 512, 1024, true)];
    assert_eq!(r.request_and_complete(&mut mem, req_type::IN, 0, &bufs), (1, blk_status::IOERR));
    assert_eq!(r.backend_calls(), (0, 0, 0));
}

#[test]
fn flush_reaches_the_backend_and_get_id_returns_the_serial() {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig(8, false);
    assert_eq!(r.request_and_complete(&mut mem, req_type::FLUSH, 0, &[]), (1, blk_status::OK));
    assert_eq!(r.backend_calls(), (0, 0, 1));
    assert_eq!(r.request_and_complete(&mut mem, req_type::GET_ID, 0, &[(DATA_AT, 20, true)]), (21, blk_status::OK));
    assert_eq!(read_back(&mem, DATA_AT, 20), SERIAL);
    // A shorter buffer gets the serial's start.
    write_obj(&mut mem, GuestPhysAddr::new(DATA_AT + 8), 0u8).unwrap();
    assert_eq!(r.request_and_complete(&mut mem, req_type::GET_ID, 0, &[(DATA_AT, 8, true)]), (9, blk_status::OK));
    assert_eq!(read_back(&mem, DATA_AT, 9), b"bulkhead\0");
}

#[test]
fn a_read_only_disk_refuses_writes_and_still_reads() {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig(8, true);
    r.disk.lock().bytes_mut()[..512].fill(0x5a);
    fill(&mut mem, DATA_AT, 512, 1);
    assert_eq!(r.request_and_complete(&mut mem, req_type::OUT, 0, &[(DATA_AT, 512, false)]), (1, blk_status::IOERR));
    assert!(r.disk.lock().bytes()[..512].iter().all(|&b| b == 0x5a));
    assert_eq!(r.backend_calls(), (0, 0, 0), "the write never reached the backend");
    assert_eq!(r.request_and_complete(&mut mem, req_type::IN, 0, &[(DATA_AT, 512, true)]), (513, blk_status::OK));
    assert!(read_back(&mem, DATA_AT, 512).iter().all(|&b| b == 0x5a));
}

#[test]
fn unknown_request_types_are_unsupported() {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig(8, false);
    // DISCARD (11), WRITE_ZEROES (13), GET_LIFETIME (10), and nonsense.
    for t in [11, 13, 10, 0xdead_beef] {
        assert_eq!(r.request_and_complete(&mut mem, t, 0, &[(DATA_AT, 512, false)]), (1, blk_status::UNSUPP));
    }
    assert_eq!(r.backend_calls(), (0, 0, 0));
    assert_eq!(r.blk.counters().unsupported, 4);
}

/// Every malformed request class: IOERR in the status byte, the request returned,
/// and the disk neither read nor written.
#[test]
fn malformed_requests_get_ioerr_and_leave_the_disk_alone() {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig(64, false);
    r.disk.lock().bytes_mut().fill(0x11);
    let w = |len: u32| (DATA_AT, len, false);
    let rd = |len: u32| (DATA_AT, len, true);
    let too_many: Vec<(u64, u32, bool)> = (0..=u64::from(SEG_MAX)).map(|i| (DATA_AT + i * 512, 512, false)).collect();
    type Buffers = Vec<(u64, u32, bool)>;
    let cases: Vec<(&str, u32, u64, Buffers, Reject)> = alloc::vec![
        ("write past the end", req_type::OUT, 63, alloc::vec![w(1024)], Reject::OutOfRange),
        ("read past the end", req_type::IN, 64, alloc::vec![rd(512)], Reject::OutOfRange),
        ("sector overflows", req_type::IN, u64::MAX, alloc::vec![rd(512)], Reject::OutOfRange),
        ("zero-length write", req_type::OUT, 0, alloc::vec![], Reject::Length),
        ("zero-length read", req_type::IN, 0, alloc::vec![], Reject::Length),
        ("not whole sectors", req_type::OUT, 0, alloc::vec![w(513)], Reject::Length),
        ("empty buffer", req_type::OUT, 0, alloc::vec![w(512), (DATA_AT, 0, false)], Reject::SegmentSize),
        ("buffer over size_max", req_type::OUT, 0, alloc::vec![w(SIZE_MAX + 512)], Reject::SegmentSize),
        ("too many buffers", req_type::OUT, 0, too_many, Reject::TooManySegments),
        ("read into readable buffers", req_type::IN, 0, alloc::vec![w(512)], Reject::Direction),
        ("write from writable buffers", req_type::OUT, 0, alloc::vec![rd(512)], Reject::Direction),
        ("mixed directions", req_type::OUT, 0, alloc::vec![w(512), (DATA_AT + 512, 512, true)], Reject::Direction),
        ("flush with data", req_type::FLUSH, 0, alloc::vec![w(512)], Reject::Length),
        ("buffer outside RAM", req_type::OUT, 0, alloc::vec![(GUEST_BYTES, 512, false)], Reject::Memory),
        ("buffer running off RAM", req_type::IN, 0, alloc::vec![(GUEST_BYTES - 256, 512, true)], Reject::Memory),
        ("buffer address wraps", req_type::IN, 0, alloc::vec![(u64::MAX - 255, 512, true)], Reject::Memory),
    ];
    for (what, req, sector, data, why) in cases {
        assert_eq!(r.request_and_complete(&mut mem, req, sector, &data), (1, blk_status::IOERR), "{what}");
        assert_eq!(r.blk.counters().last_reject, Some(why), "{what}");
        assert_eq!(r.backend_calls(), (0, 0, 0), "{what}");
    }
    assert!(r.disk.lock().bytes().iter().all(|&b| b == 0x11));
    assert!(r.blk.is_running(), "a bad request is the request's problem, not the device's");
}

#[test]
fn a_bad_header_or_status_descriptor_is_refused() {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig(64, false);
    let mut header = [0u8; 16];
    header[0] = req_type::OUT as u8;
    mem.write_bytes(GuestPhysAddr::new(HEADER_AT), &header).unwrap();
    fill(&mut mem, DATA_AT, 512, 0);
    // Oversize status: IOERR goes in the chain's last byte.
    let oversize = STATUS_AT + 0x100;
    write_obj(&mut mem, GuestPhysAddr::new(oversize + 3), 0xffu8).unwrap();
    r.rings.add_chain(&mut mem, &[(HEADER_AT, 16, false), (DATA_AT, 512, false), (oversize, 4, true)]);
    assert_eq!(r.blk.serve(&mut mem).requests, 1);
    assert_eq!(read_obj::<u8>(&mem, GuestPhysAddr::new(oversize + 3)).unwrap(), blk_status::IOERR);
    // A short header, and a header the device would have to write.
    for head in [(HEADER_AT, 8, false), (HEADER_AT, 16, true)] {
        write_obj(&mut mem, GuestPhysAddr::new(STATUS_AT), 0xffu8).unwrap();
        r.rings.add_chain(&mut mem, &[head, (DATA_AT, 512, false), (STATUS_AT, 1, true)]);
        assert_eq!(r.blk.serve(&mut mem).requests, 1);
        assert_eq!(read_obj::<u8>(&mem, GuestPhysAddr::new(STATUS_AT)).unwrap(), blk_status::IOERR);
    }
    // No status at all (the last buffer is device-readable), and a status outside RAM:
    // the request comes back with nothing written.
    r.rings.add_chain(&mut mem, &[(HEADER_AT, 16, false), (DATA_AT, 512, false)]);
    r.rings.add_chain(&mut mem, &[(HEADER_AT, 16, false), (DATA_AT, 512, false), (GUEST_BYTES + 8, 1, true)]);
    assert_eq!(r.blk.serve(&mut mem).requests, 2);
    let used = r.rings.take_used(&mem);
    assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), [1, 1, 1, 0, 0]);
    assert_eq!(r.blk.counters().no_status, 2);
    assert_eq!(r.backend_calls(), (0, 0, 0));
    assert!(r.disk.lock().bytes().iter().all(|&b| b == 0));
}

#[test]
fn a_descriptor_loop_stops_the_queue_without_touching_the_disk() {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig(64, false);
    // 0 -> 1 -> 0 -> ...: the walk ends at the queue size.
    r.rings.write_desc(&mut mem, 0, HEADER_AT, 16, 1, 1);
    r.rings.write_desc(&mut mem, 1, DATA_AT, 512, 1, 0);
    r.rings.publish(&mut mem, 0);
    let served = r.blk.serve(&mut mem);
    assert_eq!(served, Served { requests: 0, bytes: 0, more: false });
    assert!(!r.blk.is_running());
    assert_eq!(r.blk.take_error(), Some(QueueError::ChainTooLong));
    assert_ne!(r.blk.transport().status() & crate::devices::virtio::status::NEEDS_RESET, 0);
    assert_eq!(r.backend_calls(), (0, 0, 0));
    // The driver resets and sets up again: the disk works.
    r.rings = DriverRings::new(0x1000, 256);
    bring_up(&mut r.blk, &[&r.rings]);
    assert_eq!(r.request_and_complete(&mut mem, req_type::FLUSH, 0, &[]), (1, blk_status::OK));
}

#[test]
fn one_call_takes_a_bounded_number_of_requests() {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig(64, false);
    // 80 flushes (240 descriptors): one call takes 64, the next the rest.
    for _ in 0..80 {
        r.request(&mut mem, req_type::FLUSH, 0, &[]);
    }
    assert_eq!(r.blk.serve(&mut mem), Served { requests: REQUESTS_PER_POLL, bytes: 0, more: true });
    assert_eq!(r.blk.serve(&mut mem), Served { requests: 80 - REQUESTS_PER_POLL, bytes: 0, more: false });
    assert_eq!(r.rings.take_used(&mem).len(), 80);
    assert_eq!(r.backend_calls(), (0, 0, 80));
    // Bytes: six 1 MiB writes; a call stops taking requests once 4 MiB moved.
    let mut r = rig(16 * 1024, false);
    let mib = 1024 * 1024;
    let count = mib / u64::from(SIZE_MAX);
    let bufs: Vec<(u64, u32, bool)> =
        (0..count).map(|i| (0x10_0000 + i * u64::from(SIZE_MAX), SIZE_MAX, false)).collect();
    for _ in 0..6 {
        r.request(&mut mem, req_type::OUT, 0, &bufs);
    }
    assert_eq!(BYTES_PER_POLL, 4 * mib);
    assert_eq!(r.blk.serve(&mut mem), Served { requests: 4, bytes: 4 * mib, more: true });
    assert_eq!(r.blk.serve(&mut mem), Served { requests: 2, bytes: 2 * mib, more: false });
}

#[test]
fn each_guest_reaches_only_its_own_disk() {
    let (map_a, map_b) = (guest_map(GUEST_BYTES), guest_map(GUEST_BYTES));
    let (mut mem_a, mut mem_b) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = rig(16, false);
    let mut b = rig(16, false);
    b.disk.lock().bytes_mut().fill(0xbb);
    fill(&mut mem_a, DATA_AT, 16 * 512, 0xa0);
    assert_eq!(a.request_and_complete(&mut mem_a, req_type::OUT, 0, &[(DATA_AT, 16 * 512, false)]).1, 0);
    // A's disk has A's bytes, B's disk is untouched and never called.
    assert_eq!(a.disk.lock().bytes(), &read_back(&mem_a, DATA_AT, 16 * 512)[..]);
    assert!(b.disk.lock().bytes().iter().all(|&x| x == 0xbb));
    assert_eq!(b.backend_calls(), (0, 0, 0));
    // B reads its own disk: 0xbb, not A's data; nothing of A's guest memory changes.
    let before_a = read_back(&mem_a, 0, GUEST_BYTES as usize);
    assert_eq!(b.request_and_complete(&mut mem_b, req_type::IN, 0, &[(DATA_AT, 16 * 512, true)]).1, 0);
    assert!(read_back(&mem_b, DATA_AT, 16 * 512).iter().all(|&x| x == 0xbb));
    assert_eq!(read_back(&mem_a, 0, GUEST_BYTES as usize), before_a);
    // Sector numbers past B's capacity do not reach any other disk either.
    assert_eq!(b.request_and_complete(&mut mem_b, req_type::IN, 16, &[(DATA_AT, 512, true)]).1, blk_status::IOERR);
}

#[test]
fn a_stopped_or_unready_device_takes_nothing() {
    let map = guest_map(GUEST_BYTES);
    let mut mem = guest_memory(&map);
    let mut r = rig(8, false);
    r.request(&mut mem, req_type::FLUSH, 0, &[]);
    r.blk.reset_by_host();
    assert_eq!(r.blk.serve(&mut mem), Served::default());
    assert_eq!(r.backend_calls(), (0, 0, 0));
    // Power-on keeps the disk.
    r.disk.lock().bytes_mut()[0] = 9;
    r.blk.power_on(0xE000_0000).unwrap();
    assert_eq!(r.blk.transport().bar_decoded_at(), None, "memory decoding is off until the guest turns it on");
    assert_eq!(r.blk.backend().capacity_sectors(), 8);
    assert_eq!(r.disk.lock().bytes()[0], 9);
}
