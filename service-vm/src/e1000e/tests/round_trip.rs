use super::*;
use crate::e1000e::{MAX_FRAME, RING_SIZE, TransmitError};

#[test]
fn frames_sent_reach_the_wire_unchanged_and_short_ones_padded() {
    let (mut nic, fake) = up();
    let sent = [frame(MAX_FRAME, 1), frame(60, 2), frame(42, 3), frame(14, 4)];
    for f in &sent {
        nic.transmit(f).unwrap();
    }
    // Each transmit reclaims what is done before it; the last one is left.
    assert_eq!(nic.reclaim(), 1);
    assert_eq!(nic.reclaim(), 0);
    let wire = fake.borrow().wire.clone();
    assert_eq!(wire.len(), 4);
    assert_eq!(wire[0], sent[0]);
    assert_eq!(wire[1], sent[1]);
    // Under 60 bytes: padded with zeros by the NIC (TCTL.PSP), not by the driver.
    assert_eq!(wire[2].len(), 60);
    assert_eq!(wire[2][..42], sent[2][..]);
    assert!(wire[2][42..].iter().all(|&b| b == 0));
    assert_eq!(wire[3].len(), 60);
    let c = nic.counters();
    assert_eq!((c.tx_frames, c.tx_bytes), (4, (MAX_FRAME + 60 + 42 + 14) as u64));
}

#[test]
fn frames_of_bad_length_are_refused_and_counted() {
    let (mut nic, fake) = up();
    assert_eq!(nic.transmit(&[0; 13]), Err(TransmitError::BadLength(13)));
    assert_eq!(nic.transmit(&[]), Err(TransmitError::BadLength(0)));
    assert_eq!(nic.transmit(&[0; MAX_FRAME + 1]), Err(TransmitError::BadLength(MAX_FRAME + 1)));
    assert_eq!(nic.counters().tx_bad_length, 3);
    assert!(fake.borrow().wire.is_empty());
    assert!(!fake.borrow().writes.iter().any(|&(o, v)| o == regs::TDT && v != 0), "tail never moved");
}

#[test]
fn frames_received_come_out_in_order_and_counted() {
    let (mut nic, fake) = up();
    let frames = [frame(60, 1), frame(MAX_FRAME, 2), frame(342, 3)];
    for f in &frames {
        assert!(fake.borrow_mut().inject(f, WriteBack::default()));
    }
    let got = drain(&mut nic, 64);
    assert_eq!(got, frames);
    let c = nic.counters();
    assert_eq!((c.rx_frames, c.rx_bytes), (3, (60 + MAX_FRAME + 342) as u64));
    assert_eq!(fake.borrow().value(regs::RDT), 2, "the three descriptors given back");
    assert!(drain(&mut nic, 64).is_empty(), "nothing delivered twice");
}

#[test]
fn receive_looks_at_no_more_than_its_budget() {
    let (mut nic, fake) = up();
    for tag in 0..20 {
        fake.borrow_mut().inject(&frame(100, tag), WriteBack::default());
    }
    assert_eq!(drain(&mut nic, 8).len(), 8);
    assert_eq!(drain(&mut nic, usize::MAX).len(), 12);
}

#[test]
fn both_rings_wrap_around_many_times() {
    let (mut nic, fake) = up();
    let total = 3 * u32::from(RING_SIZE) + 17;
    let mut received = Vec::new();
    for tag in 0..total {
        let f = frame(64 + (tag as usize % 1400), tag);
        nic.transmit(&f).unwrap();
        // Loop the wire back into the receive ring, a few frames at a time.
        let sent = fake.borrow_mut().wire.pop().unwrap();
        assert_eq!(sent, f);
        assert!(fake.borrow_mut().inject(&sent, WriteBack::default()));
        if tag % 5 == 0 {
            received.extend(drain(&mut nic, 16));
        }
    }
    received.extend(drain(&mut nic, usize::MAX));
    assert_eq!(received.len(), total as usize);
    for (tag, f) in received.iter().enumerate() {
        assert_eq!(*f, frame(64 + (tag % 1400), tag as u32));
    }
    assert_eq!(fake.borrow().missed, 0);
    nic.reclaim();
    let c = nic.counters();
    assert_eq!((c.tx_frames, c.rx_frames), (u64::from(total), u64::from(total)));
    assert_eq!(c.tx_bytes, c.rx_bytes);
}

#[test]
fn full_transmit_ring_refuses_until_the_nic_catches_up() {
    let (mut nic, fake) = up();
    fake.borrow_mut().hold_transmit = true;
    for tag in 0..u32::from(RING_SIZE) - 1 {
        nic.transmit(&frame(100, tag)).unwrap();
    }
    assert_eq!(nic.transmit(&frame(100, 999)), Err(TransmitError::Full));
    assert_eq!(nic.counters().tx_full, 1);
    assert_eq!(fake.borrow().value(regs::TDT), u32::from(RING_SIZE) - 1, "tail never reaches the head");

    fake.borrow_mut().send_pending();
    nic.transmit(&frame(100, 1000)).unwrap();
    fake.borrow_mut().send_pending();
    let wire = fake.borrow().wire.clone();
    assert_eq!(wire.len(), usize::from(RING_SIZE));
    assert_eq!(*wire.last().unwrap(), frame(100, 1000));
    assert_eq!(wire[0], frame(100, 0));
}

#[test]
fn a_full_receive_ring_makes_the_nic_miss_frames_not_the_driver_overrun() {
    let (mut nic, fake) = up();
    let given = usize::from(RING_SIZE) - 1;
    for tag in 0..given as u32 + 5 {
        fake.borrow_mut().inject(&frame(80, tag), WriteBack::default());
    }
    assert_eq!(fake.borrow().missed, 5);
    let got = drain(&mut nic, usize::MAX);
    assert_eq!(got.len(), given);
    assert!(fake.borrow_mut().inject(&frame(80, 7), WriteBack::default()), "descriptors given back");
    assert_eq!(drain(&mut nic, 4), [frame(80, 7)]);
}

#[test]
fn queued_frames_go_out_with_one_tail_write() {
    let (mut nic, fake) = up();
    let tdt_writes = |fake: &Shared| fake.borrow().writes.iter().filter(|(r, _)| *r == regs::TDT).count();
    let before = tdt_writes(&fake);
    let sent: Vec<Vec<u8>> = (0..5).map(|tag| frame(100 + tag, tag as u32)).collect();
    for f in &sent {
        nic.queue_transmit(f).unwrap();
    }
    assert!(fake.borrow().wire.is_empty(), "nothing leaves before the flush");
    assert_eq!(tdt_writes(&fake), before);
    assert!(nic.flush_transmit());
    assert_eq!(tdt_writes(&fake), before + 1);
    assert_eq!(fake.borrow().wire, sent);
    assert!(!nic.flush_transmit(), "nothing new queued: no write");
    assert_eq!(tdt_writes(&fake), before + 1);
    assert_eq!(nic.reclaim(), 5);
}
