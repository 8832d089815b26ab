use super::*;
use crate::devices::bus::MmioDevice;
use crate::devices::virtio::fake_driver::{DriverRings, bring_up, guest_map, guest_memory};
use crate::devices::virtio::status;
use crate::hw::AccessSize;
use crate::memory::guest::{GuestMemoryMap, VecHostMemory};
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

/// Queues `data` for transmission as the driver does: the header in one buffer, the
/// frame split over two.
fn send(side: &mut Side, mem: &mut GuestMemory<'_, VecHostMemory>, at: u64, data: &[u8]) -> u16 {
    mem.write_bytes(GuestPhysAddr::new(at), &[0x55; NET_HDR_LEN]).unwrap();
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
    Link::new(LinkEnd { device: a.net.clone(), vm_id: 1 }, LinkEnd { device: b.net.clone(), vm_id: 2 })
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
    // B got exactly the frame behind a plain header (the sender's header bytes are not
    // passed on: no offloads were negotiated).
    assert_eq!(b.rx.take_used(&mb), [(u32::from(b_head), 12 + 98)]);
    assert_eq!(read(&mb, 0x40_000, NET_HDR_LEN), PLAIN_RX_HDR);
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
    let mut ab = Link::new(LinkEnd { device: a.net.clone(), vm_id: 1 }, LinkEnd { device: b.net.clone(), vm_id: 2 });
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
