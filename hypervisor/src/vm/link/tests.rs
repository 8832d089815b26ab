use super::*;
use crate::devices::bus::MmioDevice;
use crate::devices::virtio::fake_driver::{DriverRings, bring_up, guest_map, guest_memory};
use crate::devices::virtio::net_header::{HDR_F_DATA_VALID, HDR_F_NEEDS_CSUM, NetHeader};
use crate::devices::virtio::status;
use crate::hw::AccessSize;
use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::{GuestMemoryAccess, GuestMemoryMap, VecHostMemory};
use alloc::vec::Vec;

/// One VM's side: its device and its driver's rings (receive at 0x1000, transmit at
/// 0x4000, frames from 0x10000).
struct Side {
    net: Shared<VirtioNet>,
    rx: DriverRings,
    tx: DriverRings,
}

fn side(mem: &mut GuestMemory<'_, VecHostMemory>, last_mac_byte: u8, tx_size: u16) -> Side {
    let net = Shared::new(VirtioNet::new([0x0a, 0xb3, 0xec, 0, 0, last_mac_byte], 1500).unwrap());
    let rx = DriverRings::new(0x1000, 128);
    let tx = DriverRings::new(0x8000, tx_size);
    bring_up(&mut *net.lock(), &[&rx, &tx]);
    // No interrupt suppression unless a test asks for it.
    rx.set_used_event(mem, 0);
    tx.set_used_event(mem, 0);
    Side { net, rx, tx }
}

fn map() -> GuestMemoryMap {
    guest_map(0x20_0000)
}

/// A frame of `len` bytes whose bytes say which frame it is.
fn frame(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_mul(31).wrapping_add(i as u8)).collect()
}

/// Queues `data` for transmission as the driver does: the header (`header`) in one
/// buffer, the frame split over two.
fn send_with(
    side: &mut Side,
    mem: &mut GuestMemory<'_, VecHostMemory>,
    at: u64,
    header: &NetHeader,
    data: &[u8],
) -> u16 {
    mem.write_bytes(GuestPhysAddr::new(at), &header.to_bytes()).unwrap();
    let split = data.len() / 2;
    mem.write_bytes(GuestPhysAddr::new(at + 0x100), &data[..split]).unwrap();
    mem.write_bytes(GuestPhysAddr::new(at + 0x10_000), &data[split..]).unwrap();
    side.tx.add_chain(
        mem,
        &[
            (at, NET_HDR_LEN as u32, false),
            (at + 0x100, split as u32, false),
            (at + 0x10_000, (data.len() - split) as u32, false),
        ],
    )
}

/// Queues `data` with a plain header (no checksum asked).
fn send(side: &mut Side, mem: &mut GuestMemory<'_, VecHostMemory>, at: u64, data: &[u8]) -> u16 {
    send_with(side, mem, at, &NetHeader::default(), data)
}

/// Posts a receive buffer of `len` bytes at `at` (header and data in one buffer).
fn post(side: &mut Side, mem: &mut GuestMemory<'_, VecHostMemory>, at: u64, len: u32) -> u16 {
    side.rx.add_chain(mem, &[(at, len, true)])
}

fn read(mem: &GuestMemory<'_, VecHostMemory>, at: u64, len: usize) -> Vec<u8> {
    let mut out = alloc::vec![0; len];
    mem.read_bytes(GuestPhysAddr::new(at), &mut out).unwrap();
    out
}

fn link(a: &Side, b: &Side) -> Link {
    Link::new(
        LinkEnd { device: a.net.clone(), vm_id: 1, vouches_for_checksums: false },
        LinkEnd { device: b.net.clone(), vm_id: 2, vouches_for_checksums: false },
    )
}

#[test]
fn a_frame_goes_from_a_to_b_and_nowhere_else() {
    let (map_a, map_b, map_c) = (map(), map(), map());
    let (mut ma, mut mb, mut mc) = (guest_memory(&map_a), guest_memory(&map_b), guest_memory(&map_c));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut c = side(&mut mc, 3, 16);
    let mut ab = link(&a, &b);
    let mut bc = link(&b, &c);
    // Everyone has receive buffers; B's is split header/data as Linux may post it.
    post(&mut a, &mut ma, 0x40_000, 1536);
    let b_head = b.rx.add_chain(&mut mb, &[(0x40_000, NET_HDR_LEN as u32, true), (0x50_000, 1524, true)]);
    post(&mut c, &mut mc, 0x40_000, 1536);
    let data = frame(7, 98);
    let a_head = send(&mut a, &mut ma, 0x20_000, &data);

    assert_eq!(ab.poll(&mut ma, &mut mb), LinkPoll { frames: 1, more: false });
    assert_eq!(bc.poll(&mut mb, &mut mc), LinkPoll { frames: 0, more: false });
    // B got exactly the frame behind a plain header with one buffer.
    assert_eq!(b.rx.take_used(&mb), [(u32::from(b_head), 12 + 98)]);
    assert_eq!(read(&mb, 0x40_000, NET_HDR_LEN), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(read(&mb, 0x50_000, 98), data);
    // A's buffer came back; neither A nor C received anything.
    assert_eq!(a.tx.take_used(&ma), [(u32::from(a_head), 0)]);
    assert!(a.rx.take_used(&ma).is_empty());
    assert!(c.rx.take_used(&mc).is_empty());
    assert_eq!(read(&mc, 0x40_000, 16), [0; 16]);
    // Both sides were interrupted (INTx here: MSI-X is off): A for its transmit queue,
    // B for its receive queue; C not.
    for (side, m, isr) in [(&a, 1u8, true), (&b, 1, true), (&c, 0, false)] {
        let mut net = side.net.lock();
        assert_eq!(net.transport().intx_asserted(), isr);
        assert_eq!(net.read(0x800, AccessSize::Byte), u64::from(m));
    }
    let counters = ab.counters();
    assert_eq!((counters[0].frames, counters[0].bytes), (1, 98));
    assert_eq!(counters[1], DirectionCounters::default());
}

#[test]
fn frames_are_dropped_and_counted_when_the_receiver_has_no_buffer() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    post(&mut b, &mut mb, 0x40_000, 1536);
    for i in 0..3 {
        send(&mut a, &mut ma, 0x20_000 + i * 0x400, &frame(i as u8, 60));
    }
    assert_eq!(ab.poll(&mut ma, &mut mb), LinkPoll { frames: 3, more: false });
    assert_eq!(b.rx.take_used(&mb).len(), 1);
    assert_eq!(a.tx.take_used(&ma).len(), 3, "the sender gets every buffer back");
    let c = ab.counters()[0];
    assert_eq!((c.frames, c.dropped_no_buffer), (1, 2));
    // The first frame is the one that arrived.
    assert_eq!(read(&mb, 0x40_000 + 12, 60), frame(0, 60));
}

#[test]
fn a_buffer_too_small_is_kept_for_a_frame_that_fits() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    let head = post(&mut b, &mut mb, 0x40_000, 12 + 100);
    send(&mut a, &mut ma, 0x20_000, &frame(1, 101));
    ab.poll(&mut ma, &mut mb);
    assert!(b.rx.take_used(&mb).is_empty());
    assert_eq!(ab.counters()[0].dropped_buffer_too_small, 1);
    send(&mut a, &mut ma, 0x20_400, &frame(2, 100));
    ab.poll(&mut ma, &mut mb);
    assert_eq!(b.rx.take_used(&mb), [(u32::from(head), 112)]);
    assert_eq!(read(&mb, 0x40_000 + 12, 100), frame(2, 100));
}

#[test]
fn one_poll_carries_a_bounded_number_of_frames() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 128);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    for i in 0..100u64 {
        post(&mut b, &mut mb, 0x40_000 + i * 0x800, 1536);
    }
    for i in 0..100u64 {
        send(&mut a, &mut ma, 0x20_000 + i * 0x40, &frame(i as u8, 20));
    }
    assert_eq!(ab.poll(&mut ma, &mut mb), LinkPoll { frames: FRAMES_PER_POLL, more: true });
    assert_eq!(a.tx.take_used(&ma).len(), FRAMES_PER_POLL as usize);
    assert_eq!(ab.poll(&mut ma, &mut mb), LinkPoll { frames: 100 - FRAMES_PER_POLL, more: false });
    assert_eq!(ab.poll(&mut ma, &mut mb), LinkPoll { frames: 0, more: false });
    // With EVENT_IDX the device asked to hear about the next frame only.
    assert_eq!(a.tx.avail_event(&ma), 100);
}

#[test]
fn event_idx_holds_back_the_receivers_interrupt() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    // B wants an interrupt only once its used index passes 1 (the second frame).
    b.rx.set_used_event(&mut mb, 1);
    for i in 0..2u64 {
        post(&mut b, &mut mb, 0x40_000 + i * 0x800, 1536);
    }
    send(&mut a, &mut ma, 0x20_000, &frame(1, 60));
    ab.poll(&mut ma, &mut mb);
    assert!(!b.net.lock().transport().intx_asserted());
    send(&mut a, &mut ma, 0x20_400, &frame(2, 60));
    ab.poll(&mut ma, &mut mb);
    assert!(b.net.lock().transport().intx_asserted());
}

#[test]
fn a_receiver_that_is_not_running_or_a_link_down_loses_the_frames() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    post(&mut b, &mut mb, 0x40_000, 1536);
    // B's driver reset its device; then B's link is down; then A's.
    b.net.lock().write(0x14, AccessSize::Byte, 0);
    send(&mut a, &mut ma, 0x20_000, &frame(1, 60));
    ab.poll(&mut ma, &mut mb);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = Link::new(
        LinkEnd { device: a.net.clone(), vm_id: 1, vouches_for_checksums: false },
        LinkEnd { device: b.net.clone(), vm_id: 2, vouches_for_checksums: false },
    );
    post(&mut b, &mut mb, 0x40_000, 1536);
    b.net.lock().set_link_up(false);
    send(&mut a, &mut ma, 0x20_400, &frame(2, 60));
    ab.poll(&mut ma, &mut mb);
    b.net.lock().set_link_up(true);
    a.net.lock().set_link_up(false);
    send(&mut a, &mut ma, 0x20_800, &frame(3, 60));
    ab.poll(&mut ma, &mut mb);
    assert_eq!(ab.counters()[0].dropped_receiver_down, 2);
    assert_eq!(a.tx.take_used(&ma).len(), 3, "the sender gets every buffer back");
    assert!(b.rx.take_used(&mb).is_empty());
    // Link up again: the same buffer takes the next frame.
    a.net.lock().set_link_up(true);
    send(&mut a, &mut ma, 0x20_c00, &frame(4, 60));
    ab.poll(&mut ma, &mut mb);
    assert_eq!(b.rx.take_used(&mb).len(), 1);
}

#[test]
fn a_bad_chain_resets_only_the_sender_and_logs_once() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    post(&mut b, &mut mb, 0x40_000, 1536);
    // A transmit descriptor that loops onto itself.
    a.tx.write_desc(&mut ma, 0, 0x20_000, 64, 1, 0);
    a.tx.publish(&mut ma, 0);
    ab.poll(&mut ma, &mut mb);
    assert_ne!(a.net.lock().transport().status() & status::NEEDS_RESET, 0);
    assert_eq!(b.net.lock().transport().status() & status::NEEDS_RESET, 0);
    assert!(a.net.lock().take_error().is_none(), "the poll logged it and took it");
    // The broken device carries nothing more, and B still works with others.
    send(&mut a, &mut ma, 0x20_400, &frame(1, 60));
    assert_eq!(ab.poll(&mut ma, &mut mb), LinkPoll { frames: 0, more: false });
    assert!(b.rx.take_used(&mb).is_empty());
}

#[test]
fn a_writable_transmit_buffer_or_an_unmapped_one_is_the_senders_fault() {
    for buffers in
        [[(0x20_000u64, 12u32, false), (0x20_100, 60, true)], [(0x20_000, 12, false), (0x1F_FFF0, 60, false)]]
    {
        let (map_a, map_b) = (map(), map());
        let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
        let mut a = side(&mut ma, 1, 16);
        let mut b = side(&mut mb, 2, 16);
        let mut ab = link(&a, &b);
        post(&mut b, &mut mb, 0x40_000, 1536);
        a.tx.add_chain(&mut ma, &buffers);
        ab.poll(&mut ma, &mut mb);
        assert_ne!(a.net.lock().transport().status() & status::NEEDS_RESET, 0, "{buffers:x?}");
        assert!(b.rx.take_used(&mb).is_empty());
    }
}

#[test]
fn a_read_only_receive_buffer_is_the_receivers_fault() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    b.rx.add_chain(&mut mb, &[(0x40_000, 1536, false)]);
    send(&mut a, &mut ma, 0x20_000, &frame(1, 60));
    send(&mut a, &mut ma, 0x20_400, &frame(2, 60));
    ab.poll(&mut ma, &mut mb);
    assert_ne!(b.net.lock().transport().status() & status::NEEDS_RESET, 0);
    assert_eq!(a.net.lock().transport().status() & status::NEEDS_RESET, 0);
    assert_eq!(a.tx.take_used(&ma).len(), 2, "the sender goes on");
    assert_eq!(ab.counters()[0].dropped_receiver_down, 2);
}

#[test]
fn bad_lengths_are_dropped_and_counted() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    post(&mut b, &mut mb, 0x40_000, 1536);
    // Only a header; a header and 65551 bytes.
    a.tx.add_chain(&mut ma, &[(0x20_000, 12, false)]);
    a.tx.add_chain(&mut ma, &[(0x20_000, 12, false), (0x30_000, 65_551, false)]);
    ab.poll(&mut ma, &mut mb);
    assert_eq!(ab.counters()[0].dropped_bad_length, 2);
    assert_eq!(a.net.lock().transport().status() & status::NEEDS_RESET, 0);
    assert!(b.rx.take_used(&mb).is_empty());
}

/// xorshift64*: a fixed pseudo-random sequence, so a failure repeats.
struct Scribbler(u64);

impl Scribbler {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Mostly values below `plausible`, one in 32 anything.
    fn value(&mut self, plausible: u64) -> u64 {
        if self.next().is_multiple_of(32) { self.next() } else { self.next() % plausible }
    }
}

#[test]
fn garbage_rings_cost_bounded_work_and_never_panic() {
    let (mut delivered, mut resets) = (0u64, 0u32);
    for seed in 1..300u64 {
        let (map_a, map_b) = (map(), map());
        let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
        let a = side(&mut ma, 1, 16);
        let b = side(&mut mb, 2, 16);
        let mut ab = link(&a, &b);
        let mut rng = Scribbler(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for (rings, mem, write) in [(&a.tx, &mut ma, 0u16), (&b.rx, &mut mb, 2)] {
            for index in 0..rings.size {
                let addr = rng.value(0x1F_0000);
                let len = if rng.next().is_multiple_of(8) { rng.value(70_000) } else { rng.value(2000) } as u32;
                // Usually the right direction, with or without a next buffer.
                let flags = write | rng.value(2) as u16;
                let next = rng.value(u64::from(rings.size) + 2) as u16;
                rings.write_desc(mem, index, addr, len, flags, next);
                let slot = GuestPhysAddr::new(rings.avail + 4 + 2 * u64::from(index));
                crate::memory::guest::write_obj(mem, slot, rng.value(u64::from(rings.size) + 2) as u16).unwrap();
            }
            let idx = GuestPhysAddr::new(rings.avail + 2);
            crate::memory::guest::write_obj(mem, idx, rng.value(u64::from(rings.size) + 4) as u16).unwrap();
        }
        for _ in 0..4 {
            let poll = ab.poll(&mut ma, &mut mb);
            assert!(poll.frames <= 2 * FRAMES_PER_POLL, "seed {seed}: {poll:?}");
        }
        let [to_b, to_a] = ab.counters();
        assert_eq!(to_a, DirectionCounters::default(), "seed {seed}: B sent nothing");
        // Whatever arrived fit in the receiver's buffers.
        assert!(to_b.bytes <= to_b.frames * MAX_FRAME_LEN, "seed {seed}");
        delivered += to_b.frames;
        for side in [&a, &b] {
            resets += u32::from(side.net.lock().transport().status() & status::NEEDS_RESET != 0);
        }
    }
    // The garbage reached both outcomes: frames carried, and devices reset.
    assert!(delivered > 0 && resets > 0, "delivered {delivered}, resets {resets}");
}

/// An Ethernet + IPv4 + UDP frame whose UDP checksum field holds the pseudo-header sum,
/// as Linux leaves it for checksum offload; returns the frame and the correct checksum.
fn udp_frame_needing_checksum(payload_len: usize) -> (Vec<u8>, u16) {
    let mut f = alloc::vec![0u8; 14 + 20 + 8 + payload_len];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let udp_len = (8 + payload_len) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&5000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5001u16.to_be_bytes());
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = (i * 7 + 1) as u8;
    }
    // Reference: the ones' complement sum over pseudo-header and UDP segment, computed
    // here independently of the device's code.
    let mut words: Vec<u16> = Vec::new();
    let mut pseudo = alloc::vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 17];
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    let mut bytes = pseudo.clone();
    bytes.extend_from_slice(&f[34..]);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    words.extend(bytes.chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]])));
    let fold = |words: &[u16]| {
        let mut sum: u32 = words.iter().map(|&w| u32::from(w)).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    };
    let full = !fold(&words);
    // What the driver leaves in the field: the folded pseudo-header sum (not complemented).
    let pseudo_words: Vec<u16> = pseudo.chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]])).collect();
    f[40..42].copy_from_slice(&fold(&pseudo_words).to_be_bytes());
    (f, if full == 0 { 0xffff } else { full })
}

const CSUM_HEADER: NetHeader = NetHeader {
    flags: HDR_F_NEEDS_CSUM,
    gso_type: 0,
    hdr_len: 0,
    gso_size: 0,
    csum_start: 34,
    csum_offset: 6,
    num_buffers: 0,
};

#[test]
fn a_checksum_request_travels_to_a_receiver_that_takes_it() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    post(&mut b, &mut mb, 0x40_000, 1536);
    let (frame, _) = udp_frame_needing_checksum(301);
    send_with(&mut a, &mut ma, 0x20_000, &CSUM_HEADER, &frame);
    ab.poll(&mut ma, &mut mb);
    let header = NetHeader::parse(&read(&mb, 0x40_000, NET_HDR_LEN).try_into().unwrap());
    assert_eq!((header.flags, header.csum_start, header.csum_offset, header.num_buffers), (1, 34, 6, 1));
    assert_eq!(read(&mb, 0x40_000 + 12, frame.len()), frame, "the frame itself is untouched");
}

#[test]
fn a_verified_checksum_is_told_only_when_the_service_end_vouches_for_it() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut desktop = side(&mut ma, 1, 16);
    let mut service = side(&mut mb, 2, 16);
    let mut wire = Link::new(
        LinkEnd { device: desktop.net.clone(), vm_id: 1, vouches_for_checksums: false },
        LinkEnd { device: service.net.clone(), vm_id: 2, vouches_for_checksums: true },
    );
    let valid = NetHeader { flags: HDR_F_DATA_VALID, ..NetHeader::default() };
    let frame = [0x5au8; 60];
    // Service to desktop: the desktop is told.
    post(&mut desktop, &mut ma, 0x40_000, 1536);
    send_with(&mut service, &mut mb, 0x20_000, &valid, &frame);
    wire.poll(&mut ma, &mut mb);
    assert_eq!(read(&ma, 0x40_000, NET_HDR_LEN)[0], HDR_F_DATA_VALID);
    assert_eq!(read(&ma, 0x40_000 + 12, frame.len()), frame);
    // Desktop to service: the claim is dropped, the frame still goes.
    post(&mut service, &mut mb, 0x50_000, 1536);
    send_with(&mut desktop, &mut ma, 0x30_000, &valid, &frame);
    wire.poll(&mut ma, &mut mb);
    assert_eq!(read(&mb, 0x50_000, NET_HDR_LEN)[0], 0);
    assert_eq!(read(&mb, 0x50_000 + 12, frame.len()), frame);
    assert_eq!(wire.counters()[0].frames, 1);
    assert_eq!(wire.counters()[1].frames, 1);
}

#[test]
fn the_wire_completes_a_checksum_for_a_receiver_that_does_not_take_requests() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    // B's driver declines GUEST_CSUM (bit 1): reset and negotiate without it.
    let net_b = Shared::new(VirtioNet::new([0x0a, 0xb3, 0xec, 0, 0, 2], 1500).unwrap());
    let (rx, tx) = (DriverRings::new(0x1000, 128), DriverRings::new(0x8000, 16));
    {
        let mut dev = net_b.lock();
        bring_up(&mut *dev, &[&rx, &tx]);
        assert_ne!(dev.negotiated() & 2, 0);
        // Again, this time clearing GUEST_CSUM from what the driver accepts.
        dev.write(0x14, AccessSize::Byte, 0);
        dev.write(0x14, AccessSize::Byte, 3);
        for select in 0..2u64 {
            dev.write(0x00, AccessSize::Dword, select);
            let offered = dev.read(0x04, AccessSize::Dword) & if select == 0 { !2 } else { !0 };
            dev.write(0x08, AccessSize::Dword, select);
            dev.write(0x0C, AccessSize::Dword, offered);
        }
        dev.write(0x14, AccessSize::Byte, 11);
        for (i, r) in [&rx, &tx].into_iter().enumerate() {
            dev.write(0x16, AccessSize::Word, i as u64);
            dev.write(0x18, AccessSize::Word, u64::from(r.size));
            dev.write(0x20, AccessSize::Qword, r.desc);
            dev.write(0x28, AccessSize::Qword, r.avail);
            dev.write(0x30, AccessSize::Qword, r.used);
            dev.write(0x1C, AccessSize::Word, 1);
        }
        dev.write(0x14, AccessSize::Byte, 15);
        assert_eq!(dev.negotiated() & 2, 0);
        assert!(dev.carries_frames());
    }
    let mut b = Side { net: net_b, rx, tx };
    let mut ab = link(&a, &b);
    // Odd and even payloads; the receive buffer split at an odd offset inside the UDP
    // header, so the checksum field straddles two buffers.
    for (i, payload) in [301usize, 1000].into_iter().enumerate() {
        let at = 0x40_000 + i as u64 * 0x1000;
        b.rx.add_chain(&mut mb, &[(at, 12 + 41, true), (at + 0x800, 1536, true)]);
        let (frame, checksum) = udp_frame_needing_checksum(payload);
        send_with(&mut a, &mut ma, 0x20_000 + i as u64 * 0x400, &CSUM_HEADER, &frame);
        ab.poll(&mut ma, &mut mb);
        assert_eq!(read(&mb, at, NET_HDR_LEN), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "no request passed on");
        let mut got = read(&mb, at + 12, 41);
        got.extend(read(&mb, at + 0x800, frame.len() - 41));
        assert_eq!(u16::from_be_bytes([got[40], got[41]]), checksum, "payload {payload}");
        let mut expected = frame.clone();
        expected[40..42].copy_from_slice(&checksum.to_be_bytes());
        assert_eq!(got, expected, "only the checksum field changed");
    }
    assert_eq!(ab.counters()[0].frames, 2);
}

#[test]
fn headers_asking_for_what_was_not_negotiated_are_dropped() {
    let (map_a, map_b) = (map(), map());
    let (mut ma, mut mb) = (guest_memory(&map_a), guest_memory(&map_b));
    let mut a = side(&mut ma, 1, 16);
    let mut b = side(&mut mb, 2, 16);
    let mut ab = link(&a, &b);
    post(&mut b, &mut mb, 0x40_000, 1536);
    let (frame, _) = udp_frame_needing_checksum(20);
    // Segmentation (not offered), and a checksum field past the frame's end.
    send_with(&mut a, &mut ma, 0x20_000, &NetHeader { gso_type: 1, ..NetHeader::default() }, &frame);
    send_with(&mut a, &mut ma, 0x20_400, &NetHeader { csum_start: 60, ..CSUM_HEADER }, &frame);
    ab.poll(&mut ma, &mut mb);
    assert_eq!(ab.counters()[0].dropped_bad_header, 2);
    assert!(b.rx.take_used(&mb).is_empty());
    assert_eq!(a.tx.take_used(&ma).len(), 2);
}
