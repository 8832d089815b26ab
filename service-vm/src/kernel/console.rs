//! `log` records to the VM's console, one hypercall per line (the hypervisor prefixes
//! the VM's name and rate-limits).

use core::fmt::{self, Write};

use log::{LevelFilter, Log, Metadata, Record};

struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// Writes one line (cut at 255 bytes, then the newline that ends it).
pub fn write_line(args: fmt::Arguments<'_>) {
    let mut line = Line { buf: [0; 256], len: 0 };
    let _ = line.write_fmt(args);
    line.len = line.len.min(line.buf.len() - 1);
    if let Some(end) = line.buf.get_mut(line.len) {
        *end = b'\n';
    }
    super::hypercall::console_write(line.buf.get(..=line.len).unwrap_or(&[]));
}

struct Console;

impl Log for Console {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        write_line(format_args!("[{}] {}", record.target(), record.args()));
    }
    fn flush(&self) {}
}

static CONSOLE: Console = Console;

pub fn init() {
    let _ = log::set_logger(&CONSOLE);
    log::set_max_level(LevelFilter::Info);
}
