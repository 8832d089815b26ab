//! The loader → hypervisor handoff. The loader fills a [`BootInfo`] in loader-data memory
//! and passes its physical address in RDI; all pointers in it are physical addresses
//! (the hypervisor starts on the loader's identity map).

/// "BULKHEAD" in little-endian bytes; guards against jumping in with garbage.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"BULKHEAD");
/// Bumped whenever the layout of [`BootInfo`] or anything it points to changes.
pub const BOOT_INFO_VERSION: u32 = 2;

/// A counted array in physical memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysSlice {
    pub addr: u64,
    pub len: u64,
}

impl PhysSlice {
    pub const EMPTY: PhysSlice = PhysSlice { addr: 0, len: 0 };
}

/// What a physical memory range may be used for, condensed from the UEFI memory map.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Free RAM.
    Usable = 1,
    /// UEFI boot-services code/data: free once the hypervisor runs on its own page
    /// tables and stack (the loader's page tables and stack live here until then).
    BootServices = 2,
    /// Loader data: the BootInfo, the memory map and the boot modules. Kept.
    Loader = 3,
    /// The hypervisor's own loaded image.
    Hypervisor = 4,
    AcpiReclaimable = 5,
    AcpiNvs = 6,
    /// UEFI runtime services code/data; never touched.
    RuntimeServices = 7,
    Mmio = 8,
    Reserved = 9,
    Unusable = 10,
    Persistent = 11,
}

/// One range of the physical memory map. Ranges are sorted and do not overlap.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub len: u64,
    pub kind: MemoryKind,
    pub _reserved: u32,
}

impl MemoryRegion {
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// How a framebuffer pixel's 32 bits are laid out.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Byte 0 red, byte 1 green, byte 2 blue (UEFI `PixelRedGreenBlueReserved8BitPerColor`).
    Rgb = 0,
    /// Byte 0 blue, byte 1 green, byte 2 red (UEFI `PixelBlueGreenRedReserved8BitPerColor`).
    Bgr = 1,
}

/// The linear framebuffer the loader set up through GOP.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramebufferInfo {
    pub base: u64,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    /// Pixels per scan line (≥ width).
    pub stride: u32,
    pub format: PixelFormat,
}

/// A file the loader read from the ESP and left in loader memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    /// The module's name from the manifest, NUL-padded UTF-8.
    pub name: [u8; 32],
    pub addr: u64,
    pub len: u64,
}

impl Module {
    pub fn name(&self) -> &str {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..end]).unwrap_or("<non-utf8>")
    }

    /// Builds the fixed-size name field, truncating on a character boundary.
    pub fn encode_name(name: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut n = 0;
        for (i, c) in name.char_indices() {
            if i + c.len_utf8() > out.len() {
                break;
            }
            n = i + c.len_utf8();
        }
        out[..n].copy_from_slice(&name.as_bytes()[..n]);
        out
    }
}

/// Everything the hypervisor learns from the loader.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    pub magic: u64,
    pub version: u32,
    /// `size_of::<BootInfo>()` as the loader saw it.
    pub size: u32,
    /// `[MemoryRegion]`, sorted by address.
    pub memory_map: PhysSlice,
    /// Present when `framebuffer_present != 0`.
    pub framebuffer: FramebufferInfo,
    pub framebuffer_present: u32,
    pub _reserved: u32,
    /// ACPI 2.0+ RSDP (or the 1.0 one when no 2.0 exists); 0 when the firmware had none.
    pub rsdp: u64,
    /// `[Module]`.
    pub modules: PhysSlice,
    /// Where the hypervisor image was loaded: [start, start+len).
    pub hypervisor_image: PhysSlice,
    /// TSC when the loader started and right before it jumped to the hypervisor,
    /// for boot-time accounting.
    pub tsc_loader_start: u64,
    pub tsc_handoff: u64,
    /// The manifest's `cmdline` (NUL-padded), options for the hypervisor.
    pub cmdline: [u8; 256],
    /// Where the loader was started from: one of the `BOOT_MEDIUM_*` values.
    pub boot_medium: u32,
    pub _reserved2: u32,
    /// The UEFI system table (physical address), for the runtime services the
    /// hypervisor calls to persist policy state; 0 when unavailable.
    pub uefi_system_table: u64,
    /// The policy state the loader read from UEFI variables (see [`crate::nv`]), each
    /// variable's bytes as found, or EMPTY when absent.
    pub nv_policy_state: PhysSlice,
    pub nv_policy_bundle: PhysSlice,
}

/// [`BootInfo::boot_medium`]: the loader could not tell.
pub const BOOT_MEDIUM_UNKNOWN: u32 = 0;
/// A USB stick (or other USB mass storage).
pub const BOOT_MEDIUM_STICK: u32 = 1;
/// The laptop's internal NVMe disk.
pub const BOOT_MEDIUM_NVME: u32 = 2;
/// The laptop's internal SATA disk.
pub const BOOT_MEDIUM_SATA: u32 = 3;

impl BootInfo {
    pub fn is_valid(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC
            && self.version == BOOT_INFO_VERSION
            && self.size as usize == core::mem::size_of::<BootInfo>()
    }

    pub fn cmdline(&self) -> &str {
        let end = self.cmdline.iter().position(|&b| b == 0).unwrap_or(self.cmdline.len());
        core::str::from_utf8(&self.cmdline[..end]).unwrap_or("")
    }
}

// Layout is ABI: the loader and the hypervisor are built separately.
const _: () = assert!(core::mem::size_of::<MemoryRegion>() == 24);
const _: () = assert!(core::mem::size_of::<FramebufferInfo>() == 32);
const _: () = assert!(core::mem::size_of::<Module>() == 48);
const _: () = assert!(core::mem::offset_of!(BootInfo, memory_map) == 16);
const _: () = assert!(core::mem::offset_of!(BootInfo, rsdp) == 72);
const _: () = assert!(core::mem::offset_of!(BootInfo, boot_medium) == 384);
const _: () = assert!(core::mem::size_of::<BootInfo>() == 432);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_round_trip_and_truncate_on_char_boundary() {
        let m = Module { name: Module::encode_name("payload-checks"), addr: 0, len: 0 };
        assert_eq!(m.name(), "payload-checks");
        let long = "é".repeat(20); // 40 bytes; 16 chars fit in 32 bytes
        let m = Module { name: Module::encode_name(&long), addr: 0, len: 0 };
        assert_eq!(m.name(), "é".repeat(16));
    }

    #[test]
    fn magic_spells_bulkhead() {
        assert_eq!(&BOOT_INFO_MAGIC.to_le_bytes(), b"BULKHEAD");
    }
}
