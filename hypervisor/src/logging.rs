//! The serial logger: `log` records go to COM1, one line each, prefixed with the CPU's
//! APIC id and the subsystem target (`[cpu0 acpi] ...`).

use core::fmt::Write;
use log::{LevelFilter, Log, Metadata, Record};
use spin::Mutex;
use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;

const COM1: u16 = 0x3f8;

struct SerialLogger {
    port: Mutex<Option<Uart16550<PioBackend>>>,
}

static LOGGER: SerialLogger = SerialLogger { port: Mutex::new(None) };

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
    // A panic may hit while the port is locked: don't deadlock, write anyway.
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
