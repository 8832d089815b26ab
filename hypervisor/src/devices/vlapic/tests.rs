use super::*;

/// 2 GHz guest TSC: one APIC bus tick (1 ns) is 2 TSC ticks.
const TSC_HZ: u64 = 2_000_000_000;

fn lapic() -> Vlapic {
    Vlapic::new(0, true, GuestClock::new(TSC_HZ).unwrap())
}

fn enabled() -> Vlapic {
    let mut l = lapic();
    w(&mut l, reg::SVR, 0x1FF);
    l
}

fn r(l: &mut Vlapic, off: u32) -> u32 {
    l.mmio_read(u64::from(off), AccessSize::Dword, 0) as u32
}

fn w(l: &mut Vlapic, off: u32, v: u32) {
    l.mmio_write(u64::from(off), AccessSize::Dword, u64::from(v), 0)
}

fn x2(id: u32) -> Vlapic {
    let mut l = Vlapic::new(id, true, GuestClock::new(TSC_HZ).unwrap());
    l.write_msr(msr::APIC_BASE, 0xFEE0_0D00, 0).unwrap();
    l.write_msr(0x80F, 0x1FF, 0).unwrap();
    l
}

fn fixed(vector: u8, level: bool) -> ApicMessage {
    ApicMessage { vector, delivery: DeliveryMode::Fixed, logical: false, dest: 0, short_dest: true, level }
}

#[test]
fn power_up_state() {
    let mut l = Vlapic::new(3, false, GuestClock::new(TSC_HZ).unwrap());
    assert_eq!(l.apic_base(), 0xFEE0_0800);
    assert_eq!(lapic().apic_base(), 0xFEE0_0900);
    assert_eq!(r(&mut l, reg::ID), 3 << 24);
    assert_eq!(r(&mut l, reg::VERSION), 0x0005_0014);
    assert_eq!(r(&mut l, reg::SVR), 0xFF);
    assert_eq!(r(&mut l, reg::DFR), u32::MAX);
    for lvt in [reg::LVT_TIMER, reg::LVT_THERMAL, reg::LVT_PERF, reg::LVT_LINT0, reg::LVT_LINT1, reg::LVT_ERROR] {
        assert_eq!(r(&mut l, lvt), LVT_MASKED, "LVT {lvt:#x}");
    }
    assert!(!l.is_enabled());
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.next_deadline(), None);
}

#[test]
fn software_disable_drops_interrupts_and_masks_lvts() {
    let mut l = lapic();
    assert!(!l.accept_interrupt(0x40, false));
    // LVTs cannot be unmasked while software-disabled.
    w(&mut l, reg::LVT_LINT0, 0x700);
    assert_eq!(r(&mut l, reg::LVT_LINT0), 0x10700);
    w(&mut l, reg::SVR, 0x1FF);
    w(&mut l, reg::LVT_LINT0, 0x700);
    w(&mut l, reg::LVT_TIMER, 0xEC);
    assert_eq!(r(&mut l, reg::LVT_LINT0), 0x700);
    assert!(l.accepts_extint());
    assert!(l.accept_interrupt(0x40, false));
    assert_eq!(l.pending_vector(), Some(0x40));
    // Disabling again masks everything and hides what is pending.
    w(&mut l, reg::SVR, 0xFF);
    assert_eq!(r(&mut l, reg::LVT_TIMER), 0x100EC);
    assert_eq!(r(&mut l, reg::LVT_LINT0), 0x10700);
    assert!(!l.accepts_extint());
    assert_eq!(l.pending_vector(), None);
}

#[test]
fn tpr_and_isr_priority_classes_gate_delivery() {
    let mut l = enabled();
    l.accept_interrupt(0x51, false);
    w(&mut l, reg::TPR, 0x60);
    assert_eq!(l.pending_vector(), None);
    assert_eq!(r(&mut l, reg::PPR), 0x60);
    // Same class as TPR is still blocked; it must be strictly higher.
    w(&mut l, reg::TPR, 0x5F);
    assert_eq!(l.pending_vector(), None);
    l.set_tpr(0x4F);
    assert_eq!(l.pending_vector(), Some(0x51));
    l.set_tpr(0);

    // An in-service 0x80 blocks class 7 and below, not class 9.
    l.accept_interrupt(0x80, false);
    assert_eq!(l.pending_vector(), Some(0x80));
    assert!(l.acknowledge(0x80));
    assert_eq!(l.ppr(), 0x80);
    l.accept_interrupt(0x71, false);
    l.accept_interrupt(0x85, false);
    assert_eq!(l.pending_vector(), None, "0x85 is in 0x80's class");
    l.accept_interrupt(0x91, false);
    assert_eq!(l.pending_vector(), Some(0x91));
    assert!(l.acknowledge(0x91));
    // EOI retires the highest in-service vector first.
    assert_eq!(l.eoi(), Some(Eoi { vector: 0x91, level: false }));
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.eoi(), Some(Eoi { vector: 0x80, level: false }));
    assert_eq!(l.pending_vector(), Some(0x85));
    assert_eq!(l.eoi(), None);
}

#[test]
fn acknowledge_needs_a_requested_vector() {
    let mut l = enabled();
    assert!(!l.acknowledge(0x30));
    l.accept_interrupt(0x30, false);
    assert!(l.acknowledge(0x30));
    assert!(!l.acknowledge(0x30));
    assert_eq!(r(&mut l, reg::ISR0 + 0x10), 1 << 16);
    assert_eq!(r(&mut l, reg::IRR0 + 0x10), 0);
}

#[test]
fn irr_isr_tmr_words_and_high_vectors() {
    let mut l = enabled();
    l.accept_interrupt(0xFF, true);
    l.accept_interrupt(0x20, false);
    assert_eq!(r(&mut l, reg::IRR7), 1 << 31);
    assert_eq!(r(&mut l, reg::TMR7), 1 << 31);
    assert_eq!(r(&mut l, reg::IRR0 + 0x10), 1);
    assert_eq!(r(&mut l, reg::TMR0 + 0x10), 0);
    assert_eq!(l.pending_vector(), Some(0xFF));
}

#[test]
fn level_eoi_is_queued_for_the_ioapic_edge_is_not() {
    let mut l = enabled();
    l.accept_interrupt(0x61, true);
    l.accept_interrupt(0x62, false);
    assert!(l.acknowledge(0x62));
    w(&mut l, reg::EOI, 0);
    assert_eq!(l.take_eoi_broadcast(), None);
    assert!(l.acknowledge(0x61));
    w(&mut l, reg::EOI, 0);
    assert_eq!(l.take_eoi_broadcast(), Some(0x61));
    assert_eq!(l.take_eoi_broadcast(), None);
    // The TMR bit follows the latest acceptance of the vector.
    l.accept_interrupt(0x61, false);
    assert_eq!(r(&mut l, reg::TMR0 + 0x30), 0);
}

#[test]
fn illegal_vectors_latch_in_esr_and_raise_the_error_lvt() {
    let mut l = enabled();
    w(&mut l, reg::LVT_ERROR, 0xFE);
    assert!(!l.accept_interrupt(0x05, false));
    // ESR shows errors only after the next write (SDM 11.5.3).
    assert_eq!(r(&mut l, reg::ESR), 0);
    w(&mut l, reg::ESR, 0);
    assert_eq!(r(&mut l, reg::ESR), ESR_RECEIVE_ILLEGAL_VECTOR);
    w(&mut l, reg::ESR, 0);
    assert_eq!(r(&mut l, reg::ESR), 0);
    assert_eq!(l.pending_vector(), Some(0xFE));
    // A self-IPI with an illegal vector is a send error.
    w(&mut l, reg::ICR_LO, (1 << 18) | 0x03);
    w(&mut l, reg::ESR, 0);
    assert_eq!(r(&mut l, reg::ESR), ESR_SEND_ILLEGAL_VECTOR);
}

#[test]
fn xapic_mmio_access_forms() {
    let mut l = enabled();
    // Narrow reads within the first 4 bytes see the matching bytes.
    assert_eq!(l.mmio_read(0x30, AccessSize::Byte, 0), 0x14);
    assert_eq!(l.mmio_read(0x32, AccessSize::Byte, 0), 0x05);
    assert_eq!(l.mmio_read(0x32, AccessSize::Word, 0), 0x05);
    assert_eq!(l.mmio_read(0x34, AccessSize::Dword, 0), 0);
    assert_eq!(l.mmio_read(0x30, AccessSize::Qword, 0), 0x0005_0014);
    // Unaligned or narrow writes are dropped.
    l.mmio_write(0x84, AccessSize::Dword, 0x50, 0);
    l.mmio_write(0x80, AccessSize::Byte, 0x50, 0);
    assert_eq!(r(&mut l, reg::TPR), 0);
    // Read-only and absent registers ignore writes; absent ones read 0.
    w(&mut l, reg::VERSION, 0);
    w(&mut l, reg::PPR, 0xFF);
    w(&mut l, reg::SELF_IPI, 0x40);
    assert_eq!(r(&mut l, reg::VERSION), VERSION_VALUE);
    assert_eq!(l.pending_vector(), None);
    assert_eq!(r(&mut l, 0x3F0), 0);
    assert_eq!(r(&mut l, 0x400), 0);
    assert_eq!(l.mmio_read(0x1000, AccessSize::Dword, 0), 0);
    // DFR keeps its reserved bits set; LDR keeps 31:24.
    w(&mut l, reg::DFR, 0);
    assert_eq!(r(&mut l, reg::DFR), 0x0FFF_FFFF);
    w(&mut l, reg::LDR, 0x0123_4567);
    assert_eq!(r(&mut l, reg::LDR), 0x0100_0000);
    // ICR delivery status always reads idle.
    w(&mut l, reg::ICR_HI, 0x0F00_0000);
    w(&mut l, reg::ICR_LO, 0x1040);
    assert_eq!(r(&mut l, reg::ICR_LO) & (1 << 12), 0);
}

#[test]
fn linux_flat_logical_setup_accepts_ioapic_messages() {
    let mut l = lapic();
    // setup_local_APIC + flat_init_apic_ldr for CPU 0.
    w(&mut l, reg::DFR, 0xFFFF_FFFF);
    w(&mut l, reg::LDR, 1 << 24);
    w(&mut l, reg::TPR, 0);
    w(&mut l, reg::SVR, 0x1FF);
    w(&mut l, reg::LVT_LINT0, 0x10700);
    w(&mut l, reg::LVT_LINT1, 0x400);
    w(&mut l, reg::ESR, 0);
    w(&mut l, reg::LVT_ERROR, 0xFE);
    let mut msg = fixed(0x30, false);
    msg.logical = true;
    msg.dest = 1;
    assert!(l.deliver(&msg));
    msg.dest = 2;
    assert!(!l.deliver(&msg), "another CPU's logical ID");
    msg.dest = 0xFF;
    assert!(l.deliver(&msg), "broadcast");
    // Cluster model: cluster 0, member bit 0.
    w(&mut l, reg::DFR, 0x0FFF_FFFF);
    msg.dest = 0x11;
    assert!(!l.deliver(&msg));
    msg.dest = 0x01;
    assert!(l.deliver(&msg));
    // Physical destination 0 is this APIC; 1 is not.
    assert!(l.deliver(&fixed(0x31, false)));
    let mut other = fixed(0x31, false);
    other.dest = 1;
    assert!(!l.deliver(&other));
    // NMI messages set the NMI request.
    let mut nmi = fixed(0, false);
    nmi.delivery = DeliveryMode::Nmi;
    assert!(l.deliver(&nmi));
    assert!(l.take_nmi());
    assert!(!l.take_nmi());
}

#[test]
fn xapic_icr_self_ipis() {
    let mut l = enabled();
    // Shorthand self.
    w(&mut l, reg::ICR_LO, (1 << 18) | 0xF1);
    assert_eq!(l.pending_vector(), Some(0xF1));
    // Physical destination = own ID.
    w(&mut l, reg::ICR_HI, 0);
    w(&mut l, reg::ICR_LO, 0xF2);
    assert!(l.irr.contains(0xF2));
    // All-excluding-self and other CPUs wait for the controller, not here.
    w(&mut l, reg::ICR_LO, (3 << 18) | 0xF3);
    let out = l.take_outgoing().unwrap();
    assert!(out.all_others && !out.self_took && out.msg.vector == 0xF3);
    w(&mut l, reg::ICR_HI, 5 << 24);
    w(&mut l, reg::ICR_LO, 0xF4);
    let out = l.take_outgoing().unwrap();
    assert!(!out.all_others && !out.self_took && out.msg.dest == 5 && out.msg.short_dest);
    assert!(!l.irr.contains(0xF3) && !l.irr.contains(0xF4));
    assert_eq!(l.take_outgoing(), None, "taken once");
    // All-including-self reaches us and the others.
    w(&mut l, reg::ICR_LO, (2 << 18) | 0xF5);
    assert!(l.irr.contains(0xF5));
    let out = l.take_outgoing().unwrap();
    assert!(out.all_others && out.self_took);
    // The self shorthand concerns nobody else; NMI delivery sets the NMI request.
    w(&mut l, reg::ICR_LO, (1 << 18) | 0x400);
    assert!(l.take_nmi());
}

#[test]
fn x2apic_mode_switch_id_and_ldr() {
    let mut l = x2(0x23);
    assert_eq!(l.mode(), ApicMode::X2Apic);
    assert_eq!(l.read_msr(msr::APIC_BASE, 0), Ok(0xFEE0_0D00));
    assert_eq!(l.read_msr(0x802, 0), Ok(0x23));
    assert_eq!(l.read_msr(0x80D, 0), Ok(0x0002_0008));
    assert_eq!(l.read_msr(0x803, 0), Ok(u64::from(VERSION_VALUE)));
    // The MMIO page is gone.
    assert_eq!(l.mmio_read(0x20, AccessSize::Dword, 0), 0xFFFF_FFFF);
    l.mmio_write(0x80, AccessSize::Dword, 0x70, 0);
    assert_eq!(l.read_msr(0x808, 0), Ok(0));
    // Logical x2APIC destinations: cluster 2, member bit 3.
    let mut msg = fixed(0x40, false);
    msg.short_dest = false;
    msg.logical = true;
    msg.dest = 0x0002_0008;
    assert!(l.deliver(&msg));
    msg.dest = 0x0001_0008;
    assert!(!l.deliver(&msg));
    msg.logical = false;
    msg.dest = 0x23;
    assert!(l.deliver(&msg));
    // An 8-bit IOAPIC broadcast still reaches an x2APIC.
    assert!(l.deliver(&ApicMessage { dest: 0xFF, ..fixed(0x41, false) }));
}

#[test]
fn x2apic_msr_faults() {
    let mut l = x2(0);
    // Read-only registers.
    for m in [0x802, 0x803, 0x80A, 0x80D, 0x810, 0x818, 0x820, 0x839] {
        assert_eq!(l.write_msr(m, 0, 0), Err(ApicFault), "write {m:#x}");
    }
    // Write-only registers.
    assert_eq!(l.read_msr(0x80B, 0), Err(ApicFault));
    assert_eq!(l.read_msr(0x83F, 0), Err(ApicFault));
    // Registers that do not exist in x2APIC mode.
    for m in [0x800, 0x801, 0x809, 0x80C, 0x80E, 0x831, 0x82F, 0x840, 0x8FF] {
        assert_eq!(l.read_msr(m, 0), Err(ApicFault), "read {m:#x}");
        assert_eq!(l.write_msr(m, 0, 0), Err(ApicFault), "write {m:#x}");
    }
    // Values that are invalid.
    assert_eq!(l.write_msr(0x80B, 1, 0), Err(ApicFault), "EOI must be 0");
    assert_eq!(l.write_msr(0x828, 1, 0), Err(ApicFault), "ESR must be 0");
    assert_eq!(l.write_msr(0x83F, 0x100, 0), Err(ApicFault), "SELF_IPI reserved bits");
    assert_eq!(l.write_msr(0x808, 1 << 32, 0), Err(ApicFault), "upper half of a 32-bit register");
    assert_eq!(l.write_msr(0x80B, 0, 0), Ok(()));
    assert_eq!(l.write_msr(0x828, 0, 0), Ok(()));
    // x2APIC MSRs fault outside x2APIC mode.
    let mut x = enabled();
    assert_eq!(x.read_msr(0x802, 0), Err(ApicFault));
    assert_eq!(x.write_msr(0x808, 0, 0), Err(ApicFault));
    assert!(Vlapic::handles_msr(0x1B) && Vlapic::handles_msr(0x6E0) && Vlapic::handles_msr(0x8FF));
    assert!(!Vlapic::handles_msr(0x900) && !Vlapic::handles_msr(0x10));
    assert_eq!(x.read_msr(0x10, 0), Err(ApicFault));
}

#[test]
fn x2apic_self_ipi_and_icr() {
    let mut l = x2(0);
    l.write_msr(0x83F, 0xEC, 0).unwrap();
    assert_eq!(l.pending_vector(), Some(0xEC));
    assert!(l.acknowledge(0xEC));
    l.write_msr(0x80B, 0, 0).unwrap();
    assert_eq!(l.pending_vector(), None);
    // 64-bit ICR with a 32-bit destination: physical self, then another APIC.
    l.write_msr(0x830, 0xED, 0).unwrap();
    assert_eq!(l.read_msr(0x830, 0), Ok(0xED));
    assert_eq!(l.pending_vector(), Some(0xED));
    l.write_msr(0x830, (7u64 << 32) | 0xEE, 0).unwrap();
    assert_eq!(l.read_msr(0x830, 0), Ok((7u64 << 32) | 0xEE));
    assert!(!l.irr.contains(0xEE));
    let out = l.take_outgoing().unwrap();
    assert!(!out.msg.short_dest && out.msg.dest == 7 && out.msg.vector == 0xEE);
    // SELF_IPI works whatever the APIC ID.
    let mut other = x2(9);
    other.write_msr(0x83F, 0x50, 0).unwrap();
    assert_eq!(other.pending_vector(), Some(0x50));
}

#[test]
fn apic_base_transitions() {
    let mut l = enabled();
    // Base relocation, reserved bits and EN=0 with EXTD=1 are refused.
    assert_eq!(l.set_apic_base(0xFED0_0900), Err(ApicFault));
    assert_eq!(l.set_apic_base(0xFEE0_0901), Err(ApicFault));
    assert_eq!(l.set_apic_base(0xFEE0_0500), Err(ApicFault));
    // Writing back the same value is fine; the BSP bit is ignored.
    assert_eq!(l.set_apic_base(0xFEE0_0800), Ok(()));
    assert_eq!(l.apic_base(), 0xFEE0_0900);
    // xAPIC -> x2APIC keeps state; x2APIC -> xAPIC is illegal.
    l.accept_interrupt(0x44, false);
    l.set_apic_base(0xFEE0_0D00).unwrap();
    assert_eq!(l.pending_vector(), Some(0x44));
    assert_eq!(l.set_apic_base(0xFEE0_0900), Err(ApicFault));
    // x2APIC -> disabled resets; disabled -> x2APIC is illegal; -> xAPIC is fine.
    l.set_apic_base(0xFEE0_0100).unwrap();
    assert_eq!(l.mode(), ApicMode::Disabled);
    assert!(l.accepts_extint());
    assert_eq!(l.set_apic_base(0xFEE0_0D00), Err(ApicFault));
    l.set_apic_base(0xFEE0_0900).unwrap();
    assert_eq!(l.mode(), ApicMode::XApic);
    assert_eq!(r(&mut l, reg::SVR), 0xFF);
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.write_msr(msr::APIC_BASE, 0xFEE0_0D00, 0), Ok(()));
}

#[test]
fn divide_configuration_decodes() {
    let expected = [(0b0000, 2), (0b0001, 4), (0b0010, 8), (0b0011, 16), (0b1000, 32), (0b1001, 64), (0b1010, 128)];
    for (dcr, div) in expected {
        assert_eq!(timer_divisor(dcr), div, "dcr {dcr:#b}");
    }
    assert_eq!(timer_divisor(0b1011), 1);
    assert_eq!(timer_divisor(0xFFFF_FFFF), 1);
}

#[test]
fn one_shot_timer_counts_down_and_fires_once() {
    let mut l = enabled();
    w(&mut l, reg::TIMER_DIVIDE, 0b0011); // /16
    w(&mut l, reg::LVT_TIMER, 0xEF);
    l.mmio_write(u64::from(reg::TIMER_INITIAL), AccessSize::Dword, 1000, 5_000);
    // 1000 counts * 16 ns = 16 us = 32000 TSC ticks at 2 GHz.
    assert_eq!(l.next_deadline(), Some(37_000));
    assert_eq!(l.mmio_read(u64::from(reg::TIMER_CURRENT), AccessSize::Dword, 5_000), 1000);
    assert_eq!(l.mmio_read(u64::from(reg::TIMER_CURRENT), AccessSize::Dword, 21_000), 500);
    assert_eq!(l.mmio_read(u64::from(reg::TIMER_INITIAL), AccessSize::Dword, 21_000), 1000);
    l.tick(36_999);
    assert_eq!(l.pending_vector(), None);
    l.tick(37_000);
    assert_eq!(l.pending_vector(), Some(0xEF));
    assert_eq!(l.next_deadline(), None);
    assert_eq!(l.current_count(40_000), 0);
    // Writing 0 stops a running timer.
    w(&mut l, reg::TIMER_INITIAL, 10);
    assert!(l.next_deadline().is_some());
    w(&mut l, reg::TIMER_INITIAL, 0);
    assert_eq!(l.next_deadline(), None);
}

#[test]
fn masked_timer_still_expires_without_an_interrupt() {
    let mut l = enabled();
    w(&mut l, reg::TIMER_DIVIDE, 0b1011);
    w(&mut l, reg::LVT_TIMER, 0x100EF);
    w(&mut l, reg::TIMER_INITIAL, 100);
    assert_eq!(l.next_deadline(), Some(200));
    l.tick(200);
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.next_deadline(), None);
}

#[test]
fn periodic_timer_reloads_without_drift() {
    let mut l = enabled();
    w(&mut l, reg::TIMER_DIVIDE, 0b1011); // /1
    w(&mut l, reg::LVT_TIMER, (1 << 17) | 0xEF);
    // 1 ms period = 1_000_000 counts = 2_000_000 TSC ticks.
    l.mmio_write(u64::from(reg::TIMER_INITIAL), AccessSize::Dword, 1_000_000, 1_000);
    assert_eq!(l.next_deadline(), Some(2_001_000));
    for n in 1..=3u64 {
        let due = 1_000 + n * 2_000_000;
        // The exit handling the deadline runs a little late; the next period is not.
        l.tick(due + 777);
        assert_eq!(l.pending_vector(), Some(0xEF), "period {n}");
        assert!(l.acknowledge(0xEF));
        l.eoi();
        assert_eq!(l.next_deadline(), Some(due + 2_000_000));
    }
    // Counting restarted at the last reload: 0.25 ms later 750_000 remain.
    assert_eq!(l.current_count(6_001_000 + 500_000), 750_000);
    // A long stall coalesces missed periods into one interrupt.
    l.tick(6_001_000 + 10 * 2_000_000 + 5);
    assert_eq!(l.pending_vector(), Some(0xEF));
    assert!(l.acknowledge(0xEF));
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.next_deadline(), Some(6_001_000 + 11 * 2_000_000));
}

#[test]
fn periodic_timer_is_rate_limited() {
    let mut l = enabled();
    w(&mut l, reg::TIMER_DIVIDE, 0b1011);
    w(&mut l, reg::LVT_TIMER, (1 << 17) | 0xEF);
    w(&mut l, reg::TIMER_INITIAL, 1);
    assert_eq!(l.next_deadline(), Some(2));
    l.tick(2);
    assert_eq!(l.next_deadline(), Some(2 + 2 * MIN_PERIODIC_NS));
}

#[test]
fn divide_change_applies_to_the_remaining_count() {
    let mut l = enabled();
    w(&mut l, reg::TIMER_DIVIDE, 0b1011); // /1
    w(&mut l, reg::LVT_TIMER, 0xEF);
    l.mmio_write(u64::from(reg::TIMER_INITIAL), AccessSize::Dword, 1000, 0);
    // After 400 counts (800 TSC ticks), switch to /2: 600 counts * 2 ns remain.
    l.mmio_write(u64::from(reg::TIMER_DIVIDE), AccessSize::Dword, 0, 800);
    assert_eq!(l.current_count(800), 600);
    assert_eq!(l.next_deadline(), Some(800 + 600 * 2 * 2));
}

#[test]
fn tsc_deadline_fires_at_the_right_time() {
    let mut l = enabled();
    // Outside TSC-deadline mode the MSR reads 0 and ignores writes.
    l.write_msr(msr::TSC_DEADLINE, 50_000, 10).unwrap();
    assert_eq!(l.read_msr(msr::TSC_DEADLINE, 10), Ok(0));
    assert_eq!(l.next_deadline(), None);
    // lapic_timer_set_oneshot(tsc-deadline) then lapic_next_deadline().
    w(&mut l, reg::LVT_TIMER, (2 << 17) | 0xEC);
    l.write_msr(msr::TSC_DEADLINE, 50_000, 10).unwrap();
    assert_eq!(l.read_msr(msr::TSC_DEADLINE, 10), Ok(50_000));
    assert_eq!(l.next_deadline(), Some(50_000));
    // The initial-count register is ignored in this mode.
    w(&mut l, reg::TIMER_INITIAL, 5);
    assert_eq!(r(&mut l, reg::TIMER_INITIAL), 0);
    assert_eq!(r(&mut l, reg::TIMER_CURRENT), 0);
    l.tick(49_999);
    assert_eq!(l.pending_vector(), None);
    l.tick(50_000);
    assert_eq!(l.pending_vector(), Some(0xEC));
    assert_eq!(l.read_msr(msr::TSC_DEADLINE, 50_001), Ok(0));
    assert_eq!(l.next_deadline(), None);
    // Re-arming and disarming.
    l.write_msr(msr::TSC_DEADLINE, 90_000, 60_000).unwrap();
    l.write_msr(msr::TSC_DEADLINE, 0, 60_001).unwrap();
    assert_eq!(l.next_deadline(), None);
    // A deadline already in the past fires on the write.
    assert!(l.acknowledge(0xEC));
    l.eoi();
    l.write_msr(msr::TSC_DEADLINE, 70_000, 80_000).unwrap();
    assert_eq!(l.pending_vector(), Some(0xEC));
    // Leaving TSC-deadline mode disarms an armed deadline.
    l.write_msr(msr::TSC_DEADLINE, 200_000, 80_000).unwrap();
    w(&mut l, reg::LVT_TIMER, 0xEC);
    assert_eq!(l.next_deadline(), None);
    w(&mut l, reg::LVT_TIMER, (2 << 17) | 0xEC);
    assert_eq!(l.read_msr(msr::TSC_DEADLINE, 80_000), Ok(0));
}

#[test]
fn cr8_view_of_tpr() {
    let mut l = x2(0);
    l.set_tpr(0xA0);
    assert_eq!(l.read_msr(0x808, 0), Ok(0xA0));
    l.write_msr(0x808, 0x30, 0).unwrap();
    assert_eq!(l.tpr() >> 4, 3);
}

#[test]
fn arbitrary_guest_input_never_panics() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sizes = [AccessSize::Byte, AccessSize::Word, AccessSize::Dword, AccessSize::Qword];
    let mut l = enabled();
    for i in 0..20_000u64 {
        let v = next();
        let size = sizes[(v & 3) as usize];
        let off = (v >> 8) & 0x1FFF;
        match v >> 62 {
            0 => {
                l.mmio_read(off, size, i);
            }
            1 => l.mmio_write(off & !0xF, AccessSize::Dword, next(), i),
            2 => {
                let m = 0x800 + ((v >> 16) & 0xFF) as u32;
                let _ = l.write_msr(m, next() & 0xFFFF_FFFF, i);
                let _ = l.read_msr(m, i);
            }
            _ => {
                let _ = l.write_msr([msr::APIC_BASE, msr::TSC_DEADLINE][(v & 1) as usize], next(), i);
            }
        }
        l.tick(i.wrapping_mul(997));
        if let Some(v) = l.pending_vector() {
            assert!(l.acknowledge(v));
        }
        let _ = l.take_eoi_broadcast();
    }
}

#[test]
fn init_and_startup_are_recorded_for_the_vm_and_never_taken_by_the_sender() {
    let mut sender = enabled();
    // INIT level assert to APIC 1, then the de-assert (ignored), then STARTUP 0x9A.
    w(&mut sender, reg::ICR_HI, 1 << 24);
    w(&mut sender, reg::ICR_LO, 0x4500);
    let init = sender.take_outgoing().unwrap();
    assert_eq!((init.msg.delivery, init.self_took), (DeliveryMode::Init, false));
    w(&mut sender, reg::ICR_LO, 0x8500);
    assert_eq!(sender.take_outgoing(), None, "INIT de-assert");
    w(&mut sender, reg::ICR_LO, 0x469A);
    let sipi = sender.take_outgoing().unwrap();
    assert_eq!((sipi.msg.delivery, sipi.msg.vector), (DeliveryMode::StartUp, 0x9A));
    // A STARTUP to itself by shorthand is not taken.
    w(&mut sender, reg::ICR_LO, (1 << 18) | 0x0600);
    assert_eq!((sender.take_startup(), sender.take_outgoing()), (StartupSignals::default(), None));

    let mut ap = Vlapic::new(1, false, GuestClock::new(TSC_HZ).unwrap());
    w(&mut ap, reg::SVR, 0x1FF);
    w(&mut ap, reg::TPR, 0x20);
    assert!(ap.receive_ipi(&init.msg));
    assert_eq!(r(&mut ap, reg::TPR), 0, "INIT resets the registers");
    assert_eq!(r(&mut ap, reg::ID), 1 << 24, "but keeps the ID");
    assert!(ap.receive_ipi(&sipi.msg));
    assert_eq!(ap.take_startup(), StartupSignals { init: true, sipi: Some(0x9A) });
    assert_eq!(ap.take_startup(), StartupSignals::default());
}
