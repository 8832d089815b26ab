//! Booting a Multiboot (version 1, spec 0.6.96) kernel: its header, where its bytes go
//! (the header's address fields, or a 64-bit ELF's segments), the boot modules placed
//! page-aligned above it, and the Multiboot information structure with the memory
//! map, command line and modules. Pure: the result is a list of writes plus the 32-bit
//! protected-mode entry state; the VM applies it through checked guest memory.
//!
//! Guest memory of a Multiboot VM is RAM from 0 to its size (RAM starts zeroed, so
//! the bss needs no write). The hypervisor's data sits in the first page-aligned
//! kilobytes below 640 KiB; the kernel must load at or above 1 MiB.
#![forbid(unsafe_code)]

mod header;
mod info;
#[cfg(test)]
mod tests;

use alloc::borrow::Cow;
use alloc::vec::Vec;

pub use header::{Addresses, HEADER_MAGIC, Header, KernelLoad, find, plan_addresses};
pub use info::{BOOTLOADER_MAGIC, INFO_GPA, LOW_RAM_END};

use crate::arch::backend::InitialState;
use crate::memory::addr::{GuestPhysAddr, PAGE_SIZE};

/// Lowest address a kernel may load at.
pub const KERNEL_MIN: u64 = 0x10_0000;
/// Most boot modules one VM can be given.
pub const MAX_MODULES: usize = 16;
/// Longest command line, and longest module string.
pub const MAX_CMDLINE: usize = 4096;
pub const MAX_MODULE_STRING: usize = 255;

/// One boot module: its string (the module's name) and contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module<'a> {
    pub string: &'a str,
    pub data: &'a [u8],
}

/// What the boot needs besides the kernel image.
#[derive(Debug, Clone, Copy)]
pub struct MultibootRequest<'a> {
    pub image: &'a [u8],
    pub cmdline: &'a str,
    pub modules: &'a [Module<'a>],
    pub ram_bytes: u64,
}

/// "Put these bytes at this guest-physical address", in order, then enter at `entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultibootPlan<'a> {
    pub writes: Vec<(GuestPhysAddr, &'static str, Cow<'a, [u8]>)>,
    pub entry: InitialState,
    pub kernel: KernelLoad,
}

/// Why a Multiboot kernel cannot boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultibootError {
    NoHeader,
    TruncatedHeader,
    BadChecksum,
    VideoModeRequired,
    UnsupportedFlags(u32),
    BadAddresses(&'static str),
    OutsideMemory {
        start: u64,
        end: u64,
    },
    EntryOutside(u64),
    /// A 32-bit ELF without the address fields (flag 16).
    Elf32WithoutAddresses,
    Elf(elfload::ElfError),
    TooManyModules(usize),
    CmdlineTooLong(usize),
    ModuleStringTooLong,
    /// The modules do not fit above the kernel.
    ModulesDoNotFit,
    TooSmall {
        ram_bytes: u64,
    },
}

impl core::fmt::Display for MultibootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoHeader => f.write_str("no Multiboot header (magic 0x1BADB002) in the first 8192 bytes"),
            Self::TruncatedHeader => f.write_str("the Multiboot header is cut off"),
            Self::BadChecksum => f.write_str("the Multiboot header's checksum is wrong"),
            Self::VideoModeRequired => f.write_str("the kernel requires a video mode (flag 2), which is not offered"),
            Self::UnsupportedFlags(bits) => write!(f, "the kernel requires unknown Multiboot features {bits:#x}"),
            Self::BadAddresses(why) => write!(f, "bad Multiboot address fields: {why}"),
            Self::OutsideMemory { start, end } => {
                write!(f, "the kernel ({start:#x}..{end:#x}) does not fit the VM's memory above 1 MiB")
            }
            Self::EntryOutside(entry) => write!(f, "the entry point {entry:#x} is not in the loaded kernel"),
            Self::Elf32WithoutAddresses => f.write_str(
                "a 32-bit ELF kernel is only loaded through the header's address fields (flag 16); set them",
            ),
            Self::Elf(e) => write!(f, "the Multiboot kernel's ELF {e}"),
            Self::TooManyModules(n) => write!(f, "{n} boot modules (at most {MAX_MODULES})"),
            Self::CmdlineTooLong(n) => write!(f, "the command line is {n} bytes (at most {MAX_CMDLINE})"),
            Self::ModuleStringTooLong => write!(f, "a module string is longer than {MAX_MODULE_STRING} bytes"),
            Self::ModulesDoNotFit => f.write_str("the boot modules do not fit in the VM's memory above the kernel"),
            Self::TooSmall { ram_bytes } => write!(f, "{ram_bytes} bytes of RAM is too small for a Multiboot kernel"),
        }
    }
}

/// Where the kernel's bytes go: the header's address fields, or a 64-bit ELF's
/// segments (one write each).
fn plan_kernel<'a>(
    image: &'a [u8],
    header: &Header,
    window: core::ops::Range<u64>,
    writes: &mut Vec<(GuestPhysAddr, &'static str, Cow<'a, [u8]>)>,
) -> Result<KernelLoad, MultibootError> {
    if let Some(a) = &header.addresses {
        let k = plan_addresses(image, header.offset, a, window)?;
        let data = image.get(k.file_offset..).and_then(|r| r.get(..k.file_len)).unwrap_or(&[]);
        writes.push((GuestPhysAddr::new(k.load_addr), "kernel", data.into()));
        return Ok(k);
    }
    // EI_CLASS 1: ELF32, which needs the address fields here.
    if image.starts_with(b"\x7fELF") && image.get(4) == Some(&1) {
        return Err(MultibootError::Elf32WithoutAddresses);
    }
    let load = elfload::plan(image, window).map_err(MultibootError::Elf)?;
    // A 32-bit entry: the entry point must be reachable without paging.
    if load.entry > u64::from(u32::MAX) {
        return Err(MultibootError::EntryOutside(load.entry));
    }
    let mut k = KernelLoad { load_addr: u64::MAX, file_offset: 0, file_len: 0, bss_end: 0, entry: load.entry };
    for seg in &load.segments {
        // elfload checked the segment lies inside the file and the window.
        let data = image.get(seg.file_offset as usize..).and_then(|r| r.get(..seg.file_size as usize)).unwrap_or(&[]);
        writes.push((GuestPhysAddr::new(seg.phys), "kernel segment", data.into()));
        k.load_addr = k.load_addr.min(seg.phys);
        k.bss_end = k.bss_end.max(seg.phys.saturating_add(seg.mem_size));
    }
    Ok(k)
}

/// Plans the whole boot.
pub fn plan<'a>(req: &MultibootRequest<'a>) -> Result<MultibootPlan<'a>, MultibootError> {
    if req.ram_bytes < KERNEL_MIN + PAGE_SIZE {
        return Err(MultibootError::TooSmall { ram_bytes: req.ram_bytes });
    }
    // The kernel and modules must be reachable from 32-bit code.
    let top = req.ram_bytes.min(1 << 32);
    if req.modules.len() > MAX_MODULES {
        return Err(MultibootError::TooManyModules(req.modules.len()));
    }
    if req.cmdline.len() > MAX_CMDLINE {
        return Err(MultibootError::CmdlineTooLong(req.cmdline.len()));
    }
    if req.modules.iter().any(|m| m.string.len() > MAX_MODULE_STRING) {
        return Err(MultibootError::ModuleStringTooLong);
    }
    let header = find(req.image)?;
    let mut writes = Vec::new();
    let kernel = plan_kernel(req.image, &header, KERNEL_MIN..top, &mut writes)?;
    // Modules page-aligned above the kernel, in order.
    let mut next = kernel.bss_end.next_multiple_of(PAGE_SIZE);
    let mut placed = Vec::with_capacity(req.modules.len());
    for m in req.modules {
        let end = next.checked_add(m.data.len() as u64).filter(|&e| e <= top).ok_or(MultibootError::ModulesDoNotFit)?;
        writes.push((GuestPhysAddr::new(next), "boot module", m.data.into()));
        placed.push((next, end, m.string));
        next = end.next_multiple_of(PAGE_SIZE);
    }
    info::push_info(&mut writes, req.cmdline, &placed, req.ram_bytes);
    // `kernel.entry` is below 4 GiB (checked by both load paths).
    Ok(MultibootPlan {
        writes,
        entry: InitialState::Protected32 { eip: kernel.entry as u32, eax: BOOTLOADER_MAGIC, ebx: INFO_GPA as u32 },
        kernel,
    })
}
