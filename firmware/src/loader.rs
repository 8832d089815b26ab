//! The UEFI side of the loader. Every failure ends in [`fail`], which shows the reason on
//! the screen and the serial console (OVMF mirrors ConOut to both) and waits for a key.

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::ptr::NonNull;

use bulkhead_abi::manifest::{self, Entry};
use bulkhead_abi::nv;
use bulkhead_abi::{
    BOOT_INFO_MAGIC, BOOT_INFO_VERSION, BootInfo, FramebufferInfo, MemoryRegion, Module, PhysSlice, PixelFormat,
};
use elfload::{self as elf, PAGE};
use firmware::gop::{self, Candidate};
use firmware::memory_map::{self, uefi_type};
use uefi::CString16;
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::fs::FileSystem;
use uefi::mem::memory_map::MemoryMap;
use uefi::prelude::*;
use uefi::proto::console::gop::{GraphicsOutput, PixelFormat as GopPixelFormat};
use uefi::table::cfg::ConfigTableEntry;

use crate::installer;

const MANIFEST_PATH: &str = "\\bulkhead\\manifest.txt";
const MAX_MODULES: usize = 16;
/// Slack for descriptors that appear between sizing the map and ExitBootServices.
const MEMORY_MAP_SLACK: usize = 64;

#[entry]
fn main() -> Status {
    let tsc_loader_start = rdtsc();
    if uefi::helpers::init().is_err() {
        return Status::ABORTED;
    }
    println!("Bulkhead loader {}", env!("CARGO_PKG_VERSION"));
    match prepare(tsc_loader_start) {
        Ok(handoff) => jump(handoff),
        Err(message) => fail(&message),
    }
}

/// What survives ExitBootServices: the entry point and the preallocated BootInfo and
/// memory-map buffer.
struct Handoff {
    entry: u64,
    boot_info: &'static mut BootInfo,
    regions: &'static mut [MemoryRegion],
}

fn prepare(tsc_loader_start: u64) -> Result<Handoff, String> {
    let mut fs = FileSystem::new(
        boot::get_image_file_system(boot::image_handle())
            .map_err(|e| alloc::format!("cannot open the boot partition: {e:?}"))?,
    );
    // Whatever else is plugged in, the loader runs the copy on the device it came from.
    let (medium, device) = installer::boot_medium();
    match medium {
        installer::BootMedium::Stick => println!("running from a USB stick: {device}"),
        installer::BootMedium::InternalDisk(bus) => println!("running from the internal {} disk: {device}", bus.name()),
        installer::BootMedium::Unknown => println!("running from {device}"),
    }
    if let Some(option) = installer::boot_current() {
        println!("boot option Boot{option:04X}");
    }
    if let Ok(answer) = read_file(&mut fs, installer::ANSWER_PATH) {
        if medium == installer::BootMedium::Stick {
            installer::run(&mut fs, &String::from_utf8_lossy(&answer));
        }
        println!("ignoring {}: installs run from a USB stick only", installer::ANSWER_PATH);
    } else if medium == installer::BootMedium::Stick {
        installer::offer(&mut fs);
    }
    let manifest_bytes = read_file(&mut fs, MANIFEST_PATH)?;
    let manifest_text = core::str::from_utf8(&manifest_bytes)
        .map_err(|_| alloc::format!("{MANIFEST_PATH} is not UTF-8 text (corrupt?)"))?;

    let mut hypervisor_path = None;
    let mut wanted_mode = None;
    let mut cmdline = "";
    let mut module_entries: Vec<(&str, manifest::FileRef<'_>)> = Vec::new();
    for entry in manifest::entries(manifest_text) {
        match entry.map_err(|e| alloc::format!("{MANIFEST_PATH}: {e}"))? {
            Entry::Hypervisor(path) => hypervisor_path = Some(path),
            Entry::Gop { width, height } => wanted_mode = Some((width, height)),
            Entry::Cmdline(text) => cmdline = text,
            Entry::Module { name, file } => module_entries.push((name, file)),
        }
    }
    let hypervisor_path =
        hypervisor_path.ok_or_else(|| alloc::format!("{MANIFEST_PATH} names no `hypervisor = ...`"))?;
    if module_entries.len() > MAX_MODULES {
        return Err(alloc::format!("{MANIFEST_PATH} lists more than {MAX_MODULES} modules"));
    }

    let image = read_verified(&mut fs, &hypervisor_path)?;
    let hypervisor_path = hypervisor_path.path;
    let plan =
        elf::plan(&image, elf::HYPERVISOR_WINDOW).map_err(|e| alloc::format!("{hypervisor_path} is unusable: {e}"))?;
    load_segments(&image, &plan).map_err(|e| alloc::format!("cannot load {hypervisor_path}: {e}"))?;
    println!("loaded {hypervisor_path}: {} KiB at {:#x}", image.len() / 1024, plan.span_start);
    drop(image);

    let mut modules = Vec::with_capacity(module_entries.len());
    for (name, file) in &module_entries {
        let bytes = read_verified(&mut fs, file)?;
        let path = file.path;
        let addr = copy_to_pages(&bytes, uefi_type::BULKHEAD_DATA)
            .map_err(|e| alloc::format!("no memory for module {path}: {e:?}"))?;
        modules.push(Module { name: Module::encode_name(name), addr, len: bytes.len() as u64 });
        println!("module {name}: {path}, {} KiB", bytes.len() / 1024);
    }
    let modules_addr = copy_to_pages(as_bytes(&modules), uefi_type::BULKHEAD_DATA)
        .map_err(|e| alloc::format!("no memory for the module table: {e:?}"))?;

    let framebuffer = set_gop_mode(wanted_mode);
    if framebuffer.is_none() {
        println!("no linear GOP framebuffer: the hypervisor will run without a screen");
    }

    let rsdp = find_rsdp();
    let region_capacity = boot::memory_map(MemoryType::LOADER_DATA)
        .map_err(|e| alloc::format!("cannot read the memory map: {e:?}"))?
        .len()
        + MEMORY_MAP_SLACK;
    let regions = alloc_static::<MemoryRegion>(region_capacity)?;
    let boot_info = &mut alloc_static::<BootInfo>(1)?[0];
    let mut cmdline_bytes = [0u8; 256];
    let n = cmdline.len().min(cmdline_bytes.len() - 1);
    cmdline_bytes[..n].copy_from_slice(&cmdline.as_bytes()[..n]);
    *boot_info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        version: BOOT_INFO_VERSION,
        size: core::mem::size_of::<BootInfo>() as u32,
        memory_map: PhysSlice::EMPTY,
        framebuffer: framebuffer.unwrap_or(FramebufferInfo {
            base: 0,
            size: 0,
            width: 0,
            height: 0,
            stride: 0,
            format: PixelFormat::Bgr,
        }),
        framebuffer_present: u32::from(framebuffer.is_some()),
        _reserved: 0,
        rsdp,
        modules: PhysSlice { addr: modules_addr, len: modules.len() as u64 },
        hypervisor_image: PhysSlice { addr: plan.span_start, len: plan.span_end - plan.span_start },
        tsc_loader_start,
        tsc_handoff: 0,
        cmdline: cmdline_bytes,
        boot_medium: medium.abi_value(),
        _reserved2: 0,
        uefi_system_table: crate::policy_state::system_table(),
        nv_policy_state: crate::policy_state::read(nv::STATE_VARIABLE, core::mem::size_of::<nv::PolicyState>()),
        nv_policy_bundle: crate::policy_state::read(nv::BUNDLE_VARIABLE, nv::MAX_BUNDLE_VARIABLE),
    };
    println!("starting the hypervisor");
    Ok(Handoff { entry: plan.entry, boot_info, regions })
}

fn read_file(fs: &mut FileSystem, path: &str) -> Result<Vec<u8>, String> {
    let path16 = CString16::try_from(path).map_err(|_| alloc::format!("bad path {path}"))?;
    fs.read(path16.as_ref()).map_err(|e| alloc::format!("cannot read {path} from the boot partition: {e}"))
}

/// Reads a file and checks it against the manifest's digest, so a damaged stick is
/// reported instead of running whatever bytes are left.
fn read_verified(fs: &mut FileSystem, file: &manifest::FileRef<'_>) -> Result<Vec<u8>, String> {
    let bytes = read_file(fs, file.path)?;
    if let Some(expected) = file.sha256 {
        use sha2::Digest;
        let actual: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        if actual != expected {
            return Err(alloc::format!(
                "{} is corrupt: its SHA-256 does not match the manifest (damaged or truncated copy, {} bytes read)",
                file.path,
                bytes.len()
            ));
        }
    }
    Ok(bytes)
}

fn load_segments(image: &[u8], plan: &elf::LoadPlan) -> Result<(), String> {
    let base = boot::allocate_pages(
        AllocateType::Address(plan.span_start),
        MemoryType::custom(uefi_type::BULKHEAD_IMAGE),
        plan.pages(),
    )
    .map_err(|e| alloc::format!("memory {:#x}..{:#x} is taken ({:?})", plan.span_start, plan.span_end, e.status()))?;
    let span_len = (plan.span_end - plan.span_start) as usize;
    // SAFETY: we own the freshly allocated span of `span_len` bytes at `base`.
    let span = unsafe { core::slice::from_raw_parts_mut(base.as_ptr(), span_len) };
    span.fill(0);
    for seg in &plan.segments {
        let at = (seg.phys - plan.span_start) as usize;
        let from = seg.file_offset as usize;
        span[at..at + seg.file_size as usize].copy_from_slice(&image[from..from + seg.file_size as usize]);
    }
    Ok(())
}

/// Copies `bytes` into fresh pages of the given type and returns their address.
pub(crate) fn copy_to_pages(bytes: &[u8], ty: u32) -> uefi::Result<u64> {
    let pages = bytes.len().div_ceil(PAGE as usize).max(1);
    let ptr = boot::allocate_pages(AllocateType::AnyPages, MemoryType::custom(ty), pages)?;
    // SAFETY: the allocation is `pages` pages long, at least `bytes.len()` bytes.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
    Ok(ptr.as_ptr() as u64)
}

/// Allocates zeroed memory for `count` values of `T` that outlives boot services.
fn alloc_static<T: Copy>(count: usize) -> Result<&'static mut [T], String> {
    let bytes = core::mem::size_of::<T>() * count;
    let pages = bytes.div_ceil(PAGE as usize).max(1);
    let ptr: NonNull<u8> =
        boot::allocate_pages(AllocateType::AnyPages, MemoryType::custom(uefi_type::BULKHEAD_DATA), pages)
            .map_err(|e| alloc::format!("out of memory for the boot handoff: {e:?}"))?;
    // SAFETY: fresh page-aligned allocation of ≥ `bytes` bytes, zeroed before use; T is
    // a plain-data repr(C) type for which all-zero bytes are overwritten before reads.
    unsafe {
        core::ptr::write_bytes(ptr.as_ptr(), 0, pages * PAGE as usize);
        Ok(core::slice::from_raw_parts_mut(ptr.as_ptr().cast::<T>(), count))
    }
}

fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: T is a repr(C) plain-data type without padding-dependent invariants;
    // reading its bytes is fine.
    unsafe { core::slice::from_raw_parts(values.as_ptr().cast::<u8>(), core::mem::size_of_val(values)) }
}

fn set_gop_mode(wanted: Option<(u32, u32)>) -> Option<FramebufferInfo> {
    let handle = boot::get_handle_for_protocol::<GraphicsOutput>().ok()?;
    let mut gop = boot::open_protocol_exclusive::<GraphicsOutput>(handle).ok()?;
    let modes: Vec<_> = gop.modes().collect();
    let candidates: Vec<Candidate> = modes
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m.info().pixel_format(), GopPixelFormat::Rgb | GopPixelFormat::Bgr))
        .map(|(i, m)| {
            let (w, h) = m.info().resolution();
            Candidate { index: i as u32, width: w as u32, height: h as u32 }
        })
        .collect();
    let choice = gop::choose(&candidates, wanted)?;
    if let Some((w, h)) = wanted
        && (choice.width, choice.height) != (w, h)
    {
        println!("GOP mode {w}x{h} is not offered; using {}x{}", choice.width, choice.height);
    }
    if gop.set_mode(&modes[choice.index as usize]).is_err() {
        println!("GOP refused mode {}x{}; keeping the current one", choice.width, choice.height);
    }
    let info = gop.current_mode_info();
    let format = match info.pixel_format() {
        GopPixelFormat::Rgb => PixelFormat::Rgb,
        GopPixelFormat::Bgr => PixelFormat::Bgr,
        _ => return None,
    };
    let (width, height) = info.resolution();
    let mut fb = gop.frame_buffer();
    Some(FramebufferInfo {
        base: fb.as_mut_ptr() as u64,
        size: fb.size() as u64,
        width: width as u32,
        height: height as u32,
        stride: info.stride() as u32,
        format,
    })
}

fn find_rsdp() -> u64 {
    uefi::system::with_config_table(|entries| {
        let find = |guid| entries.iter().find(|e| e.guid == guid).map(|e| e.address as u64);
        find(ConfigTableEntry::ACPI2_GUID).or_else(|| find(ConfigTableEntry::ACPI_GUID)).unwrap_or(0)
    })
}

fn jump(handoff: Handoff) -> ! {
    let Handoff { entry, boot_info, regions } = handoff;
    // SAFETY: nothing from boot services is used after this point: the BootInfo and the
    // region buffer were allocated before, and we do not return to the firmware.
    let map = unsafe { boot::exit_boot_services(None) };
    let used = memory_map::condense(map.entries().map(|d| (d.phys_start, d.page_count, d.ty.0)), regions);
    boot_info.memory_map = PhysSlice { addr: regions.as_ptr() as u64, len: used as u64 };
    boot_info.tsc_handoff = rdtsc();
    let boot_info_addr = boot_info as *mut BootInfo as u64;
    // SAFETY: `entry` lies inside the validated, loaded hypervisor image; the hypervisor
    // takes RDI = BootInfo and sets up its own stack. We never come back.
    unsafe {
        core::arch::asm!("cli", "jmp {entry}", entry = in(reg) entry, in("rdi") boot_info_addr, options(noreturn))
    }
}

/// Shows why booting failed, on screen and serial, and waits for a key before handing
/// back to the firmware's boot menu.
fn fail(message: &str) -> Status {
    let mut line = String::new();
    let _ = write!(line, "BULKHEAD LOADER ERROR: {message}");
    println!();
    println!("{line}");
    println!("The USB image is damaged or incomplete. Rebuild it with `cargo xtask image` and write it again.");
    println!("Press any key to return to the firmware boot menu.");
    let _ = uefi::system::with_stdin(|stdin| {
        let event = stdin.wait_for_key_event()?;
        boot::wait_for_event(&[event]).map_err(|e| e.to_err_without_payload())?;
        stdin.read_key().map(|_| ())
    });
    Status::LOAD_ERROR
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}
