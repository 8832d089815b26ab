//! Bulkhead's QEMU test harness: builds the USB image once per test binary, boots it in
#![allow(missing_debug_implementations)]
//! a QEMU machine, follows the serial console marker by marker, talks QMP, and keeps
//! the logs of a failed run under `target/test-logs/`.

pub mod bochs;
pub mod image;
pub mod machine;
pub mod rfb;
pub mod screen;
pub mod selftest;
mod serial_wait;

pub use bochs::Bochs;
pub use machine::{Machine, Outcome};
