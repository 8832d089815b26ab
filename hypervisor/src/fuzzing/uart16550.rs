//! The 16550 UART (COM1) at ports 0x3F8..0x3FF, with host input arriving between
//! guest accesses.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::{CountingLine, Input, MAX_ACCESSES, assert_fits};
use crate::devices::bus::PortDevice;
use crate::devices::uart16550::{
    CONSOLE_RING_BYTES, ConsoleSink, FIFO_BYTES, INPUT_QUEUE_BYTES, MAX_LINE_BYTES, Uart16550,
};

/// Counts the lines handed to the log and keeps the longest one's length.
#[derive(Debug, Default, Clone)]
struct LineStats {
    lines: Arc<AtomicU32>,
    longest: Arc<AtomicUsize>,
}

impl ConsoleSink for LineStats {
    fn line(&mut self, _vm_name: &str, line: &[u8]) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        self.longest.fetch_max(line.len(), Ordering::Relaxed);
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let line = CountingLine::default();
    let stats = LineStats::default();
    let mut uart = Uart16550::new("fuzz", Box::new(line.clone()), Box::new(stats.clone()));
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        let offset = u16::from(op >> 4) % 10;
        let (lines_before, changes_before) = (stats.lines.load(Ordering::Relaxed), line.changes());
        let size = match op % 4 {
            0 => {
                let size = input.size(false);
                assert_fits(u64::from(uart.read(offset, size)), size);
                size
            }
            1 | 2 => {
                let size = input.size(false);
                let value = input.value(size) as u32;
                uart.write(offset, size, value);
                size
            }
            _ => {
                let bytes = input.bytes(255);
                uart.push_input(bytes);
                if op & 0x80 != 0 {
                    uart.flush_line();
                }
                crate::hw::AccessSize::Byte
            }
        };
        // At most one log line per byte written (a newline or a full line), plus
        // one for a flush; the line level is updated once per access.
        let lines = stats.lines.load(Ordering::Relaxed) - lines_before;
        assert!(lines <= u32::from(size.bytes()), "{lines} lines from one access");
        assert!(line.changes() - changes_before <= 1, "IRQ4 toggled more than once in one access");
        assert!(stats.longest.load(Ordering::Relaxed) <= MAX_LINE_BYTES);
        assert!(uart.pending_input() <= INPUT_QUEUE_BYTES + FIFO_BYTES, "{} input bytes held", uart.pending_input());
        assert!(uart.console().contents().len() <= CONSOLE_RING_BYTES);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_accesses() {
        super::super::Prng::new(0x3f8).drive(3000, 256, super::run);
    }
}
