//! The 8254 PIT at ports 0x40..0x43 and port 0x61, with guest time moving between
//! accesses and the VM's timer check (`tick` at the next deadline) after each one.

use alloc::vec::Vec;

use super::{Input, MAX_ACCESSES};
use crate::devices::clock::GuestClock;
use crate::devices::irq::GsiSink;
use crate::devices::pit::Pit;

const PORTS: [u16; 5] = [0x40, 0x41, 0x42, 0x43, 0x61];

/// Counts the level changes the PIT sends.
#[derive(Debug, Default)]
struct Changes(Vec<(u32, bool)>);

impl GsiSink for Changes {
    fn set_level(&mut self, gsi: u32, high: bool) {
        self.0.push((gsi, high));
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    // Any TSC frequency from 1 Hz up: slow clocks make PIT ticks shorter than a TSC tick.
    let Some(clock) = GuestClock::new(input.u64().max(1)) else { return };
    let mut pit = Pit::new(clock);
    let mut now = input.u64() >> 8;
    let mut irqs = Changes::default();
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        let port = PORTS.get(usize::from(op >> 5) % PORTS.len()).copied().unwrap_or(0x40);
        match op % 4 {
            0 => {
                let _ = pit.read_port(port, now);
            }
            1 => {
                let value = input.u8().unwrap_or(0);
                pit.write_port(port, value, now);
            }
            2 => now = now.saturating_add(if op & 0x80 != 0 { input.u64() } else { input.le(3) }),
            _ => {
                // Run to the next deadline, as the VM does when its timer fires.
                if let Some(deadline) = pit.next_deadline() {
                    now = now.max(deadline);
                }
            }
        }
        irqs.0.clear();
        pit.tick(now, &mut irqs);
        // One edge per check at most: missed edges are coalesced, never replayed.
        assert!(irqs.0.len() <= 2, "{} level changes in one tick", irqs.0.len());
        // The next deadline lies in the future, or the VM would re-enter the timer
        // check without the guest running (an endless loop), unless time is at its end.
        if let Some(next) = pit.next_deadline() {
            assert!(next > now || now == u64::MAX, "deadline {next} not after now {now} after a tick");
        }
        let _ = pit.out(2, now);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_accesses() {
        super::super::Prng::new(0x40).drive(3000, 256, super::run);
    }
}
