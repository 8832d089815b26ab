//! The installer: copies the stick's ESP onto an internal disk through the firmware's
//! BlockIO, with a GPT, a FAT32 ESP and a Bulkhead data partition, and makes the
//! firmware boot it. It runs unattended when the stick carries an answer file
//! ([`run`]), or interactively when asked for at boot ([`offer`]). What to write comes
//! from `firmware::install` (host-tested); these modules move blocks and variables.
//!
//! Order of writes, so that a failure never leaves a half-bootable disk: first the old
//! partition table is wiped (MBR and both GPT headers), then the ESP's contents are
//! written and read back, and only then is the new partition table written.

mod boot_entry;
mod disk_io;
mod interactive;
mod progress;
mod stick;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use firmware::install::answer::{self, Answer, Mode};
use firmware::install::disks::{self, Bus, Disk};
use firmware::install::fat32::{self, FileSpec};
use firmware::install::gpt;
use firmware::install::guid;
use sha2::{Digest, Sha256};
use uefi::Status;
use uefi::boot;
use uefi::fs::FileSystem;
use uefi::runtime::{self, ResetType};
use ui::install_progress::Phase;

pub use boot_entry::boot_current;
use disk_io::{Found, Writer, boot_device_path, find_disks, node_types, path_text};
pub use interactive::offer;
use progress::Screen;

/// The answer file; its presence on a stick starts an unattended install.
pub const ANSWER_PATH: &str = "\\bulkhead\\install.cfg";
/// Where the boot entry points; `\EFI\BOOT\BOOTX64.EFI` is written as well.
const INSTALLED_LOADER: &str = "\\EFI\\BULKHEAD\\BOOTX64.EFI";
/// Zeroed at the start of the data partition.
const DATA_WIPE_BYTES: usize = 1024 * 1024;
/// Files are written and read back in pieces of this size, one progress step each.
const PROGRESS_STEP: usize = 4 * 1024 * 1024;

/// Where the loader was started from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMedium {
    Stick,
    InternalDisk(Bus),
    Unknown,
}

impl BootMedium {
    /// The value [`bulkhead_abi::BootInfo::boot_medium`] carries to the hypervisor.
    pub fn abi_value(self) -> u32 {
        match self {
            BootMedium::Stick => bulkhead_abi::BOOT_MEDIUM_STICK,
            BootMedium::InternalDisk(Bus::Nvme) => bulkhead_abi::BOOT_MEDIUM_NVME,
            BootMedium::InternalDisk(Bus::Sata) => bulkhead_abi::BOOT_MEDIUM_SATA,
            BootMedium::InternalDisk(_) | BootMedium::Unknown => bulkhead_abi::BOOT_MEDIUM_UNKNOWN,
        }
    }
}

/// Classifies the device the loader image came from by its device path.
pub fn boot_medium() -> (BootMedium, String) {
    let Some(path) = boot_device_path() else {
        return (BootMedium::Unknown, "no device path".into());
    };
    let text = path_text(&path);
    let medium = match Bus::from_nodes(node_types(&path)) {
        Bus::Usb => BootMedium::Stick,
        bus @ (Bus::Nvme | Bus::Sata) => BootMedium::InternalDisk(bus),
        Bus::Other => BootMedium::Unknown,
    };
    (medium, text)
}

/// Runs the install the answer file describes, shows the result and powers off.
pub fn run(stick: &mut FileSystem, answer_text: &str) -> ! {
    println!("install: unattended install ({ANSWER_PATH} found on the stick)");
    disable_watchdog();
    let mut screen = Screen::new();
    let wait = match answer::parse(answer_text) {
        Ok(answer) => {
            let wait = answer.wait_seconds;
            match unattended(stick, &answer, &mut screen) {
                Ok(summary) => {
                    println!("BULKHEAD INSTALL DONE: {summary}");
                    screen.finish(true);
                }
                Err(why) => {
                    println!("BULKHEAD INSTALL FAILED: {why}");
                    screen.finish(false);
                }
            }
            wait
        }
        Err(why) => {
            println!("BULKHEAD INSTALL FAILED: {ANSWER_PATH}: {why}");
            30
        }
    };
    if wait > 0 {
        println!("install: powering off in {wait} s");
        screen.draw();
        boot::stall(core::time::Duration::from_secs(u64::from(wait)));
    }
    println!("install: powering off");
    runtime::reset(ResetType::SHUTDOWN, Status::SUCCESS, None)
}

/// The boot manager's 5-minute watchdog would reset the machine in the middle of a
/// slow write.
fn disable_watchdog() {
    if boot::set_watchdog_timer(0, 0x10000, None).is_err() {
        println!("install: cannot disable the firmware watchdog; a slow install may be cut short");
    }
}

/// Describes one disk for the list.
fn describe(index: usize, f: &Found) -> String {
    let d = &f.disk;
    format!(
        "disk {index}: {} {} MiB, {}-byte blocks, {} at {}",
        d.bus.name(),
        d.bytes / (1024 * 1024),
        d.block_size,
        d.contents.describe(),
        f.path
    )
}

fn unattended(stick: &mut FileSystem, answer: &Answer, screen: &mut Screen) -> Result<String, String> {
    let found = find_disks()?;
    for (i, f) in found.iter().enumerate() {
        let note = if f.disk.boot_disk { " (the stick this loader runs from: never a target)" } else { "" };
        println!("install: {}{note}", describe(i, f));
    }
    let disks: Vec<Disk> = found.iter().map(|f| f.disk.clone()).collect();
    let index = disks::choose(answer, &disks)?;
    install(stick, &found[index], index, answer.mode, answer.verify_delay_seconds, screen)
}

/// Installs onto `target` (disk `index` of the list), or updates its ESP; every check on
/// the target was made by the caller.
///
/// Order of writes, so that a failure never leaves a half-bootable disk: a fresh install
/// first wipes the old partition table, an update first clears the ESP's boot sector;
/// then the FAT and the files are written and read back; then the boot sector; a fresh
/// install writes the partition table last. The progress goes to `screen` as well as to
/// the log.
fn install(
    stick: &mut FileSystem,
    target: &Found,
    index: usize,
    mode: Mode,
    verify_delay_seconds: u32,
    screen: &mut Screen,
) -> Result<String, String> {
    let verb = if mode == Mode::Update { "update" } else { "install" };
    println!("install: {verb} on disk {index} ({} {} MiB)", target.disk.bus.name(), target.disk.bytes >> 20);
    let files = stick::stick_files(stick)?;
    let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    println!("install: {} files, {} KiB from the stick", files.len(), total / 1024);

    let block_size = target.disk.block_size;
    let layout = match (mode, &target.layout) {
        (Mode::Install, _) => {
            gpt::plan(block_size, target.disk.bytes / block_size, [entropy_guid(1), entropy_guid(2), entropy_guid(3)])
                .map_err(|e| e.to_string())?
        }
        (Mode::Update, Some(layout)) => layout.clone(),
        (Mode::Update, None) => return Err(format!("disk {index} holds no Bulkhead installation to update")),
    };
    let specs: Vec<FileSpec<'_>> = files.iter().map(|f| FileSpec { path: &f.path, len: f.data.len() as u64 }).collect();
    let volume_id = u32::from_le_bytes(entropy_guid(4)[..4].try_into().unwrap_or([0; 4]));
    let volume = fat32::format(gpt::ESP_BYTES, block_size, layout.esp.first_lba, volume_id, &specs)
        .map_err(|e| format!("cannot lay out the ESP: {e}"))?;

    let mut disk = Writer::open(target)?;
    screen.show(Phase::Writing, 0, total);
    let esp_start = layout.esp.first_lba * block_size;
    if mode == Mode::Install {
        for (lba, bytes) in layout.wipe_writes() {
            disk.write(lba * block_size, &bytes).map_err(|e| format!("wiping the old partition table: {e}"))?;
        }
    } else {
        let zero = vec![0u8; block_size as usize];
        disk.write(esp_start, &zero).map_err(|e| format!("clearing the ESP's boot sector: {e}"))?;
    }
    // The reserved region with the boot sector comes first in the list; it is written
    // last, once the rest has read back right.
    let (boot_region, rest) = volume.metadata.split_first().ok_or("the ESP layout is empty")?;
    for (offset, bytes) in rest {
        disk.write(esp_start + offset, bytes).map_err(|e| format!("writing the ESP's FAT: {e}"))?;
    }
    let mut done = 0u64;
    for (file, offset) in files.iter().zip(&volume.file_offsets) {
        if let Some(offset) = offset {
            for (i, piece) in file.data.chunks(PROGRESS_STEP).enumerate() {
                let at = esp_start + offset + (i * PROGRESS_STEP) as u64;
                disk.write(at, piece).map_err(|e| format!("writing {}: {e}", file.path))?;
                screen.show(Phase::Writing, done + ((i * PROGRESS_STEP + piece.len()) as u64), total);
            }
        }
        done += file.data.len() as u64;
        println!("install: [{}] {} KiB of {} KiB  {}", bar(done, total), done / 1024, total / 1024, file.path);
        screen.show(Phase::Writing, done, total);
    }
    disk.flush()?;

    // Read everything back before the disk gets a partition table.
    if verify_delay_seconds > 0 {
        println!("install: written; reading back in {verify_delay_seconds} s");
        screen.draw();
        boot::stall(core::time::Duration::from_secs(u64::from(verify_delay_seconds)));
    }
    println!("install: reading back");
    screen.show(Phase::Verifying, 0, total);
    for (offset, bytes) in rest {
        if disk.read(esp_start + offset, bytes.len())? != *bytes {
            return Err(not_bootable(format!("the ESP's FAT at byte {} reads back differently", esp_start + offset)));
        }
    }
    let mut verified = 0u64;
    for (file, offset) in files.iter().zip(&volume.file_offsets) {
        let mut hash = Sha256::new();
        if let Some(offset) = offset {
            for at in (0..file.data.len()).step_by(PROGRESS_STEP) {
                let len = PROGRESS_STEP.min(file.data.len() - at);
                hash.update(disk.read(esp_start + offset + at as u64, len)?);
                screen.show(Phase::Verifying, verified + (at + len) as u64, total);
            }
        }
        verified += file.data.len() as u64;
        let digest: [u8; 32] = hash.finalize().into();
        if digest != file.sha256 {
            return Err(not_bootable(format!("{} reads back with a different SHA-256", file.path)));
        }
    }
    println!("install: read back {} files, SHA-256 matches the stick", files.len());
    screen.draw();
    disk.write(esp_start + boot_region.0, &boot_region.1).map_err(|e| format!("writing the ESP's boot sector: {e}"))?;
    disk.flush()?;
    if disk.read(esp_start + boot_region.0, boot_region.1.len())? != boot_region.1 {
        return Err(not_bootable("the ESP's boot sector reads back differently".into()));
    }
    if mode == Mode::Update {
        screen.show(Phase::BootEntry, 0, 0);
        let number = boot_entry::add_boot_entry(&layout)?;
        return Ok(format!(
            "updated the ESP of disk {index} ({} {} MiB), {} files, data partition untouched, boot entry Boot{number:04X}",
            target.disk.bus.name(),
            target.disk.bytes >> 20,
            files.len()
        ));
    }
    screen.show(Phase::PartitionTable, 0, 0);
    // Whatever an earlier system left at the start of the data partition is not taken
    // for Bulkhead's data later.
    let zeros = vec![0u8; DATA_WIPE_BYTES];
    disk.write(layout.data.first_lba * block_size, &zeros).map_err(|e| format!("clearing the data partition: {e}"))?;

    for (lba, bytes) in layout.table_writes() {
        disk.write(lba * block_size, &bytes).map_err(|e| format!("writing the partition table: {e}"))?;
    }
    disk.flush()?;
    for (lba, bytes) in layout.table_writes() {
        if disk.read(lba * block_size, bytes.len())? != bytes {
            return Err(format!("the partition table at LBA {lba} reads back differently"));
        }
    }
    println!(
        "install: GPT written: ESP {} MiB, data {} MiB",
        gpt::ESP_BYTES >> 20,
        (layout.data.blocks() * block_size) >> 20
    );
    drop(disk);

    screen.draw();
    screen.show(Phase::BootEntry, 0, 0);
    let number = boot_entry::add_boot_entry(&layout)?;
    Ok(format!(
        "disk {index} ({} {} MiB), {} files, boot entry Boot{number:04X} first in BootOrder",
        target.disk.bus.name(),
        target.disk.bytes >> 20,
        files.len()
    ))
}

fn not_bootable(why: String) -> String {
    format!("{why}; the disk is left without a partition table or ESP boot sector (not bootable)")
}

fn bar(done: u64, total: u64) -> String {
    let filled = (done * 20).checked_div(total).unwrap_or(20) as usize;
    let mut s = "#".repeat(filled.min(20));
    s.push_str(&".".repeat(20 - filled.min(20)));
    s
}

/// A GUID from the TSC and the firmware's clock, hashed; unique enough for partition
/// GUIDs (they only need to differ between disks).
fn entropy_guid(salt: u8) -> guid::Guid {
    let mut h = Sha256::new();
    // SAFETY: RDTSC has no side effects.
    h.update(unsafe { core::arch::x86_64::_rdtsc() }.to_le_bytes());
    if let Ok(time) = runtime::get_time() {
        h.update(format!("{time:?}").as_bytes());
    }
    h.update([salt]);
    let digest: [u8; 32] = h.finalize().into();
    guid::from_entropy(digest[..16].try_into().unwrap_or([salt; 16]))
}
