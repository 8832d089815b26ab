//! The hypervisor's own NVMe driver against QEMU's NVMe controller: it finds the drive
//! and the Bulkhead data partition on it, and its reads, writes and flushes reach the
//! disk image, through a DMA domain of its own under either IOMMU. Without the
//! self-test option the disk is only read.

use std::path::Path;
use std::time::Duration;

use images::data_disk;
use images::qemu::Iommu;
use tests::{Machine, Outcome, image};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;
const DISK_BYTES: u64 = 64 * MIB;

/// What the hypervisor's `storage-selftest` writes (`storage::selftest_pattern`),
/// restated from its description: the marker line, then for byte i
/// `(i * 7 + (i >> 8)) ^ 0xa5`, modulo 256.
fn selftest_pattern() -> Vec<u8> {
    let marker = b"BULKHEAD STORAGE SELF-TEST\n";
    (0..4096usize).map(|i| if i < marker.len() { marker[i] } else { ((i * 7 + (i >> 8)) as u8) ^ 0xa5 }).collect()
}

fn data_disk(scenario_image: &Path) -> (std::path::PathBuf, data_disk::DataPartition) {
    let path = scenario_image.parent().unwrap().join("nvme-data.img");
    let part = data_disk::create(&path, DISK_BYTES, 512).unwrap();
    assert_eq!(part, data_disk::find(&path).unwrap());
    (path, part)
}

#[test]
fn the_self_test_writes_the_data_partition_through_the_nvme_driver() {
    let img = image::build_scenario_image("storage-selftest", "storage-selftest then=exit");
    let (disk, part) = data_disk(&img);
    let before = std::fs::read(&disk).unwrap();
    let mut m = Machine::boot("storage-selftest", &img, |c| {
        c.iommu = Iommu::Intel;
        c.nvme_disk = Some(disk.clone());
    });
    m.expect("Bulkhead 0.1.0 starting", BOOT);
    m.expect("DMA remapping on", STEP);
    m.expect("DMA domain", STEP);
    let drive = m.expect("QEMU NVMe Ctrl, serial BULKHEAD0001", STEP);
    assert!(drive.contains("namespace 1: 64 MiB, 131072 blocks of 512 bytes"), "{drive}");
    assert!(drive.contains("volatile write cache: yes"), "{drive}");
    let found = m.expect("data partition:", STEP);
    assert!(found.contains("data partition: 62 MiB (blocks 2048..=129023 of 512 bytes)"), "{found}");
    let test = m.expect("storage self-test:", STEP);
    let last_block = (part.bytes - 4096) / 512;
    assert!(test.contains(&format!("at partition block {last_block}: ok")), "{test}");
    m.expect("BULKHEAD READY", STEP);
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(images::qemu::EXIT_SUCCESS));
    assert!(!m.serial().contains("drive marked failed"), "the driver gave up on the drive");
    drop(m);

    // The pattern is on the disk image, in the partition's last 4 KiB, and nothing else
    // changed.
    let after = std::fs::read(&disk).unwrap();
    let at = (part.offset + part.bytes - 4096) as usize;
    assert_eq!(&after[at..at + 4096], &selftest_pattern()[..], "the pattern did not reach the image file");
    assert_eq!(&after[..at], &before[..at]);
    assert_eq!(&after[at + 4096..], &before[at + 4096..]);
}

#[test]
fn without_the_self_test_the_data_partition_is_only_read() {
    let img = image::build_scenario_image("storage-read-only", "then=exit");
    let (disk, _) = data_disk(&img);
    let before = std::fs::read(&disk).unwrap();
    let mut m = Machine::boot("storage-read-only", &img, |c| {
        c.iommu = Iommu::Amd;
        c.nvme_disk = Some(disk.clone());
    });
    m.expect("Bulkhead 0.1.0 starting", BOOT);
    m.expect("DMA domain", STEP);
    m.expect("QEMU NVMe Ctrl, serial BULKHEAD0001", STEP);
    m.expect("data partition: 62 MiB", STEP);
    m.expect("BULKHEAD READY", STEP);
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(images::qemu::EXIT_SUCCESS));
    assert!(!m.serial().contains("storage self-test"));
    drop(m);
    assert!(std::fs::read(&disk).unwrap() == before, "the disk image changed without the self-test");
}
