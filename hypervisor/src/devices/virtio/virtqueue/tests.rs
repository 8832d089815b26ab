use super::*;
use crate::devices::virtio::fake_driver::{DriverRings, guest_map, guest_memory};

fn chain_of(queue: &mut SplitQueue, mem: &mut impl GuestMemoryAccess) -> Result<Option<DescChain>, QueueError> {
    let mut chain = DescChain::default();
    Ok(queue.pop(mem, &mut chain)?.then_some(chain))
}

#[test]
fn chains_come_out_in_order_with_their_buffers() {
    let map = guest_map(0x10_0000);
    let mut mem = guest_memory(&map);
    let mut rings = DriverRings::new(0x1000, 8);
    let mut q = rings.queue(false);
    assert_eq!(q.check_layout(), Ok(()));
    let a = rings.add_chain(&mut mem, &[(0x8000, 12, false), (0x9000, 100, false)]);
    let b = rings.add_chain(&mut mem, &[(0xa000, 1526, true)]);
    assert_eq!(q.pending(&mem), Ok(2));
    let first = chain_of(&mut q, &mut mem).unwrap().unwrap();
    assert_eq!(first.head, a);
    assert_eq!(
        first.segments,
        [
            DescSegment { addr: 0x8000, len: 12, writable: false },
            DescSegment { addr: 0x9000, len: 100, writable: false }
        ]
    );
    assert_eq!(first.total_len, 112);
    let second = chain_of(&mut q, &mut mem).unwrap().unwrap();
    assert_eq!((second.head, second.segments.len(), second.segments[0].writable), (b, 1, true));
    assert!(chain_of(&mut q, &mut mem).unwrap().is_none());
    // Used elements go back in the order pushed, with their lengths.
    q.push_used(&mut mem, b, 60).unwrap();
    q.push_used(&mut mem, a, 0).unwrap();
    assert_eq!(rings.take_used(&mem), [(u32::from(b), 60), (u32::from(a), 0)]);
}

#[test]
fn unpop_gives_the_same_chain_again() {
    let map = guest_map(0x10_0000);
    let mut mem = guest_memory(&map);
    let mut rings = DriverRings::new(0x1000, 4);
    let mut q = rings.queue(false);
    let head = rings.add_chain(&mut mem, &[(0x8000, 64, true)]);
    assert_eq!(chain_of(&mut q, &mut mem).unwrap().unwrap().head, head);
    q.unpop();
    assert_eq!(q.pending(&mem), Ok(1));
    assert_eq!(chain_of(&mut q, &mut mem).unwrap().unwrap().head, head);
}

#[test]
fn indexes_wrap_around_the_ring_and_u16() {
    let map = guest_map(0x10_0000);
    let mut mem = guest_memory(&map);
    let mut rings = DriverRings::new(0x1000, 4);
    let mut q = rings.queue(false);
    // 70,000 chains: both 16-bit indexes wrap, every slot is reused many times.
    for i in 0..70_000u32 {
        let head = rings.add_chain(&mut mem, &[(0x8000 + u64::from(i % 7) * 0x100, 10 + i % 5, true)]);
        let chain = chain_of(&mut q, &mut mem).unwrap().unwrap();
        assert_eq!((chain.head, chain.total_len), (head, u64::from(10 + i % 5)));
        q.push_used(&mut mem, head, i % 5).unwrap();
        assert_eq!(rings.take_used(&mem), [(u32::from(head), i % 5)]);
    }
}

#[test]
fn bad_chains_are_errors_not_panics() {
    let map = guest_map(0x10_0000);
    let mut mem = guest_memory(&map);
    let rings = DriverRings::new(0x1000, 4);

    // A loop: 0 -> 1 -> 0 -> ...
    let mut q = rings.queue(false);
    let mut r = rings.clone();
    r.write_desc(&mut mem, 0, 0x8000, 10, 1, 1);
    r.write_desc(&mut mem, 1, 0x8000, 10, 1, 0);
    r.publish(&mut mem, 0);
    assert_eq!(chain_of(&mut q, &mut mem).unwrap_err(), QueueError::ChainTooLong);

    // A next index past the table, and a head past it.
    let mut q = rings.queue(false);
    let mut r = rings.clone();
    r.write_desc(&mut mem, 0, 0x8000, 10, 1, 9);
    r.publish(&mut mem, 0);
    assert_eq!(chain_of(&mut q, &mut mem).unwrap_err(), QueueError::BadIndex(9));
    let mut q = rings.queue(false);
    let mut r = rings.clone();
    r.publish(&mut mem, 4);
    assert_eq!(chain_of(&mut q, &mut mem).unwrap_err(), QueueError::BadIndex(4));

    // An indirect descriptor.
    let mut q = rings.queue(false);
    let mut r = rings.clone();
    r.write_desc(&mut mem, 0, 0x8000, 32, 4, 0);
    r.publish(&mut mem, 0);
    assert_eq!(chain_of(&mut q, &mut mem).unwrap_err(), QueueError::Indirect);

    // The available index a whole ring (and more) ahead.
    let q = rings.queue(false);
    write_obj(&mut mem, GuestPhysAddr::new(rings.avail + 2), 5u16).unwrap();
    assert_eq!(q.pending(&mem), Err(QueueError::AvailOverrun { avail_idx: 5, next_avail: 0 }));

    // A ring outside guest memory is a memory error.
    let mut q = rings.queue(false);
    q.driver = 0x4000_0000;
    assert!(matches!(chain_of(&mut q, &mut mem), Err(QueueError::Memory(_))));
}

#[test]
fn layout_rules() {
    let mut q = DriverRings::new(0x1000, 8).queue(false);
    assert_eq!(q.check_layout(), Ok(()));
    for (size, desc, driver, device) in [
        (6, 0x1000, 0x2000, 0x3000),
        (512, 0x1000, 0x2000, 0x3000),
        (8, 0x1008, 0x2000, 0x3000),
        (8, 0x1000, 0x2001, 0x3000),
        (8, 0x1000, 0x2000, 0x3002),
        (0, 0x1000, 0x2000, 0x3000),
    ] {
        (q.size, q.desc, q.driver, q.device) = (size, desc, driver, device);
        assert_eq!(q.check_layout(), Err(QueueError::BadLayout), "{size} {desc:#x} {driver:#x} {device:#x}");
    }
}

#[test]
fn event_idx_interrupts_only_when_used_event_is_passed() {
    let map = guest_map(0x10_0000);
    let mut mem = guest_memory(&map);
    let mut rings = DriverRings::new(0x1000, 8);
    let mut q = rings.queue(true);
    let heads: Vec<u16> = (0..4).map(|i| rings.add_chain(&mut mem, &[(0x8000 + i * 0x100, 64, true)])).collect();
    // Nothing used yet: no interrupt whatever used_event says.
    rings.set_used_event(&mut mem, 0);
    assert_eq!(q.needs_interrupt(&mem), Ok(false));
    // The driver asks for an interrupt when the used index passes 2 (i.e. reaches 3).
    rings.set_used_event(&mut mem, 2);
    for &h in &heads[..2] {
        chain_of(&mut q, &mut mem).unwrap().unwrap();
        q.push_used(&mut mem, h, 0).unwrap();
    }
    assert_eq!(q.needs_interrupt(&mem), Ok(false), "used index 2 has not passed 2");
    chain_of(&mut q, &mut mem).unwrap().unwrap();
    q.push_used(&mut mem, heads[2], 0).unwrap();
    assert_eq!(q.needs_interrupt(&mem), Ok(true), "used index 3 passed 2");
    // Asked again with nothing new: no second interrupt.
    assert_eq!(q.needs_interrupt(&mem), Ok(false));
    // A batch that jumps over used_event still interrupts once.
    rings.set_used_event(&mut mem, 3);
    chain_of(&mut q, &mut mem).unwrap().unwrap();
    q.push_used(&mut mem, heads[3], 0).unwrap();
    assert_eq!(q.needs_interrupt(&mem), Ok(true));
    // The device asked to be notified of the next chain it will read.
    assert_eq!(rings.avail_event(&mem), 4);
}

#[test]
fn without_event_idx_the_no_interrupt_flag_decides() {
    let map = guest_map(0x10_0000);
    let mut mem = guest_memory(&map);
    let mut rings = DriverRings::new(0x1000, 8);
    let mut q = rings.queue(false);
    for flags in [1u16, 0] {
        let head = rings.add_chain(&mut mem, &[(0x8000, 64, true)]);
        rings.set_avail_flags(&mut mem, flags);
        chain_of(&mut q, &mut mem).unwrap().unwrap();
        q.push_used(&mut mem, head, 0).unwrap();
        assert_eq!(q.needs_interrupt(&mem), Ok(flags == 0));
    }
    assert_eq!(rings.avail_event(&mem), 0, "avail_event is not written without EVENT_IDX");
}

#[test]
fn a_queue_that_wants_no_doorbells_says_so() {
    let map = guest_map(0x10_0000);
    let mut mem = guest_memory(&map);
    for event_idx in [true, false] {
        let mut rings = DriverRings::new(0x1000, 8);
        let mut q = rings.queue(event_idx);
        q.wants_notifications = false;
        let head = rings.add_chain(&mut mem, &[(0x8000, 64, true)]);
        chain_of(&mut q, &mut mem).unwrap().unwrap();
        q.push_used(&mut mem, head, 0).unwrap();
        // avail_event stays 0 (rings again only after 65536 chains); without EVENT_IDX
        // the used ring carries VIRTQ_USED_F_NO_NOTIFY.
        assert_eq!(rings.avail_event(&mem), 0);
        let flags: u16 = read_obj(&mem, GuestPhysAddr::new(rings.used)).unwrap();
        assert_eq!(flags, u16::from(!event_idx));
        write_obj(&mut mem, GuestPhysAddr::new(rings.used), 0u16).unwrap();
    }
}

#[test]
fn a_batch_is_seen_by_the_driver_when_published() {
    let map = guest_map(0x10_0000);
    let mut mem = guest_memory(&map);
    let mut rings = DriverRings::new(0x1000, 8);
    let mut q = rings.queue(false);
    let heads: Vec<u16> = (0..3).map(|i| rings.add_chain(&mut mem, &[(0x8000 + i * 0x100, 64, true)])).collect();
    for (i, &h) in heads.iter().enumerate() {
        assert_eq!(chain_of(&mut q, &mut mem).unwrap().unwrap().head, h);
        q.push_used_later(&mut mem, h, i as u32).unwrap();
    }
    // Written but not published: the driver sees nothing and no interrupt is due.
    assert_eq!(rings.take_used(&mem), []);
    assert_eq!(q.needs_interrupt(&mem), Ok(false));
    q.publish_used(&mut mem).unwrap();
    assert_eq!(rings.take_used(&mem), [(u32::from(heads[0]), 0), (u32::from(heads[1]), 1), (u32::from(heads[2]), 2)]);
    assert_eq!(q.needs_interrupt(&mem), Ok(true));
    // A chain the driver adds after the batch was counted is still found.
    let late = rings.add_chain(&mut mem, &[(0x9000, 64, true)]);
    assert_eq!(chain_of(&mut q, &mut mem).unwrap().unwrap().head, late);
    assert!(chain_of(&mut q, &mut mem).unwrap().is_none());
}

#[test]
fn chains_that_jump_and_run_across_batches_come_out_whole() {
    let map = guest_map(0x10_0000);
    let mut mem = guest_memory(&map);
    let mut rings = DriverRings::new(0x1000, 32);
    let mut q = rings.queue(false);
    // 5 -> 2 -> 3 -> 4 (neighbours) -> 14 -> 15 -> 16 -> 17 (past a batch of eight)
    // -> 31 (the table's last entry) -> 0 (back to its first).
    let order = [5u16, 2, 3, 4, 14, 15, 16, 17, 31, 0];
    for (i, pair) in order.windows(2).enumerate() {
        rings.write_desc(&mut mem, pair[0], 0x8000 + i as u64 * 0x1000, 100 + i as u32, 1, pair[1]);
    }
    rings.write_desc(&mut mem, 0, 0x20000, 7, 2, 0);
    rings.publish(&mut mem, 5);
    let chain = chain_of(&mut q, &mut mem).unwrap().unwrap();
    let mut expected: Vec<DescSegment> = (0..9)
        .map(|i| DescSegment { addr: 0x8000 + i as u64 * 0x1000, len: 100 + i as u32, writable: false })
        .collect();
    expected.push(DescSegment { addr: 0x20000, len: 7, writable: true });
    assert_eq!((chain.head, chain.segments, chain.total_len), (5, expected, (100..109).sum::<u64>() + 7));
    // A chain that runs off the table's end through neighbours: 30 -> 31 -> 32.
    rings.write_desc(&mut mem, 30, 0x8000, 1, 1, 31);
    rings.write_desc(&mut mem, 31, 0x8000, 1, 1, 32);
    rings.publish(&mut mem, 30);
    assert_eq!(chain_of(&mut q, &mut mem).unwrap_err(), QueueError::BadIndex(32));
}
