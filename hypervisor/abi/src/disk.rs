//! On-disk identifiers shared by the installer (which creates the data partition) and
//! the hypervisor (which finds it and keeps the VMs' disks in it).

/// The GPT partition type of Bulkhead's data partition,
/// 311218D7-EF68-42B0-8E26-56D35C506F2D, in its on-disk byte order (UEFI 2.10
/// Appendix A: the first three fields little-endian, the last eight bytes as written).
pub const DATA_PARTITION_TYPE: [u8; 16] =
    [0xD7, 0x18, 0x12, 0x31, 0x68, 0xEF, 0xB0, 0x42, 0x8E, 0x26, 0x56, 0xD3, 0x5C, 0x50, 0x6F, 0x2D];

/// The partition name the installer writes (UTF-16LE in the GPT entry).
pub const DATA_PARTITION_NAME: &str = "Bulkhead data";
