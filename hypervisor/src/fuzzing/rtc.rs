//! The RTC and CMOS RAM at ports 0x70/0x71, with the guest TSC moving between
//! accesses and an arbitrary wall clock and TSC frequency at start.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{Input, MAX_ACCESSES, assert_fits};
use crate::devices::bus::PortDevice;
use crate::devices::rtc::Rtc;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let base_unix_secs = input.u64();
    let base_tsc = input.u64();
    let tsc_hz = input.u64();
    let tsc = Arc::new(AtomicU64::new(base_tsc));
    let clock = tsc.clone();
    let mut rtc = Rtc::new(base_unix_secs, base_tsc, tsc_hz, Box::new(move || clock.load(Ordering::Relaxed)));
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        let offset = u16::from(op >> 6);
        match op % 4 {
            0 => {
                let size = input.size(false);
                assert_fits(u64::from(rtc.read(offset, size)), size);
            }
            1 => {
                let size = input.size(false);
                let value = input.value(size) as u32;
                rtc.write(offset, size, value);
            }
            2 => {
                // Time passes: small steps and, with the top bit, arbitrary jumps.
                let step = if op & 0x80 != 0 { input.u64() } else { input.le(3) };
                tsc.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some(t.saturating_add(step))).ok();
            }
            _ => {
                let index = input.u8().unwrap_or(0);
                let now = tsc.load(Ordering::Relaxed);
                let _ = rtc.register_at(index, now);
                let _ = rtc.unix_time_at(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_accesses() {
        super::super::Prng::new(0x70).drive(3000, 256, super::run);
    }
}
