//! What a virtio-blk device stores its sectors in. The device knows nothing of where
//! the bytes live (host RAM here; later an encrypted volume on the host's NVMe drive):
//! it hands the backend whole 512-byte sectors it already checked against the
//! capacity, and turns any backend error into VIRTIO_BLK_S_IOERR for that request.
//!
//! The interface is synchronous: a request is finished when the call returns. A backend
//! that queues work to a real drive can replace it with one that takes a batch and
//! completes requests later; the device's request parser does not change.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

pub use bulkhead_vdisk::{Buffers, DmaSegment};

use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::HostMemory;

/// Logical sector size the device exposes (VIRTIO 1.2 §5.2.4: capacity is in 512-byte
/// sectors whatever blk_size says).
pub const SECTOR_SIZE: u64 = 512;

/// Bytes of the serial number GET_ID returns (§5.2.6: 20 bytes, NUL-padded).
pub const ID_BYTES: usize = 20;

/// Why a backend could not do what it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoError {
    /// The range is outside the disk (the device checks first; a backend checks again).
    OutOfRange,
    /// The buffer is not a whole number of sectors.
    Misaligned,
    /// A write to a read-only disk.
    ReadOnly,
    /// The medium failed.
    Medium,
}

/// A disk of `capacity_sectors()` sectors of [`SECTOR_SIZE`] bytes.
pub trait BlockBackend {
    /// Fills `buf` (a whole number of sectors) from `sector` on.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Stores `buf` (a whole number of sectors) from `sector` on.
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), IoError>;
    fn capacity_sectors(&self) -> u64;
    fn read_only(&self) -> bool;
    /// The serial number GET_ID returns.
    fn id(&self) -> [u8; ID_BYTES];
    /// Its VM starts (or restarts): a reset-on-boot disk goes back to its base.
    fn vm_started(&mut self) {}
    /// Reads `bufs.total()` bytes (whole sectors the device checked) from `sector`
    /// straight into the VM's buffers, each byte moved once. `None`: the backend has no
    /// such path, and the device goes through `read` and its own bounce buffer.
    fn read_to(&mut self, _sector: u64, _bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        None
    }
    /// Writes `bufs.total()` bytes at `sector` straight from the VM's buffers; `None`
    /// as for [`BlockBackend::read_to`].
    fn write_from(&mut self, _sector: u64, _bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        None
    }
}

/// Runs `each(offset, piece)` over the VM's buffers in order (a copy in either
/// direction); Medium when the buffers end early, cannot be reached, or `each` fails.
fn copy_pieces(bufs: &mut dyn Buffers, mut each: impl FnMut(usize, &mut [u8]) -> bool) -> Result<(), IoError> {
    let total = bufs.total();
    let mut done = 0usize;
    while done < total {
        let piece = bufs.piece(done, total.saturating_sub(done)).ok_or(IoError::Medium)?;
        let n = piece.len();
        if n == 0 || !each(done, piece) {
            return Err(IoError::Medium);
        }
        done = done.saturating_add(n);
    }
    Ok(())
}

/// The byte range `sector..sector + len` of a disk of `capacity` sectors, or why not.
pub fn byte_range(sector: u64, len: usize, capacity: u64) -> Result<(u64, u64), IoError> {
    let len = len as u64;
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(IoError::Misaligned);
    }
    let end_sector = sector.checked_add(len / SECTOR_SIZE).ok_or(IoError::OutOfRange)?;
    if end_sector > capacity {
        return Err(IoError::OutOfRange);
    }
    // Both fit: end_sector <= capacity, and capacity * 512 was representable.
    Ok((sector.wrapping_mul(SECTOR_SIZE), len))
}

/// A backend shared with its owner (tests look at the disk the device writes to).
impl<B: BlockBackend> BlockBackend for crate::devices::shared::Shared<B> {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.lock().read(sector, buf)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        self.lock().write(sector, buf)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.lock().flush()
    }
    fn capacity_sectors(&self) -> u64 {
        self.lock().capacity_sectors()
    }
    fn read_only(&self) -> bool {
        self.lock().read_only()
    }
    fn vm_started(&mut self) {
        self.lock().vm_started()
    }
    fn id(&self) -> [u8; ID_BYTES] {
        self.lock().id()
    }
    fn read_to(&mut self, sector: u64, bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        self.lock().read_to(sector, bufs)
    }
    fn write_from(&mut self, sector: u64, bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        self.lock().write_from(sector, bufs)
    }
}

/// A disk held in a byte vector (tests, fuzzing), counting what reached it.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    bytes: Vec<u8>,
    read_only: bool,
    id: [u8; ID_BYTES],
    /// Calls that reached the disk: reads, writes, flushes.
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    /// Serves `read_to`/`write_from` (tests run requests both ways).
    pub direct: bool,
}

impl MemoryBackend {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: u64, read_only: bool, id: [u8; ID_BYTES]) -> Self {
        let len = usize::try_from(sectors.saturating_mul(SECTOR_SIZE)).unwrap_or(0);
        MemoryBackend { bytes: alloc::vec![0; len], read_only, id, reads: 0, writes: 0, flushes: 0, direct: false }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn span(&self, sector: u64, len: usize) -> Result<core::ops::Range<usize>, IoError> {
        let (start, len) = byte_range(sector, len, self.capacity_sectors())?;
        let start = usize::try_from(start).map_err(|_| IoError::OutOfRange)?;
        Ok(start..start.saturating_add(len as usize))
    }
}

impl BlockBackend for MemoryBackend {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let span = self.span(sector, buf.len())?;
        buf.copy_from_slice(self.bytes.get(span).ok_or(IoError::OutOfRange)?);
        self.reads = self.reads.saturating_add(1);
        Ok(())
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        if self.read_only {
            return Err(IoError::ReadOnly);
        }
        let span = self.span(sector, buf.len())?;
        self.bytes.get_mut(span).ok_or(IoError::OutOfRange)?.copy_from_slice(buf);
        self.writes = self.writes.saturating_add(1);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.flushes = self.flushes.saturating_add(1);
        Ok(())
    }

    fn capacity_sectors(&self) -> u64 {
        self.bytes.len() as u64 / SECTOR_SIZE
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn id(&self) -> [u8; ID_BYTES] {
        self.id
    }

    fn read_to(&mut self, sector: u64, bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        if !self.direct {
            return None;
        }
        let result = self.span(sector, bufs.total()).and_then(|span| {
            let disk = self.bytes.get(span).ok_or(IoError::OutOfRange)?;
            copy_pieces(bufs, |at, piece| {
                disk.get(at..at.saturating_add(piece.len())).map(|d| piece.copy_from_slice(d)).is_some()
            })
        });
        self.reads = self.reads.saturating_add(1);
        Some(result)
    }

    fn write_from(&mut self, sector: u64, bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        if !self.direct {
            return None;
        }
        if self.read_only {
            return Some(Err(IoError::ReadOnly));
        }
        let result = self.span(sector, bufs.total()).and_then(|span| {
            let disk = self.bytes.get_mut(span).ok_or(IoError::OutOfRange)?;
            copy_pieces(bufs, |at, piece| {
                disk.get_mut(at..at.saturating_add(piece.len())).map(|d| d.copy_from_slice(piece)).is_some()
            })
        });
        self.writes = self.writes.saturating_add(1);
        Some(result)
    }
}

/// A disk in a block of host RAM the hypervisor set aside for it (a VM's disk until
/// real storage is wired): reached through [`HostMemory`], so only that block.
#[derive(Debug)]
pub struct HostRamBackend<H: HostMemory> {
    host: H,
    base: HostPhysAddr,
    sectors: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
}

impl<H: HostMemory> HostRamBackend<H> {
    /// The disk in `sectors` sectors of host memory from `base` (which its owner
    /// allocated, zeroed, and keeps until the disk goes).
    pub fn new(host: H, base: HostPhysAddr, sectors: u64, read_only: bool, id: [u8; ID_BYTES]) -> Self {
        HostRamBackend { host, base, sectors, read_only, id }
    }

    fn at(&self, sector: u64, len: usize) -> Result<HostPhysAddr, IoError> {
        let (start, _) = byte_range(sector, len, self.sectors)?;
        self.base.checked_add(start).ok_or(IoError::OutOfRange)
    }
}

impl<H: HostMemory> BlockBackend for HostRamBackend<H> {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let at = self.at(sector, buf.len())?;
        if self.host.read(at, buf) { Ok(()) } else { Err(IoError::Medium) }
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        if self.read_only {
            return Err(IoError::ReadOnly);
        }
        let at = self.at(sector, buf.len())?;
        if self.host.write(at, buf) { Ok(()) } else { Err(IoError::Medium) }
    }

    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }

    fn capacity_sectors(&self) -> u64 {
        self.sectors
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn id(&self) -> [u8; ID_BYTES] {
        self.id
    }

    fn read_to(&mut self, sector: u64, bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        let at = match self.at(sector, bufs.total()) {
            Ok(at) => at,
            Err(e) => return Some(Err(e)),
        };
        let host = &self.host;
        Some(copy_pieces(bufs, |off, piece| at.checked_add(off as u64).is_some_and(|from| host.read(from, piece))))
    }

    fn write_from(&mut self, sector: u64, bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        if self.read_only {
            return Some(Err(IoError::ReadOnly));
        }
        let at = match self.at(sector, bufs.total()) {
            Ok(at) => at,
            Err(e) => return Some(Err(e)),
        };
        let host = &mut self.host;
        Some(copy_pieces(bufs, |off, piece| at.checked_add(off as u64).is_some_and(|to| host.write(to, piece))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::guest::VecHostMemory;

    #[test]
    fn ranges_past_the_end_or_overflowing_are_refused() {
        assert_eq!(byte_range(0, 1024, 2), Ok((0, 1024)));
        assert_eq!(byte_range(1, 512, 2), Ok((512, 512)));
        assert_eq!(byte_range(1, 1024, 2), Err(IoError::OutOfRange));
        assert_eq!(byte_range(u64::MAX, 512, u64::MAX), Err(IoError::OutOfRange));
        assert_eq!(byte_range(0, 100, 2), Err(IoError::Misaligned));
    }

    #[test]
    fn memory_backend_round_trip_and_read_only() {
        let mut disk = MemoryBackend::new(4, false, [b'x'; ID_BYTES]);
        disk.write(2, &[7u8; 1024]).unwrap();
        let mut back = [0u8; 1536];
        disk.read(1, &mut back).unwrap();
        assert!(back[..512].iter().all(|&b| b == 0) && back[512..].iter().all(|&b| b == 7));
        assert_eq!(disk.write(3, &[1u8; 1024]), Err(IoError::OutOfRange));
        let mut ro = MemoryBackend::new(4, true, [0; ID_BYTES]);
        assert_eq!(ro.write(0, &[1u8; 512]), Err(IoError::ReadOnly));
        assert!(ro.bytes().iter().all(|&b| b == 0));
    }

    #[test]
    fn host_ram_backend_stays_in_its_block() {
        let base = HostPhysAddr::new(0x10_0000);
        let host = VecHostMemory::new(base, 8 * 512);
        // The disk is the block's middle four sectors.
        let mut disk = HostRamBackend::new(host, HostPhysAddr::new(0x10_0000 + 2 * 512), 4, false, [0; ID_BYTES]);
        disk.write(0, &[5u8; 2048]).unwrap();
        assert_eq!(disk.write(4, &[5u8; 512]), Err(IoError::OutOfRange));
        let bytes = &disk.host.bytes;
        assert!(bytes[..1024].iter().all(|&b| b == 0) && bytes[3072..].iter().all(|&b| b == 0));
        assert!(bytes[1024..3072].iter().all(|&b| b == 5));
    }

    #[test]
    fn host_ram_backend_moves_pieces_straight_and_checks_the_range() {
        let base = HostPhysAddr::new(0x10_0000);
        let mut disk = HostRamBackend::new(VecHostMemory::new(base, 8 * 512), base, 8, false, [0; ID_BYTES]);
        let data: Vec<u8> = (0..1536u32).map(|i| (i * 13) as u8).collect();
        let mut src = data.clone();
        let (a, b) = src.split_at_mut(700);
        let mut pieces: [&mut [u8]; 2] = [a, b];
        assert_eq!(disk.write_from(2, &mut bulkhead_vdisk::Slices(&mut pieces)), Some(Ok(())));
        assert_eq!(&disk.host.bytes[1024..2560], &data[..]);
        let mut back = vec![0u8; 1536];
        let (a, b) = back.split_at_mut(100);
        let mut pieces: [&mut [u8]; 2] = [a, b];
        assert_eq!(disk.read_to(2, &mut bulkhead_vdisk::Slices(&mut pieces)), Some(Ok(())));
        assert_eq!(back, data);
        let mut past = [0u8; 1024];
        let mut pieces: [&mut [u8]; 1] = [&mut past];
        assert_eq!(disk.read_to(7, &mut bulkhead_vdisk::Slices(&mut pieces)), Some(Err(IoError::OutOfRange)));
    }
}
