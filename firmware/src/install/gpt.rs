//! The internal disk's partition table: a protective MBR, a GPT with an EFI System
//! Partition and a Bulkhead data partition, and the backup GPT at the end of the disk
//! (UEFI 2.10 §5.2.3 and §5.3).

use alloc::vec;
use alloc::vec::Vec;

use super::crc32::crc32;
use super::guid::{Guid, guid};

/// EFI System Partition (UEFI 2.10 Table 5.7).
pub const ESP_TYPE: Guid = guid(0xC12A_7328, 0xF81F, 0x11D2, [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
/// Bulkhead's data partition (the VMs' disks); our own type, so no OS claims it.
pub const DATA_TYPE: Guid = guid(0x3112_18D7, 0xEF68, 0x42B0, [0x8E, 0x26, 0x56, 0xD3, 0x5C, 0x50, 0x6F, 0x2D]);

/// The ESP is big enough for FAT32 with 4 KiB clusters on 4Kn disks (≥ 65,525 clusters).
pub const ESP_BYTES: u64 = 288 * MIB;
/// The smallest data partition worth installing for.
pub const MIN_DATA_BYTES: u64 = 1024 * MIB;
pub const ESP_NAME: &str = "EFI System";
pub const DATA_NAME: &str = "Bulkhead data";

const MIB: u64 = 1024 * 1024;
/// Partitions start on 1 MiB boundaries, as every partitioning tool does.
const ALIGN: u64 = MIB;
const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;
const ENTRIES_BYTES: u64 = (ENTRIES * ENTRY_SIZE) as u64;
const HEADER_SIZE: u32 = 92;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub first_lba: u64,
    pub last_lba: u64,
    pub unique: Guid,
}

impl Partition {
    pub fn blocks(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }
}

/// Where everything goes on one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub block_size: u64,
    pub total_blocks: u64,
    pub disk_guid: Guid,
    pub esp: Partition,
    pub data: Partition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// The disk is smaller than `needed` bytes.
    TooSmall { needed: u64 },
    /// Only 512-byte and 4096-byte logical blocks are supported.
    BlockSize(u64),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::TooSmall { needed } => {
                write!(f, "the disk is too small: Bulkhead needs at least {} MiB", needed.div_ceil(MIB))
            }
            LayoutError::BlockSize(size) => write!(f, "{size}-byte blocks are not supported (512 or 4096 only)"),
        }
    }
}

/// The smallest disk an install fits on.
pub fn required_bytes(block_size: u64) -> u64 {
    ALIGN + ESP_BYTES + MIN_DATA_BYTES + ENTRIES_BYTES + block_size
}

/// Plans the partitions of a disk with `total_blocks` blocks; `guids` are the disk's and
/// the two partitions' unique GUIDs.
pub fn plan(block_size: u64, total_blocks: u64, guids: [Guid; 3]) -> Result<Layout, LayoutError> {
    if block_size != 512 && block_size != 4096 {
        return Err(LayoutError::BlockSize(block_size));
    }
    let needed = required_bytes(block_size);
    if total_blocks.saturating_mul(block_size) < needed {
        return Err(LayoutError::TooSmall { needed });
    }
    let entry_blocks = ENTRIES_BYTES / block_size;
    let last_usable = total_blocks - 1 - entry_blocks - 1;
    let esp_first = ALIGN / block_size;
    let esp_last = esp_first + ESP_BYTES / block_size - 1;
    let data_first = esp_last + 1;
    Ok(Layout {
        block_size,
        total_blocks,
        disk_guid: guids[0],
        esp: Partition { number: 1, first_lba: esp_first, last_lba: esp_last, unique: guids[1] },
        data: Partition { number: 2, first_lba: data_first, last_lba: last_usable, unique: guids[2] },
    })
}

impl Layout {
    fn entry_blocks(&self) -> u64 {
        ENTRIES_BYTES / self.block_size
    }

    fn last_lba(&self) -> u64 {
        self.total_blocks - 1
    }

    /// Block 0: the protective MBR (UEFI 2.10 §5.2.3), one partition of type 0xEE
    /// covering the disk (capped at 2^32 - 1 blocks).
    pub fn protective_mbr(&self) -> Vec<u8> {
        let mut block = vec![0u8; self.block_size as usize];
        let record = &mut block[446..462];
        record[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // starting CHS 0/0/2
        record[4] = 0xEE;
        record[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        record[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.total_blocks - 1).unwrap_or(u32::MAX);
        record[12..16].copy_from_slice(&size.to_le_bytes());
        block[510] = 0x55;
        block[511] = 0xAA;
        block
    }

    /// The partition entry array (UEFI 2.10 §5.3.3), identical in both copies.
    pub fn entry_array(&self) -> Vec<u8> {
        let mut array = vec![0u8; ENTRIES_BYTES as usize];
        for (slot, (part, ty, name)) in
            [(&self.esp, ESP_TYPE, ESP_NAME), (&self.data, DATA_TYPE, DATA_NAME)].into_iter().enumerate()
        {
            let e = &mut array[slot * ENTRY_SIZE as usize..(slot + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&ty);
            e[16..32].copy_from_slice(&part.unique);
            e[32..40].copy_from_slice(&part.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&part.last_lba.to_le_bytes());
            for (i, unit) in name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        array
    }

    /// A GPT header block (UEFI 2.10 §5.3.2): the primary one at LBA 1 or the backup in
    /// the last block.
    pub fn header(&self, primary: bool) -> Vec<u8> {
        let entry_blocks = self.entry_blocks();
        let (my_lba, alternate, entries_lba) =
            if primary { (1, self.last_lba(), 2) } else { (self.last_lba(), 1, self.last_lba() - entry_blocks) };
        let mut block = vec![0u8; self.block_size as usize];
        let h = &mut block[..HEADER_SIZE as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + entry_blocks).to_le_bytes());
        h[48..56].copy_from_slice(&(self.last_lba() - entry_blocks - 1).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&self.entry_array()).to_le_bytes());
        let header_crc = crc32(h);
        h[16..20].copy_from_slice(&header_crc.to_le_bytes());
        block
    }

    /// Every block range of the partition table, as (LBA, bytes), primary copy last so
    /// that a disk is only recognised once all of the rest is in place.
    pub fn table_writes(&self) -> [(u64, Vec<u8>); 5] {
        let entries = self.entry_array();
        [
            (self.last_lba() - self.entry_blocks(), entries.clone()),
            (self.last_lba(), self.header(false)),
            (2, entries),
            (0, self.protective_mbr()),
            (1, self.header(true)),
        ]
    }

    /// Blocks that make any old partition table unrecognisable: both headers and the MBR.
    pub fn wipe_writes(&self) -> [(u64, Vec<u8>); 3] {
        let zero = vec![0u8; self.block_size as usize];
        [(0, zero.clone()), (1, zero.clone()), (self.last_lba(), zero)]
    }
}

/// Reads back a partition table this installer wrote: both CRCs must hold, the ESP
/// must be entry 1 and the Bulkhead data partition entry 2. `head` holds the first
/// blocks of the disk through the entry array. An update rewrites the ESP in place and
/// keeps everything else.
pub fn read_layout(head: &[u8], block_size: u64, total_blocks: u64) -> Option<Layout> {
    let bs = block_size as usize;
    let h = head.get(bs..bs + HEADER_SIZE as usize)?;
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]));
    if &h[0..8] != b"EFI PART" || u32_at(12) != HEADER_SIZE || u32_at(84) != ENTRY_SIZE || u32_at(80) != ENTRIES {
        return None;
    }
    let mut zeroed = [0u8; HEADER_SIZE as usize];
    zeroed.copy_from_slice(h);
    zeroed[16..20].fill(0);
    if crc32(&zeroed) != u32_at(16) || u64_at(32) != total_blocks - 1 {
        return None;
    }
    let entries_at = usize::try_from(u64_at(72)).ok()?.checked_mul(bs)?;
    let entries = head.get(entries_at..entries_at + ENTRIES_BYTES as usize)?;
    if crc32(entries) != u32_at(88) {
        return None;
    }
    let entry = |slot: usize, ty: Guid| -> Option<Partition> {
        let e = &entries[slot * ENTRY_SIZE as usize..(slot + 1) * ENTRY_SIZE as usize];
        if e[0..16] != ty {
            return None;
        }
        let lba = |at: usize| u64::from_le_bytes(e[at..at + 8].try_into().unwrap_or([0; 8]));
        let unique: Guid = e[16..32].try_into().ok()?;
        Some(Partition { number: slot as u32 + 1, first_lba: lba(32), last_lba: lba(40), unique })
    };
    let esp = entry(0, ESP_TYPE)?;
    let data = entry(1, DATA_TYPE)?;
    if esp.blocks() * block_size != ESP_BYTES {
        return None;
    }
    Some(Layout { block_size, total_blocks, disk_guid: h[56..72].try_into().ok()?, esp, data })
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    const GUIDS: [Guid; 3] = [[1; 16], [2; 16], [3; 16]];

    fn write_disk(layout: &Layout) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(layout.total_blocks * layout.block_size).unwrap();
        for (lba, bytes) in layout.table_writes() {
            f.seek(SeekFrom::Start(lba * layout.block_size)).unwrap();
            f.write_all(&bytes).unwrap();
        }
        f
    }

    fn check_with_the_gpt_crate(block_size: u64, disk_bytes: u64) {
        let layout = plan(block_size, disk_bytes / block_size, GUIDS).unwrap();
        let f = write_disk(&layout);
        let lb =
            if block_size == 512 { gpt::disk::LogicalBlockSize::Lb512 } else { gpt::disk::LogicalBlockSize::Lb4096 };
        // The gpt crate checks both headers' and the entry array's CRC32s when opening.
        let disk = gpt::GptConfig::new().writable(false).logical_block_size(lb).open(f.path()).unwrap();
        let parts = disk.partitions();
        assert_eq!(parts.len(), 2);
        let esp = &parts[&1];
        assert_eq!(esp.part_type_guid, gpt::partition_types::EFI);
        assert_eq!(esp.name, ESP_NAME);
        assert_eq!(esp.first_lba * block_size, MIB);
        assert_eq!(esp.bytes_len(lb).unwrap(), ESP_BYTES);
        let data = &parts[&2];
        assert_eq!(data.name, DATA_NAME);
        assert_eq!(data.part_type_guid.guid.to_string().to_uppercase(), "311218D7-EF68-42B0-8E26-56D35C506F2D");
        assert_eq!(data.first_lba, esp.last_lba + 1);
        assert_eq!(data.last_lba, layout.data.last_lba);
        assert!(data.bytes_len(lb).unwrap() >= MIN_DATA_BYTES);
        assert!(disk.header().backup_lba == disk_bytes / block_size - 1);
        let raw = std::fs::read(f.path()).unwrap();
        assert_eq!(&raw[510..512], &[0x55, 0xAA]);
        assert_eq!(raw[446 + 4], 0xEE);
    }

    #[test]
    fn the_data_type_is_the_one_the_hypervisor_looks_for() {
        assert_eq!(DATA_TYPE, bulkhead_abi::disk::DATA_PARTITION_TYPE);
        assert_eq!(DATA_NAME, bulkhead_abi::disk::DATA_PARTITION_NAME);
    }

    #[test]
    fn a_512_byte_block_disk_reads_back_with_both_partitions() {
        check_with_the_gpt_crate(512, 2 * 1024 * MIB);
    }

    #[test]
    fn a_4kn_disk_reads_back_with_both_partitions() {
        check_with_the_gpt_crate(4096, 2 * 1024 * MIB);
    }

    #[test]
    fn a_corrupt_backup_header_is_noticed_by_its_crc() {
        let layout = plan(512, 4 * 1024 * MIB / 512, GUIDS).unwrap();
        let mut backup = layout.header(false);
        let stored = u32::from_le_bytes(backup[16..20].try_into().unwrap());
        backup[16..20].fill(0);
        assert_eq!(crc32(&backup[..92]), stored);
        backup[40] ^= 1;
        assert_ne!(crc32(&backup[..92]), stored);
    }

    fn head_of(layout: &Layout) -> Vec<u8> {
        let mut head = vec![0u8; (2 * layout.block_size + ENTRIES_BYTES) as usize];
        for (lba, bytes) in layout.table_writes() {
            let at = (lba * layout.block_size) as usize;
            if at < head.len() {
                head[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }
        head
    }

    #[test]
    fn our_own_table_reads_back_as_the_same_layout() {
        for bs in [512, 4096] {
            let layout = plan(bs, 4 * 1024 * MIB / bs, GUIDS).unwrap();
            assert_eq!(read_layout(&head_of(&layout), bs, layout.total_blocks), Some(layout.clone()));
            // A disk that changed size, or a table with a broken CRC, is not ours.
            assert_eq!(read_layout(&head_of(&layout), bs, layout.total_blocks + 1), None);
            let mut head = head_of(&layout);
            head[(2 * bs) as usize + 60] ^= 1;
            assert_eq!(read_layout(&head, bs, layout.total_blocks), None, "entry array CRC");
            let mut head = head_of(&layout);
            head[bs as usize + 40] ^= 1;
            assert_eq!(read_layout(&head, bs, layout.total_blocks), None, "header CRC");
        }
    }

    #[test]
    fn a_foreign_gpt_is_not_taken_for_ours() {
        let layout = plan(512, 4 * 1024 * MIB / 512, GUIDS).unwrap();
        let mut head = head_of(&layout);
        // Retype the data partition (as another OS would have it) and fix both CRCs.
        let entries_at = 2 * 512;
        head[entries_at + 128..entries_at + 144].copy_from_slice(&[0x11; 16]);
        let crc = crc32(&head[entries_at..entries_at + ENTRIES_BYTES as usize]);
        head[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        head[512 + 16..512 + 20].fill(0);
        let crc = crc32(&head[512..512 + 92]);
        head[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(read_layout(&head, 512, layout.total_blocks), None);
    }

    #[test]
    fn too_small_disks_are_refused_with_the_size_needed() {
        let needed = required_bytes(512);
        assert_eq!(plan(512, needed / 512 - 1, GUIDS), Err(LayoutError::TooSmall { needed }));
        assert!(plan(512, needed / 512, GUIDS).is_ok());
        let message = alloc::format!("{}", LayoutError::TooSmall { needed });
        assert!(message.contains("1314 MiB"), "{message}");
        assert_eq!(plan(520, 1 << 30, GUIDS), Err(LayoutError::BlockSize(520)));
    }

    #[test]
    fn the_smallest_disk_still_gives_the_data_partition_its_minimum() {
        let needed = required_bytes(4096);
        let layout = plan(4096, needed / 4096, GUIDS).unwrap();
        assert!(layout.data.blocks() * 4096 >= MIN_DATA_BYTES);
        assert_eq!(layout.esp.blocks() * 4096, ESP_BYTES);
    }
}
