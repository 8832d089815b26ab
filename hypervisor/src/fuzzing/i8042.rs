//! The i8042 keyboard controller at ports 0x60/0x64, with host key bytes arriving
//! between guest accesses.

use alloc::boxed::Box;

use super::{CountingLine, Input, MAX_ACCESSES, assert_fits};
use crate::devices::bus::PortDevice;
use crate::devices::i8042::{I8042, KEY_QUEUE_BYTES, REPLY_QUEUE_BYTES};
use crate::devices::power::PowerSignal;

/// Every byte the controller and the keyboard may hold: the key queue and the two
/// reply queues.
const MAX_QUEUED: usize = KEY_QUEUE_BYTES + 2 * REPLY_QUEUE_BYTES;

/// IRQ1 level changes one access may cause (lower, then raise for the next byte).
const MAX_LINE_CHANGES_PER_ACCESS: u32 = 2;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let line = CountingLine::default();
    let mut dev = I8042::new(Box::new(line.clone())).with_power_signal(PowerSignal::new());
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        let before = line.changes();
        let offset = if op & 0x10 != 0 { 4 } else { u16::from(op >> 5) };
        match op % 4 {
            0 => {
                let size = input.size(false);
                assert_fits(u64::from(dev.read(offset, size)), size);
            }
            1 | 2 => {
                let size = input.size(false);
                let value = input.value(size) as u32;
                dev.write(offset, size, value);
            }
            _ => {
                let keys = input.bytes(64);
                dev.inject_scancodes(keys);
            }
        }
        assert!(line.changes() - before <= MAX_LINE_CHANGES_PER_ACCESS, "IRQ1 toggled too often");
        assert!(dev.queued_bytes() <= MAX_QUEUED, "i8042 holds {} bytes", dev.queued_bytes());
        let _ = dev.take_reset_request();
        let _ = dev.take_led_change();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_accesses() {
        super::super::Prng::new(0x8042).drive(3000, 256, super::run);
    }
}
