//! Harnesses that drive the guest-facing device models and the AML interpreter with
//! arbitrary bytes, for the fuzz targets in `hypervisor/fuzz/` and for short
//! deterministic runs under `cargo test`. Each `run` turns its input into a sequence
//! of accesses (port, MMIO, MSR, time advances) and asserts the model's invariants:
//! no panic, internal queues under their documented bounds, and a bounded amount of
//! work (interrupt line changes, deliveries, device writes) per access.
//!
//! Built only for tests and with the `fuzzing` feature; nothing here ships.
#![forbid(unsafe_code)]

pub mod aml;
pub mod i8042;
pub mod ioapic;
pub mod pci_host;
pub mod pci_passthrough;
pub mod pit;
pub mod policy;
pub mod rtc;
pub mod uart16550;
pub mod virtio_blk;
pub mod virtio_net;
pub mod vlapic;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::devices::irq_line::IrqLine;
use crate::hw::AccessSize;

/// At most this many accesses are taken from one input, so one run stays short.
pub const MAX_ACCESSES: usize = 4096;

/// Reads the input front to back; past the end every read is `None`.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    /// A little-endian value of `n` bytes (missing bytes read as zero, `n` <= 8).
    pub fn le(&mut self, n: usize) -> u64 {
        let mut value = 0u64;
        for i in 0..n.min(8) {
            let Some(b) = self.u8() else { break };
            value |= u64::from(b) << (i * 8);
        }
        value
    }

    pub fn u16(&mut self) -> u16 {
        self.le(2) as u16
    }

    pub fn u32(&mut self) -> u32 {
        self.le(4) as u32
    }

    pub fn u64(&mut self) -> u64 {
        self.le(8)
    }

    /// An access size from one byte: byte, word, dword, and qword when `qword`.
    pub fn size(&mut self, qword: bool) -> AccessSize {
        let b = self.u8().unwrap_or(0);
        match b % if qword { 4 } else { 3 } {
            0 => AccessSize::Byte,
            1 => AccessSize::Word,
            2 => AccessSize::Dword,
            _ => AccessSize::Qword,
        }
    }

    /// A value of `size` bytes.
    pub fn value(&mut self, size: AccessSize) -> u64 {
        self.le(usize::from(size.bytes()))
    }

    /// Up to `max` bytes of the remaining input.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u8().unwrap_or(0)).min(max).min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }
}

/// An interrupt line that counts its level changes and remembers its level.
#[derive(Debug, Default, Clone)]
pub struct CountingLine {
    changes: Arc<AtomicU32>,
}

impl CountingLine {
    /// Level changes (set_level calls) so far.
    pub fn changes(&self) -> u32 {
        self.changes.load(Ordering::Relaxed)
    }
}

impl IrqLine for CountingLine {
    fn set_level(&mut self, _high: bool) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Asserts that a read of `size` returned no bits outside it.
pub fn assert_fits(value: u64, size: AccessSize) {
    assert_eq!(value & !size.mask(), 0, "a {}-byte read returned {value:#x}", size.bytes());
}

/// A deterministic generator for the `cargo test` runs of the harnesses (xorshift64*).
#[cfg(test)]
pub(crate) struct Prng(u64);

#[cfg(test)]
impl Prng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `count` inputs of 0..`max_len` random bytes, each fed to `run`.
    pub(crate) fn drive(&mut self, count: usize, max_len: usize, run: impl Fn(&[u8])) {
        let mut buf = alloc::vec::Vec::with_capacity(max_len);
        for _ in 0..count {
            buf.clear();
            let len = (self.next() % max_len as u64) as usize;
            while buf.len() < len {
                buf.extend_from_slice(&self.next().to_le_bytes());
            }
            buf.truncate(len);
            run(&buf);
        }
    }
}
