use super::*;
use crate::e1000e::{InitError, RING_SIZE};

/// Position of the first write of `offset` (with `value`, if given) in the log.
fn position(fake: &Fake82574, offset: u32, value: Option<u32>) -> usize {
    fake.writes
        .iter()
        .position(|&(o, v)| o == offset && value.is_none_or(|x| x == v))
        .unwrap_or_else(|| panic!("register {offset:#x} never written"))
}

#[test]
fn bring_up_resets_then_programs_rings_before_enabling() {
    let (nic, fake) = up();
    let f = fake.borrow();
    let reset = f.writes.iter().position(|&(o, v)| o == regs::CTRL && v & ctrl::RST != 0).expect("reset");
    assert_eq!(f.writes[0], (regs::IMC, u32::MAX), "interrupts masked first");
    assert!(f.writes[reset + 1..].contains(&(regs::IMC, u32::MAX)), "masked again after the reset");
    assert!(position(&f, regs::CTRL, Some(ctrl::GIO_MDIS)) < reset, "DMA mastering stopped before the reset");

    let rx_on = f.writes.iter().rposition(|&(o, v)| o == regs::RCTL && v & rctl::EN != 0).unwrap();
    let tx_on = f.writes.iter().rposition(|&(o, v)| o == regs::TCTL && v & tctl::EN != 0).unwrap();
    for r in [regs::RDBAL, regs::RDBAH, regs::RDLEN, regs::RDH, regs::RDT] {
        let at = f.writes.iter().rposition(|&(o, _)| o == r).unwrap();
        assert!(reset < at && at < rx_on, "{r:#x} programmed after the reset, before receive is on");
    }
    for r in [regs::TDBAL, regs::TDBAH, regs::TDLEN, regs::TDH, regs::TDT, regs::TIPG] {
        let at = f.writes.iter().rposition(|&(o, _)| o == r).unwrap();
        assert!(reset < at && at < tx_on, "{r:#x} programmed after the reset, before transmit is on");
    }
    for word in 0..regs::MTA_WORDS {
        let at = position(&f, regs::MTA + 4 * word, Some(0));
        assert!(at > reset);
    }

    // Final values.
    assert_eq!(f.value(regs::RDLEN), 4096);
    assert_eq!(f.value(regs::TDLEN), 4096);
    assert_eq!(f.value(regs::RDT), u32::from(RING_SIZE) - 1, "all but one receive descriptor given");
    assert_eq!(f.value(regs::TDT), 0);
    let rctl_value = f.value(regs::RCTL);
    assert_eq!(rctl_value, rctl::EN | rctl::BAM | rctl::SECRC, "no promiscuous mode, 2 KiB buffers, legacy");
    assert_eq!(f.value(regs::TCTL) & (tctl::EN | tctl::PSP), tctl::EN | tctl::PSP);
    assert_eq!(f.value(regs::TIPG), 0x0060_2008);
    let c = f.value(regs::CTRL);
    assert_eq!(c & (ctrl::SLU | ctrl::RST | ctrl::GIO_MDIS), ctrl::SLU);
    assert_eq!(f.value(regs::RAH0) & rah::AV, rah::AV);
    assert_eq!(f.value(regs::ICR), 0, "pending causes cleared by the read");
    assert_eq!(nic.mac(), PERMANENT_MAC);

    // Each receive descriptor has its own 2 KiB buffer inside an allocation.
    let mut buffers: Vec<u64> = (0..u64::from(RING_SIZE)).map(|i| f.rx_descriptor(i).buffer).collect();
    for &b in &buffers {
        let _ = f.dma_bytes(b, 2048);
    }
    buffers.sort_unstable();
    assert!(buffers.windows(2).all(|w| w[1] - w[0] >= 2048));
    // The rings: 4 KiB aligned (the 82574 needs 16 bytes; 128 is recommended).
    assert_eq!(f.ring_base(regs::RDBAL, regs::RDBAH) % 4096, 0);
    assert_eq!(f.ring_base(regs::TDBAL, regs::TDBAH) % 4096, 0);
    assert!(f.ring_base(regs::TDBAL, regs::TDBAH) > u64::from(u32::MAX), "high halves programmed too");
}

#[test]
fn link_state_follows_status_lu() {
    let (mut nic, fake) = up();
    let link = nic.link();
    assert!(link.up);
    assert_eq!((link.speed_mbps, link.full_duplex), (1000, true));
    fake.borrow_mut().cable = false;
    assert!(!nic.link().up);
    fake.borrow_mut().cable = true;
    fake.borrow_mut().absent = true;
    assert!(!nic.link().up, "a NIC reading all ones has no link");
}

#[test]
fn reset_that_never_completes_fails_within_its_bound() {
    let fake = Fake82574::new();
    fake.borrow_mut().stuck_in_reset = true;
    let result = E1000e::new(FakeRegisters(fake.clone()), FakeDma(fake.clone()));
    assert_eq!(result.err(), Some(InitError::ResetTimeout));
    let f = fake.borrow();
    assert!(f.waited_us >= 100_000, "waited the full bound: {} µs", f.waited_us);
    assert!(f.waited_us <= 250_000, "but no longer: {} µs", f.waited_us);
    assert_eq!(f.value(regs::RCTL) & rctl::EN, 0);
    assert!(f.regions.is_empty(), "no DMA memory handed out");
}

#[test]
fn absent_device_is_refused() {
    let fake = Fake82574::new();
    fake.borrow_mut().absent = true;
    let result = E1000e::new(FakeRegisters(fake.clone()), FakeDma(fake.clone()));
    assert_eq!(result.err(), Some(InitError::DeviceAbsent));
    assert!(fake.borrow().writes.is_empty());
}

#[test]
fn unusable_station_addresses_are_refused() {
    for mac in [[0; 6], [0xff; 6], [0x01, 0, 0x5e, 0, 0, 1]] {
        let fake = Fake82574::new();
        fake.borrow_mut().permanent_mac = mac;
        let result = E1000e::new(FakeRegisters(fake.clone()), FakeDma(fake.clone()));
        assert_eq!(result.err(), Some(InitError::NoStationAddress(mac)));
    }
}

#[test]
fn short_dma_memory_is_an_error() {
    let fake = Fake82574::new();
    // The receive ring and the transmit descriptors fit, the transmit buffers do not.
    fake.borrow_mut().dma_limit = 600 << 10;
    let result = E1000e::new(FakeRegisters(fake.clone()), FakeDma(fake.clone()));
    assert_eq!(result.err(), Some(InitError::OutOfDmaMemory));
    assert_eq!(fake.borrow().regions.len(), 3);
}

#[test]
fn stop_turns_receive_off_and_resets() {
    let (nic, fake) = up();
    let _ = nic.stop();
    let f = fake.borrow();
    let last_reset = f.writes.iter().rposition(|&(o, v)| o == regs::CTRL && v & ctrl::RST != 0).unwrap();
    let rx_off = f.writes.iter().rposition(|&(o, v)| o == regs::RCTL && v == 0).unwrap();
    assert!(rx_off < last_reset);
    assert!(f.writes.iter().filter(|&&(o, v)| o == regs::CTRL && v & ctrl::RST != 0).count() == 2);
    assert_eq!(f.value(regs::RCTL), 0);
}

#[test]
fn bring_up_programs_everything_a_partial_reset_leaves_behind() {
    // A previous driver (or a crashed service VM) left the NIC running with stale
    // state, and the reset, as in QEMU 7.2, reloads only the station address.
    let fake = Fake82574::new();
    {
        let mut f = fake.borrow_mut();
        f.reset_reloads_only_the_address = true;
        for (r, v) in [(regs::RDH, 5), (regs::RDT, 9), (regs::TDH, 7), (regs::TDT, 3), (regs::MTA + 8, 0xffff_ffff)] {
            f.regs[reg(r)] = v;
        }
        f.regs[reg(regs::RXCSUM)] = 0x1_0000 | 0x300; // PCSD left on
        f.regs[reg(regs::RCTL)] = rctl::EN | 1 << 3 | 1 << 4; // promiscuous
    }
    let mut nic = E1000e::new(FakeRegisters(fake.clone()), FakeDma(fake.clone())).expect("bring-up");
    {
        let f = fake.borrow();
        assert_eq!((f.value(regs::RDH), f.value(regs::TDH), f.value(regs::TDT)), (0, 0, 0));
        assert_eq!(f.value(regs::MTA + 8), 0);
        assert_eq!(f.value(regs::RXCSUM), rxcsum::IPOFL | rxcsum::TUOFL);
        assert_eq!(f.value(regs::RCTL), rctl::EN | rctl::BAM | rctl::SECRC);
        assert_eq!(f.value(regs::CTRL) & ctrl::GIO_MDIS, 0, "DMA mastering allowed again");
    }
    nic.transmit(&frame(60, 1)).unwrap();
    fake.borrow_mut().inject(&frame(60, 2), WriteBack::default());
    assert_eq!(drain(&mut nic, 4), [frame(60, 2)]);
    assert_eq!(fake.borrow().wire, [frame(60, 1)]);
}
