//! A NIC that writes nonsense back: the driver drops, counts and carries on.

use super::*;
use crate::e1000e::{BUFFER_SIZE, MAX_FRAME, NicCounters, RING_SIZE, TransmitError};

/// Injects `frame` with `write_back`, then a good frame, and returns what the driver
/// delivered: the good frame must always come through.
fn inject_then_good(write_back: WriteBack, bad: &[u8]) -> (Vec<Vec<u8>>, NicCounters) {
    let (mut nic, fake) = up();
    assert!(fake.borrow_mut().inject(bad, write_back));
    assert!(fake.borrow_mut().inject(&frame(70, 42), WriteBack::default()));
    let got = drain(&mut nic, 16);
    assert_eq!(got.last(), Some(&frame(70, 42)), "the ring keeps working");
    (got, *nic.counters())
}

#[test]
fn lengths_outside_the_buffer_are_dropped() {
    for length in [0, BUFFER_SIZE as u16 + 1, u16::MAX] {
        let (got, c) = inject_then_good(WriteBack { length: Some(length), ..WriteBack::default() }, &frame(100, 1));
        assert_eq!(got.len(), 1, "length {length}");
        assert_eq!(c.rx_bad_length, 1);
        assert_eq!((c.rx_frames, c.rx_bytes), (1, 70));
    }
}

#[test]
fn frames_longer_than_the_mtu_are_dropped_as_oversized() {
    let (got, c) = inject_then_good(WriteBack::default(), &frame(MAX_FRAME + 4, 1));
    assert_eq!(got.len(), 1);
    assert_eq!((c.rx_oversized, c.rx_bad_length), (1, 0));
    // A length that claims the whole buffer, over what was stored: still inside it.
    let (got, c) =
        inject_then_good(WriteBack { length: Some(BUFFER_SIZE as u16), ..WriteBack::default() }, &frame(60, 1));
    assert_eq!(got.len(), 1);
    assert_eq!(c.rx_oversized, 1);
}

#[test]
fn frames_the_nic_flags_are_dropped_as_errors() {
    // CE, SE, SEQ, CXE, RXE each.
    for errors in [0x01, 0x02, 0x04, 0x10, 0x80] {
        let (got, c) = inject_then_good(WriteBack { errors, ..WriteBack::default() }, &frame(100, 1));
        assert_eq!(got.len(), 1, "errors {errors:#x}");
        assert_eq!(c.rx_errors, 1);
    }
    // The checksum bits are no reason: such a frame goes on, unvouched for.
    let checked = rx_status::DD | rx_status::EOP | rx_status::TCPCS | rx_status::IPCS;
    let (got, c) =
        inject_then_good(WriteBack { status: checked, errors: 0x60, ..WriteBack::default() }, &frame(100, 1));
    assert_eq!((got.len(), c.rx_errors, c.rx_checksum_bad, c.rx_checksum_good), (2, 0, 1, 0));
}

#[test]
fn a_frame_spanning_descriptors_is_dropped_whole() {
    let (mut nic, fake) = up();
    let part = WriteBack { status: rx_status::DD, ..WriteBack::default() };
    let last = WriteBack::default();
    {
        let mut f = fake.borrow_mut();
        f.inject(&frame(2048, 1), part);
        f.inject(&frame(2048, 2), part);
        f.inject(&frame(500, 3), last);
        f.inject(&frame(90, 4), WriteBack::default());
    }
    // Across two calls: the state survives the call boundary.
    assert!(drain(&mut nic, 2).is_empty());
    assert_eq!(drain(&mut nic, 16), [frame(90, 4)]);
    let c = nic.counters();
    assert_eq!((c.rx_spanning, c.rx_frames), (1, 1), "one frame dropped, counted once");
}

#[test]
fn a_buffer_address_the_nic_overwrote_is_restored() {
    let (mut nic, fake) = up();
    let original = fake.borrow().rx_descriptor(0).buffer;
    fake.borrow_mut().inject(&frame(100, 1), WriteBack { buffer: Some(0xdead_0000), ..WriteBack::default() });
    assert_eq!(drain(&mut nic, 4), [frame(100, 1)], "the driver reads its own buffer, not the address written");
    let d = fake.borrow().rx_descriptor(0);
    assert_eq!((d.buffer, d.status, d.length), (original, 0, 0));
}

#[test]
fn done_bits_on_descriptors_not_handed_over_are_ignored() {
    let (mut nic, fake) = up();
    // DD on the receive descriptor the driver holds back (the last one) and on a
    // transmit descriptor never used.
    {
        let mut f = fake.borrow_mut();
        let rx_last = f.ring_base(regs::RDBAL, regs::RDBAH) + (u64::from(RING_SIZE) - 1) * 16;
        f.dma_bytes_mut(rx_last + 12, 2).copy_from_slice(&[rx_status::DD | rx_status::EOP, 0]);
        let tx_first = f.ring_base(regs::TDBAL, regs::TDBAH);
        f.dma_bytes_mut(tx_first + 12, 1)[0] = tx_status::DD;
    }
    assert_eq!(nic.reclaim(), 0);
    assert!(drain(&mut nic, usize::MAX).is_empty());
    assert_eq!(*nic.counters(), NicCounters::default());
}

#[test]
fn a_nic_that_never_completes_fills_the_ring_without_hanging() {
    let (mut nic, fake) = up();
    fake.borrow_mut().hold_transmit = true;
    let mut accepted = 0;
    for tag in 0..1000 {
        if nic.transmit(&frame(60, tag)).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, usize::from(RING_SIZE) - 1);
    assert_eq!(nic.counters().tx_full, 1000 - accepted as u64);
    assert_eq!(nic.transmit(&frame(60, 0)), Err(TransmitError::Full));
    assert_eq!(nic.counters().tx_frames, 0);
}

#[test]
fn head_registers_outside_the_ring_are_reported_not_trusted() {
    let (mut nic, fake) = up();
    fake.borrow_mut().inject(&frame(60, 1), WriteBack::default());
    let heads = nic.ring_heads().unwrap();
    assert_eq!((heads.rx, heads.tx), (1, 0));
    fake.borrow_mut().regs[reg(regs::RDH)] = u32::from(RING_SIZE);
    assert_eq!(nic.ring_heads(), None);
    fake.borrow_mut().regs[reg(regs::RDH)] = 0;
    fake.borrow_mut().regs[reg(regs::TDH)] = 0x1_0000;
    assert_eq!(nic.ring_heads(), None);
    fake.borrow_mut().absent = true;
    assert_eq!(nic.ring_heads(), None);
    assert_eq!(nic.counters().bad_head, 3);
    // The data path never used them: the frame is still there.
    fake.borrow_mut().absent = false;
    assert_eq!(drain(&mut nic, 4), [frame(60, 1)]);
}

#[test]
fn one_receive_call_stops_before_the_descriptor_held_back() {
    let (mut nic, fake) = up();
    for tag in 0..u32::from(RING_SIZE) - 1 {
        assert!(fake.borrow_mut().inject(&frame(64, tag), WriteBack::default()));
    }
    // A NIC that also writes back the one descriptor it was not given.
    {
        let mut f = fake.borrow_mut();
        let held_back = f.ring_base(regs::RDBAL, regs::RDBAH) + (u64::from(RING_SIZE) - 1) * 16;
        f.dma_bytes_mut(held_back + 8, 6).copy_from_slice(&[64, 0, 0, 0, rx_status::DD | rx_status::EOP, 0]);
    }
    assert_eq!(drain(&mut nic, usize::MAX).len(), usize::from(RING_SIZE) - 1);
    assert_eq!(nic.counters().rx_frames, u64::from(RING_SIZE) - 1);
}

/// A small deterministic generator for the storm below.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn a_storm_of_random_write_backs_never_breaks_the_driver() {
    let (mut nic, fake) = up();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut injected = 0u64;
    let mut delivered = 0u64;
    for round in 0..4000 {
        let len = 14 + rng.below(2048 - 14) as usize;
        let write_back = WriteBack {
            length: (rng.below(2) == 0).then(|| rng.next() as u16),
            status: rng.next() as u8 | rx_status::DD,
            errors: if rng.below(4) == 0 { rng.next() as u8 } else { 0 },
            buffer: (rng.below(8) == 0).then(|| rng.next()),
        };
        if fake.borrow_mut().inject(&frame(len, round), write_back) {
            injected += 1;
        }
        if rng.below(3) == 0 {
            let _ = nic.transmit(&frame(14 + rng.below(1600) as usize, round));
        }
        if rng.below(10) == 0 {
            let budget = rng.below(300) as usize;
            nic.receive(budget, |f, _| {
                assert!(!f.is_empty() && f.len() <= MAX_FRAME);
                delivered += 1;
            });
        }
    }
    nic.receive(usize::MAX, |_, _| delivered += 1);
    let c = *nic.counters();
    assert_eq!(c.rx_frames, delivered);
    let dropped = c.rx_errors + c.rx_spanning + c.rx_oversized + c.rx_bad_length;
    assert!(delivered + dropped <= injected, "no descriptor counted twice");
    assert!(delivered > 0 && dropped > 0, "the storm exercised both outcomes");

    // Afterwards, an ordinary frame (after one ending any spanning frame) comes through.
    fake.borrow_mut().inject(&frame(60, 1), WriteBack::default());
    fake.borrow_mut().inject(&frame(61, 2), WriteBack::default());
    assert_eq!(drain(&mut nic, 16).last(), Some(&frame(61, 2)));
}
