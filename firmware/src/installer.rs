//! The unattended installer: copies the stick's ESP onto an internal disk through the
//! firmware's BlockIO, with a GPT, a FAT32 ESP and a Bulkhead data partition, and makes
//! the firmware boot it. What to write comes from `firmware::install` (host-tested);
//! this file moves blocks and variables.
//!
//! Order of writes, so that a failure never leaves a half-bootable disk: first the old
//! partition table is wiped (MBR and both GPT headers), then the ESP's contents are
//! written and read back, and only then is the new partition table written.

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use bulkhead_abi::manifest::{self, Entry};
use firmware::install::answer::{self, Answer};
use firmware::install::disks::{self, Bus, Disk};
use firmware::install::fat32::{self, FileSpec};
use firmware::install::gpt::{self, Layout};
use firmware::install::guid;
use firmware::install::load_option::{self, HardDrive};
use sha2::{Digest, Sha256};
use uefi::boot::{self, OpenProtocolAttributes, OpenProtocolParams, ScopedProtocol, SearchType};
use uefi::fs::FileSystem;
use uefi::proto::device_path::DevicePath;
use uefi::proto::device_path::text::{AllowShortcuts, DisplayOnly};
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::media::block::BlockIO;
use uefi::runtime::{self, ResetType, VariableAttributes, VariableVendor};
use uefi::{CString16, Handle, Identify, Status, println};

/// The answer file; its presence on a stick starts an unattended install.
pub const ANSWER_PATH: &str = "\\bulkhead\\install.cfg";
/// Where the boot entry points; `\EFI\BOOT\BOOTX64.EFI` is written as well.
const INSTALLED_LOADER: &str = "\\EFI\\BULKHEAD\\BOOTX64.EFI";
const STICK_LOADER: &str = "\\EFI\\BOOT\\BOOTX64.EFI";
const MANIFEST_PATH: &str = "\\bulkhead\\manifest.txt";
const BOOT_ENTRY_NAME: &str = "Bulkhead";
/// Transfers go through one aligned buffer of this size.
const CHUNK: usize = 1024 * 1024;
/// Enough alignment for any BlockIO IoAlign we expect (OVMF's NVMe wants 4 KiB at most).
const ALIGN: usize = 4096;
/// Zeroed at the start of the data partition.
const DATA_WIPE_BYTES: usize = 1024 * 1024;
/// Directory depth and file count the stick walk accepts.
const MAX_DEPTH: usize = 8;
const MAX_FILES: usize = 256;

/// Where the loader was started from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMedium {
    Stick,
    InternalDisk(Bus),
    Unknown,
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

/// The boot option the firmware started us through (`BootCurrent`), if it says.
pub fn boot_current() -> Option<u16> {
    let name = CString16::try_from("BootCurrent").ok()?;
    let mut buf = [0u8; 2];
    let (value, _) = runtime::get_variable(&name, &VariableVendor::GLOBAL_VARIABLE, &mut buf).ok()?;
    Some(u16::from_le_bytes(value.try_into().ok()?))
}

/// Runs the install the answer file describes, shows the result and powers off.
pub fn run(stick: &mut FileSystem, answer_text: &str) -> ! {
    println!("install: unattended install ({ANSWER_PATH} found on the stick)");
    // The boot manager's 5-minute watchdog would reset the machine in the middle of a
    // slow write.
    if boot::set_watchdog_timer(0, 0x10000, None).is_err() {
        println!("install: cannot disable the firmware watchdog; a slow install may be cut short");
    }
    let wait = match answer::parse(answer_text) {
        Ok(answer) => {
            let wait = answer.wait_seconds;
            match install(stick, &answer) {
                Ok(summary) => println!("BULKHEAD INSTALL DONE: {summary}"),
                Err(why) => println!("BULKHEAD INSTALL FAILED: {why}"),
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
        boot::stall(core::time::Duration::from_secs(u64::from(wait)));
    }
    println!("install: powering off");
    runtime::reset(ResetType::SHUTDOWN, Status::SUCCESS, None)
}

/// One disk as found, with what is needed to write it.
struct Found {
    handle: Handle,
    path: String,
    disk: Disk,
    media_id: u32,
}

fn install(stick: &mut FileSystem, answer: &Answer) -> Result<String, String> {
    let found = find_disks()?;
    for (i, f) in found.iter().enumerate() {
        let d = &f.disk;
        println!(
            "install: disk {i}: {} {} MiB, {}-byte blocks, {}{} at {}",
            d.bus.name(),
            d.bytes / (1024 * 1024),
            d.block_size,
            d.contents.describe(),
            if d.boot_disk { " (the stick this loader runs from: never a target)" } else { "" },
            f.path
        );
    }
    let disks: Vec<Disk> = found.iter().map(|f| f.disk.clone()).collect();
    let index = disks::choose(answer, &disks)?;
    let target = &found[index];
    println!("install: target is disk {index} ({} {} MiB)", target.disk.bus.name(), target.disk.bytes >> 20);

    let files = stick_files(stick)?;
    let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    println!("install: {} files, {} KiB from the stick", files.len(), total / 1024);

    let block_size = target.disk.block_size;
    let layout =
        gpt::plan(block_size, target.disk.bytes / block_size, [entropy_guid(1), entropy_guid(2), entropy_guid(3)])
            .map_err(|e| e.to_string())?;
    let specs: Vec<FileSpec<'_>> = files.iter().map(|f| FileSpec { path: &f.path, len: f.data.len() as u64 }).collect();
    let volume_id = u32::from_le_bytes(entropy_guid(4)[..4].try_into().unwrap_or([0; 4]));
    let volume = fat32::format(gpt::ESP_BYTES, block_size, layout.esp.first_lba, volume_id, &specs)
        .map_err(|e| format!("cannot lay out the ESP: {e}"))?;

    let mut disk = Writer::open(target)?;
    for (lba, bytes) in layout.wipe_writes() {
        disk.write(lba * block_size, &bytes).map_err(|e| format!("wiping the old partition table: {e}"))?;
    }
    let esp_start = layout.esp.first_lba * block_size;
    for (offset, bytes) in &volume.metadata {
        disk.write(esp_start + offset, bytes).map_err(|e| format!("writing the ESP's FAT: {e}"))?;
    }
    let mut done = 0u64;
    for (file, offset) in files.iter().zip(&volume.file_offsets) {
        if let Some(offset) = offset {
            disk.write(esp_start + offset, &file.data).map_err(|e| format!("writing {}: {e}", file.path))?;
        }
        done += file.data.len() as u64;
        println!("install: [{}] {} KiB of {} KiB  {}", bar(done, total), done / 1024, total / 1024, file.path);
    }
    disk.flush()?;

    // Read everything back before the disk gets a partition table.
    if answer.verify_delay_seconds > 0 {
        println!("install: written; reading back in {} s", answer.verify_delay_seconds);
        boot::stall(core::time::Duration::from_secs(u64::from(answer.verify_delay_seconds)));
    }
    println!("install: reading back");
    for (offset, bytes) in &volume.metadata {
        if disk.read(esp_start + offset, bytes.len())? != *bytes {
            return Err(not_bootable(format!("the ESP's FAT at byte {} reads back differently", esp_start + offset)));
        }
    }
    for (file, offset) in files.iter().zip(&volume.file_offsets) {
        let back = match offset {
            Some(offset) => disk.read(esp_start + offset, file.data.len())?,
            None => Vec::new(),
        };
        let digest: [u8; 32] = Sha256::digest(&back).into();
        if digest != file.sha256 {
            return Err(not_bootable(format!("{} reads back with a different SHA-256", file.path)));
        }
    }
    println!("install: read back {} files, SHA-256 matches the stick", files.len());
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

    let number = add_boot_entry(&layout)?;
    Ok(format!(
        "disk {index} ({} {} MiB), {} files, boot entry Boot{number:04X} first in BootOrder",
        target.disk.bus.name(),
        target.disk.bytes >> 20,
        files.len()
    ))
}

fn not_bootable(why: String) -> String {
    format!("{why}; the disk is left without a partition table (not bootable)")
}

fn bar(done: u64, total: u64) -> String {
    let filled = (done * 20).checked_div(total).unwrap_or(20) as usize;
    let mut s = "#".repeat(filled.min(20));
    s.push_str(&".".repeat(20 - filled.min(20)));
    s
}

/// Every whole disk with media, with its bus, size and contents.
fn find_disks() -> Result<Vec<Found>, String> {
    let boot_path = boot_device_path().map(|p| path_bytes(&p).to_vec());
    let handles = boot::locate_handle_buffer(SearchType::ByProtocol(&BlockIO::GUID))
        .map_err(|e| format!("cannot list the disks: {e:?}"))?;
    let mut found = Vec::new();
    for &handle in handles.iter() {
        let Ok(block) = open::<BlockIO>(handle) else { continue };
        let media = block.media();
        if media.is_logical_partition() || !media.is_media_present() {
            continue;
        }
        let Ok(path) = open::<DevicePath>(handle) else { continue };
        let bytes = path_bytes(&path);
        let boot_disk = boot_path.as_deref().is_some_and(|b| b.starts_with(bytes));
        let block_size = u64::from(media.block_size());
        let total = (media.last_block() + 1) * block_size;
        let media_id = media.media_id();
        drop(block);
        let found_disk = Found {
            handle,
            path: path_text(&path),
            media_id,
            disk: Disk {
                bus: Bus::from_nodes(node_types(&path)),
                bytes: total,
                block_size,
                boot_disk,
                contents: disks::Contents::Empty,
            },
        };
        let head = Writer::open(&found_disk).and_then(|mut w| w.read(0, (34 * 512usize).max(6 * block_size as usize)));
        let contents = match head {
            Ok(head) => disks::contents(&head, block_size as usize),
            Err(e) => {
                println!("install: cannot read {}: {e}", found_disk.path);
                continue;
            }
        };
        found.push(Found { disk: Disk { contents, ..found_disk.disk }, ..found_disk });
    }
    Ok(found)
}

/// A file from the stick with its digest.
struct StickFile {
    path: String,
    data: Vec<u8>,
    sha256: [u8; 32],
}

/// Reads every file on the stick's ESP (except the answer file, so the installed copy
/// does not install itself again), checks the manifest's digests, and adds the loader at
/// the boot entry's path.
fn stick_files(stick: &mut FileSystem) -> Result<Vec<StickFile>, String> {
    let mut paths = Vec::new();
    walk(stick, String::new(), 0, &mut paths)?;
    let mut files = Vec::new();
    for path in paths {
        if path.eq_ignore_ascii_case(ANSWER_PATH) {
            continue;
        }
        let data = read(stick, &path)?;
        files.push(StickFile { sha256: Sha256::digest(&data).into(), path, data });
    }
    let find = |files: &[StickFile], path: &str| files.iter().position(|f| f.path.eq_ignore_ascii_case(path));
    let manifest = find(&files, MANIFEST_PATH).ok_or_else(|| format!("the stick has no {MANIFEST_PATH}"))?;
    let text = core::str::from_utf8(&files[manifest].data).map_err(|_| format!("{MANIFEST_PATH} is not UTF-8"))?;
    for entry in manifest::entries(text) {
        let file = match entry.map_err(|e| format!("{MANIFEST_PATH}: {e}"))? {
            Entry::Hypervisor(file) | Entry::Module { file, .. } => file,
            _ => continue,
        };
        let index = find(&files, file.path).ok_or_else(|| format!("the stick lacks {}", file.path))?;
        if file.sha256.is_some_and(|want| want != files[index].sha256) {
            return Err(format!("{} on the stick does not match the manifest's SHA-256 (damaged stick?)", file.path));
        }
    }
    let loader = find(&files, STICK_LOADER).ok_or_else(|| format!("the stick has no {STICK_LOADER}"))?;
    if find(&files, INSTALLED_LOADER).is_none() {
        let copy =
            StickFile { path: INSTALLED_LOADER.into(), data: files[loader].data.clone(), sha256: files[loader].sha256 };
        files.push(copy);
    }
    Ok(files)
}

fn walk(fs: &mut FileSystem, dir: String, depth: usize, out: &mut Vec<String>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{dir} is nested too deeply"));
    }
    let shown = if dir.is_empty() { "\\".to_string() } else { dir.clone() };
    let path16 = CString16::try_from(shown.as_str()).map_err(|_| format!("bad path {shown}"))?;
    let entries: Vec<Box<uefi::proto::media::file::FileInfo>> = fs
        .read_dir(path16.as_ref())
        .map_err(|e| format!("cannot list {shown} on the stick: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|_| format!("cannot list {shown} on the stick"))?;
    for info in entries {
        let name = info.file_name().to_string();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{dir}\\{name}");
        if info.is_directory() {
            walk(fs, path, depth + 1, out)?;
        } else {
            if out.len() >= MAX_FILES {
                return Err(format!("more than {MAX_FILES} files on the stick"));
            }
            out.push(path);
        }
    }
    Ok(())
}

fn read(fs: &mut FileSystem, path: &str) -> Result<Vec<u8>, String> {
    let path16 = CString16::try_from(path).map_err(|_| format!("bad path {path}"))?;
    fs.read(path16.as_ref()).map_err(|e| format!("cannot read {path} from the stick: {e}"))
}

/// Block reads and writes at byte offsets through one aligned bounce buffer.
struct Writer {
    block: ScopedProtocol<BlockIO>,
    media_id: u32,
    block_size: usize,
    buffer: Vec<u8>,
}

impl Writer {
    fn open(disk: &Found) -> Result<Writer, String> {
        let block = open::<BlockIO>(disk.handle).map_err(|e| format!("cannot open {}: {e:?}", disk.path))?;
        let block_size = block.media().block_size() as usize;
        Ok(Writer { block, media_id: disk.media_id, block_size, buffer: vec![0u8; CHUNK + ALIGN] })
    }

    fn aligned(&mut self) -> &mut [u8] {
        let off = self.buffer.as_ptr().align_offset(ALIGN);
        &mut self.buffer[off..off + CHUNK]
    }

    /// Writes `data` at `offset` (a block multiple), padding the last block with zeros.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let bs = self.block_size;
        for (i, piece) in data.chunks(CHUNK).enumerate() {
            let len = piece.len().next_multiple_of(bs);
            let buf = self.aligned();
            buf[..piece.len()].copy_from_slice(piece);
            buf[piece.len()..len].fill(0);
            let at = offset + (i * CHUNK) as u64;
            let lba = at / bs as u64;
            let media_id = self.media_id;
            let off = self.buffer.as_ptr().align_offset(ALIGN);
            self.block
                .write_blocks(media_id, lba, &self.buffer[off..off + len])
                .map_err(|e| format!("write at LBA {lba} failed: {:?}", e.status()))?;
        }
        Ok(())
    }

    fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        let bs = self.block_size;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let piece = (len - out.len()).min(CHUNK);
            let padded = piece.next_multiple_of(bs);
            let lba = (offset + out.len() as u64) / bs as u64;
            let media_id = self.media_id;
            let off = self.buffer.as_ptr().align_offset(ALIGN);
            self.block
                .read_blocks(media_id, lba, &mut self.buffer[off..off + padded])
                .map_err(|e| format!("read at LBA {lba} failed: {:?}", e.status()))?;
            out.extend_from_slice(&self.buffer[off..off + piece]);
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<(), String> {
        self.block.flush_blocks().map_err(|e| format!("flushing the disk failed: {:?}", e.status()))
    }
}

/// Adds (or replaces) the Bulkhead boot entry and puts it first in BootOrder.
fn add_boot_entry(layout: &Layout) -> Result<u16, String> {
    let hd = HardDrive {
        partition_number: layout.esp.number,
        first_lba: layout.esp.first_lba,
        blocks: layout.esp.blocks(),
        partition_guid: layout.esp.unique,
    };
    let option = load_option::load_option(BOOT_ENTRY_NAME, &hd, INSTALLED_LOADER);
    let vendor = VariableVendor::GLOBAL_VARIABLE;
    let attributes =
        VariableAttributes::NON_VOLATILE | VariableAttributes::BOOTSERVICE_ACCESS | VariableAttributes::RUNTIME_ACCESS;
    // Reuse an earlier Bulkhead entry, else take the first free number.
    let mut free = None;
    let mut ours = None;
    for number in 0..=0xFFu16 {
        let name = CString16::try_from(load_option::variable_name(number).as_str()).map_err(|_| "bad name")?;
        match runtime::get_variable_boxed(&name, &vendor) {
            Ok((value, _)) => {
                if description(&value).as_deref() == Some(BOOT_ENTRY_NAME) {
                    ours = Some(number);
                    break;
                }
            }
            Err(e) if e.status() == Status::NOT_FOUND => free = free.or(Some(number)),
            Err(_) => {}
        }
    }
    let number = ours.or(free).ok_or("no free Boot#### number below Boot00FF")?;
    let name = CString16::try_from(load_option::variable_name(number).as_str()).map_err(|_| "bad name")?;
    runtime::set_variable(&name, &vendor, attributes, &option)
        .map_err(|e| format!("cannot write Boot{number:04X}: {:?}", e.status()))?;
    let order_name = CString16::try_from("BootOrder").map_err(|_| "bad name")?;
    let old = runtime::get_variable_boxed(&order_name, &vendor).map(|(v, _)| v).unwrap_or_default();
    let order = load_option::boot_order_with_first(&old, number);
    runtime::set_variable(&order_name, &vendor, attributes, &order)
        .map_err(|e| format!("cannot write BootOrder: {:?}", e.status()))?;
    println!("install: Boot{number:04X} = \"{BOOT_ENTRY_NAME}\" -> {INSTALLED_LOADER}, first in BootOrder");
    Ok(number)
}

/// The description of an EFI_LOAD_OPTION.
fn description(option: &[u8]) -> Option<String> {
    let units = option.get(6..)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0);
    char::decode_utf16(units).collect::<Result<String, _>>().ok()
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

fn open<P: uefi::proto::ProtocolPointer + ?Sized>(handle: Handle) -> uefi::Result<ScopedProtocol<P>> {
    // SAFETY: GetProtocol does not take the protocol from its drivers; we only use it
    // while the handle exists (nothing here disconnects or uninstalls it).
    unsafe {
        boot::open_protocol::<P>(
            OpenProtocolParams { handle, agent: boot::image_handle(), controller: None },
            OpenProtocolAttributes::GetProtocol,
        )
    }
}

fn boot_device_path() -> Option<ScopedProtocol<DevicePath>> {
    let image = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle()).ok()?;
    let device = image.device()?;
    open::<DevicePath>(device).ok()
}

/// The device path's bytes without the end node, for prefix comparisons.
fn path_bytes(path: &DevicePath) -> &[u8] {
    let bytes = path.as_bytes();
    &bytes[..bytes.len().saturating_sub(4)]
}

fn node_types(path: &DevicePath) -> Vec<(u8, u8)> {
    path.node_iter().map(|n| (n.device_type().0, n.sub_type().0)).collect()
}

fn path_text(path: &DevicePath) -> String {
    path.to_string16(DisplayOnly(false), AllowShortcuts(false)).map(|s| s.to_string()).unwrap_or_else(|_| "?".into())
}
