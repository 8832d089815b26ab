use super::*;
use crate::devices::bus::{MemBus, PioBus, PortDevice};
use crate::devices::irq::GsiLines;
use crate::devices::pit::PIT_HZ;
use crate::devices::vlapic::msr;
use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::RefCell;

/// 2.5 GHz guest TSC.
const TSC_HZ: u64 = 2_500_000_000;
const LAPIC: u64 = 0xFEE0_0000;
const IOAPIC: u64 = 0xFEC0_0000;

fn controller() -> InterruptController {
    InterruptController::new(GuestClock::new(TSC_HZ).unwrap(), 1)
}

fn lapic_write(ic: &mut InterruptController, reg: u64, value: u32) {
    assert!(ic.mmio_write(0, LAPIC + reg, AccessSize::Dword, u64::from(value), 0));
}

fn ioapic_entry(ic: &mut InterruptController, pin: u32, value: u64) {
    ic.mmio_write(0, IOAPIC, AccessSize::Dword, u64::from(0x11 + 2 * pin), 0);
    ic.mmio_write(0, IOAPIC + 0x10, AccessSize::Dword, value >> 32, 0);
    ic.mmio_write(0, IOAPIC, AccessSize::Dword, u64::from(0x10 + 2 * pin), 0);
    ic.mmio_write(0, IOAPIC + 0x10, AccessSize::Dword, value & 0xFFFF_FFFF, 0);
}

fn out(ic: &mut InterruptController, port: u16, value: u8, now: u64) {
    assert!(ic.port_write(port, AccessSize::Byte, u32::from(value), now));
}

/// What Linux 6.1 does on a uniprocessor xAPIC system before the timer works:
/// probe and init the 8259s and mask them, set up the LAPIC in flat logical mode,
/// route the IOAPIC pins (IRQ0 via the override on pin 2) and start the PIT periodic.
fn linux_boot_xapic(ic: &mut InterruptController) {
    // probe_8259A + init_8259A + mask everything.
    out(ic, 0xA1, 0xFF, 0);
    out(ic, 0x21, 0xFB, 0);
    assert_eq!(ic.port_read(0x21, AccessSize::Byte, 0), Some(0xFB));
    for (port, v) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01)] {
        out(ic, port, v, 0);
    }
    for (port, v) in [(0xA0, 0x11), (0xA1, 0x38), (0xA1, 0x02), (0xA1, 0x01)] {
        out(ic, port, v, 0);
    }
    out(ic, 0x21, 0xFF, 0);
    out(ic, 0xA1, 0xFF, 0);
    // setup_local_APIC.
    lapic_write(ic, 0xE0, 0xFFFF_FFFF);
    lapic_write(ic, 0xD0, 1 << 24);
    lapic_write(ic, 0x80, 0);
    lapic_write(ic, 0xF0, 0x1FF);
    lapic_write(ic, 0x350, 0x1_0700);
    lapic_write(ic, 0x360, 0x400);
    // setup_IO_APIC: pin 2 = IRQ0 (edge, high), logical destination 1.
    ioapic_entry(ic, 2, (1 << 56) | (1 << 11) | 0x30);
    // pit_set_periodic at HZ = 250.
    let latch = ((PIT_HZ + 125) / 250) as u16;
    out(ic, 0x43, 0x34, 0);
    out(ic, 0x40, latch as u8, 0);
    out(ic, 0x40, (latch >> 8) as u8, 0);
}

#[test]
fn pit_tick_arrives_as_the_ioapic_vector() {
    let mut ic = controller();
    linux_boot_xapic(&mut ic);
    assert_eq!(ic.pending_vector(0), None);
    let due = ic.next_deadline().unwrap();
    // 4 ms at 2.5 GHz, give or take a PIT tick.
    assert!(due.abs_diff(10_000_000) < 2_200, "{due}");
    ic.tick(due - 1);
    assert_eq!(ic.pending_vector(0), None);
    ic.tick(due);
    assert_eq!(ic.pending_vector(0), Some(0x30));
    assert_eq!(ic.take_interrupt(0), Some(0x30));
    assert_eq!(ic.pending_vector(0), None);
    // The PIC saw IRQ0 too but is masked: nothing from it, nothing via ExtINT.
    assert_eq!(ic.pic.master.irr() & 1, 1);
    assert_eq!(ic.pic.pending_vector(), None);
    // EOI through the APIC page; edge, so the IOAPIC needs nothing.
    lapic_write(&mut ic, 0xB0, 0);
    assert_eq!(ic.lapics[0].ppr(), 0);
    // The next tick comes one period later.
    let next = ic.next_deadline().unwrap();
    assert!((next - due).abs_diff(10_000_000) < 2_200);
    ic.tick(next);
    assert_eq!(ic.take_interrupt(0), Some(0x30));
}

#[test]
fn masked_ioapic_pin_and_masked_pic_deliver_nothing() {
    let mut ic = controller();
    linux_boot_xapic(&mut ic);
    ioapic_entry(&mut ic, 2, (1 << 16) | 0x30);
    let due = ic.next_deadline().unwrap();
    ic.tick(due);
    assert_eq!(ic.pending_vector(0), None);
    assert_eq!(ic.take_interrupt(0), None);
}

#[test]
fn level_triggered_gsi_holds_remote_irr_until_the_lapic_eoi() {
    let mut ic = controller();
    ic.lapics[0].write_msr(msr::APIC_BASE, 0xFEE0_0D00, 0).unwrap();
    ic.write_msr(0, 0x80F, 0x1FF, 0).unwrap().unwrap();
    // A PCI INTx line on GSI 19: level, active low, physical destination 0.
    ioapic_entry(&mut ic, 19, (1 << 15) | (1 << 13) | 0x41);
    ic.set_level(19, true);
    assert_eq!(ic.take_interrupt(0), Some(0x41));
    assert!(ic.ioapic.entry(19).unwrap().remote_irr());
    assert_eq!(ic.lapics[0].read_msr(0x818 + 2, 0), Ok(1 << 1), "TMR bit for 0x41");
    // x2APIC EOI: Remote IRR clears; the line is still asserted, so it comes again.
    ic.write_msr(0, 0x80B, 0, 0).unwrap().unwrap();
    assert_eq!(ic.pending_vector(0), Some(0x41));
    assert!(ic.ioapic.entry(19).unwrap().remote_irr());
    assert_eq!(ic.take_interrupt(0), Some(0x41));
    // The driver quiets the device, then EOIs: nothing more.
    ic.set_level(19, false);
    ic.write_msr(0, 0x80B, 0, 0).unwrap().unwrap();
    assert!(!ic.ioapic.entry(19).unwrap().remote_irr());
    assert_eq!(ic.pending_vector(0), None);
}

#[test]
fn non_register_eoi_reaches_the_ioapic() {
    let mut ic = controller();
    lapic_write(&mut ic, 0xF0, 0x1FF);
    ioapic_entry(&mut ic, 9, (1 << 15) | 0x39);
    ic.set_isa_irq(9, true);
    assert_eq!(ic.take_interrupt(0), Some(0x39));
    ic.set_isa_irq(9, false);
    assert_eq!(ic.eoi(0, 0), Some(Eoi { vector: 0x39, level: true }));
    assert!(!ic.ioapic.entry(9).unwrap().remote_irr());
}

#[test]
fn extint_through_lint0_when_the_pic_is_unmasked() {
    let mut ic = controller();
    linux_boot_xapic(&mut ic);
    // Virtual wire: LINT0 ExtINT unmasked; the keyboard IRQ unmasked at the PIC.
    lapic_write(&mut ic, 0x350, 0x700);
    ic.set_isa_irq(1, true);
    assert_eq!(ic.pending_vector(0), None, "IRQ1 masked at the PIC");
    out(&mut ic, 0x21, 0xFD, 0);
    // IRQ1 also reaches IOAPIC pin 1, which is masked.
    assert_eq!(ic.pending_vector(0), Some(0x31));
    // ExtINT ignores the TPR.
    ic.lapics[0].set_tpr(0xF0);
    assert_eq!(ic.take_interrupt(0), Some(0x31));
    assert_eq!(ic.pic.master.isr(), 0x02);
    out(&mut ic, 0x20, 0x20, 0);
    assert_eq!(ic.pending_vector(0), None);
}

#[test]
fn tsc_deadline_through_the_msr_path() {
    let mut ic = controller();
    ic.write_msr(0, msr::APIC_BASE, 0xFEE0_0D00, 0).unwrap().unwrap();
    ic.write_msr(0, 0x80F, 0x1FF, 0).unwrap().unwrap();
    ic.write_msr(0, 0x832, (2 << 17) | 0xEC, 0).unwrap().unwrap();
    ic.write_msr(0, msr::TSC_DEADLINE, 5_000_000, 1_000).unwrap().unwrap();
    assert_eq!(ic.next_deadline(), Some(5_000_000));
    ic.tick(4_999_999);
    assert_eq!(ic.pending_vector(0), None);
    ic.tick(5_000_000);
    assert_eq!(ic.take_interrupt(0), Some(0xEC));
    // Non-APIC MSRs are not the controller's business; bad APIC accesses are #GP.
    assert_eq!(ic.read_msr(0, 0x10, 0), None);
    assert_eq!(ic.write_msr(0, 0xC000_0080, 0, 0), None);
    assert_eq!(ic.write_msr(0, 0x802, 1, 0), Some(Err(ApicFault)));
}

#[test]
fn next_deadline_is_the_earliest_of_the_timers() {
    let mut ic = controller();
    assert_eq!(ic.next_deadline(), None);
    linux_boot_xapic(&mut ic);
    let pit = ic.pit.next_deadline().unwrap();
    assert_eq!(ic.next_deadline(), Some(pit));
    lapic_write(&mut ic, 0x3E0, 0xB);
    lapic_write(&mut ic, 0x320, 0xEF);
    lapic_write(&mut ic, 0x380, 1000);
    assert_eq!(ic.next_deadline(), Some(2500));
    // The shutdown control word stops the PIT; the LAPIC one-shot remains.
    out(&mut ic, 0x43, 0x30, 0);
    assert_eq!(ic.next_deadline(), Some(2500));
    ic.tick(2500);
    assert_eq!(ic.next_deadline(), None);
    assert_eq!(ic.take_interrupt(0), Some(0xEF));
}

#[test]
fn gsi_lines_from_bus_devices_drain_into_the_controller() {
    let mut ic = controller();
    lapic_write(&mut ic, 0xF0, 0x1FF);
    ioapic_entry(&mut ic, 4, 0x34);
    let lines = GsiLines::new();
    let mut uart = lines.clone();
    uart.pulse(4);
    assert_eq!(ic.pending_vector(0), None);
    lines.drain_into(&mut ic);
    assert_eq!(ic.take_interrupt(0), Some(0x34));
}

/// Records port writes; reads return 0x5A.
struct IrqProbe(Rc<RefCell<alloc::vec::Vec<(u16, u32)>>>);

impl PortDevice for IrqProbe {
    fn read(&mut self, _offset: u16, _size: AccessSize) -> u32 {
        0x5A
    }
    fn write(&mut self, offset: u16, _size: AccessSize, value: u32) {
        self.0.borrow_mut().push((offset, value));
    }
}

impl crate::devices::bus::MmioDevice for IrqProbe {
    fn read(&mut self, _offset: u64, _size: AccessSize) -> u64 {
        0x5A
    }
    fn write(&mut self, offset: u64, _size: AccessSize, value: u64) {
        self.0.borrow_mut().push((offset as u16, value as u32));
    }
}

#[test]
fn bus_adapters_route_to_the_controller_or_fall_through() {
    use crate::devices::bus::BusRange;
    let log = Rc::new(RefCell::new(alloc::vec::Vec::new()));
    let mut pio = PioBus::new("pio");
    pio.insert_ports(0x3F8, 8, Box::new(IrqProbe(log.clone()))).unwrap();
    let mut mem = MemBus::new("mmio");
    mem.insert(BusRange::new(0xFEB0_0000, 0x1000).unwrap(), Box::new(IrqProbe(log.clone()))).unwrap();
    let mut ic = controller();
    {
        let (mut mmio, mut ports) = ic.buses(0, 0, &mut mem, &mut pio);
        let mmio: &mut dyn MmioBus = &mut mmio;
        let ports: &mut dyn PortBus = &mut ports;
        assert_eq!(mmio.read(GuestPhysAddr::new(LAPIC + 0x30), AccessSize::Dword), 0x0005_0014);
        assert_eq!(mmio.read(GuestPhysAddr::new(0xFEB0_0000), AccessSize::Dword), 0x5A);
        assert!(mmio.claims(GuestPhysAddr::new(IOAPIC + 0xFFF)));
        assert!(mmio.claims(GuestPhysAddr::new(0xFEB0_0000)));
        assert!(!mmio.claims(GuestPhysAddr::new(0xFED0_0000)));
        mmio.write(GuestPhysAddr::new(LAPIC + 0xF0), AccessSize::Dword, 0x1FF);
        mmio.write(GuestPhysAddr::new(0xFEB0_0010), AccessSize::Dword, 7);
        ports.write(0x21, AccessSize::Byte, 0xAB);
        assert_eq!(ports.read(0x21, AccessSize::Byte), 0xAB);
        assert_eq!(ports.read(0x3F8, AccessSize::Byte), 0x5A);
        ports.write(0x3F9, AccessSize::Byte, 3);
        // A word access to the PIC reads the command and data ports.
        assert_eq!(ports.read(0x20, AccessSize::Word), 0xAB00);
        assert_eq!(ports.read(0x80, AccessSize::Byte), 0xFF);
    }
    assert!(ic.lapics[0].is_enabled());
    assert_eq!(*log.borrow(), [(0x10, 7), (1, 3)]);
    assert!(InterruptController::claims_port(0x61) && InterruptController::claims_port(0x4D0));
    assert!(!InterruptController::claims_port(0x3F8));
    assert!(!InterruptController::claims_mmio(LAPIC + 0x1000) && !InterruptController::claims_mmio(0));
}

#[test]
fn apic_disabled_passes_the_pic_straight_through() {
    let mut ic = controller();
    linux_boot_xapic(&mut ic);
    out(&mut ic, 0x21, 0xFE, 0);
    ic.write_msr(0, msr::APIC_BASE, 0xFEE0_0100, 0).unwrap().unwrap();
    let due = ic.pit.next_deadline().unwrap();
    ic.tick(due);
    assert_eq!(ic.take_interrupt(0), Some(0x30));
}

/// A reschedule-style IPI from vCPU 0 to vCPU 1 (xAPIC ICR over MMIO), timed from the
/// ICR write's exit to vCPU 1's injection and to its EOI, by register and paravirtual.
#[test]
fn ipis_between_vcpus_are_timed_from_the_icr_write_to_injection_and_eoi() {
    let mut ic = InterruptController::new(GuestClock::new(TSC_HZ).unwrap(), 2);
    for vcpu in 0..2 {
        assert!(ic.mmio_write(vcpu, LAPIC + 0xF0, AccessSize::Dword, 0x1FF, 0));
    }
    let send = |ic: &mut InterruptController, now: u64| {
        assert!(ic.mmio_write(0, LAPIC + 0x310, AccessSize::Dword, 1 << 24, now));
        assert!(ic.mmio_write(0, LAPIC + 0x300, AccessSize::Dword, 0xFD, now));
    };
    send(&mut ic, 1_000);
    ic.tick(1_400);
    assert_eq!(ic.take_interrupt(1), Some(0xFD));
    assert!(ic.mmio_write(1, LAPIC + 0xB0, AccessSize::Dword, 0, 1_900));
    let l = ic.ipi_latency();
    assert_eq!((l.sent_to_taken.count, l.sent_to_taken.sum), (1, 400));
    assert_eq!((l.sent_to_eoi.count, l.sent_to_eoi.sum), (1, 900));
    // The next one ends with a paravirtual EOI.
    send(&mut ic, 5_000);
    ic.tick(5_100);
    assert_eq!(ic.take_interrupt(1), Some(0xFD));
    assert!(ic.eoi(1, 5_300).is_some());
    let l = ic.ipi_latency();
    assert_eq!(l.sent_to_taken.to_string(), "2/500/100/400");
    assert_eq!(l.sent_to_pv_eoi.to_string(), "1/300/300/300");
    assert_eq!(l.sent_to_eoi.count, 1);
    // A self-IPI and a device message are not IPIs between vCPUs.
    assert!(ic.mmio_write(0, LAPIC + 0x300, AccessSize::Dword, (1 << 18) | 0x40, 6_000));
    ic.tick(6_100);
    assert_eq!(ic.take_interrupt(0), Some(0x40));
    assert_eq!(ic.ipi_latency().sent_to_taken.count, 2);
}

#[test]
fn each_vcpu_has_its_own_next_deadline() {
    let mut ic = InterruptController::new(GuestClock::new(TSC_HZ).unwrap(), 2);
    for (vcpu, count) in [(0, 1000u64), (1, 3000)] {
        assert!(ic.mmio_write(vcpu, LAPIC + 0xF0, AccessSize::Dword, 0x1FF, 0));
        assert!(ic.mmio_write(vcpu, LAPIC + 0x3E0, AccessSize::Dword, 0xB, 0));
        assert!(ic.mmio_write(vcpu, LAPIC + 0x320, AccessSize::Dword, 0xEF, 0));
        assert!(ic.mmio_write(vcpu, LAPIC + 0x380, AccessSize::Dword, count, 0));
    }
    let (first, second) = (ic.next_deadline_among(|v| v == 0).unwrap(), ic.next_deadline_among(|v| v == 1).unwrap());
    assert!(first < second, "{first} {second}");
    assert_eq!(ic.next_deadline(), Some(first));
    assert_eq!(ic.next_deadline_among(|v| v == 1), Some(second), "vCPU 0 is away");
    assert_eq!(ic.next_deadline_among(|_| false), None, "everyone away, no PIT");
}
