//! The serial logger: `log` records go to COM1, one line each, prefixed with the CPU's
//! APIC id and the subsystem target (`[cpu0 acpi] ...`).
//!
//! Until the scheduler starts, lines are written at once. After [`defer_output`] they go
//! into a ring buffer ([`LogRing`], [`RING_BYTES`]) that [`drain`] moves to the UART
//! between slices, only as fast as the UART takes bytes without waiting: a VM exit that
//! logs never busy-waits on the serial line. Lines that find the ring full are dropped
//! and counted ("N log lines dropped"). [`flush`] empties it before the machine stops
//! (verdict, panic).

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use log::{LevelFilter, Log, Metadata, Record};
use spin::Mutex;
use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;

use crate::log_ring::LogRing;

const COM1: u16 = 0x3f8;
/// Log output waiting for the UART: about 5.7 s of 115200 baud.
pub const RING_BYTES: usize = 64 * 1024;

struct SerialLogger {
    port: Mutex<Option<Uart16550<PioBackend>>>,
    ring: Mutex<LogRing<RING_BYTES>>,
    deferred: AtomicBool,
}

static LOGGER: SerialLogger =
    SerialLogger { port: Mutex::new(None), ring: Mutex::new(LogRing::new()), deferred: AtomicBool::new(false) };

/// From now on log lines wait in the ring for [`drain`] (the scheduler calls it).
pub fn defer_output() {
    LOGGER.deferred.store(true, Ordering::Release);
}

/// Moves buffered log output to the UART while it accepts bytes without waiting.
/// Returns whether the ring is empty. Called between slices and when idle. Each
/// FIFO's worth is sent with interrupts off (a handler may log) and the state they had
/// is restored in between, so a long backlog does not hold interrupts off.
pub fn drain() -> bool {
    loop {
        match x86_64::instructions::interrupts::without_interrupts(drain_one_fifo) {
            Drained::More => {}
            Drained::Empty => return true,
            Drained::Busy => return false,
        }
    }
}

enum Drained {
    /// Bytes went out and more wait.
    More,
    /// The ring is empty.
    Empty,
    /// The UART (or its lock) is busy: try again later.
    Busy,
}

fn drain_one_fifo() -> Drained {
    let Some(mut port) = LOGGER.port.try_lock() else { return Drained::Busy };
    let mut ring = LOGGER.ring.lock();
    if ring.is_empty() {
        let dropped = ring.take_dropped();
        if dropped == 0 {
            return Drained::Empty;
        }
        // The summary goes through the ring like any line, so it can't be lost.
        ring.begin();
        let _ = writeln!(RingWriter(&mut ring), "[log] {dropped} log lines dropped (output buffer full)");
        ring.end();
    }
    let Some(uart) = port.as_mut() else {
        // No serial port: the lines go nowhere, as they would have unbuffered.
        while ring.pop().is_some() {}
        let _ = ring.take_dropped();
        return Drained::Empty;
    };
    // A FIFO's worth at a time, only while the FIFO is empty: never waits.
    let mut chunk = [0u8; 16];
    let n = ring.peek(&mut chunk);
    let sent = uart.send_bytes(chunk.get(..n).unwrap_or(&[]));
    if sent == 0 {
        return Drained::Busy;
    }
    ring.consume(sent);
    Drained::More
}

/// Writes everything buffered, waiting for the UART as long as it takes (before the
/// machine stops or resets; never from an exit).
pub fn flush() {
    x86_64::instructions::interrupts::without_interrupts(|| {
        while !drain() {
            core::hint::spin_loop();
        }
    });
}

/// Sets up COM1 and installs the logger. A laptop without a UART just logs nowhere.
pub fn init(level: LevelFilter) {
    // SAFETY: COM1's eight ports belong to the hypervisor for its whole lifetime; no
    // guest is given direct access to them.
    let uart = unsafe { Uart16550::new_port(COM1) }.ok().and_then(|mut uart| {
        uart.init(uart_16550::Config::default()).ok()?;
        Some(uart)
    });
    *LOGGER.port.lock() = uart;
    // A second call (e.g. after a panic during early boot) keeps the first logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Writes raw text to the serial port, bypassing `log` (for panic reports).
pub fn write_raw(text: core::fmt::Arguments<'_>) {
    // A panic may hit while the ring or port is locked: don't deadlock, write anyway.
    if LOGGER.ring.is_locked() {
        // SAFETY: we are on the panic path; at worst a line being buffered is cut.
        unsafe { LOGGER.ring.force_unlock() };
    }
    if LOGGER.port.is_locked() {
        // SAFETY: as above; the panic report only appends whole bytes.
        unsafe { LOGGER.port.force_unlock() };
    }
    // What was logged before the panic comes first.
    flush();
    let mut guard = match LOGGER.port.try_lock() {
        Some(guard) => guard,
        None => {
            // SAFETY: we are on the panic path and only ever append whole bytes.
            unsafe { LOGGER.port.force_unlock() };
            LOGGER.port.lock()
        }
    };
    if let Some(uart) = guard.as_mut() {
        let _ = UartWriter(uart).write_fmt(text);
    }
}

struct UartWriter<'a>(&'a mut Uart16550<PioBackend>);

/// Formats into the ring with the UART's line endings.
struct RingWriter<'a>(&'a mut LogRing<RING_BYTES>);

impl Write for RingWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for line in s.split_inclusive('\n') {
            match line.strip_suffix('\n') {
                Some(text) => {
                    self.0.push(text.as_bytes());
                    self.0.push(b"\r\n");
                }
                None => self.0.push(line.as_bytes()),
            }
        }
        Ok(())
    }
}

impl Write for UartWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.0.send_bytes_exact(b"\r");
            }
            self.0.send_bytes_exact(&[byte]);
        }
        Ok(())
    }
}

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // The initial APIC id (CPUID 1:EBX[31:24]), read here so that logging needs no
        // other module.
        let cpu = core::arch::x86_64::__cpuid(1).ebx >> 24;
        x86_64::instructions::interrupts::without_interrupts(|| {
            if self.deferred.load(Ordering::Acquire) {
                let mut ring = self.ring.lock();
                ring.begin();
                let _ = writeln!(
                    RingWriter(&mut ring),
                    "[cpu{cpu} {:<5} {}] {}",
                    record.level(),
                    record.target(),
                    record.args()
                );
                ring.end();
                return;
            }
            let mut guard = self.port.lock();
            if let Some(uart) = guard.as_mut() {
                let _ = writeln!(
                    UartWriter(uart),
                    "[cpu{cpu} {:<5} {}] {}",
                    record.level(),
                    record.target(),
                    record.args()
                );
            }
        });
    }

    fn flush(&self) {}
}

/// A byte typed on the serial console, if one is waiting (the hypervisor's command
/// channel: tests and a service technician type here).
pub fn read_byte() -> Option<u8> {
    let mut guard = LOGGER.port.try_lock()?;
    guard.as_mut()?.try_receive_byte().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffered_lines_get_the_uarts_line_endings() {
        let mut ring = LogRing::<RING_BYTES>::new();
        ring.begin();
        write!(RingWriter(&mut ring), "one\ntwo\n").unwrap();
        write!(RingWriter(&mut ring), "three").unwrap();
        assert!(ring.end());
        let mut out = [0u8; 32];
        let n = ring.peek(&mut out);
        assert_eq!(&out[..n], b"one\r\ntwo\r\nthree");
    }
}
