//! A 4 KiB MMIO scratch window (at [`bulkhead_abi::payload::SCRATCH_MMIO`]) that keeps
//! whatever is written, at any offset and width, as little-endian bytes, and returns it on
//! read. The self-test payloads use it to exercise MMIO emulation with every instruction
//! form; it has no other function.
#![forbid(unsafe_code)]

use alloc::boxed::Box;

use super::bus::MmioDevice;
use crate::hw::AccessSize;

/// The window's size.
pub const SCRATCH_BYTES: usize = bulkhead_abi::payload::SCRATCH_MMIO_LEN as usize;

/// The scratch memory, zero at reset.
pub struct Scratch {
    bytes: Box<[u8; SCRATCH_BYTES]>,
}

impl core::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scratch").field("len", &SCRATCH_BYTES).finish_non_exhaustive()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    pub fn new() -> Self {
        Scratch { bytes: Box::new([0; SCRATCH_BYTES]) }
    }

    /// The bytes an access covers, or `None` if it runs past the window.
    fn span(&mut self, offset: u64, size: AccessSize) -> Option<&mut [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::from(size.bytes()))?;
        self.bytes.get_mut(start..end)
    }
}

impl MmioDevice for Scratch {
    /// Out-of-window reads return all-ones.
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        match self.span(offset, size) {
            Some(span) => {
                let mut le = [0u8; 8];
                for (dst, src) in le.iter_mut().zip(span.iter()) {
                    *dst = *src;
                }
                u64::from_le_bytes(le)
            }
            None => size.mask(),
        }
    }

    /// Out-of-window writes are dropped.
    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        if let Some(span) = self.span(offset, size) {
            for (dst, src) in span.iter_mut().zip(value.to_le_bytes()) {
                *dst = src;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::{BusRange, MemBus, MmioBus};
    use crate::memory::addr::GuestPhysAddr;
    use bulkhead_abi::payload::{SCRATCH_MMIO, SCRATCH_MMIO_LEN};

    #[test]
    fn stores_every_width_little_endian() {
        let mut s = Scratch::new();
        assert_eq!(s.read(0, AccessSize::Qword), 0);
        s.write(0, AccessSize::Dword, 0xDEAD_BEEF);
        assert_eq!(s.read(0, AccessSize::Dword), 0xDEAD_BEEF);
        assert_eq!(s.read(0, AccessSize::Byte), 0xEF);
        assert_eq!(s.read(2, AccessSize::Word), 0xDEAD);
        s.write(8, AccessSize::Qword, 0x0123_4567_89AB_CDEF);
        assert_eq!(s.read(8, AccessSize::Qword), 0x0123_4567_89AB_CDEF);
        assert_eq!(s.read(12, AccessSize::Dword), 0x0123_4567);
        // Unaligned, overlapping writes.
        s.write(9, AccessSize::Word, 0xAA55);
        assert_eq!(s.read(8, AccessSize::Qword), 0x0123_4567_89AA_55EF);
        // Upper bits beyond the width are not stored.
        s.write(16, AccessSize::Byte, 0x1_7E);
        assert_eq!(s.read(16, AccessSize::Word), 0x7E);
    }

    #[test]
    fn edges_of_the_window() {
        let mut s = Scratch::new();
        let last = SCRATCH_BYTES as u64 - 8;
        s.write(last, AccessSize::Qword, u64::MAX - 1);
        assert_eq!(s.read(last, AccessSize::Qword), u64::MAX - 1);
        // Straddling or beyond the end: all-ones, write dropped.
        assert_eq!(s.read(last + 4, AccessSize::Qword), u64::MAX);
        s.write(SCRATCH_BYTES as u64 - 1, AccessSize::Word, 0);
        assert_eq!(s.read(SCRATCH_BYTES as u64 - 1, AccessSize::Byte), 0xFF);
        assert_eq!(s.read(u64::MAX, AccessSize::Dword), 0xFFFF_FFFF);
        s.write(u64::MAX - 1, AccessSize::Qword, 0);
    }

    #[test]
    fn payload_pattern_through_the_bus() {
        let mut bus = MemBus::new("mmio");
        bus.insert(BusRange::new(SCRATCH_MMIO, SCRATCH_MMIO_LEN).unwrap(), Box::new(Scratch::new())).unwrap();
        let at = |off: u64| GuestPhysAddr::new(SCRATCH_MMIO + off);
        // What the checks payload does: rep movsb of a string, then rep stosd.
        for (i, b) in b"Bulkhead MMIO ok".iter().enumerate() {
            bus.write(at(64 + i as u64), AccessSize::Byte, u64::from(*b));
        }
        for i in 0..8 {
            bus.write(at(128 + 4 * i), AccessSize::Dword, 0x5555_AAAA);
        }
        let text: alloc::vec::Vec<u8> = (0..16).map(|i| bus.read(at(64 + i), AccessSize::Byte) as u8).collect();
        assert_eq!(text, b"Bulkhead MMIO ok");
        assert_eq!(bus.read(at(128 + 28), AccessSize::Dword), 0x5555_AAAA);
        assert_eq!(bus.read(at(64), AccessSize::Qword), u64::from_le_bytes(*b"Bulkhead"));
    }
}
