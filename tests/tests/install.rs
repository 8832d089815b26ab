//! Installing from the stick onto the laptop's internal disk: an unattended install onto
//! an empty NVMe disk, then a boot from that disk alone through the boot entry the
//! installer created; and a refusal that must leave the disk untouched.

use std::path::Path;
use std::time::Duration;

use images::install::{self, ESP_ANSWER};
use images::qemu::BootMedium;
use images::{disk, layout};
use tests::{Machine, Outcome, image};

const BOOT: Duration = Duration::from_secs(120);
const INSTALL: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(30);

fn sha256(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn installs_onto_an_empty_nvme_disk_and_boots_from_it_without_the_stick() {
    let stick = image::build_scenario_image("install-nvme", "then=run");
    disk::overwrite_esp_file(&stick, ESP_ANSWER, install::answer(false, 0).as_bytes()).unwrap();
    let nvme = stick.parent().unwrap().join("nvme.img");
    install::create_empty_disk(&nvme, 2 << 30).unwrap();

    let mut m = Machine::boot("install", &stick, |c| {
        c.medium = BootMedium::UsbStickNoBootIndex;
        c.nvme_disk = Some(nvme.clone());
    });
    m.connect_qmp();
    m.expect("running from a USB stick", BOOT);
    let target = m.expect("install: target is disk", STEP);
    assert!(target.contains("NVMe 2048 MiB"), "{target}");
    let done = m.expect("BULKHEAD INSTALL DONE", INSTALL);
    let serial = m.serial();
    // The stick is listed, recognised as the boot disk, and never the target.
    let stick_line = serial.lines().find(|l| l.contains("install: disk") && l.contains("USB")).unwrap_or_else(|| {
        m.fail("the disk list does not show the stick");
    });
    assert!(stick_line.contains("never a target"), "{stick_line}");
    assert!(serial.contains("SHA-256 matches the stick"), "no read-back check in the log");
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0), "the installer powers off when done");
    let entry = done.split("boot entry ").nth(1).and_then(|s| s.split(' ').next()).unwrap().to_string();
    drop(m);

    // The host reads the installed ESP with its own GPT and FAT code.
    for path in [layout::ESP_LOADER, layout::ESP_HYPERVISOR, layout::ESP_MANIFEST] {
        assert_eq!(disk::read_esp_file(&nvme, path).unwrap(), disk::read_esp_file(&stick, path).unwrap(), "{path}");
    }
    let loader = disk::read_esp_file(&stick, layout::ESP_LOADER).unwrap();
    assert_eq!(disk::read_esp_file(&nvme, "/EFI/BULKHEAD/BOOTX64.EFI").unwrap(), loader);
    assert!(disk::read_esp_file(&nvme, ESP_ANSWER).is_err(), "the answer file must not be installed");

    // The stick is pulled out; the same OVMF variables boot the NVMe disk.
    let mut m = Machine::boot_again("installed", &stick, |c| {
        c.medium = BootMedium::None;
        c.nvme_disk = Some(nvme.clone());
    });
    m.expect("running from the internal NVMe disk", BOOT);
    let option = m.expect("boot option Boot", STEP);
    assert!(option.ends_with(&entry), "booted through {option}, the installer created {entry}");
    m.expect("Bulkhead 0.1.0 starting", STEP);
    m.expect("BULKHEAD READY", BOOT);
    m.pass();
}

#[test]
fn a_disk_too_small_is_refused_and_left_byte_for_byte_unchanged() {
    let stick = image::build_scenario_image("install-too-small", "then=run");
    disk::overwrite_esp_file(&stick, ESP_ANSWER, install::answer(true, 0).as_bytes()).unwrap();
    let nvme = stick.parent().unwrap().join("nvme.img");
    // 512 MiB with recognisable bytes at the start, the middle and the end.
    install::create_empty_disk(&nvme, 512 << 20).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&nvme).unwrap();
        for at in [0, 256 << 20, (512 << 20) - 4096] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[0xA5; 4096]).unwrap();
        }
    }
    let before = sha256(&nvme);

    let mut m = Machine::boot("install-too-small", &stick, |c| {
        c.medium = BootMedium::UsbStickNoBootIndex;
        c.nvme_disk = Some(nvme.clone());
    });
    m.connect_qmp();
    let failed = m.expect("BULKHEAD INSTALL FAILED", BOOT);
    assert!(failed.contains("too small: 512 MiB") && failed.contains("needs at least 1314 MiB"), "{failed}");
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0));
    assert_eq!(sha256(&nvme), before, "a refused install changed the disk");
    m.pass();
}
