//! Filesystems written straight onto a whole disk, without a partition table: a
//! "superfloppy" FAT or exFAT stick image, a Linux disk formatted as ext4 or LUKS
//! without partitions, an ISO image written with dd. Such a disk holds data like a
//! partitioned one and must not be taken for an empty disk.

/// A filesystem (or container) recognised by its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filesystem {
    Fat12,
    Fat16,
    Fat32,
    ExFat,
    Ntfs,
    Ext2,
    Ext3,
    Ext4,
    Luks,
    Iso9660,
    Xfs,
    Btrfs,
    Swap,
}

impl Filesystem {
    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Fat12 => "FAT12",
            Filesystem::Fat16 => "FAT16",
            Filesystem::Fat32 => "FAT32",
            Filesystem::ExFat => "exFAT",
            Filesystem::Ntfs => "NTFS",
            Filesystem::Ext2 => "ext2",
            Filesystem::Ext3 => "ext3",
            Filesystem::Ext4 => "ext4",
            Filesystem::Luks => "LUKS (encrypted)",
            Filesystem::Iso9660 => "ISO 9660",
            Filesystem::Xfs => "XFS",
            Filesystem::Btrfs => "Btrfs",
            Filesystem::Swap => "Linux swap",
        }
    }

    /// "a" or "an", as the name is said: "a FAT32", "an ext4", "an NTFS".
    pub fn article(self) -> &'static str {
        match self {
            Filesystem::ExFat
            | Filesystem::Ntfs
            | Filesystem::Ext2
            | Filesystem::Ext3
            | Filesystem::Ext4
            | Filesystem::Iso9660
            | Filesystem::Xfs => "an",
            _ => "a",
        }
    }
}

/// How many bytes from the start of the disk [`detect`] looks at (the Btrfs
/// superblock's magic at 64 KiB + 64 is the farthest).
pub const HEAD_BYTES: usize = 0x10000 + 0x1000;

fn at(head: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    head.get(offset..offset + len)
}

fn is(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    at(head, offset, magic.len()) == Some(magic)
}

fn le16(head: &[u8], offset: usize) -> Option<u16> {
    at(head, offset, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn le32(head: &[u8], offset: usize) -> Option<u32> {
    at(head, offset, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A FAT/exFAT/NTFS boot sector (a volume boot record) in the disk's first block: its
/// OEM or filesystem-type string plus a sane BIOS parameter block, so an MBR whose boot
/// code happens to hold one of the strings is not mistaken for a volume.
pub fn boot_sector(head: &[u8]) -> Option<Filesystem> {
    if !is(head, 510, &[0x55, 0xAA]) {
        return None;
    }
    // Both start with a jump over the parameter block.
    if !matches!(head.first(), Some(0xEB | 0xE9)) {
        return None;
    }
    if is(head, 3, b"EXFAT   ") {
        return Some(Filesystem::ExFat);
    }
    let bytes_per_sector = le16(head, 11)?;
    let sectors_per_cluster = *head.get(13)?;
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) || !sectors_per_cluster.is_power_of_two() {
        return None;
    }
    if is(head, 3, b"NTFS    ") {
        return Some(Filesystem::Ntfs);
    }
    if is(head, 82, b"FAT32   ") {
        return Some(Filesystem::Fat32);
    }
    if is(head, 54, b"FAT16   ") {
        return Some(Filesystem::Fat16);
    }
    if is(head, 54, b"FAT12   ") || is(head, 54, b"FAT     ") {
        return Some(Filesystem::Fat12);
    }
    None
}

/// Any filesystem signature in `head` (the disk's first bytes, see [`HEAD_BYTES`]).
pub fn detect(head: &[u8]) -> Option<Filesystem> {
    if let Some(fs) = boot_sector(head) {
        return Some(fs);
    }
    if is(head, 0, b"LUKS\xba\xbe") || is(head, 0, b"SKUL\xba\xbe") {
        return Some(Filesystem::Luks);
    }
    if is(head, 0, b"XFSB") {
        return Some(Filesystem::Xfs);
    }
    // The ext2/3/4 superblock sits at 1024; its magic 0xEF53 at +56, the feature words
    // at +92 (compatible), +96 (incompatible) and +100 (read-only compatible).
    const SB: usize = 1024;
    if le16(head, SB + 56) == Some(0xEF53) {
        let compat = le32(head, SB + 92).unwrap_or(0);
        let incompat = le32(head, SB + 96).unwrap_or(0);
        // extents, 64bit, flex_bg: only ext4 sets them; has_journal makes ext3.
        return Some(if incompat & (0x40 | 0x80 | 0x200) != 0 {
            Filesystem::Ext4
        } else if compat & 0x4 != 0 {
            Filesystem::Ext3
        } else {
            Filesystem::Ext2
        });
    }
    // ISO 9660's first volume descriptor at sector 16 (2048-byte sectors).
    if is(head, 0x8001, b"CD001") {
        return Some(Filesystem::Iso9660);
    }
    if is(head, 0x10040, b"_BHRfS_M") {
        return Some(Filesystem::Btrfs);
    }
    // Swap's signature ends its first page (4 KiB pages on x86).
    if is(head, 4096 - 10, b"SWAPSPACE2") || is(head, 4096 - 10, b"SWAP-SPACE") {
        return Some(Filesystem::Swap);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        vec![0u8; HEAD_BYTES]
    }

    fn put(head: &mut [u8], offset: usize, bytes: &[u8]) {
        head[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn a_blank_or_patterned_disk_holds_nothing() {
        assert_eq!(detect(&blank()), None);
        assert_eq!(detect(&[0xA5; HEAD_BYTES]), None);
        assert_eq!(detect(&[]), None);
        // Cut short: the checks never read past the end.
        let mut short = blank();
        put(&mut short, 1024 + 56, &[0x53, 0xEF]);
        assert_eq!(detect(&short[..1024 + 57]), None);
    }

    #[test]
    fn fat32_from_an_independent_formatter_is_recognised() {
        // fatfs formats like mkfs.fat does; a 64 MiB volume becomes FAT32 when asked.
        let mut disk = std::io::Cursor::new(vec![0u8; 64 << 20]);
        let options = fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32);
        fatfs::format_volume(&mut disk, options).unwrap();
        assert_eq!(detect(&disk.get_ref()[..HEAD_BYTES]), Some(Filesystem::Fat32));

        let mut disk = std::io::Cursor::new(vec![0u8; 16 << 20]);
        let options = fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat16);
        fatfs::format_volume(&mut disk, options).unwrap();
        assert_eq!(detect(&disk.get_ref()[..HEAD_BYTES]), Some(Filesystem::Fat16));
    }

    #[test]
    fn ntfs_and_exfat_boot_sectors_are_recognised() {
        let mut ntfs = blank();
        put(&mut ntfs, 0, &[0xEB, 0x52, 0x90]);
        put(&mut ntfs, 3, b"NTFS    ");
        put(&mut ntfs, 11, &512u16.to_le_bytes());
        ntfs[13] = 8;
        put(&mut ntfs, 510, &[0x55, 0xAA]);
        assert_eq!(detect(&ntfs), Some(Filesystem::Ntfs));
        // The same bytes with an impossible sector size are not a volume.
        put(&mut ntfs, 11, &300u16.to_le_bytes());
        assert_eq!(detect(&ntfs), None);

        let mut exfat = blank();
        put(&mut exfat, 0, &[0xEB, 0x76, 0x90]);
        put(&mut exfat, 3, b"EXFAT   ");
        put(&mut exfat, 510, &[0x55, 0xAA]);
        assert_eq!(detect(&exfat), Some(Filesystem::ExFat));
        exfat[510] = 0;
        assert_eq!(detect(&exfat), None, "no boot signature, no volume");
    }

    #[test]
    fn ext_versions_are_told_apart_by_their_features() {
        let mut ext = blank();
        put(&mut ext, 1024 + 56, &0xEF53u16.to_le_bytes());
        assert_eq!(detect(&ext), Some(Filesystem::Ext2));
        put(&mut ext, 1024 + 92, &0x4u32.to_le_bytes());
        assert_eq!(detect(&ext), Some(Filesystem::Ext3));
        // What mkfs.ext4 sets by default: filetype, extents, 64bit, flex_bg.
        put(&mut ext, 1024 + 96, &0x2C2u32.to_le_bytes());
        assert_eq!(detect(&ext), Some(Filesystem::Ext4));
    }

    #[test]
    fn containers_and_other_filesystems_are_recognised() {
        let cases: [(usize, &[u8], Filesystem); 6] = [
            (0, b"LUKS\xba\xbe\x00\x01", Filesystem::Luks),
            (0, b"SKUL\xba\xbe\x00\x02", Filesystem::Luks),
            (0, b"XFSB", Filesystem::Xfs),
            (0x8000, b"\x01CD001\x01", Filesystem::Iso9660),
            (0x10040, b"_BHRfS_M", Filesystem::Btrfs),
            (4086, b"SWAPSPACE2", Filesystem::Swap),
        ];
        for (offset, magic, fs) in cases {
            let mut head = blank();
            put(&mut head, offset, magic);
            assert_eq!(detect(&head), Some(fs), "{fs:?}");
            // One byte off is nothing.
            let mut shifted = blank();
            put(&mut shifted, offset + 1, magic);
            assert_eq!(detect(&shifted), None, "{fs:?} shifted");
        }
    }
}
