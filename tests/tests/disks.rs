//! The desktops' encrypted disks on the laptop's NVMe drive, end to end: the first
//! passphrase typed on the hypervisor's screen, a file that survives a full reboot,
//! a wrong passphrase that starts nothing, a reset-on-boot desktop that forgets its
//! writes but keeps its base, a power cut in the middle of synced writes, and a boot
//! where the passphrase is skipped. The raw drive never shows the file in plain text.
//! Beside the desktops, a payload VM attacks its own virtio-blk device with malformed
//! requests and ring violations (`tests/payloads/src/bin/blk_attack/`): each must end
//! in an I/O error or NEEDS_RESET, and the desktops' disks must not notice.
//!
//! One laptop (one NVMe image) boots five times; the passphrase goes in through QMP
//! key presses, as a user would type it. A second laptop, its drive behind VT-d, keeps
//! unencrypted volumes, whose data the drive moves straight to and from the guests'
//! buffer pages.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulkhead_policy::model::{Disk, DiskMode, Policy, Vm};
use images::desktops::Desktop;
use images::policy::fleet;
use tests::{Machine, image};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);
const PASSPHRASE: &str = "battery-staple";
const DRIVE_BYTES: u64 = 256 << 20;
/// Text that fills the secret file; it must never appear on the raw drive.
const SECRET_TEXT: &str = "quarterly-figures";
const SECRET_FILE: &str = "secret-report-2026.txt";
/// The guest shell's last banner line, printed just before its first prompt.
const SHELL_BANNER: &str = "Enter 'help' for a list of built-in commands.";
/// The payload VM that sends its virtio-blk device malformed requests.
const ATTACKER: &str = "blk-attacker";

const DESKTOPS: &[Desktop] = &[
    Desktop { name: "corporate", label: "CORPORATE · secure", colour: "#c0392b", memory_mib: 256 },
    Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 },
];

fn value<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(key).nth(1).unwrap_or("").trim()
}

/// Both desktops with a 64 MiB disk, the personal one's in `personal_mode`, and the
/// attacker with a 16 MiB disk of its own.
fn policy(personal_mode: DiskMode) -> Policy {
    let mut policy = images::desktops::desktops_policy(DESKTOPS);
    for vm in &mut policy.vms {
        let mode = if vm.name == "personal" { personal_mode } else { DiskMode::Persistent };
        vm.disk = Some(Disk { size_mib: 64, mode });
    }
    let disk = Some(Disk { size_mib: 16, mode: DiskMode::Persistent });
    policy.vms.push(Vm { disk, ..fleet::payload(ATTACKER, "blk-attack", 16) });
    policy
}

fn build(scenario: &str, personal_mode: DiskMode) -> PathBuf {
    // Argon2id with the laptop's parameters takes long under emulation: the test
    // store uses cheap ones (the option says so in the log).
    image::build_desktop_and_payload_image(scenario, "disk-kdf=test", &policy(personal_mode))
}

/// The attacker's verdict: every check passed, the device refused what it had to,
/// and the VM shut down cleanly.
fn attacker_contained(m: &mut Machine) {
    let done = m.wait_count(&format!("[{ATTACKER}] CHECKS DONE"), 1, BOOT);
    m.wait_count(&format!("({ATTACKER}) stopped:"), 1, STEP);
    let serial = m.serial();
    let tag = format!("[{ATTACKER}] CHECK ");
    let checks: Vec<&str> = serial.lines().filter(|l| l.contains(&tag)).collect();
    let failed: Vec<&&str> = checks.iter().filter(|l| !l.ends_with(" PASS")).collect();
    assert!(failed.is_empty(), "the attacker's checks failed:\n{failed:#?}");
    for must in ["blk_read_past_end", "blk_sector_overflow", "blk_descriptor_loop", "blk_descriptor_loop_recovers"] {
        assert!(checks.iter().any(|l| l.contains(&format!("CHECK {must} PASS"))), "no {must} check in\n{checks:#?}");
    }
    assert!(done.contains("failed=0"), "{done}");
    assert!(
        serial.contains(&format!("({ATTACKER}) stopped: GuestShutdown {{ status: 0 }}")),
        "the attacker did not end cleanly"
    );
    assert!(serial.contains("virtio-blk needs reset: ChainTooLong"), "the descriptor loop was not reported");
    assert!(serial.contains(&format!("[{ATTACKER}] blk-attack: 64 rounds sent")), "the attack rounds did not run");
}

fn boot(name: &str, img: &Path, drive: &Path, first: bool) -> Machine {
    let tune = |c: &mut images::qemu::MachineConfig| {
        c.memory_mib = 2048;
        c.cpus = 1;
        c.nvme_disk = Some(drive.to_path_buf());
    };
    let mut m = if first { Machine::boot(name, img, tune) } else { Machine::boot_again(name, img, tune) };
    m.expect("BULKHEAD READY", BOOT);
    m
}

/// Both desktops' disk lines, checked to be in `state`, and both ready.
fn disks_ready(m: &mut Machine, state: &str) {
    for vm in ["corporate", "personal"] {
        let line = m.wait_count(&format!("[{vm}] BULKHEAD-DISK:"), 1, BOOT);
        assert!(line.contains(&format!("/home ext4 {state} 64MiB")), "{line}");
        m.wait_count(&format!("[{vm}] BULKHEAD-GUEST-READY"), 1, BOOT);
        m.wait_count(&format!("[{vm}] {SHELL_BANNER}"), 1, BOOT);
    }
    // The shell reads the line it was typed only once its line editor runs.
    std::thread::sleep(Duration::from_secs(2));
}

/// Runs `command` in `vm` and returns the value it prints after `KEY=` ([`Machine::ask`]).
fn run(m: &mut Machine, vm: &str, command: &str, key: &str) -> String {
    m.ask(vm, command, key, STEP)
}

#[test]
fn encrypted_disks_keep_files_across_reboots_and_power_cuts() {
    let persistent_img = build("disks-persistent", DiskMode::Persistent);
    let reset_img = build("disks-reset", DiskMode::ResetOnBoot);
    let drive = image::scenario_dir("disks-drive").join("nvme.img");
    let part = images::data_disk::create(&drive, DRIVE_BYTES, 512).unwrap();

    // 1. A fresh laptop: the first passphrase, typed twice, creates the store.
    let mut m = boot("first-use", &persistent_img, &drive, true);
    m.expect("asking for the disk passphrase (first use)", STEP);
    m.type_keys(&format!("{PASSPHRASE}\n{PASSPHRASE}\n"));
    m.expect("disk store created on the data partition", STEP);
    m.expect("disks unlocked", STEP);
    m.expect("vm corporate: new encrypted disk of 64 MiB", STEP);
    m.expect("vm personal: new encrypted disk of 64 MiB", STEP);
    disks_ready(&mut m, "new");
    assert_eq!(run(&mut m, "corporate", "echo MOUNT=$(grep -c /home /proc/mounts)", "MOUNT"), "1");
    let df = run(&mut m, "corporate", "echo DF=$(df -m /home | tail -1)", "DF");
    assert!(df.contains("/dev/vda") && df.ends_with("/home"), "df: {df}");
    let write = format!(
        "i=0; while [ $i -lt 20000 ]; do echo {SECRET_TEXT} line $i; i=$((i+1)); done > /home/{SECRET_FILE}; sync; echo W=$?"
    );
    assert_eq!(run(&mut m, "corporate", &write, "W"), "0");
    let sha = run(&mut m, "corporate", &format!("echo SHA=$(sha256sum < /home/{SECRET_FILE})"), "SHA");
    let hex = sha.split_whitespace().next().unwrap_or_default();
    assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "sha256sum printed {sha:?}");
    let base = "echo base-content-kept > /home/base.txt; sync; echo B=$?";
    assert_eq!(run(&mut m, "personal", base, "B"), "0");
    attacker_contained(&mut m);
    for vm in ["corporate", "personal"] {
        m.run_in_vm(vm, "cd /; umount /home; poweroff -f");
    }
    m.wait_count("vm 0 (corporate) stopped", 1, STEP);
    m.wait_count("vm 1 (personal) stopped", 1, STEP);
    drop(m);

    let raw = std::fs::read(&drive).unwrap();
    let data = &raw[part.offset as usize..(part.offset + part.bytes) as usize];
    assert!(data.iter().any(|&b| b != 0), "nothing reached the data partition");
    for needle in [SECRET_TEXT.as_bytes(), SECRET_FILE.as_bytes(), b"base-content-kept"] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "the raw drive holds {:?} in plain text",
            String::from_utf8_lossy(needle)
        );
    }

    // 2. Full reboot, personal now reset-on-boot. A wrong passphrase starts nothing.
    let mut m = boot("reset-on-boot", &reset_img, &drive, false);
    m.expect("asking for the disk passphrase (unlock)", STEP);
    m.type_keys("not-the-passphrase\n");
    m.expect("wrong passphrase (try 1)", STEP);
    assert!(!m.serial().contains("BULKHEAD-GUEST-READY"), "a desktop started before the disks were unlocked");
    assert!(!m.serial().contains("disks unlocked"));
    std::thread::sleep(Duration::from_secs(2));
    m.type_keys(&format!("{PASSPHRASE}\n"));
    m.expect("disks unlocked", STEP);
    disks_ready(&mut m, "existing");
    let again = run(&mut m, "corporate", &format!("echo SHA=$(sha256sum < /home/{SECRET_FILE})"), "SHA");
    assert_eq!(again, sha, "the file changed across the reboot");
    assert_eq!(run(&mut m, "personal", "echo BASE=$(cat /home/base.txt)", "BASE"), "base-content-kept");
    let scratch = "echo scratch > /home/scratch.txt; sync; echo S=$(cat /home/scratch.txt)";
    assert_eq!(run(&mut m, "personal", scratch, "S"), "scratch");
    assert_eq!(run(&mut m, "personal", "cd /; umount /home; echo U=$?", "U"), "0");
    // The user reboots the desktop from inside (Linux's own reboot path, which ends at
    // the reset vector on this platform).
    m.run_in_vm("personal", "reboot -f");
    m.wait_count("vm 1 (personal) stopped: GuestReboot", 1, STEP);
    m.expect("vm personal: disk reset to its base", STEP);
    let line = m.wait_count("[personal] BULKHEAD-DISK:", 2, BOOT);
    assert!(line.contains("/home ext4 existing 64MiB"), "{line}");
    m.wait_count("[personal] BULKHEAD-GUEST-READY", 2, BOOT);
    m.wait_count(&format!("[personal] {SHELL_BANNER}"), 2, BOOT);
    std::thread::sleep(Duration::from_secs(2));
    let after = "echo AFTER=$(ls /home | tr '\\n' ' ')";
    let listing = run(&mut m, "personal", after, "AFTER");
    assert!(
        listing.contains("base.txt") && !listing.contains("scratch.txt"),
        "after the restart /home holds: {listing}"
    );

    // 3. A power cut while the corporate desktop writes and syncs in a loop.
    let loop_cmd = "mkdir -p /home/cut; cd /home/cut; i=0; while true; do i=$((i+1)); head -c 65536 /dev/urandom > f$i; \
                    sha256sum f$i >> sums; sync; echo \"SYNCED\"\"=\"$i; done";
    m.run_in_vm("corporate", loop_cmd);
    let mut synced = 0u32;
    while synced < 8 {
        let line = m.expect("[corporate] SYNCED=", STEP);
        synced = value(&line, "SYNCED=").parse().unwrap();
    }
    drop(m); // QEMU is killed: the machine loses power mid-loop.

    // 4. After the cut: the journal replays, every synced file is intact, the table
    // is read without complaint.
    let mut m = boot("after-power-cut", &persistent_img, &drive, false);
    m.expect("asking for the disk passphrase (unlock)", STEP);
    m.type_keys(&format!("{PASSPHRASE}\n"));
    m.expect("disks unlocked", STEP);
    disks_ready(&mut m, "existing");
    let check = format!("cd /home/cut; head -n {synced} sums | sha256sum -c -s; echo CUT=$?");
    assert_eq!(run(&mut m, "corporate", &check, "CUT"), "0", "a file synced before the cut is damaged");
    let again = run(&mut m, "corporate", &format!("echo SHA=$(sha256sum < /home/{SECRET_FILE})"), "SHA");
    assert_eq!(again, sha);
    let serial = m.serial();
    assert!(!serial.contains("table slot") || !serial.contains("damaged"), "the store's table was damaged");
    drop(m);

    // 5. The passphrase screen skipped: the desktops do not start, and say why.
    let mut m = boot("skipped", &persistent_img, &drive, false);
    m.expect("asking for the disk passphrase (unlock)", STEP);
    m.send_keys("esc");
    m.expect("disks stay locked", STEP);
    m.wait_count("vm 0 (corporate) does not start: its disk is locked", 1, STEP);
    m.wait_count("vm 1 (personal) does not start: its disk is locked", 1, STEP);
    std::thread::sleep(Duration::from_secs(5));
    assert!(!m.serial().contains("BULKHEAD-GUEST-READY"));
    m.pass();
}

/// The time between two `/proc/uptime` readings printed as "START END".
fn seconds(pair: &str) -> f64 {
    let t: Vec<f64> = pair.split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert_eq!(t.len(), 2, "{pair:?}");
    t[1] - t[0]
}

/// The stick's own data partition: on a machine with no NVMe drive, booted from a USB
/// stick on xHCI (behind VT-d, so the controller's DMA domain is in force), a desktop's
/// disk lives on the stick and keeps a file across a full reboot.
#[test]
fn a_stick_alone_keeps_a_desktops_disk_across_a_reboot() {
    let mut policy = images::desktops::desktops_policy(&DESKTOPS[..1]);
    policy.vms[0].disk = Some(Disk { size_mib: 64, mode: DiskMode::Persistent });
    let modules = images::desktops::modules_with_policy(image::linux_guest(), &policy);
    let img = image::build_stick_with_data("disks-stick", "disk-kdf=test", modules, Some(128 << 20));
    let part = images::data_disk::find(&img).unwrap();
    let stick = |c: &mut images::qemu::MachineConfig| {
        c.memory_mib = 2048;
        c.cpus = 1;
        c.iommu = images::qemu::Iommu::Intel;
        // The stick after the IOMMU on the command line, so QEMU translates its DMA.
        c.medium = images::qemu::BootMedium::None;
        let drive = format!("format=raw,file={},if=none,id=stick", img.display());
        c.extra_args = ["-device", "qemu-xhci,id=xhci", "-drive", &drive]
            .into_iter()
            .chain(["-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"])
            .map(String::from)
            .collect();
    };

    // 1. First boot: the driver finds the stick and its partition; the store is made there.
    let mut m = Machine::boot("stick-first", &img, stick);
    let domain = m.expect("DMA domain", BOOT);
    assert!(domain.contains("usb] 00:") && domain.contains("rings, contexts and bounce buffer"), "{domain}");
    let found = m.expect("mass storage", STEP);
    assert!(found.contains("bulk IN 0x81 / OUT 0x02"), "{found}");
    let size = m.expect("data partition: 128 MiB", STEP);
    assert!(size.ends_with("on the USB stick"), "{size}");
    let disk_line = m.expect("storage] Disk:", STEP);
    assert!(disk_line.contains("USB stick") && disk_line.contains("data partition"), "{disk_line}");
    m.expect("BULKHEAD READY", STEP);
    m.expect("asking for the disk passphrase (first use)", STEP);
    m.type_keys(&format!("{PASSPHRASE}\n{PASSPHRASE}\n"));
    m.expect("disk store created on the data partition", STEP);
    m.expect("vm corporate: new encrypted disk of 64 MiB", STEP);
    let line = m.wait_count("[corporate] BULKHEAD-DISK:", 1, BOOT);
    assert!(line.contains("/home ext4 new 64MiB"), "{line}");
    m.wait_count(&format!("[corporate] {SHELL_BANNER}"), 1, BOOT);
    std::thread::sleep(Duration::from_secs(2));
    let write = format!(
        "i=0; while [ $i -lt 20000 ]; do echo {SECRET_TEXT} line $i; i=$((i+1)); done > /home/{SECRET_FILE}; sync; echo W=$?"
    );
    assert_eq!(run(&mut m, "corporate", &write, "W"), "0");
    let sha = run(&mut m, "corporate", &format!("echo SHA=$(sha256sum < /home/{SECRET_FILE})"), "SHA");
    let hex = sha.split_whitespace().next().unwrap_or_default();
    assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "sha256sum printed {sha:?}");
    // A figure for docs/usb-storage.md: synced writes through the encrypted volume to the stick.
    let dd = "a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero of=/home/big bs=1M count=8 conv=fsync 2>/dev/null; \
              b=$(cut -d' ' -f1 /proc/uptime); echo DD=$a $b";
    eprintln!("stick: 8 MiB written and synced under TCG in {:.2} s", seconds(&run(&mut m, "corporate", dd, "DD")));
    m.run_in_vm("corporate", "cd /; umount /home; poweroff -f");
    m.wait_count("vm 0 (corporate) stopped", 1, STEP);
    drop(m);

    let raw = std::fs::read(&img).unwrap();
    let data = &raw[part.offset as usize..(part.offset + part.bytes) as usize];
    assert!(data.iter().any(|&b| b != 0), "nothing reached the stick's data partition");
    for needle in [SECRET_TEXT.as_bytes(), SECRET_FILE.as_bytes()] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle), "the stick holds {needle:?} in plain text");
    }

    // 2. A full reboot of the machine: the same file, the same SHA-256.
    let mut m = Machine::boot_again("stick-again", &img, stick);
    m.expect("data partition: 128 MiB", BOOT);
    m.expect("asking for the disk passphrase (unlock)", STEP);
    m.type_keys(&format!("{PASSPHRASE}\n"));
    m.expect("disks unlocked", STEP);
    let line = m.wait_count("[corporate] BULKHEAD-DISK:", 1, BOOT);
    assert!(line.contains("/home ext4 existing 64MiB"), "{line}");
    m.wait_count(&format!("[corporate] {SHELL_BANNER}"), 1, BOOT);
    std::thread::sleep(Duration::from_secs(2));
    let again = run(&mut m, "corporate", &format!("echo SHA=$(sha256sum < /home/{SECRET_FILE})"), "SHA");
    assert_eq!(again, sha, "the file changed across the reboot");
    let dd = "a=$(cut -d' ' -f1 /proc/uptime); dd if=/home/big of=/dev/null bs=1M 2>/dev/null; \
              b=$(cut -d' ' -f1 /proc/uptime); echo DD=$a $b";
    eprintln!("stick: 8 MiB read (cold cache) under TCG in {:.2} s", seconds(&run(&mut m, "corporate", dd, "DD")));
    m.pass();
}

/// Unencrypted volumes (`disk-cipher=none`, as the disk benchmark makes them) on a
/// drive behind VT-d: the drive moves the data straight between its medium and the
/// guests' buffer pages, through its DMA domain's transfer window. A desktop's file
/// reads back the same from the drive (page cache dropped), lies on the raw drive as
/// written, and survives a reboot; the hostile guest, whose disk is unencrypted too, is
/// contained as on an encrypted disk; the IOMMU reports no fault.
#[test]
fn plain_volumes_move_data_straight_between_the_drive_and_the_guests_buffers() {
    let mut policy = images::desktops::desktops_policy(&DESKTOPS[..1]);
    policy.vms[0].disk = Some(Disk { size_mib: 64, mode: DiskMode::Persistent });
    let disk = Some(Disk { size_mib: 16, mode: DiskMode::Persistent });
    policy.vms.push(Vm { disk, ..fleet::payload(ATTACKER, "blk-attack", 16) });
    let cmdline = format!("disk-kdf=test disk-passphrase={PASSPHRASE} disk-cipher=none");
    let img = image::build_desktop_and_payload_image("disks-plain", &cmdline, &policy);
    let drive = image::scenario_dir("disks-plain-drive").join("nvme.img");
    let part = images::data_disk::create(&drive, DRIVE_BYTES, 512).unwrap();
    let tune = |c: &mut images::qemu::MachineConfig| {
        c.memory_mib = 2048;
        c.cpus = 1;
        // The drive after the IOMMU on QEMU's command line: its DMA is translated.
        c.iommu = images::qemu::Iommu::Intel;
        c.nvme_disk = Some(drive.clone());
    };
    let ready = |m: &mut Machine, state: &str, count: usize| {
        let line = m.wait_count("[corporate] BULKHEAD-DISK:", count, BOOT);
        assert!(line.contains(&format!("/home ext4 {state} 64MiB")), "{line}");
        m.wait_count("[corporate] BULKHEAD-GUEST-READY", count, BOOT);
        m.wait_count(&format!("[corporate] {SHELL_BANNER}"), count, BOOT);
        std::thread::sleep(Duration::from_secs(2));
    };

    let mut m = Machine::boot("plain-first", &img, tune);
    let domain = m.wait_count("queues and bounce region", 1, BOOT);
    assert!(domain.contains("a VM's buffer pages only while a transfer"), "no transfer window: {domain}");
    m.wait_count("vm corporate: new UNENCRYPTED disk of 64 MiB", 1, BOOT);
    ready(&mut m, "new", 1);
    let write = "i=0; while [ $i -lt 20000 ]; do echo plain-marker line $i; i=$((i+1)); done > /home/plain.txt; \
                 head -c 8388608 /dev/urandom > /home/blob; sync; echo W=$?";
    assert_eq!(run(&mut m, "corporate", write, "W"), "0");
    let sums = "echo SUMS=$(cat /home/plain.txt /home/blob | sha256sum)";
    let sha = run(&mut m, "corporate", sums, "SUMS");
    let drop_caches = format!("echo 3 > /proc/sys/vm/drop_caches; {sums}");
    assert_eq!(run(&mut m, "corporate", &drop_caches, "SUMS"), sha, "read back from the drive differently");
    let first = m.wait_count("first transfer straight", 1, STEP);
    let prps = u64::from_str_radix(value(&first, "PRPs at 0x"), 16).unwrap_or(0);
    assert!((1u64 << 38..(1 << 38) + (2 << 20)).contains(&prps), "not through the transfer window: {first}");
    attacker_contained(&mut m);
    m.run_in_vm("corporate", "cd /; umount /home; poweroff -f");
    m.wait_count("vm 0 (corporate) stopped", 1, STEP);
    let serial = m.serial();
    for bad in [" DMA read at ", " DMA write at ", "transfer window of the DMA domain"] {
        assert!(!serial.contains(bad), "the log holds {bad:?}");
    }
    drop(m);

    let raw = std::fs::read(&drive).unwrap();
    let data = &raw[part.offset as usize..(part.offset + part.bytes) as usize];
    let needle = b"plain-marker line 19999";
    assert!(data.windows(needle.len()).any(|w| w == needle), "the file is not on the drive as written");

    let mut m = Machine::boot_again("plain-again", &img, tune);
    ready(&mut m, "existing", 1);
    assert_eq!(run(&mut m, "corporate", sums, "SUMS"), sha, "the files changed across the reboot");
    m.pass();
}
