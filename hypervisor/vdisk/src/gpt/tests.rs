//! Tables written by an independent GPT writer (the `gpt` crate), read back here.

use super::*;
use crate::device::RamDevice;
use std::io::Cursor;

const DATA_TYPE: [u8; 16] =
    [0xD7, 0x18, 0x12, 0x31, 0x68, 0xEF, 0xB0, 0x42, 0x8E, 0x26, 0x56, 0xD3, 0x5C, 0x50, 0x6F, 0x2D];
const MIB: u64 = 1 << 20;

fn lb(block_size: u32) -> gpt::disk::LogicalBlockSize {
    match block_size {
        512 => gpt::disk::LogicalBlockSize::Lb512,
        _ => gpt::disk::LogicalBlockSize::Lb4096,
    }
}

/// A disk of `bytes` with an ESP and, if `data`, a data partition of `data_bytes`;
/// returns the image and the data partition as the writer placed it.
fn image(block_size: u32, bytes: u64, data: bool) -> (Vec<u8>, Option<gpt::partition::Partition>) {
    let mut disk = Cursor::new(vec![0u8; bytes as usize]);
    let blocks = bytes / u64::from(block_size);
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(blocks - 1).unwrap());
    mbr.overwrite_lba0(&mut disk).unwrap();
    let mut g = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb(block_size))
        .create_from_device(&mut disk, None)
        .unwrap();
    g.add_partition("EFI System", 2 * MIB, gpt::partition_types::EFI, 0, None).unwrap();
    let mut part = None;
    if data {
        let ty = gpt::partition_types::Type {
            guid: uuid::Uuid::from_bytes_le(DATA_TYPE),
            os: gpt::partition_types::OperatingSystem::Custom("Bulkhead".into()),
        };
        let id = g.add_partition("Bulkhead data", 4 * MIB, ty, 0, None).unwrap();
        part = g.partitions().get(&id).cloned();
    }
    g.write().unwrap();
    (disk.into_inner(), part)
}

fn device(block_size: u32, bytes: &[u8]) -> RamDevice {
    let mut dev = RamDevice::new(block_size, bytes.len() as u64 / u64::from(block_size));
    dev.write(0, bytes).unwrap();
    dev.flush().unwrap();
    dev
}

fn check_found(block_size: u32) {
    let (bytes, part) = image(block_size, 16 * MIB, true);
    let part = part.unwrap();
    let mut dev = device(block_size, &bytes);
    let (found, used) = find_partition(&mut dev, &DATA_TYPE).unwrap();
    assert_eq!(used, TableUsed::Primary);
    assert_eq!(found.first_lba, part.first_lba);
    assert_eq!(found.blocks, part.last_lba - part.first_lba + 1);
    assert_eq!(found.blocks * u64::from(block_size), 4 * MIB);
    assert_eq!(found.unique_guid, part.part_guid.to_bytes_le());
}

#[test]
fn finds_the_data_partition_with_512_byte_blocks() {
    check_found(512);
}

#[test]
fn finds_the_data_partition_with_4096_byte_blocks() {
    check_found(4096);
}

#[test]
fn a_damaged_primary_falls_back_to_the_backup() {
    for block_size in [512u32, 4096] {
        let (good, part) = image(block_size, 16 * MIB, true);
        let part = part.unwrap();
        let bs = block_size as usize;
        // A flipped byte in the header, then one in the entry array.
        for (at, fault) in [(bs + 60, HeaderFault::HeaderCrc), (2 * bs + 130, HeaderFault::EntryArrayCrc)] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x40;
            let mut dev = device(block_size, &bytes);
            let (found, used) = find_partition(&mut dev, &DATA_TYPE).unwrap();
            assert_eq!(used, TableUsed::Backup(fault));
            assert_eq!(found.first_lba, part.first_lba);
        }
        // Primary wiped: the backup alone still finds it.
        let mut bytes = good.clone();
        bytes[bs..2 * bs].fill(0);
        let (found, used) = find_partition(&mut device(block_size, &bytes), &DATA_TYPE).unwrap();
        assert_eq!(used, TableUsed::Backup(HeaderFault::Signature));
        assert_eq!(found.first_lba, part.first_lba);
        // Both damaged: no table, and both reasons given.
        let last = bytes.len() - bs;
        bytes[last + 30] ^= 1;
        let err = find_partition(&mut device(block_size, &bytes), &DATA_TYPE).unwrap_err();
        assert_eq!(err, GptError::NoValidTable { primary: HeaderFault::Signature, backup: HeaderFault::HeaderCrc });
        assert!(err.to_string().contains("backup: header CRC mismatch"), "{err}");
    }
}

#[test]
fn a_disk_without_the_partition_says_so() {
    let (bytes, _) = image(512, 16 * MIB, false);
    let mut dev = device(512, &bytes);
    assert_eq!(find_partition(&mut dev, &DATA_TYPE), Err(GptError::NotFound));
    // The ESP is there, so the table itself was read.
    let esp = gpt::partition_types::EFI.guid.to_bytes_le();
    assert!(find_partition(&mut dev, &esp).is_ok());
    let blank = RamDevice::new(512, 64);
    assert!(matches!(find_partition(&mut blank.clone(), &DATA_TYPE), Err(GptError::NoValidTable { .. })));
    assert_eq!(find_partition(&mut RamDevice::new(1024, 64), &DATA_TYPE), Err(GptError::BlockSize(1024)));
    assert_eq!(find_partition(&mut RamDevice::new(512, 5), &DATA_TYPE), Err(GptError::TooSmall { blocks: 5 }));
}

/// Rewrites the primary header of `bytes` with `edit` applied and its CRC fixed.
fn edit_primary(bytes: &mut [u8], bs: usize, edit: impl FnOnce(&mut [u8])) {
    let header = &mut bytes[bs..2 * bs];
    edit(header);
    let size = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
    header[16..20].fill(0);
    let mut crc = Crc32::new();
    crc.update(&header[..size]);
    let crc = crc.finalize();
    header[16..20].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn oversized_or_misplaced_entry_arrays_are_refused() {
    let (good, _) = image(512, 16 * MIB, true);
    type Edit = fn(&mut [u8]);
    let cases: [(Edit, HeaderFault); 4] = [
        (|h| h[80..84].copy_from_slice(&100_000u32.to_le_bytes()), HeaderFault::TooManyEntries(100_000)),
        (|h| h[84..88].copy_from_slice(&96u32.to_le_bytes()), HeaderFault::EntrySize(96)),
        (|h| h[72..80].copy_from_slice(&u64::MAX.to_le_bytes()), HeaderFault::Geometry),
        (|h| h[24..32].copy_from_slice(&7u64.to_le_bytes()), HeaderFault::WrongLba(7)),
    ];
    for (edit, fault) in cases {
        let mut bytes = good.clone();
        edit_primary(&mut bytes, 512, edit);
        let (_, used) = find_partition(&mut device(512, &bytes), &DATA_TYPE).unwrap();
        assert_eq!(used, TableUsed::Backup(fault));
    }
}

#[test]
fn crc32_matches_the_standard_check_value() {
    let mut c = Crc32::new();
    c.update(b"1234");
    c.update(b"56789");
    assert_eq!(c.finalize(), 0xCBF4_3926);
}

#[test]
fn the_partition_device_reaches_only_its_blocks() {
    let (bytes, _) = image(512, 16 * MIB, true);
    let mut dev = device(512, &bytes);
    let (part, _) = find_partition(&mut dev, &DATA_TYPE).unwrap();
    let mut p = PartitionDevice::new(dev, part).unwrap();
    assert_eq!(p.blocks(), part.blocks);
    assert_eq!(p.block_size(), 512);
    let last = p.blocks() - 1;
    p.write(last, &[0xA5; 512]).unwrap();
    p.write(0, &[0x5A; 512]).unwrap();
    assert_eq!(p.write(last, &[0; 1024]), Err(DeviceError::OutOfRange));
    assert_eq!(p.read(p.blocks(), &mut [0; 512]), Err(DeviceError::OutOfRange));
    assert_eq!(p.read(0, &mut [0; 100]), Err(DeviceError::Misaligned));
    p.flush().unwrap();
    let mut buf = [0u8; 512];
    p.read(last, &mut buf).unwrap();
    assert_eq!(buf, [0xA5; 512]);
    let whole = p.into_inner().contents();
    let at = ((part.first_lba + last) * 512) as usize;
    assert_eq!(whole[at..at + 512], [0xA5; 512]);
    let at = (part.first_lba * 512) as usize;
    assert_eq!(whole[at..at + 512], [0x5A; 512]);
    assert_eq!(whole[at - 512..at], bytes[at - 512..at], "the block before the partition is untouched");
    let too_big = Partition { first_lba: 10, blocks: u64::MAX, unique_guid: [0; 16] };
    assert!(PartitionDevice::new(RamDevice::new(512, 64), too_big).is_none());
}
