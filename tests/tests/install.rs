//! Installing from the stick onto the laptop's internal disk: an unattended install onto
//! an empty NVMe disk, then a boot from that disk alone through the boot entry the
//! installer created; and a refusal that must leave the disk untouched. The boot screen
//! says where Bulkhead runs from, and the installer draws its progress on the screen.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use embedded_graphics::prelude::{PointsIter, Size};
use images::desktops::Desktop;
use images::install::{self, ESP_ANSWER};
use images::qemu::BootMedium;
use images::{disk, layout};
use tests::{Machine, Outcome, image};
use ui::boot_screen::{self, BootScreen, Medium};
use ui::install_progress::{self, Phase, Progress};

const BOOT: Duration = Duration::from_secs(120);
const INSTALL: Duration = Duration::from_secs(120);
/// Two Linux desktops booting under TCG.
const DESKTOP: Duration = Duration::from_secs(240);
/// The desktops' 512 MiB and the hypervisor's own.
const MEMORY_MIB: u32 = 1536;
/// Steps without a firmware boot in them; generous for loaded CI machines.
const STEP: Duration = Duration::from_secs(60);

/// The tests here write and hash GiB-sized disk images on the host; one at a time, so
/// that work never starves another test's QEMU (whose serial console then times out).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sha256(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break h.finalize().to_vec();
        }
        h.update(&buf[..n]);
    }
}

/// Two small desktops: enough to see the installed system run its VMs.
const DESKTOPS: &[Desktop] = &[
    Desktop { name: "corporate", label: "CORPORATE", colour: "#c0392b", memory_mib: 256 },
    Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 },
];

#[test]
fn installs_onto_an_empty_nvme_disk_and_boots_from_it_without_the_stick() {
    let _one = one_at_a_time();
    let stick = image::build_desktop_image("install-nvme", "", DESKTOPS);
    disk::overwrite_esp_file(&stick, ESP_ANSWER, install::answer(false, 0).as_bytes()).unwrap();
    let nvme = stick.parent().unwrap().join("nvme.img");
    install::create_empty_disk(&nvme, 2 << 30).unwrap();

    let mut m = Machine::boot("install", &stick, |c| {
        c.medium = BootMedium::UsbStickNoBootIndex;
        c.nvme_disk = Some(nvme.clone());
        c.memory_mib = MEMORY_MIB;
    });
    m.connect_qmp();
    m.expect("running from a USB stick", BOOT);
    let target = m.expect("install: install on disk", STEP);
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
        c.memory_mib = MEMORY_MIB;
    });
    m.expect("running from the internal NVMe disk", BOOT);
    let option = m.expect("boot option Boot", STEP);
    assert!(option.ends_with(&entry), "booted through {option}, the installer created {entry}");
    m.expect("Bulkhead 0.1.0 starting", STEP);
    m.expect("boot medium: internal nvme disk", STEP);
    m.expect("BULKHEAD READY", BOOT);
    // Both desktops come up from the installed disk; the markers come in either order.
    m.expect("BULKHEAD-GUEST-READY", DESKTOP);
    m.expect("BULKHEAD-GUEST-READY", DESKTOP);
    drop(m);

    // With the stick plugged in again, the installed laptop still boots its own disk
    // (the stick runs only when picked in the firmware's boot menu).
    let mut m = Machine::boot_again("installed-with-stick", &stick, |c| {
        c.medium = BootMedium::UsbStickNoBootIndex;
        c.nvme_disk = Some(nvme.clone());
        c.memory_mib = MEMORY_MIB;
    });
    m.expect("running from the internal NVMe disk", BOOT);
    m.expect("starting the hypervisor", STEP);
    m.expect("boot medium: internal nvme disk", STEP);
    drop(m);

    // Firmware that forgot every entry (fresh variables) boots the fallback path.
    let mut m = Machine::boot("installed-fallback", &stick, |c| {
        c.medium = BootMedium::None;
        c.nvme_disk = Some(nvme.clone());
        c.memory_mib = MEMORY_MIB;
    });
    let started = m.expect("BdsDxe: starting Boot", BOOT);
    assert!(started.contains("NVMe") && !started.contains("\"Bulkhead\""), "not the fallback path: {started}");
    m.expect("running from the internal NVMe disk", STEP);
    m.expect("BULKHEAD READY", BOOT);
    m.pass();
}

#[test]
fn bytes_flipped_on_the_disk_during_the_install_are_caught_by_the_read_back() {
    let _one = one_at_a_time();
    let stick = image::build_scenario_image("install-corrupted", "then=run");
    let answer = install::answer(false, 0) + "verify_delay_seconds = 10\n";
    disk::overwrite_esp_file(&stick, ESP_ANSWER, answer.as_bytes()).unwrap();
    let nvme = stick.parent().unwrap().join("nvme.img");
    install::create_empty_disk(&nvme, 2 << 30).unwrap();
    let hypervisor = disk::read_esp_file(&stick, layout::ESP_HYPERVISOR).unwrap();

    let mut m = Machine::boot("install-corrupted", &stick, |c| {
        c.medium = BootMedium::UsbStickNoBootIndex;
        c.nvme_disk = Some(nvme.clone());
    });
    m.connect_qmp();
    m.expect("install: written; reading back in", INSTALL);
    // The band is redrawn right after that line; the read-back waits 10 s.
    std::thread::sleep(Duration::from_millis(500));
    check_progress_band(&m.screendump("install-progress"), Progress::new(Phase::Writing, 1, 1));
    // Files start on 4 KiB clusters; find the hypervisor's first block and flip a byte.
    let at = find_block(&nvme, &hypervisor[..4096]).unwrap_or_else(|| m.fail("the hypervisor is not on the disk"));
    flip_byte(&nvme, at + 1000);
    let failed = m.expect("BULKHEAD INSTALL FAILED", STEP);
    assert!(failed.contains("hypervisor.elf reads back with a different SHA-256"), "{failed}");
    assert!(failed.contains("not bootable"), "{failed}");
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0));
    // No partition table: firmware finds nothing to boot on the disk.
    let head = read_at(&nvme, 0, 1024);
    assert_ne!(&head[510..512], &[0x55, 0xAA], "a protective MBR was written");
    assert_ne!(&head[512..520], b"EFI PART", "a GPT header was written");
    m.pass();
}

/// The installer's band as a person sees it: the bar filled exactly as far as `progress`
/// says (the same `ui` code computes it here), the rest of it the track, and a title.
fn check_progress_band(shot: &tests::screen::Screenshot, progress: Progress) {
    let size = Size::new(shot.width, shot.height);
    let bar = install_progress::bar_rect(size);
    let filled = install_progress::filled_width(bar.size.width, progress.permille());
    assert!(filled > 0 && filled < bar.size.width, "{filled} of {}", bar.size.width);
    for y in [bar.top_left.y as u32, bar.top_left.y as u32 + bar.size.height / 2] {
        for x in 0..bar.size.width {
            let want = if x < filled { install_progress::BAR_FILL } else { install_progress::BAR_TRACK };
            let at = bar.top_left.x as u32 + x;
            assert!(shot.is(at, y, want), "bar pixel ({at},{y}) is {:?}, wanted {want:?}", shot.pixel(at, y));
        }
    }
    let band = install_progress::band_rect(size);
    let title = shot.count_in(band, boot_screen::BOOT_TEXT);
    assert!(title > 200, "only {title} title pixels in the progress band");
}

/// The boot screen's line about the boot medium, compared pixel for pixel with the same
/// line rendered here; the other medium's line must not match, so the check can fail.
fn check_medium_on_screen(shot: &tests::screen::Screenshot, medium: Medium, other: Medium) {
    let size = Size::new(shot.width, shot.height);
    let rect = boot_screen::medium_rect(size);
    let mismatches = |medium: Medium| {
        let mut pixels = vec![0u32; (shot.width * shot.height) as usize];
        let mut fb = ui::LinearFb::new(&mut pixels, shot.width, shot.height, shot.width, ui::PixelOrder::Rgb).unwrap();
        let screen = BootScreen {
            product: "",
            version: "",
            cpu_vendor: "",
            virtualization: "",
            memory_bytes: 0,
            pci_devices: 0,
            iommu: "",
            disk: "",
            status: "",
            medium: boot_screen::medium_line(medium),
            policy: "",
            policy_warning: false,
        };
        boot_screen::draw(&mut fb, &screen).unwrap();
        rect.points().filter(|&p| !shot.is(p.x as u32, p.y as u32, fb.pixel(p).unwrap())).count()
    };
    assert_eq!(mismatches(medium), 0, "the screen does not say {:?}", boot_screen::medium_line(medium));
    assert!(mismatches(other) > 100, "{:?} and {:?} look alike", medium, other);
}

fn read_at(path: &Path, at: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// The offset of the first 4 KiB-aligned block of `path` equal to `block`.
fn find_block(path: &Path, block: &[u8]) -> Option<u64> {
    use std::io::Read;
    let mut f = std::io::BufReader::with_capacity(8 << 20, std::fs::File::open(path).unwrap());
    let mut buf = vec![0u8; block.len()];
    // The ESP holds the files; it ends 289 MiB into the disk.
    for i in 0..(289u64 << 20) / block.len() as u64 {
        f.read_exact(&mut buf).ok()?;
        if buf == block {
            return Some(i * block.len() as u64);
        }
    }
    None
}

fn flip_byte(path: &Path, at: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let byte = read_at(path, at, 1)[0];
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[!byte]).unwrap();
    f.sync_all().unwrap();
}

/// A disk image of `bytes` bytes with recognisable bytes at its start, middle and end.
fn patterned_disk(path: &Path, bytes: u64) {
    use std::io::{Seek, SeekFrom, Write};
    install::create_empty_disk(path, bytes).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for at in [0, bytes / 2, bytes - 4096] {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[0xA5; 4096]).unwrap();
    }
}

#[test]
fn a_disk_too_small_is_refused_and_left_byte_for_byte_unchanged() {
    let _one = one_at_a_time();
    let stick = image::build_scenario_image("install-too-small", "then=run");
    let nvme = stick.parent().unwrap().join("nvme.img");
    patterned_disk(&nvme, 512 << 20);
    expect_refusal(
        "install-too-small",
        &stick,
        &install::answer(true, 0),
        &[&nvme],
        &["too small: 512 MiB", "needs at least 1314 MiB"],
    );
}

#[test]
fn two_matching_disks_foreign_partitions_or_a_filesystem_are_refused_without_writing() {
    let _one = one_at_a_time();
    // Two NVMe disks: the answer's "first-nvme" is ambiguous.
    let stick = image::build_scenario_image("install-two-disks", "then=run");
    let dir = stick.parent().unwrap().to_path_buf();
    let (a, b) = (dir.join("nvme-a.img"), dir.join("nvme-b.img"));
    patterned_disk(&a, 2 << 30);
    patterned_disk(&b, 2 << 30);
    expect_refusal("install-two-disks", &stick, &install::answer(true, 0), &[&a, &b], &["2 disks match"]);

    // One disk with a foreign MBR partition (a Linux one), and an answer without
    // overwrite.
    let stick = image::build_scenario_image("install-foreign", "then=run");
    let nvme = stick.parent().unwrap().join("nvme.img");
    patterned_disk(&nvme, 2 << 30);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut mbr = [0u8; 512];
        mbr[446 + 4] = 0x83;
        mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&(1u32 << 20).to_le_bytes());
        mbr[510..].copy_from_slice(&[0x55, 0xAA]);
        let mut f = std::fs::OpenOptions::new().write(true).open(&nvme).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&mbr).unwrap();
    }
    expect_refusal(
        "install-foreign",
        &stick,
        &install::answer(false, 0),
        &[&nvme],
        &["holds partitions (MBR with 1 partition(s))", "overwrite = true"],
    );

    // An ext4 filesystem on the whole disk, without a partition table.
    let stick = image::build_scenario_image("install-ext4", "then=run");
    let nvme = stick.parent().unwrap().join("nvme.img");
    patterned_disk(&nvme, 2 << 30);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&nvme).unwrap();
        // The superblock's magic and mkfs.ext4's incompatible features (extents, 64bit, flex_bg).
        f.seek(SeekFrom::Start(1024 + 56)).unwrap();
        f.write_all(&0xEF53u16.to_le_bytes()).unwrap();
        f.seek(SeekFrom::Start(1024 + 96)).unwrap();
        f.write_all(&0x2C2u32.to_le_bytes()).unwrap();
    }
    expect_refusal(
        "install-ext4",
        &stick,
        &install::answer(false, 0),
        &[&nvme],
        &["holds an ext4 filesystem, no partition table", "overwrite = true"],
    );
}

#[test]
fn a_truncated_file_on_the_stick_is_refused_before_anything_is_written() {
    let _one = one_at_a_time();
    let stick = image::build_scenario_image("install-truncated", "then=run");
    let hypervisor = image::read(&stick, layout::ESP_HYPERVISOR);
    image::overwrite(&stick, layout::ESP_HYPERVISOR, &hypervisor[..hypervisor.len() / 2]);
    let nvme = stick.parent().unwrap().join("nvme.img");
    patterned_disk(&nvme, 2 << 30);
    let half = format!("{} bytes read", hypervisor.len() / 2);
    expect_refusal(
        "install-truncated",
        &stick,
        &install::answer(false, 0),
        &[&nvme],
        &[
            "hypervisor.elf on the stick does not match the manifest's SHA-256",
            "truncated",
            &half,
            "nothing was written",
        ],
    );
}

/// Boots `stick` with `answer` next to the NVMe `disks`, expects a refusal whose line
/// contains every one of `reasons`, and checks every disk image is byte-for-byte what it
/// was.
fn expect_refusal(scenario: &str, stick: &Path, answer: &str, disks: &[&Path], reasons: &[&str]) {
    disk::overwrite_esp_file(stick, ESP_ANSWER, answer.as_bytes()).unwrap();
    let before: Vec<Vec<u8>> = disks.iter().map(|d| sha256(d)).collect();
    let mut m = Machine::boot(scenario, stick, |c| {
        c.medium = BootMedium::UsbStickNoBootIndex;
        c.nvme_disk = Some(disks[0].to_path_buf());
        for (i, extra) in disks.iter().enumerate().skip(1) {
            c.extra_args.extend([
                "-drive".into(),
                format!("format=raw,file={},if=none,id=nvme{i}", extra.display()),
                "-device".into(),
                format!("nvme,drive=nvme{i},serial=BULKHEAD000{}", i + 1),
            ]);
        }
    });
    m.connect_qmp();
    let failed = m.expect("BULKHEAD INSTALL FAILED", BOOT);
    for reason in reasons {
        assert!(failed.contains(reason), "{failed:?} does not say {reason:?}");
    }
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0));
    for (d, before) in disks.iter().zip(before) {
        assert_eq!(sha256(d), before, "a refused install changed {}", d.display());
    }
    m.pass();
}

#[test]
fn an_interactive_install_lists_the_nvme_disk_and_needs_the_typed_confirmation() {
    let _one = one_at_a_time();
    let stick = image::build_scenario_image("install-interactive", "then=run");
    let nvme = stick.parent().unwrap().join("nvme.img");
    install::create_empty_disk(&nvme, 2 << 30).unwrap();
    let before = sha256(&nvme);

    let mut m = Machine::boot("install-interactive", &stick, |c| {
        c.medium = BootMedium::UsbStickNoBootIndex;
        c.nvme_disk = Some(nvme.clone());
    });
    m.connect_qmp();
    m.expect("Press I within", BOOT);
    m.type_keys("i");
    m.expect("install: internal disks", STEP);
    let prompt = m.expect("type its number and the word erase", STEP);
    let serial = m.serial();
    let listed: Vec<&str> = serial.lines().filter(|l| l.starts_with("install: [") && l.contains("] disk ")).collect();
    assert_eq!(listed.len(), 1, "one internal disk: {listed:?}");
    assert!(listed[0].contains("NVMe 2048 MiB") && !listed[0].contains("USB"), "{listed:?}");
    let number = listed[0].trim_start_matches("install: [").split(']').next().unwrap().to_string();
    assert!(prompt.contains(&format!("\"{number} erase\"")), "{prompt}");

    // A wrong word installs nothing; the prompt comes back.
    m.type_keys(&format!("{number} erasx\n"));
    m.expect("not confirmed", STEP);
    m.expect("type its number and the word erase", STEP);
    assert_eq!(sha256(&nvme), before, "a wrong confirmation changed the disk");

    m.type_keys(&format!("{number} erase\n"));
    m.expect("BULKHEAD INSTALL DONE", INSTALL);
    m.expect("press any key to power off", STEP);
    m.send_keys("ret");
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0));
    assert_eq!(
        disk::read_esp_file(&nvme, layout::ESP_HYPERVISOR).unwrap(),
        disk::read_esp_file(&stick, layout::ESP_HYPERVISOR).unwrap()
    );
    drop(m);

    // Picked in the boot menu, the stick runs its own Bulkhead without a key and says so.
    let mut m = Machine::boot_again("interactive-stick", &stick, |c| {
        c.medium = BootMedium::UsbStick;
        c.nvme_disk = Some(nvme.clone());
    });
    m.connect_qmp();
    m.expect("running from a USB stick", BOOT);
    m.expect("Press I within", STEP);
    m.expect("boot medium: usb stick", STEP);
    m.expect("BULKHEAD READY", STEP);
    check_medium_on_screen(&m.screendump("stick-boot-screen"), Medium::Stick, Medium::Nvme);
    m.pass();
}

/// SHA-256 of `len` bytes of `path` from `at`.
fn sha256_range(path: &Path, at: u64, len: u64) -> Vec<u8> {
    use sha2::Digest;
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut h = sha2::Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 8 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        left -= n as u64;
    }
    h.finalize().to_vec()
}

#[test]
fn an_update_from_a_newer_stick_rewrites_the_esp_and_keeps_the_data_partition() {
    let _one = one_at_a_time();
    const MIB: u64 = 1 << 20;
    let stick = image::build_scenario_image("install-update", "then=run");
    disk::overwrite_esp_file(&stick, ESP_ANSWER, install::answer(false, 0).as_bytes()).unwrap();
    let dir = stick.parent().unwrap().to_path_buf();
    let nvme = dir.join("nvme.img");
    let disk_bytes = 2u64 << 30;
    install::create_empty_disk(&nvme, disk_bytes).unwrap();
    let mut m = Machine::boot("install-first", &stick, |c| {
        c.medium = BootMedium::UsbStickNoBootIndex;
        c.nvme_disk = Some(nvme.clone());
    });
    m.connect_qmp();
    m.expect("BULKHEAD INSTALL DONE", INSTALL);
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0));
    drop(m);

    // The VMs' data: bytes spread over the data partition (1 MiB ESP offset + 288 MiB
    // ESP, up to the backup GPT's 33 blocks).
    let data_start = 289 * MIB;
    let data_len = disk_bytes - 33 * 512 - data_start;
    for at in [data_start, data_start + 7 * MIB + 123, data_start + data_len - 4096] {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&nvme).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[0x5A; 4096]).unwrap();
    }
    let data_before = sha256_range(&nvme, data_start, data_len);
    let table_before = sha256_range(&nvme, 0, 34 * 512);

    // A newer stick: its manifest differs, and it asks for an update.
    let newer = dir.join("usb-newer.img");
    std::fs::copy(&stick, &newer).unwrap();
    let mut manifest = disk::read_esp_file(&stick, layout::ESP_MANIFEST).unwrap();
    manifest.extend_from_slice(b"# newer build\n");
    disk::overwrite_esp_file(&newer, layout::ESP_MANIFEST, &manifest).unwrap();
    let answer = install::answer(false, 0) + "mode = update\n";
    disk::overwrite_esp_file(&newer, ESP_ANSWER, answer.as_bytes()).unwrap();
    assert_ne!(disk::read_esp_file(&nvme, layout::ESP_MANIFEST).unwrap(), manifest);

    // The user picks the stick in the boot menu (here: the stick's bootindex).
    let mut m = Machine::boot_again("update", &newer, |c| {
        c.medium = BootMedium::UsbStick;
        c.nvme_disk = Some(nvme.clone());
    });
    m.connect_qmp();
    m.expect("running from a USB stick", BOOT);
    let done = m.expect("BULKHEAD INSTALL DONE", INSTALL);
    assert!(done.contains("updated the ESP") && done.contains("data partition untouched"), "{done}");
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0));
    drop(m);

    assert_eq!(disk::read_esp_file(&nvme, layout::ESP_MANIFEST).unwrap(), manifest, "the ESP was not updated");
    assert_eq!(sha256_range(&nvme, data_start, data_len), data_before, "the update changed the data partition");
    assert_eq!(sha256_range(&nvme, 0, 34 * 512), table_before, "the update changed the partition table");

    let mut m = Machine::boot_again("updated", &newer, |c| {
        c.medium = BootMedium::None;
        c.nvme_disk = Some(nvme.clone());
    });
    m.connect_qmp();
    m.expect("running from the internal NVMe disk", BOOT);
    m.expect("boot medium: internal nvme disk", STEP);
    m.expect("BULKHEAD READY", BOOT);
    check_medium_on_screen(&m.screendump("nvme-boot-screen"), Medium::Nvme, Medium::Stick);
    m.pass();
}

#[test]
fn installs_onto_a_4kn_nvme_disk_and_boots_from_it() {
    let _one = one_at_a_time();
    let stick = image::build_scenario_image("install-4kn", "then=run");
    disk::overwrite_esp_file(&stick, ESP_ANSWER, install::answer(false, 0).as_bytes()).unwrap();
    let nvme = stick.parent().unwrap().join("nvme-4kn.img");
    install::create_empty_disk(&nvme, 2 << 30).unwrap();
    let attach = |c: &mut images::qemu::MachineConfig| {
        c.extra_args.extend([
            "-drive".into(),
            format!("format=raw,file={},if=none,id=nvme4k", nvme.display()),
            "-device".into(),
            "nvme,drive=nvme4k,serial=BULKHEAD4K01,logical_block_size=4096,physical_block_size=4096".into(),
        ]);
    };
    let mut m = Machine::boot("install-4kn", &stick, |c| {
        c.medium = BootMedium::UsbStickNoBootIndex;
        attach(c);
    });
    m.connect_qmp();
    let disk_line = m.expect("NVMe 2048 MiB, 4096-byte blocks", BOOT);
    assert!(disk_line.contains("no partition table"), "{disk_line}");
    m.expect("BULKHEAD INSTALL DONE", INSTALL);
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0));
    drop(m);

    let mut m = Machine::boot_again("installed-4kn", &stick, |c| {
        c.medium = BootMedium::None;
        attach(c);
    });
    m.expect("running from the internal NVMe disk", BOOT);
    m.expect("BULKHEAD READY", BOOT);
    m.pass();
}
