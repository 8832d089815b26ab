//! `print!`/`println!` to the VM's console hypercall, one line per hypercall.

use core::fmt::{self, Write};

#[derive(Debug)]
pub struct LineBuffer {
    buf: [u8; 256],
    len: usize,
}

impl LineBuffer {
    pub const fn new() -> Self {
        LineBuffer { buf: [0; 256], len: 0 }
    }

    pub fn flush(&mut self) {
        if self.len > 0 {
            crate::hypercall::console_write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

pub fn print(args: fmt::Arguments<'_>) {
    let mut line = LineBuffer::new();
    let _ = line.write_fmt(args);
    line.flush();
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
