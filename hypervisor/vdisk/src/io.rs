//! Reads and writes at 512-byte granularity on a device whose blocks may be larger
//! (4096 on a 4Kn drive): a write that covers only part of a device block reads the
//! block, patches it and writes it whole. A one-block write is atomic on NVMe, and the
//! bytes around the patch are written back unchanged, so a power cut leaves each block
//! old or new.

use crate::device::{BlockDevice, DeviceError};
use alloc::vec;

/// Whole device blocks covering `len` bytes from byte `at`: (first block, blocks,
/// offset of `at` in the first block).
fn covering(at: u64, len: usize, bs: u64) -> (u64, usize, usize) {
    let first = at / bs;
    let end = at.saturating_add(len as u64).div_ceil(bs);
    (first, ((end - first) * bs) as usize, (at - first * bs) as usize)
}

/// Reads `buf.len()` bytes from byte `at` of the device.
pub fn read_at(dev: &mut dyn BlockDevice, at: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
    let bs = u64::from(dev.block_size());
    if bs == 0 {
        return Err(DeviceError::Misaligned);
    }
    if at.is_multiple_of(bs) && (buf.len() as u64).is_multiple_of(bs) {
        return dev.read(at / bs, buf);
    }
    let (first, len, skip) = covering(at, buf.len(), bs);
    let mut whole = vec![0u8; len];
    dev.read(first, &mut whole)?;
    buf.copy_from_slice(&whole[skip..skip + buf.len()]);
    Ok(())
}

/// Writes `buf` at byte `at` of the device (read-modify-write of partial blocks).
pub fn write_at(dev: &mut dyn BlockDevice, at: u64, buf: &[u8]) -> Result<(), DeviceError> {
    let bs = u64::from(dev.block_size());
    if bs == 0 {
        return Err(DeviceError::Misaligned);
    }
    if at.is_multiple_of(bs) && (buf.len() as u64).is_multiple_of(bs) {
        return dev.write(at / bs, buf);
    }
    let (first, len, skip) = covering(at, buf.len(), bs);
    let mut whole = vec![0u8; len];
    dev.read(first, &mut whole)?;
    whole[skip..skip + buf.len()].copy_from_slice(buf);
    dev.write(first, &whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::RamDevice;

    #[test]
    fn partial_blocks_are_patched_and_the_rest_kept() {
        let mut dev = RamDevice::new(4096, 4);
        dev.write(0, &[0xaa; 3 * 4096]).unwrap();
        write_at(&mut dev, 4096 - 512, &[1u8; 1024]).unwrap();
        let mut all = vec![0u8; 3 * 4096];
        read_at(&mut dev, 0, &mut all).unwrap();
        assert!(all[..4096 - 512].iter().all(|&b| b == 0xaa));
        assert!(all[4096 - 512..4096 + 512].iter().all(|&b| b == 1));
        assert!(all[4096 + 512..].iter().all(|&b| b == 0xaa));
        let mut part = [0u8; 512];
        read_at(&mut dev, 4096 + 512, &mut part).unwrap();
        assert_eq!(part, [0xaa; 512]);
        read_at(&mut dev, 4096, &mut part).unwrap();
        assert_eq!(part, [1; 512]);
    }
}
