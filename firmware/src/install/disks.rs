//! Telling disks apart by their device paths, reading what is on them, and choosing the
//! one an unattended install goes to.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::answer::{Answer, Mode};
use super::gpt;
use super::signature::{self, Filesystem};

/// Device path node types (UEFI 2.10 §10.3).
const MESSAGING: u8 = 3;
const MSG_ATAPI: u8 = 1;
const MSG_SCSI: u8 = 2;
const MSG_USB: u8 = 5;
const MSG_USB_CLASS: u8 = 15;
const MSG_USB_WWID: u8 = 16;
const MSG_SATA: u8 = 18;
const MSG_NVME: u8 = 23;
const MSG_UFS: u8 = 25;
const MSG_SD: u8 = 26;
const MSG_EMMC: u8 = 29;

/// The bus a disk hangs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Nvme,
    Sata,
    /// USB mass storage, whatever the device behind the bridge is.
    Usb,
    /// SCSI, ATAPI, SD, eMMC, UFS or unknown: never an install target here.
    Other,
}

impl Bus {
    /// Classifies a disk by its device path nodes as (type, sub-type) pairs. A USB node
    /// anywhere wins: an NVMe disk in a USB enclosure is a removable disk. The firmware's
    /// "removable media" flag is not used; QEMU and real sticks both get it wrong.
    pub fn from_nodes(nodes: impl IntoIterator<Item = (u8, u8)>) -> Bus {
        let mut bus = Bus::Other;
        for (ty, sub) in nodes {
            if ty != MESSAGING {
                continue;
            }
            match sub {
                MSG_USB | MSG_USB_CLASS | MSG_USB_WWID => return Bus::Usb,
                MSG_NVME => bus = Bus::Nvme,
                MSG_SATA => bus = Bus::Sata,
                MSG_ATAPI | MSG_SCSI | MSG_UFS | MSG_SD | MSG_EMMC => bus = Bus::Other,
                _ => {}
            }
        }
        bus
    }

    pub fn name(self) -> &'static str {
        match self {
            Bus::Nvme => "NVMe",
            Bus::Sata => "SATA",
            Bus::Usb => "USB",
            Bus::Other => "other",
        }
    }
}

/// What a disk's first blocks say it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// No partition table (a fresh or wiped disk).
    Empty,
    /// An MBR with this many partitions.
    Mbr(usize),
    /// A GPT with these partition names (entries that are in use).
    Gpt(Vec<String>),
    /// A filesystem on the whole disk, without a partition table.
    Filesystem(Filesystem),
}

impl Contents {
    pub fn is_empty(&self) -> bool {
        matches!(self, Contents::Empty | Contents::Mbr(0))
    }

    pub fn describe(&self) -> String {
        match self {
            Contents::Empty => "no partition table".into(),
            Contents::Mbr(n) => format!("MBR with {n} partition(s)"),
            Contents::Gpt(names) => format!("GPT with {} partition(s): {}", names.len(), names.join(", ")),
            Contents::Filesystem(fs) => format!("holds {} {} filesystem, no partition table", fs.article(), fs.name()),
        }
    }

    /// Why an install without `overwrite = true` refuses this disk.
    pub fn holding(&self) -> String {
        match self {
            Contents::Filesystem(_) => self.describe(),
            _ => format!("holds partitions ({})", self.describe()),
        }
    }
}

/// How many bytes from the start of a disk [`contents`] wants.
pub fn head_bytes(block_size: usize) -> usize {
    (34 * 512).max(6 * block_size).max(signature::HEAD_BYTES).next_multiple_of(block_size.max(1))
}

/// Reads the partition table from block 0, block 1 and the entry array that follows,
/// or else a filesystem's signature (`head` holds the first [`head_bytes`] bytes).
pub fn contents(head: &[u8], block_size: usize) -> Contents {
    let header = head.get(block_size..block_size + 92);
    if let Some(h) = header
        && &h[0..8] == b"EFI PART"
    {
        let entries_lba = u64::from_le_bytes(h[72..80].try_into().unwrap_or([0; 8])) as usize;
        let count = u32::from_le_bytes(h[80..84].try_into().unwrap_or([0; 4])) as usize;
        let size = u32::from_le_bytes(h[84..88].try_into().unwrap_or([0; 4])) as usize;
        let mut names = Vec::new();
        if size >= 128 {
            for i in 0..count.min(128) {
                let at = entries_lba * block_size + i * size;
                let Some(e) = head.get(at..at + 128) else { break };
                if e[0..16] == [0; 16] {
                    continue;
                }
                let units = e[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0);
                names.push(char::decode_utf16(units).map(|c| c.unwrap_or('?')).collect());
            }
        }
        return Contents::Gpt(names);
    }
    // A FAT or NTFS boot sector also ends in 55 AA, with boot code where an MBR keeps
    // its partition entries: it is checked first.
    if let Some(fs) = signature::boot_sector(head) {
        return Contents::Filesystem(fs);
    }
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xAA {
        let used = (0..4).filter(|i| head[446 + 16 * i + 4] != 0).count();
        if used > 0 {
            return Contents::Mbr(used);
        }
    }
    match signature::detect(head) {
        Some(fs) => Contents::Filesystem(fs),
        None => Contents::Empty,
    }
}

/// One disk the firmware offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub bus: Bus,
    pub bytes: u64,
    pub block_size: u64,
    /// The loader was started from this disk (the stick).
    pub boot_disk: bool,
    pub contents: Contents,
    /// It holds a partition table this installer wrote (see `gpt::read_layout`).
    pub installed: bool,
}

/// Refuses a disk smaller than an install needs, saying how much is needed.
pub fn check_size(index: usize, disk: &Disk) -> Result<(), String> {
    let needed = gpt::required_bytes(disk.block_size);
    if disk.bytes < needed {
        return Err(format!(
            "disk {index} is too small: {} MiB, Bulkhead needs at least {} MiB",
            disk.bytes / (1024 * 1024),
            needed.div_ceil(1024 * 1024)
        ));
    }
    Ok(())
}

/// The disks an interactive install offers: NVMe and SATA disks other than the stick.
pub fn offered(disks: &[Disk]) -> Vec<usize> {
    (0..disks.len()).filter(|&i| !disks[i].boot_disk && matches!(disks[i].bus, Bus::Nvme | Bus::Sata)).collect()
}

/// Picks the disk an unattended install goes to, or says in words why none is taken.
/// Nothing is written before this returns `Ok`.
pub fn choose(answer: &Answer, disks: &[Disk]) -> Result<usize, String> {
    let matching: Vec<usize> =
        (0..disks.len()).filter(|&i| !disks[i].boot_disk && answer.target.accepts(disks[i].bus)).collect();
    let index = match matching.as_slice() {
        [] => return Err(format!("no disk matches the answer's target ({:?})", answer.target)),
        [one] => *one,
        many => {
            let list: Vec<String> = many.iter().map(|i| format!("disk {i}")).collect();
            return Err(format!(
                "{} disks match the answer's target ({}); refusing to guess",
                many.len(),
                list.join(", ")
            ));
        }
    };
    let disk = &disks[index];
    if answer.mode == Mode::Update {
        if !disk.installed {
            return Err(format!(
                "disk {index} holds no Bulkhead installation to update ({})",
                disk.contents.describe()
            ));
        }
        return Ok(index);
    }
    check_size(index, disk)?;
    if !disk.contents.is_empty() && !answer.overwrite {
        return Err(format!("disk {index} {}; the answer does not say `overwrite = true`", disk.contents.holding()));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::answer::Target;

    const GIB: u64 = 1 << 30;

    fn disk(bus: Bus, bytes: u64) -> Disk {
        Disk { bus, bytes, block_size: 512, boot_disk: false, contents: Contents::Empty, installed: false }
    }

    fn answer(overwrite: bool) -> Answer {
        Answer { mode: Mode::Install, target: Target::FirstNvme, overwrite, wait_seconds: 0, verify_delay_seconds: 0 }
    }

    #[test]
    fn device_paths_tell_nvme_sata_and_usb_apart() {
        // PciRoot/Pci/NVMe, PciRoot/Pci/Sata, PciRoot/Pci/USB/USB (a hub), and a USB
        // stick's partition with its HD() node.
        assert_eq!(Bus::from_nodes([(2, 1), (1, 1), (3, 23)]), Bus::Nvme);
        assert_eq!(Bus::from_nodes([(2, 1), (1, 1), (3, 18)]), Bus::Sata);
        assert_eq!(Bus::from_nodes([(2, 1), (1, 1), (3, 5), (3, 5)]), Bus::Usb);
        assert_eq!(Bus::from_nodes([(2, 1), (1, 1), (3, 5), (4, 1)]), Bus::Usb);
        // An NVMe disk in a USB enclosure seen through a USB-attached SCSI node.
        assert_eq!(Bus::from_nodes([(2, 1), (1, 1), (3, 5), (3, 23)]), Bus::Usb);
        assert_eq!(Bus::from_nodes([(2, 1), (1, 1), (3, 2)]), Bus::Other);
        assert_eq!(Bus::from_nodes([(2, 1), (1, 1)]), Bus::Other);
    }

    #[test]
    fn the_one_matching_disk_is_chosen_and_the_stick_never() {
        let mut stick = disk(Bus::Nvme, 8 * GIB);
        stick.boot_disk = true;
        let disks = [stick, disk(Bus::Usb, 64 * GIB), disk(Bus::Sata, 64 * GIB), disk(Bus::Nvme, 64 * GIB)];
        assert_eq!(choose(&answer(false), &disks), Ok(3));
    }

    #[test]
    fn interactive_installs_offer_internal_disks_only() {
        let mut stick = disk(Bus::Sata, 8 * GIB);
        stick.boot_disk = true;
        let disks = [
            stick,
            disk(Bus::Usb, 64 * GIB),
            disk(Bus::Sata, 64 * GIB),
            disk(Bus::Other, 64 * GIB),
            disk(Bus::Nvme, 1),
        ];
        assert_eq!(offered(&disks), [2, 4]);
        assert!(check_size(4, &disks[4]).unwrap_err().contains("disk 4 is too small"));
        assert_eq!(check_size(2, &disks[2]), Ok(()));
    }

    #[test]
    fn updates_need_an_installed_disk_and_keep_its_partitions() {
        let mut update = answer(false);
        update.mode = Mode::Update;
        let mut d = disk(Bus::Nvme, 64 * GIB);
        d.contents = Contents::Gpt(alloc::vec!["EFI System".into(), "Bulkhead data".into()]);
        let err = choose(&update, core::slice::from_ref(&d)).unwrap_err();
        assert!(err.contains("no Bulkhead installation to update"), "{err}");
        d.installed = true;
        // No overwrite needed: an update leaves the partitions alone.
        assert_eq!(choose(&update, core::slice::from_ref(&d)), Ok(0));
        // A fresh install onto it still asks for overwrite.
        assert!(choose(&answer(false), &[d]).is_err());
    }

    #[test]
    fn two_matching_disks_are_refused() {
        let disks = [disk(Bus::Nvme, 64 * GIB), disk(Bus::Nvme, 64 * GIB)];
        let err = choose(&answer(true), &disks).unwrap_err();
        assert!(err.contains("2 disks match"), "{err}");
    }

    #[test]
    fn no_matching_disk_is_refused() {
        let err = choose(&answer(false), &[disk(Bus::Sata, 64 * GIB)]).unwrap_err();
        assert!(err.contains("no disk matches"), "{err}");
    }

    #[test]
    fn a_small_disk_is_refused_with_the_size_needed() {
        let err = choose(&answer(false), &[disk(Bus::Nvme, 512 << 20)]).unwrap_err();
        assert!(err.contains("too small: 512 MiB") && err.contains("1314 MiB"), "{err}");
    }

    #[test]
    fn partitions_are_kept_unless_the_answer_says_overwrite() {
        let mut d = disk(Bus::Nvme, 64 * GIB);
        d.contents = Contents::Gpt(alloc::vec!["Windows".into()]);
        let err = choose(&answer(false), core::slice::from_ref(&d)).unwrap_err();
        assert!(err.contains("GPT with 1 partition(s): Windows"), "{err}");
        assert_eq!(choose(&answer(true), &[d]), Ok(0));
    }

    #[test]
    fn a_filesystem_without_a_partition_table_is_not_an_empty_disk() {
        let mut ext4 = alloc::vec![0u8; head_bytes(512)];
        ext4[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        ext4[1024 + 96..1024 + 100].copy_from_slice(&0x2C2u32.to_le_bytes());
        let mut d = disk(Bus::Nvme, 64 * GIB);
        d.contents = contents(&ext4, 512);
        assert_eq!(d.contents, Contents::Filesystem(Filesystem::Ext4));
        assert!(!d.contents.is_empty());
        assert_eq!(d.contents.describe(), "holds an ext4 filesystem, no partition table");
        let err = choose(&answer(false), core::slice::from_ref(&d)).unwrap_err();
        assert_eq!(
            err,
            "disk 0 holds an ext4 filesystem, no partition table; the answer does not say `overwrite = true`"
        );
        assert_eq!(choose(&answer(true), &[d]), Ok(0));

        // A FAT32 volume's boot code fills the bytes where an MBR has its entries: it is
        // a filesystem, not an MBR with partitions.
        let mut volume = std::io::Cursor::new(alloc::vec![0u8; 64 << 20]);
        fatfs::format_volume(&mut volume, fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32)).unwrap();
        let head = &volume.get_ref()[..head_bytes(512)];
        assert_eq!(contents(head, 512).describe(), "holds a FAT32 filesystem, no partition table");
        // A 4Kn disk reads at least as much.
        assert!(head_bytes(4096) >= signature::HEAD_BYTES && head_bytes(4096).is_multiple_of(4096));
    }

    #[test]
    fn contents_are_read_from_our_own_gpt_and_from_an_mbr() {
        let layout = gpt::plan(512, 4 * GIB / 512, [[1; 16], [2; 16], [3; 16]]).unwrap();
        let mut head = alloc::vec![0u8; 34 * 512];
        for (lba, bytes) in layout.table_writes() {
            let at = lba as usize * 512;
            if at < head.len() {
                head[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }
        assert_eq!(contents(&head, 512), Contents::Gpt(alloc::vec!["EFI System".into(), "Bulkhead data".into()]));
        let mut mbr = alloc::vec![0u8; 34 * 512];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(contents(&mbr, 512), Contents::Empty);
        mbr[446 + 4] = 0x07;
        mbr[462 + 4] = 0x83;
        assert_eq!(contents(&mbr, 512), Contents::Mbr(2));
        assert_eq!(contents(&[0u8; 34 * 512], 512), Contents::Empty);
    }
}
