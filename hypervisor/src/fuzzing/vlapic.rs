//! The local APIC: its xAPIC MMIO page, the x2APIC and APIC-base MSRs, interrupts
//! arriving, the vCPU taking them, and timer deadlines as guest time moves.

use super::{Input, MAX_ACCESSES, assert_fits};
use crate::devices::clock::GuestClock;
use crate::devices::vlapic::{Vlapic, msr};

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(clock) = GuestClock::new(input.u64().max(1)) else { return };
    let mut apic = Vlapic::new(u32::from(input.u8().unwrap_or(0)), true, clock);
    let mut now = input.u64() >> 8;
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        match op % 8 {
            0 => {
                let offset = u64::from(input.u16()) & 0x1fff;
                let size = input.size(true);
                assert_fits(apic.mmio_read(offset, size, now), size);
            }
            1 => {
                let offset = u64::from(input.u16()) & 0x1fff;
                let size = input.size(true);
                let value = input.value(size);
                apic.mmio_write(offset, size, value, now);
            }
            2 | 3 => {
                let msr = match input.u8().unwrap_or(0) {
                    0 => msr::APIC_BASE,
                    1 => msr::TSC_DEADLINE,
                    n => msr::X2APIC_FIRST | u32::from(n),
                };
                if op % 8 == 2 {
                    let _ = apic.read_msr(msr, now);
                } else {
                    let value = if op & 0x80 != 0 { input.u64() } else { input.u32().into() };
                    let _ = apic.write_msr(msr, value, now);
                }
            }
            4 => {
                now = now.saturating_add(if op & 0x80 != 0 { input.u64() } else { input.le(3) });
                if op & 0x40 != 0
                    && let Some(deadline) = apic.next_deadline()
                {
                    now = now.max(deadline);
                }
            }
            5 => {
                let vector = input.u8().unwrap_or(0);
                let _ = apic.accept_interrupt(vector, op & 0x80 != 0);
            }
            6 => {
                // The vCPU takes what is pending, as interrupt injection does.
                if let Some(vector) = apic.pending_vector() {
                    assert!(vector >= 16, "vector {vector} offered to the vCPU");
                    assert!(apic.acknowledge(vector));
                    // Taking a vector raises the PPR to its class: the next one offered
                    // is of a higher class, so injection loops at most 16 times.
                    if let Some(next) = apic.pending_vector() {
                        assert!(next >> 4 > vector >> 4, "{next:#x} offered after {vector:#x}");
                    }
                }
            }
            _ => {
                let _ = apic.eoi();
                let _ = apic.take_eoi_broadcast();
                let _ = apic.take_nmi();
                apic.set_tpr(input.u8().unwrap_or(0));
            }
        }
        apic.tick(now);
        // A timer that has fired is re-armed in the future (or stopped), so the VM
        // never re-enters the timer check without the guest running.
        if let Some(next) = apic.next_deadline() {
            assert!(next > now || now == u64::MAX, "deadline {next} not after now {now} after a tick");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_accesses() {
        super::super::Prng::new(0xfee0).drive(3000, 256, super::run);
    }
}
