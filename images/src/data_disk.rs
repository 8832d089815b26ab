//! A laptop's internal disk as the hypervisor finds it after an install, without
//! running the installer: a raw image with a GPT holding one "Bulkhead data"
//! partition (the type in `bulkhead_abi::disk`), for QEMU's NVMe disk.

use std::fs::File;
use std::io;
use std::path::Path;

use bulkhead_abi::disk::{DATA_PARTITION_NAME, DATA_PARTITION_TYPE};

const MIB: u64 = 1 << 20;

/// Where the data partition lies in the image, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPartition {
    pub offset: u64,
    pub bytes: u64,
}

fn gpt_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn lb(block_size: u32) -> io::Result<gpt::disk::LogicalBlockSize> {
    match block_size {
        512 => Ok(gpt::disk::LogicalBlockSize::Lb512),
        4096 => Ok(gpt::disk::LogicalBlockSize::Lb4096),
        other => Err(io::Error::other(format!("{other}-byte blocks: 512 or 4096 only"))),
    }
}

/// The GPT partition type of the data partition, as the `gpt` crate names types.
pub fn data_partition_type() -> gpt::partition_types::Type {
    gpt::partition_types::Type {
        guid: uuid::Uuid::from_bytes_le(DATA_PARTITION_TYPE),
        os: gpt::partition_types::OperatingSystem::Custom("Bulkhead".into()),
    }
}

/// Creates a sparse raw image of `bytes` bytes with `block_size`-byte logical blocks,
/// a protective MBR and a GPT whose one partition, "Bulkhead data", starts at 1 MiB
/// and runs to the last whole MiB before the backup GPT.
pub fn create(path: &Path, bytes: u64, block_size: u32) -> io::Result<DataPartition> {
    let size = lb(block_size)?;
    if bytes < 4 * MIB || !bytes.is_multiple_of(MIB) {
        return Err(io::Error::other("the disk must be a whole number of MiB, at least 4 MiB"));
    }
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    file.set_len(bytes)?;
    let blocks = bytes / u64::from(block_size);
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(blocks - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut file).map_err(gpt_err)?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(size)
        .create_from_device(&mut file, None)
        .map_err(gpt_err)?;
    let align = MIB / u64::from(block_size);
    let id = disk
        .add_partition(DATA_PARTITION_NAME, bytes - 2 * MIB, data_partition_type(), 0, Some(align))
        .map_err(gpt_err)?;
    let part = disk.partitions().get(&id).cloned().ok_or_else(|| io::Error::other("partition vanished"))?;
    disk.write().map_err(gpt_err)?;
    Ok(DataPartition { offset: part.bytes_start(size)?, bytes: part.bytes_len(size)? })
}

/// Finds the data partition in an existing image (read with the `gpt` crate, with
/// 512-byte blocks, else 4096-byte ones).
pub fn find(path: &Path) -> io::Result<DataPartition> {
    let mut last = io::Error::other("no GPT");
    for size in [gpt::disk::LogicalBlockSize::Lb512, gpt::disk::LogicalBlockSize::Lb4096] {
        let mut file = File::open(path)?;
        let disk = match gpt::GptConfig::new().writable(false).logical_block_size(size).open_from_device(&mut file) {
            Ok(d) => d,
            Err(e) => {
                last = gpt_err(e);
                continue;
            }
        };
        let ty = data_partition_type();
        let part = disk
            .partitions()
            .values()
            .find(|p| p.part_type_guid.guid == ty.guid)
            .cloned()
            .ok_or_else(|| io::Error::other("no Bulkhead data partition"))?;
        return Ok(DataPartition { offset: part.bytes_start(size)?, bytes: part.bytes_len(size)? });
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn the_image_holds_one_data_partition_from_1_mib() {
        let dir = tempfile::tempdir().unwrap();
        for block_size in [512u32, 4096] {
            let path = dir.path().join(format!("data-{block_size}.img"));
            let made = create(&path, 64 * MIB, block_size).unwrap();
            assert_eq!(made, DataPartition { offset: MIB, bytes: 62 * MIB });
            assert_eq!(find(&path).unwrap(), made);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * MIB);
            // The type GUID's on-disk bytes are the ABI constant: entry 0 of the array
            // at LBA 2.
            let mut f = File::open(&path).unwrap();
            f.seek(SeekFrom::Start(2 * u64::from(block_size))).unwrap();
            let mut entry = [0u8; 128];
            f.read_exact(&mut entry).unwrap();
            assert_eq!(entry[..16], DATA_PARTITION_TYPE);
            let name: Vec<u16> = "Bulkhead data".encode_utf16().collect();
            let on_disk: Vec<u16> =
                entry[56..56 + 2 * name.len()].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            assert_eq!(on_disk, name);
        }
        assert!(create(&dir.path().join("odd.img"), 64 * MIB, 1024).is_err());
        assert!(create(&dir.path().join("tiny.img"), 2 * MIB, 512).is_err());
    }
}
