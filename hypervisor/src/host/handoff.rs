//! What the UEFI loader left in memory for the hypervisor: the `BootInfo`, the memory
//! map and the boot modules. The loader marks all of it as its own memory type, the
//! hypervisor never frees or writes it, and it is identity mapped, so views of it live
//! as long as the hypervisor. This is the only place that turns those addresses into
//! references.

use bulkhead_abi::{BootInfo, MemoryRegion, Module};

/// The loader's `BootInfo`, or `None` when the magic, version or size is wrong (a
/// loader built from another version).
pub fn boot_info(addr: u64) -> Option<&'static BootInfo> {
    if addr == 0 || !addr.is_multiple_of(core::mem::align_of::<BootInfo>() as u64) {
        return None;
    }
    // SAFETY: the loader passes the physical address of a BootInfo in loader memory,
    // identity mapped and never reused; only after the magic/version check below is
    // any other field trusted.
    let info: &'static BootInfo = unsafe { &*(addr as *const BootInfo) };
    info.is_valid().then_some(info)
}

/// The condensed physical memory map.
pub fn memory_map(info: &BootInfo) -> &'static [MemoryRegion] {
    if info.memory_map.addr == 0 {
        return &[];
    }
    // SAFETY: the loader wrote `len` MemoryRegions at `addr` in loader memory, which the
    // hypervisor never frees; the slice is only read.
    unsafe { core::slice::from_raw_parts(info.memory_map.addr as *const MemoryRegion, info.memory_map.len as usize) }
}

/// The boot modules' descriptors.
pub fn modules(info: &BootInfo) -> &'static [Module] {
    if info.modules.addr == 0 || info.modules.len == 0 {
        return &[];
    }
    // SAFETY: the loader wrote `len` Module records at `addr` in loader memory, which the
    // hypervisor never frees or writes; the records are plain data.
    unsafe { core::slice::from_raw_parts(info.modules.addr as *const Module, info.modules.len as usize) }
}

/// A boot module's contents, by name.
pub fn module_data(modules: &'static [Module], name: &str) -> Option<&'static [u8]> {
    let m = modules.iter().find(|m| m.name() == name)?;
    // SAFETY: the loader copied the module's `len` bytes to `addr` (loader memory, kept
    // and never written by the hypervisor) and verified its SHA-256.
    Some(unsafe { core::slice::from_raw_parts(m.addr as *const u8, m.len as usize) })
}

/// The bytes of a loader-filled [`PhysSlice`] (the UEFI variables it read); empty for
/// an EMPTY slice or one longer than `max_len` (a loader bug, not trusted).
pub fn phys_bytes(slice: bulkhead_abi::PhysSlice, max_len: usize) -> &'static [u8] {
    let Ok(len) = usize::try_from(slice.len) else { return &[] };
    if slice.addr == 0 || len == 0 || len > max_len {
        return &[];
    }
    // SAFETY: the loader copied the variable into loader-data pages, which the
    // hypervisor keeps (MemoryKind::Loader) and identity-maps; nothing writes them.
    unsafe { core::slice::from_raw_parts(slice.addr as *const u8, len) }
}
