//! Finding a partition on a GPT disk (UEFI 2.10 §5.3), and a partition as a device of
//! its own.
//!
//! The primary table is read first; when its header or entry array is damaged (bad
//! signature, CRC or geometry) the backup at the disk's last block is used, as §5.3.2
//! asks. Everything a disk can make this code read or loop over is bounded: the entry
//! array is at most [`MAX_ENTRY_ARRAY_BYTES`] and is read one block at a time.

use crate::device::{BlockDevice, DeviceError, DmaSegment, check_range};
use alloc::vec;

/// The largest entry array read (count × entry size): 64 times the usual 16 KiB.
pub const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;

/// "EFI PART" (UEFI 2.10 Table 5.5, Signature).
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The header's defined size for revision 1.0 (Table 5.5, HeaderSize).
const MIN_HEADER_SIZE: u32 = 92;
/// The smallest entry size (Table 5.5, SizeOfPartitionEntry = 128 × 2^n).
const MIN_ENTRY_SIZE: u32 = 128;

/// Where a partition lies, in the device's logical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub first_lba: u64,
    pub blocks: u64,
    /// UniquePartitionGUID, in its on-disk byte order.
    pub unique_guid: [u8; 16],
}

/// Which of the two tables the partition was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableUsed {
    Primary,
    /// The primary is damaged (why); the backup at the last block was read.
    Backup(HeaderFault),
}

/// What is wrong with one GPT header or its entry array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFault {
    Signature,
    /// HeaderSize below 92 or above the block size.
    HeaderSize(u32),
    HeaderCrc,
    /// MyLBA does not name the block the header was read from.
    WrongLba(u64),
    /// The usable range or the entry array lies outside the disk or overlaps a header.
    Geometry,
    /// SizeOfPartitionEntry is not 128 × 2^n up to the block size.
    EntrySize(u32),
    /// The entry array is larger than [`MAX_ENTRY_ARRAY_BYTES`] (entries).
    TooManyEntries(u32),
    EntryArrayCrc,
    Device(DeviceError),
}

impl core::fmt::Display for HeaderFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HeaderFault::Signature => write!(f, "no GPT signature"),
            HeaderFault::HeaderSize(s) => write!(f, "header size {s} is invalid"),
            HeaderFault::HeaderCrc => write!(f, "header CRC mismatch"),
            HeaderFault::WrongLba(l) => write!(f, "header says it is at LBA {l}"),
            HeaderFault::Geometry => write!(f, "usable range or entry array outside the disk"),
            HeaderFault::EntrySize(s) => write!(f, "partition entry size {s} is not supported"),
            HeaderFault::TooManyEntries(n) => write!(f, "{n} partition entries is too many"),
            HeaderFault::EntryArrayCrc => write!(f, "partition entry array CRC mismatch"),
            HeaderFault::Device(e) => write!(f, "read failed: {e}"),
        }
    }
}

/// Why no partition could be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GptError {
    /// Only 512- and 4096-byte logical blocks are supported.
    BlockSize(u32),
    /// Too few blocks for a protective MBR, two headers and entry arrays.
    TooSmall { blocks: u64 },
    /// Neither table is valid (the primary's and the backup's faults).
    NoValidTable { primary: HeaderFault, backup: HeaderFault },
    /// The table holds no partition of the type asked for.
    NotFound,
    /// Two partitions have the type: which one holds the data is ambiguous.
    Duplicate,
    /// The entry's range is empty or outside the table's usable blocks.
    BadRange { first_lba: u64, last_lba: u64 },
}

impl core::fmt::Display for GptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GptError::BlockSize(b) => write!(f, "{b}-byte blocks are not supported"),
            GptError::TooSmall { blocks } => write!(f, "a disk of {blocks} blocks cannot hold a GPT"),
            GptError::NoValidTable { primary, backup } => {
                write!(f, "no valid GPT (primary: {primary}; backup: {backup})")
            }
            GptError::NotFound => write!(f, "no partition of that type"),
            GptError::Duplicate => write!(f, "two partitions of that type"),
            GptError::BadRange { first_lba, last_lba } => {
                write!(f, "the partition's blocks {first_lba}..={last_lba} are outside the usable range")
            }
        }
    }
}

/// The fields of a GPT header this code uses (UEFI 2.10 Table 5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    first_usable: u64,
    last_usable: u64,
    entries_lba: u64,
    entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at.saturating_add(4)) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at.saturating_add(8)) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// Checks the header in `block` (read from `lba` of a disk of `blocks` blocks).
fn parse_header(block: &[u8], lba: u64, blocks: u64) -> Result<Header, HeaderFault> {
    if block.get(..8) != Some(&SIGNATURE[..]) {
        return Err(HeaderFault::Signature);
    }
    let size = le_u32(block, 12);
    if size < MIN_HEADER_SIZE || size as usize > block.len() {
        return Err(HeaderFault::HeaderSize(size));
    }
    let mut crc = Crc32::new();
    let header = block.get(..size as usize).unwrap_or_default();
    crc.update(header.get(..16).unwrap_or_default());
    crc.update(&[0; 4]);
    crc.update(header.get(20..).unwrap_or_default());
    if crc.finalize() != le_u32(block, 16) {
        return Err(HeaderFault::HeaderCrc);
    }
    let my_lba = le_u64(block, 24);
    if my_lba != lba {
        return Err(HeaderFault::WrongLba(my_lba));
    }
    let h = Header {
        first_usable: le_u64(block, 40),
        last_usable: le_u64(block, 48),
        entries_lba: le_u64(block, 72),
        entries: le_u32(block, 80),
        entry_size: le_u32(block, 84),
        entries_crc: le_u32(block, 88),
    };
    let bs = block.len() as u64;
    if h.entry_size < MIN_ENTRY_SIZE || !h.entry_size.is_power_of_two() || u64::from(h.entry_size) > bs {
        return Err(HeaderFault::EntrySize(h.entry_size));
    }
    let array_bytes = u64::from(h.entries) * u64::from(h.entry_size);
    if array_bytes > MAX_ENTRY_ARRAY_BYTES {
        return Err(HeaderFault::TooManyEntries(h.entries));
    }
    let array_end = h.entries_lba.checked_add(array_bytes.div_ceil(bs)).ok_or(HeaderFault::Geometry)?;
    let usable_ok = 1 < h.first_usable && h.first_usable <= h.last_usable && h.last_usable < blocks.saturating_sub(1);
    // The array sits between a header and the usable blocks (before them for the
    // primary, after them for the backup), never on a header.
    let array_ok = h.entries_lba >= 2
        && array_end < blocks
        && (array_end <= h.first_usable || h.entries_lba > h.last_usable)
        && !(h.entries_lba..array_end).contains(&lba);
    if !usable_ok || !array_ok {
        return Err(HeaderFault::Geometry);
    }
    Ok(h)
}

/// Reads the header at `lba`, checks it and its entry array, and returns the first
/// entry of `type_guid` (or `None`), already checked against the usable range.
fn read_table<D: BlockDevice>(
    dev: &mut D,
    lba: u64,
    type_guid: &[u8; 16],
) -> Result<Result<Partition, GptError>, HeaderFault> {
    let bs = dev.block_size() as usize;
    let mut block = vec![0u8; bs];
    dev.read(lba, &mut block).map_err(HeaderFault::Device)?;
    let h = parse_header(&block, lba, dev.blocks())?;
    let mut crc = Crc32::new();
    let mut found: Option<Result<Partition, GptError>> = None;
    let mut left = h.entries as usize;
    let per_block = bs / h.entry_size as usize;
    let mut at = h.entries_lba;
    while left > 0 {
        dev.read(at, &mut block).map_err(HeaderFault::Device)?;
        let n = left.min(per_block);
        for entry in block.chunks_exact(h.entry_size as usize).take(n) {
            crc.update(entry);
            if entry.get(..16) != Some(&type_guid[..]) {
                continue;
            }
            found = Some(match found {
                Some(_) => Err(GptError::Duplicate),
                None => entry_partition(entry, &h),
            });
        }
        left -= n;
        at += 1;
    }
    if crc.finalize() != h.entries_crc {
        return Err(HeaderFault::EntryArrayCrc);
    }
    Ok(found.unwrap_or(Err(GptError::NotFound)))
}

/// One entry (UEFI 2.10 Table 5.6) as a partition inside the header's usable range.
fn entry_partition(entry: &[u8], h: &Header) -> Result<Partition, GptError> {
    let first_lba = le_u64(entry, 32);
    let last_lba = le_u64(entry, 40);
    if first_lba > last_lba || first_lba < h.first_usable || last_lba > h.last_usable {
        return Err(GptError::BadRange { first_lba, last_lba });
    }
    let mut unique_guid = [0u8; 16];
    unique_guid.copy_from_slice(entry.get(16..32).unwrap_or(&[0; 16]));
    Ok(Partition { first_lba, blocks: last_lba - first_lba + 1, unique_guid })
}

/// Finds the partition of `type_guid` (on-disk byte order) in the primary GPT, or in
/// the backup when the primary is damaged.
pub fn find_partition<D: BlockDevice>(dev: &mut D, type_guid: &[u8; 16]) -> Result<(Partition, TableUsed), GptError> {
    let bs = dev.block_size();
    if bs != 512 && bs != 4096 {
        return Err(GptError::BlockSize(bs));
    }
    let blocks = dev.blocks();
    // MBR, two headers, two arrays of at least one block, one usable block.
    if blocks < 6 {
        return Err(GptError::TooSmall { blocks });
    }
    let primary = match read_table(dev, 1, type_guid) {
        Ok(found) => return found.map(|p| (p, TableUsed::Primary)),
        Err(fault) => fault,
    };
    match read_table(dev, blocks - 1, type_guid) {
        Ok(found) => found.map(|p| (p, TableUsed::Backup(primary))),
        Err(backup) => Err(GptError::NoValidTable { primary, backup }),
    }
}

/// One partition of a device, as a device of its own: block 0 is the partition's
/// first block, and nothing outside it can be reached.
#[derive(Debug)]
pub struct PartitionDevice<D> {
    device: D,
    partition: Partition,
}

impl<D: BlockDevice> PartitionDevice<D> {
    /// `None` when the partition does not lie inside `device`.
    pub fn new(device: D, partition: Partition) -> Option<Self> {
        let end = partition.first_lba.checked_add(partition.blocks)?;
        (partition.blocks > 0 && end <= device.blocks()).then_some(PartitionDevice { device, partition })
    }

    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The whole device the partition lies on.
    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn into_inner(self) -> D {
        self.device
    }

    fn outer_lba(&self, lba: u64, len: usize) -> Result<u64, DeviceError> {
        check_range(lba, len, self.block_size(), self.partition.blocks)?;
        // In range: `lba < blocks` and `first_lba + blocks` fits (checked in `new`).
        Ok(self.partition.first_lba + lba)
    }
}

impl<D: BlockDevice> BlockDevice for PartitionDevice<D> {
    fn block_size(&self) -> u32 {
        self.device.block_size()
    }

    fn blocks(&self) -> u64 {
        self.partition.blocks
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let outer = self.outer_lba(lba, buf.len())?;
        self.device.read(outer, buf)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        let outer = self.outer_lba(lba, buf.len())?;
        self.device.write(outer, buf)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.device.flush()
    }

    fn read_with(
        &mut self,
        lba: u64,
        len: usize,
        take: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        let outer = self.outer_lba(lba, len)?;
        self.device.read_with(outer, len, take)
    }

    fn write_with(
        &mut self,
        lba: u64,
        len: usize,
        fill: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        let outer = self.outer_lba(lba, len)?;
        self.device.write_with(outer, len, fill)
    }

    fn read_direct(&mut self, lba: u64, segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        match self.outer_lba(lba, crate::device::segments_len(segments)) {
            Ok(outer) => self.device.read_direct(outer, segments),
            Err(e) => Some(Err(e)),
        }
    }

    fn write_direct(&mut self, lba: u64, segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        match self.outer_lba(lba, crate::device::segments_len(segments)) {
            Ok(outer) => self.device.write_direct(outer, segments),
            Err(e) => Some(Err(e)),
        }
    }
}

/// CRC-32 as GPT uses it (IEEE 802.3, reflected, polynomial 0xEDB88320; UEFI 2.10
/// §5.3.2 refers to the standard CRC-32).
pub type Crc32 = crc32fast::Hasher;

#[cfg(test)]
mod tests;
