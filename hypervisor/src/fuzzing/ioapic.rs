//! The I/O APIC's MMIO window and its pins, delivering to a local APIC that the vCPU
//! serves: taking vectors, EOIs and the EOI broadcasts back to the I/O APIC.

use super::{Input, MAX_ACCESSES, assert_fits};
use crate::devices::clock::GuestClock;
use crate::devices::ioapic::Vioapic;
use crate::devices::irq::{ApicMessage, ApicSink};
use crate::devices::layout::IOAPIC_GSIS;
use crate::devices::vlapic::Vlapic;

/// The local APIC, counting the messages it is offered.
#[derive(Debug)]
struct CountingApic {
    apic: Vlapic,
    offered: u32,
}

impl ApicSink for CountingApic {
    fn deliver(&mut self, msg: &ApicMessage) -> bool {
        self.offered += 1;
        self.apic.deliver(msg)
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut ioapic = Vioapic::new(input.u8().unwrap_or(0));
    let Some(clock) = GuestClock::new(1_000_000_000) else { return };
    let mut lapic = CountingApic { apic: Vlapic::new(0, true, clock), offered: 0 };
    // Software-enable the local APIC (SVR bit 8) so that it accepts interrupts.
    lapic.apic.mmio_write(0xF0, crate::hw::AccessSize::Dword, 0x1FF, 0);
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        lapic.offered = 0;
        match op % 6 {
            0 => {
                let offset = u64::from(input.u8().unwrap_or(0)) & 0x3f;
                let size = input.size(true);
                assert_fits(ioapic.mmio_read(offset, size), size);
            }
            1 => {
                let offset = u64::from(input.u8().unwrap_or(0)) & 0x3f;
                let size = input.size(true);
                let value = input.value(size);
                ioapic.mmio_write(offset, size, value);
                ioapic.service(&mut lapic);
            }
            2 => {
                let pin = u32::from(input.u8().unwrap_or(0) & 0x1f);
                ioapic.set_level(pin, op & 0x80 != 0, &mut lapic);
            }
            3 => {
                // The vCPU takes the pending vector and, with the top bit, ends it:
                // a level-triggered EOI goes back to the I/O APIC.
                if let Some(vector) = lapic.apic.pending_vector() {
                    lapic.apic.acknowledge(vector);
                }
                if op & 0x80 != 0 {
                    lapic.apic.mmio_write(0xB0, crate::hw::AccessSize::Dword, 0, 0);
                    while let Some(vector) = lapic.apic.take_eoi_broadcast() {
                        ioapic.eoi(vector, &mut lapic);
                    }
                }
            }
            4 => {
                let vector = input.u8().unwrap_or(0);
                ioapic.eoi(vector, &mut lapic);
            }
            _ => {
                let pin = u32::from(input.u8().unwrap_or(0) & 0x1f);
                ioapic.set_resample(pin, op & 0x80 != 0);
                let _ = ioapic.take_resampled();
            }
        }
        // One access delivers each pin at most once, and the EOI-broadcast loop ends
        // (the local APIC holds at most one broadcast per vector).
        assert!(lapic.offered <= IOAPIC_GSIS, "{} deliveries in one access", lapic.offered);
        for pin in 0..IOAPIC_GSIS {
            let entry = ioapic.entry(pin).unwrap_or(crate::devices::ioapic::RedirectionEntry::RESET);
            assert!(!entry.remote_irr() || entry.level(), "Remote IRR on edge-triggered pin {pin}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_accesses() {
        super::super::Prng::new(0xfec0).drive(3000, 256, super::run);
    }
}
