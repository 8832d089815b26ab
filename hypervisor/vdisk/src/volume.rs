//! A VM's disk: 512-byte sectors in an extent of the data partition, encrypted with
//! the volume's key (tweak = sector number within the volume), or in clear when the
//! volume was created with `Cipher::None`.
//!
//! The device is passed to every call, so several volumes share one drive.
//!
//! `ResetOnBoot` volumes never write their base extent. Writes go to an overlay
//! extent of the same size, under a key made when the volume is opened and never
//! stored; an in-RAM bitmap says which 4 KiB chunks the overlay holds. A chunk
//! written only in part is first copied up from the base. Forgetting the key and the
//! bitmap (`reset`, or a reboot) discards the overlay.

use crate::buffers::{self, Buffers};
use crate::device::{BlockDevice, DeviceError, DmaSegment};
use crate::io::{read_at, write_at};
use crate::keys::{Rng, random_xts_key};
use crate::table::{Name, SECTOR};
use alloc::vec::Vec;
use bulkhead_diskcrypt::Xts;
use core::fmt;

/// Sectors per overlay chunk (4 KiB): the bitmap costs one bit per chunk, 32 KiB of
/// RAM per GiB of volume.
pub const CHUNK_SECTORS: u64 = 8;

/// What a VM may do with its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writes are kept.
    Persistent,
    /// Writes last until the VM starts again; the base is never written.
    ResetOnBoot,
    /// Writes are refused.
    ReadOnly,
}

/// Why a volume refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeError {
    /// The sectors are not all inside the volume.
    OutOfRange,
    /// The buffer is not a whole number of 512-byte sectors.
    Misaligned,
    /// A write to a read-only volume.
    ReadOnly,
    /// The device passed in is not the one the volume lives on (its block size differs).
    WrongDevice,
    /// No RAM for the overlay bitmap, or the random generator is stuck.
    Resources,
    /// The device failed.
    Device(DeviceError),
}

impl From<DeviceError> for VolumeError {
    fn from(e: DeviceError) -> Self {
        VolumeError::Device(e)
    }
}

impl fmt::Display for VolumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeError::OutOfRange => f.write_str("sectors outside the volume"),
            VolumeError::Misaligned => f.write_str("buffer is not a whole number of 512-byte sectors"),
            VolumeError::ReadOnly => f.write_str("the volume is read-only"),
            VolumeError::WrongDevice => f.write_str("not the device the volume lives on"),
            VolumeError::Resources => f.write_str("no memory or no randomness for the overlay"),
            VolumeError::Device(e) => write!(f, "device: {e}"),
        }
    }
}

/// An extent and how its sectors are enciphered.
struct Area {
    /// Byte offset of sector 0 on the device.
    start: u64,
    xts: Option<Xts>,
}

impl Area {
    fn read(&self, dev: &mut dyn BlockDevice, sector: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        read_at(dev, self.start + sector * SECTOR, buf)?;
        if let Some(xts) = &self.xts {
            // Lengths were checked by the caller: whole sectors, not empty.
            xts.decrypt_sectors(u128::from(sector), SECTOR as usize, buf).map_err(|_| VolumeError::Misaligned)?;
        }
        Ok(())
    }

    /// Writes `data` (clear) at `sector`, enciphering it in place first.
    fn write(&self, dev: &mut dyn BlockDevice, sector: u64, data: &mut [u8]) -> Result<(), VolumeError> {
        if let Some(xts) = &self.xts {
            xts.encrypt_sectors(u128::from(sector), SECTOR as usize, data).map_err(|_| VolumeError::Misaligned)?;
        }
        write_at(dev, self.start + sector * SECTOR, data)?;
        Ok(())
    }
}

impl Area {
    /// Whether `len` bytes from `sector` are whole device blocks, so the device can move
    /// them without a read-modify-write.
    fn whole_blocks(&self, dev: &dyn BlockDevice, sector: u64, len: usize) -> bool {
        let bs = u64::from(dev.block_size());
        bs != 0 && (self.start + sector * SECTOR).is_multiple_of(bs) && (len as u64).is_multiple_of(bs)
    }

    /// Reads whole blocks from `sector` into `bufs`, each byte moved once.
    fn read_to(&self, dev: &mut dyn BlockDevice, sector: u64, bufs: &mut dyn Buffers) -> Result<(), VolumeError> {
        let bs = u64::from(dev.block_size());
        let xts = self.xts.as_ref();
        let len = bufs.total();
        let mut take = |at: usize, chunk: &mut [u8]| crate::transfer::deliver(xts, sector, at, chunk, &mut *bufs);
        dev.read_with((self.start + sector * SECTOR) / bs, len, &mut take)?;
        Ok(())
    }

    /// A clear area's whole blocks straight between the device and the caller's
    /// buffers, when both can (the device reaches the buffers by address): no byte
    /// moved by the CPU. `None`: not possible, nothing done.
    fn direct(
        &self,
        dev: &mut dyn BlockDevice,
        sector: u64,
        bufs: &mut dyn Buffers,
        segments: &mut Vec<DmaSegment>,
        read: bool,
    ) -> Option<Result<(), VolumeError>> {
        if self.xts.is_some() || !bufs.dma_segments(read, segments) {
            return None;
        }
        let lba = (self.start + sector * SECTOR) / u64::from(dev.block_size());
        let done = if read { dev.read_direct(lba, segments) } else { dev.write_direct(lba, segments) };
        done.map(|r| r.map_err(VolumeError::from))
    }

    /// Writes whole blocks at `sector` from `bufs`, each byte moved once.
    fn write_from(&self, dev: &mut dyn BlockDevice, sector: u64, bufs: &mut dyn Buffers) -> Result<(), VolumeError> {
        let bs = u64::from(dev.block_size());
        let xts = self.xts.as_ref();
        let len = bufs.total();
        let mut fill = |at: usize, chunk: &mut [u8]| crate::transfer::collect(xts, sector, at, chunk, &mut *bufs);
        dev.write_with((self.start + sector * SECTOR) / bs, len, &mut fill)?;
        Ok(())
    }
}

struct Overlay {
    area: Area,
    encrypted: bool,
    /// Bit per chunk: set once the overlay holds the chunk.
    present: Vec<u64>,
}

impl Overlay {
    fn has(&self, chunk: u64) -> bool {
        self.present[(chunk / 64) as usize] & (1 << (chunk % 64)) != 0
    }

    fn set(&mut self, chunk: u64) {
        self.present[(chunk / 64) as usize] |= 1 << (chunk % 64);
    }

    /// A new key and an empty bitmap: everything written so far is gone.
    fn discard(&mut self, rng: Rng<'_>) -> Result<(), VolumeError> {
        self.area.xts = None;
        self.present.iter_mut().for_each(|w| *w = 0);
        if self.encrypted {
            let key = random_xts_key(rng).ok_or(VolumeError::Resources)?;
            self.area.xts = Some(Xts::new(&key).map_err(|_| VolumeError::Resources)?);
        }
        Ok(())
    }
}

/// A VM's disk, ready for I/O.
pub struct Volume {
    name: Name,
    mode: Mode,
    sectors: u64,
    block_size: u32,
    base: Area,
    overlay: Option<Overlay>,
    /// The enciphered copy of a write (the caller's buffer stays as it is); as large as
    /// the largest write so far.
    scratch: Vec<u8>,
    /// The caller's buffers as the device addresses them, for a direct transfer.
    segments: Vec<DmaSegment>,
}

impl fmt::Debug for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("sectors", &self.sectors)
            .field("encrypted", &self.base.xts.is_some())
            .finish_non_exhaustive()
    }
}

impl Volume {
    /// A volume over the base extent at byte `base_start` and, for `ResetOnBoot`, the
    /// overlay at `overlay_start`.
    pub(crate) fn new(
        name: Name,
        mode: Mode,
        sectors: u64,
        block_size: u32,
        base: (u64, Option<Xts>),
        overlay_start: Option<u64>,
        rng: Rng<'_>,
    ) -> Result<Volume, VolumeError> {
        let encrypted = base.1.is_some();
        let overlay = match overlay_start {
            Some(start) => {
                let words = sectors.div_ceil(CHUNK_SECTORS).div_ceil(64) as usize;
                let mut present = Vec::new();
                present.try_reserve_exact(words).map_err(|_| VolumeError::Resources)?;
                present.resize(words, 0);
                let mut o = Overlay { area: Area { start, xts: None }, encrypted, present };
                o.discard(rng)?;
                Some(o)
            }
            None => None,
        };
        let base = Area { start: base.0, xts: base.1 };
        Ok(Volume { name, mode, sectors, block_size, base, overlay, scratch: Vec::new(), segments: Vec::new() })
    }

    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.sectors
    }

    pub fn read_only(&self) -> bool {
        self.mode == Mode::ReadOnly
    }

    /// Checks a request; returns its number of sectors.
    fn check(&self, dev: &dyn BlockDevice, sector: u64, len: usize) -> Result<u64, VolumeError> {
        if dev.block_size() != self.block_size {
            return Err(VolumeError::WrongDevice);
        }
        if !(len as u64).is_multiple_of(SECTOR) {
            return Err(VolumeError::Misaligned);
        }
        let n = len as u64 / SECTOR;
        match sector.checked_add(n) {
            Some(end) if end <= self.sectors => Ok(n),
            _ => Err(VolumeError::OutOfRange),
        }
    }

    /// Reads whole sectors from `sector` on into `buf`.
    pub fn read(&mut self, dev: &mut dyn BlockDevice, sector: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        let n = self.check(dev, sector, buf.len())?;
        if n == 0 {
            return Ok(());
        }
        let Some(overlay) = &self.overlay else {
            return self.base.read(dev, sector, buf);
        };
        // Runs of chunks that are all in the overlay, or all in the base.
        let end = sector + n;
        let mut pos = sector;
        while pos < end {
            let in_overlay = overlay.has(pos / CHUNK_SECTORS);
            let mut run_end = ((pos / CHUNK_SECTORS) + 1) * CHUNK_SECTORS;
            while run_end < end && overlay.has(run_end / CHUNK_SECTORS) == in_overlay {
                run_end += CHUNK_SECTORS;
            }
            let run_end = run_end.min(end);
            let part = &mut buf[((pos - sector) * SECTOR) as usize..((run_end - sector) * SECTOR) as usize];
            let area = if in_overlay { &overlay.area } else { &self.base };
            area.read(dev, pos, part)?;
            pos = run_end;
        }
        Ok(())
    }

    /// Reads whole sectors from `sector` on into the caller's buffers (`bufs.total()`
    /// bytes): straight from the device's buffer, deciphered on the way, when the
    /// volume has no overlay and its sectors are whole device blocks; otherwise through
    /// [`Volume::read`] and a copy.
    pub fn read_to(
        &mut self,
        dev: &mut dyn BlockDevice,
        sector: u64,
        bufs: &mut dyn Buffers,
    ) -> Result<(), VolumeError> {
        let len = bufs.total();
        if self.check(dev, sector, len)? == 0 {
            return Ok(());
        }
        if self.overlay.is_none() && self.base.whole_blocks(dev, sector, len) {
            if let Some(done) = self.base.direct(dev, sector, bufs, &mut self.segments, true) {
                return done;
            }
            return self.base.read_to(dev, sector, bufs);
        }
        let mut tmp = Vec::new();
        tmp.try_reserve_exact(len).map_err(|_| VolumeError::Resources)?;
        tmp.resize(len, 0);
        self.read(dev, sector, &mut tmp)?;
        if buffers::copy_into(bufs, 0, &tmp) { Ok(()) } else { Err(VolumeError::Device(DeviceError::Buffers)) }
    }

    /// Writes whole sectors from `sector` on from the caller's buffers: enciphered
    /// straight into the device's buffer when [`Volume::read_to`] would read directly,
    /// otherwise through [`Volume::write`]. Durable after [`Volume::flush`].
    pub fn write_from(
        &mut self,
        dev: &mut dyn BlockDevice,
        sector: u64,
        bufs: &mut dyn Buffers,
    ) -> Result<(), VolumeError> {
        let len = bufs.total();
        let n = self.check(dev, sector, len)?;
        if self.mode == Mode::ReadOnly {
            return Err(VolumeError::ReadOnly);
        }
        if n == 0 {
            return Ok(());
        }
        if self.overlay.is_none() && self.base.whole_blocks(dev, sector, len) {
            if let Some(done) = self.base.direct(dev, sector, bufs, &mut self.segments, false) {
                return done;
            }
            return self.base.write_from(dev, sector, bufs);
        }
        let mut tmp = Vec::new();
        tmp.try_reserve_exact(len).map_err(|_| VolumeError::Resources)?;
        tmp.resize(len, 0);
        if !buffers::copy_from(bufs, 0, &mut tmp) {
            return Err(VolumeError::Device(DeviceError::Buffers));
        }
        self.write(dev, sector, &tmp)
    }

    /// Writes whole sectors from `sector` on. Durable after [`Volume::flush`].
    pub fn write(&mut self, dev: &mut dyn BlockDevice, sector: u64, buf: &[u8]) -> Result<(), VolumeError> {
        let n = self.check(dev, sector, buf.len())?;
        if self.mode == Mode::ReadOnly {
            return Err(VolumeError::ReadOnly);
        }
        if n == 0 {
            return Ok(());
        }
        if self.scratch.len() < buf.len() {
            self.scratch.try_reserve_exact(buf.len() - self.scratch.len()).map_err(|_| VolumeError::Resources)?;
            self.scratch.resize(buf.len(), 0);
        }
        let scratch = &mut self.scratch[..buf.len()];
        scratch.copy_from_slice(buf);
        let Some(overlay) = &mut self.overlay else {
            return self.base.write(dev, sector, scratch);
        };
        // Only the first and the last chunk can be partly covered; a partial chunk the
        // overlay does not hold yet is copied up from the base, the rest written as is.
        let end = sector + n;
        let mut pos = sector;
        while pos < end {
            let chunk = pos / CHUNK_SECTORS;
            let chunk_start = chunk * CHUNK_SECTORS;
            let chunk_end = chunk_start + CHUNK_SECTORS;
            let partial = pos > chunk_start || end < chunk_end;
            if partial && !overlay.has(chunk) {
                let mut whole = [0u8; (CHUNK_SECTORS * SECTOR) as usize];
                self.base.read(dev, chunk_start, &mut whole)?;
                let upto = end.min(chunk_end);
                let from = ((pos - sector) * SECTOR) as usize;
                let to = ((upto - sector) * SECTOR) as usize;
                whole[((pos - chunk_start) * SECTOR) as usize..((upto - chunk_start) * SECTOR) as usize]
                    .copy_from_slice(&scratch[from..to]);
                overlay.area.write(dev, chunk_start, &mut whole)?;
                overlay.set(chunk);
                pos = upto;
                continue;
            }
            // A run up to the end or to a partial chunk the overlay lacks.
            let mut run_end = chunk_end.min(end);
            while run_end < end {
                let next = run_end / CHUNK_SECTORS;
                if run_end + CHUNK_SECTORS > end && !overlay.has(next) {
                    break;
                }
                run_end = (run_end + CHUNK_SECTORS).min(end);
            }
            let from = ((pos - sector) * SECTOR) as usize;
            let to = ((run_end - sector) * SECTOR) as usize;
            overlay.area.write(dev, pos, &mut scratch[from..to])?;
            for c in chunk..run_end.div_ceil(CHUNK_SECTORS) {
                overlay.set(c);
            }
            pos = run_end;
        }
        Ok(())
    }

    /// Makes every completed write durable (the guest's flush). Reset-on-boot and
    /// read-only volumes keep nothing across a power cut, so they do not flush the
    /// drive.
    pub fn flush(&mut self, dev: &mut dyn BlockDevice) -> Result<(), VolumeError> {
        if dev.block_size() != self.block_size {
            return Err(VolumeError::WrongDevice);
        }
        match self.mode {
            Mode::Persistent => Ok(dev.flush()?),
            Mode::ResetOnBoot | Mode::ReadOnly => Ok(()),
        }
    }

    /// The VM restarts: a reset-on-boot volume drops its overlay (new key, empty
    /// bitmap) and shows the base again. Other modes are unchanged.
    pub fn reset(&mut self, rng: Rng<'_>) -> Result<(), VolumeError> {
        match &mut self.overlay {
            Some(o) => o.discard(rng),
            None => Ok(()),
        }
    }

    /// The volume's data cipher, for tests that check the sector format.
    #[cfg(test)]
    pub(crate) fn base_xts(&self) -> Option<&Xts> {
        self.base.xts.as_ref()
    }
}
