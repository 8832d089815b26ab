//! The Multiboot information structure (spec 3.3) and what it points at, all in low
//! memory below 640 KiB: the structure, the memory map, the module list, the boot
//! loader's name, then the command line and module strings.
#![forbid(unsafe_code)]

use alloc::borrow::Cow;
use alloc::vec::Vec;

use crate::memory::addr::GuestPhysAddr;

/// EAX on entry (spec 3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// Where the information structure goes (EBX on entry).
pub const INFO_GPA: u64 = 0x1000;
const MMAP_GPA: u64 = 0x1100;
const MODS_GPA: u64 = 0x1200;
const LOADER_NAME_GPA: u64 = 0x1300;
const STRINGS_GPA: u64 = 0x2000;
/// End of the lower memory the map offers as RAM (the rest up to 1 MiB is reserved,
/// as on a PC).
pub const LOW_RAM_END: u64 = 0x9_F000;
const ONE_MIB: u64 = 0x10_0000;

const INFO_BYTES: usize = 0x78;
const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

/// Memory map entry types (spec 3.3).
const MMAP_AVAILABLE: u32 = 1;
const MMAP_RESERVED: u32 = 2;

const LOADER_NAME: &[u8] = b"Bulkhead\0";

fn put32(buf: &mut [u8], offset: usize, value: u32) {
    if let Some(dst) = buf.get_mut(offset..offset.saturating_add(4)) {
        dst.copy_from_slice(&value.to_le_bytes());
    }
}

/// The memory map of a VM with `ram_bytes` of RAM at 0: (base, length, type).
pub fn memory_map(ram_bytes: u64) -> [(u64, u64, u32); 3] {
    [
        (0, LOW_RAM_END, MMAP_AVAILABLE),
        (LOW_RAM_END, ONE_MIB - LOW_RAM_END, MMAP_RESERVED),
        (ONE_MIB, ram_bytes.saturating_sub(ONE_MIB), MMAP_AVAILABLE),
    ]
}

/// Adds the information structure and everything it points at to `writes`.
/// `modules` are (start, end, string) as placed; the caller bounded the strings
/// (`MAX_CMDLINE`, `MAX_MODULE_STRING`, `MAX_MODULES`), so they fit below
/// `LOW_RAM_END` and every address fits 32 bits.
pub fn push_info<'a>(
    writes: &mut Vec<(GuestPhysAddr, &'static str, Cow<'a, [u8]>)>,
    cmdline: &str,
    modules: &[(u64, u64, &str)],
    ram_bytes: u64,
) {
    // NUL-terminated strings, one after another.
    let mut strings = Vec::new();
    let mut string_at = |s: &str| {
        let gpa = STRINGS_GPA.saturating_add(strings.len() as u64);
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        gpa as u32
    };
    let cmdline_gpa = string_at(cmdline);
    let mut mods = Vec::with_capacity(modules.len().saturating_mul(16));
    for &(start, end, string) in modules {
        let mut entry = [0u8; 16];
        put32(&mut entry, 0, start as u32);
        put32(&mut entry, 4, end as u32);
        put32(&mut entry, 8, string_at(string));
        mods.extend_from_slice(&entry);
    }
    let mut mmap = Vec::new();
    for (base, len, kind) in memory_map(ram_bytes) {
        // `size` counts the entry without itself: 20 bytes.
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&base.to_le_bytes());
        mmap.extend_from_slice(&len.to_le_bytes());
        mmap.extend_from_slice(&kind.to_le_bytes());
    }
    let mut info = [0u8; INFO_BYTES];
    put32(&mut info, 0, INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MMAP | INFO_LOADER_NAME);
    put32(&mut info, 4, (LOW_RAM_END / 1024) as u32);
    // mem_upper: KiB from 1 MiB to the first hole (the end of RAM), capped as 32 bits.
    put32(&mut info, 8, (ram_bytes.saturating_sub(ONE_MIB) / 1024).min(u64::from(u32::MAX)) as u32);
    put32(&mut info, 16, cmdline_gpa);
    put32(&mut info, 20, modules.len() as u32);
    put32(&mut info, 24, MODS_GPA as u32);
    put32(&mut info, 44, mmap.len() as u32);
    put32(&mut info, 48, MMAP_GPA as u32);
    put32(&mut info, 64, LOADER_NAME_GPA as u32);
    writes.push((GuestPhysAddr::new(INFO_GPA), "Multiboot information", info.to_vec().into()));
    writes.push((GuestPhysAddr::new(MMAP_GPA), "memory map", mmap.into()));
    writes.push((GuestPhysAddr::new(MODS_GPA), "module list", mods.into()));
    writes.push((GuestPhysAddr::new(LOADER_NAME_GPA), "boot loader name", LOADER_NAME.into()));
    writes.push((GuestPhysAddr::new(STRINGS_GPA), "command line", strings.into()));
}
