//! What the disks are stored on: a run of logical blocks that can be read, written
//! and flushed. The NVMe driver (a whole namespace), a partition of it, and RAM in
//! tests all look like this.

use alloc::vec;
use alloc::vec::Vec;

/// Why a device could not do what it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceError {
    /// The block range is outside the device.
    OutOfRange,
    /// The buffer is not a whole number of blocks.
    Misaligned,
    /// The device did not answer in time.
    Timeout,
    /// The device reported an error (NVMe status code type and code, or 0 when the
    /// device has no such notion).
    Medium { status: u16 },
    /// The caller's buffers could not be reached (a `read_with`/`write_with` callback
    /// refused); a write is then not sent.
    Buffers,
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeviceError::OutOfRange => write!(f, "block range outside the device"),
            DeviceError::Misaligned => write!(f, "buffer is not a whole number of blocks"),
            DeviceError::Timeout => write!(f, "the device did not answer in time"),
            DeviceError::Medium { status } => write!(f, "the device reported error {status:#06x}"),
            DeviceError::Buffers => write!(f, "the caller's buffers could not be reached"),
        }
    }
}

/// A device of `blocks()` logical blocks of `block_size()` bytes (512 or 4096).
///
/// A write has completed when `write` returns, but it is durable only after `flush`
/// returns (a drive with a volatile write cache may hold it until then).
pub trait BlockDevice {
    fn block_size(&self) -> u32;
    fn blocks(&self) -> u64;
    /// Fills `buf` (a whole number of blocks) from block `lba` on.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError>;
    /// Stores `buf` (a whole number of blocks) from block `lba` on.
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), DeviceError>;

    /// Reads `len` bytes (whole blocks) from block `lba` on and hands them, in order,
    /// to `take(offset, bytes)` where the device put them (the NVMe driver's bounce
    /// region), so the caller moves each byte once; `take` may change them (decrypt in
    /// place); `take` returning false stops the read with [`DeviceError::Buffers`]. The
    /// default reads into a buffer of its own first.
    fn read_with(
        &mut self,
        lba: u64,
        len: usize,
        take: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        let mut buf = vec![0u8; len];
        self.read(lba, &mut buf)?;
        if take(0, &mut buf) { Ok(()) } else { Err(DeviceError::Buffers) }
    }

    /// Writes `len` bytes (whole blocks) from block `lba` on, asking `fill(offset,
    /// bytes)` to fill them, in order, where the device takes them from. `fill` must
    /// fill all of `bytes`, or return false: then nothing more is written and the call
    /// fails with [`DeviceError::Buffers`] (blocks already sent keep what they got). The
    /// default fills a buffer of its own first.
    fn write_with(
        &mut self,
        lba: u64,
        len: usize,
        fill: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        let mut buf = vec![0u8; len];
        if !fill(0, &mut buf) {
            return Err(DeviceError::Buffers);
        }
        self.write(lba, &buf)
    }

    /// Reads `len` bytes (whole blocks, the sum of the segments' lengths) from block
    /// `lba` on straight into `segments`: memory the device reaches by address, in
    /// order, without the CPU touching the data. `None`: the device has no such path
    /// or cannot address these segments, and nothing was done (the caller takes
    /// another way).
    fn read_direct(&mut self, _lba: u64, _segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        None
    }

    /// Writes whole blocks at `lba` straight from `segments`; `None` as for
    /// [`BlockDevice::read_direct`].
    fn write_direct(&mut self, _lba: u64, _segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        None
    }
}

/// A piece of a transfer's memory as a device addresses it: its host physical address
/// (the hypervisor's drivers program devices with those) and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaSegment {
    pub addr: u64,
    pub len: usize,
}

/// The total length of `segments`.
pub fn segments_len(segments: &[DmaSegment]) -> usize {
    segments.iter().fold(0usize, |n, s| n.saturating_add(s.len))
}

/// Checks that `len` bytes from `lba` are whole blocks inside a device of `blocks`
/// blocks of `block_size` bytes; returns the byte offset.
pub fn check_range(lba: u64, len: usize, block_size: u32, blocks: u64) -> Result<u64, DeviceError> {
    let bs = u64::from(block_size);
    let len = len as u64;
    if bs == 0 || !len.is_multiple_of(bs) {
        return Err(DeviceError::Misaligned);
    }
    let end = lba.checked_add(len / bs).ok_or(DeviceError::OutOfRange)?;
    if end > blocks {
        return Err(DeviceError::OutOfRange);
    }
    lba.checked_mul(bs).ok_or(DeviceError::OutOfRange)
}

/// A device in RAM, for tests. It models a volatile write cache: writes land in
/// `cached` and reach `durable` at `flush`, so a test can cut the power (drop the
/// cache) at any point and see what a real drive would keep.
#[derive(Debug, Clone)]
pub struct RamDevice {
    block_size: u32,
    durable: Vec<u8>,
    /// Blocks written since the last flush: (lba, contents), in write order.
    cached: Vec<(u64, Vec<u8>)>,
    /// Writes left before the device stops taking them (a power cut), if armed.
    writes_until_cut: Option<u64>,
}

impl RamDevice {
    pub fn new(block_size: u32, blocks: u64) -> Self {
        let bytes = usize::try_from(u64::from(block_size) * blocks).expect("RAM device too large");
        RamDevice { block_size, durable: vec![0; bytes], cached: Vec::new(), writes_until_cut: None }
    }

    /// What the medium holds now, as if the power went off this instant (the cache is
    /// lost).
    pub fn after_power_cut(&self) -> RamDevice {
        RamDevice {
            block_size: self.block_size,
            durable: self.durable.clone(),
            cached: Vec::new(),
            writes_until_cut: None,
        }
    }

    /// Lets `n` more writes through, then fails every write and flush (the machine
    /// lost power); `after_power_cut` then gives the surviving medium.
    pub fn cut_power_after_writes(&mut self, n: u64) {
        self.writes_until_cut = Some(n);
    }

    /// The medium's bytes (durable state plus cached writes, as a reader sees them).
    pub fn contents(&self) -> Vec<u8> {
        let mut out = self.durable.clone();
        for (lba, data) in &self.cached {
            let at = (*lba * u64::from(self.block_size)) as usize;
            out[at..at + data.len()].copy_from_slice(data);
        }
        out
    }

    fn powered(&self) -> bool {
        self.writes_until_cut != Some(0)
    }
}

impl BlockDevice for RamDevice {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn blocks(&self) -> u64 {
        self.durable.len() as u64 / u64::from(self.block_size)
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let at = check_range(lba, buf.len(), self.block_size, self.blocks())? as usize;
        buf.copy_from_slice(&self.durable[at..at + buf.len()]);
        let bs = self.block_size as usize;
        for (clba, data) in &self.cached {
            // Overlay cached blocks that intersect the read.
            let c_start = (*clba as usize) * bs;
            let c_end = c_start + data.len();
            let start = at.max(c_start);
            let end = (at + buf.len()).min(c_end);
            if start < end {
                buf[start - at..end - at].copy_from_slice(&data[start - c_start..end - c_start]);
            }
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        check_range(lba, buf.len(), self.block_size, self.blocks())?;
        match self.writes_until_cut {
            Some(0) => return Err(DeviceError::Timeout),
            Some(n) => self.writes_until_cut = Some(n - 1),
            None => {}
        }
        self.cached.push((lba, buf.to_vec()));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        if !self.powered() {
            return Err(DeviceError::Timeout);
        }
        let bs = self.block_size as usize;
        for (lba, data) in core::mem::take(&mut self.cached) {
            let at = lba as usize * bs;
            self.durable[at..at + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflushed_writes_are_read_back_but_lost_in_a_power_cut() {
        let mut dev = RamDevice::new(512, 8);
        dev.write(1, &[7u8; 512]).unwrap();
        let mut buf = [0u8; 1024];
        dev.read(0, &mut buf).unwrap();
        assert_eq!(buf[..512], [0u8; 512]);
        assert_eq!(buf[512..], [7u8; 512]);
        let cut = dev.after_power_cut();
        assert_eq!(cut.contents()[512], 0);
        dev.flush().unwrap();
        assert_eq!(dev.after_power_cut().contents()[512], 7);
    }

    #[test]
    fn writes_after_the_cut_fail() {
        let mut dev = RamDevice::new(512, 8);
        dev.cut_power_after_writes(1);
        dev.write(0, &[1u8; 512]).unwrap();
        assert_eq!(dev.write(1, &[1u8; 512]), Err(DeviceError::Timeout));
        assert_eq!(dev.flush(), Err(DeviceError::Timeout));
    }

    #[test]
    fn ranges_are_checked() {
        let mut dev = RamDevice::new(4096, 4);
        assert_eq!(dev.write(3, &[0u8; 8192]), Err(DeviceError::OutOfRange));
        assert_eq!(dev.write(0, &[0u8; 512]), Err(DeviceError::Misaligned));
        assert_eq!(dev.read(u64::MAX, &mut [0u8; 4096]), Err(DeviceError::OutOfRange));
    }
}
