//! A 4 KiB MMIO scratch device for self-test payloads: it stores whatever is written, at
//! any offset and width, and reads it back, so every MMIO instruction form can be checked
//! from inside a guest.
#![forbid(unsafe_code)]

use crate::devices::bus::MmioDevice;
use crate::vcpu::exit::AccessSize;

pub const SCRATCH_BYTES: usize = 4096;

#[derive(Debug)]
pub struct Scratch {
    bytes: [u8; SCRATCH_BYTES],
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch { bytes: [0; SCRATCH_BYTES] }
    }
}

impl MmioDevice for Scratch {
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        let mut value = [0u8; 8];
        let n = usize::from(size.bytes());
        for (i, out) in value.iter_mut().take(n).enumerate() {
            *out = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|a| self.bytes.get(a))
                .copied()
                .unwrap_or(0xff);
        }
        u64::from_le_bytes(value)
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        for (i, byte) in value.to_le_bytes().iter().take(usize::from(size.bytes())).enumerate() {
            if let Some(slot) =
                usize::try_from(offset).ok().and_then(|o| o.checked_add(i)).and_then(|a| self.bytes.get_mut(a))
            {
                *slot = *byte;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_every_width_and_clips_at_the_end() {
        let mut s = Scratch::default();
        s.write(8, AccessSize::Qword, 0x0123_4567_89ab_cdef);
        assert_eq!(s.read(8, AccessSize::Dword), 0x89ab_cdef);
        assert_eq!(s.read(12, AccessSize::Word), 0x4567);
        s.write(4095, AccessSize::Dword, 0xaabb_ccdd);
        assert_eq!(s.read(4095, AccessSize::Byte), 0xdd);
        assert_eq!(s.read(4094, AccessSize::Word), 0xdd00);
        assert_eq!(s.read(u64::MAX, AccessSize::Byte), 0xff);
    }
}
