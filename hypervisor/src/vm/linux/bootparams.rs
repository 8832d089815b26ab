//! The zero page (`struct boot_params`, arch/x86/include/uapi/asm/bootparam.h): how the
//! guest learns its memory map, command line, initrd, framebuffer and ACPI tables.

use alloc::vec;
use alloc::vec::Vec;
use core::mem::{offset_of, size_of};

use super::bzimage::{BzImage, CAN_USE_HEAP, LOADED_HIGH, PROTOCOL_ACPI_RSDP, SETUP_HEADER_OFFSET, SetupHeader};
use super::error::LinuxBootError;
use super::le::{Le, le_fields};
use crate::memory::addr::GuestPhysAddr;

/// `struct screen_info` (include/uapi/linux/screen_info.h), 0x40 bytes.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScreenInfo {
    pub orig_x: u8,             // 0x00
    pub orig_y: u8,             // 0x01
    pub ext_mem_k: u16,         // 0x02
    pub orig_video_page: u16,   // 0x04
    pub orig_video_mode: u8,    // 0x06
    pub orig_video_cols: u8,    // 0x07
    pub flags: u8,              // 0x08
    pub unused2: u8,            // 0x09
    pub orig_video_ega_bx: u16, // 0x0a
    pub unused3: u16,           // 0x0c
    pub orig_video_lines: u8,   // 0x0e
    pub orig_video_is_vga: u8,  // 0x0f
    pub orig_video_points: u16, // 0x10
    pub lfb_width: u16,         // 0x12
    pub lfb_height: u16,        // 0x14
    pub lfb_depth: u16,         // 0x16
    pub lfb_base: u32,          // 0x18
    pub lfb_size: u32,          // 0x1c
    pub cl_magic: u16,          // 0x20
    pub cl_offset: u16,         // 0x22
    pub lfb_linelength: u16,    // 0x24
    pub red_size: u8,           // 0x26
    pub red_pos: u8,            // 0x27
    pub green_size: u8,         // 0x28
    pub green_pos: u8,          // 0x29
    pub blue_size: u8,          // 0x2a
    pub blue_pos: u8,           // 0x2b
    pub rsvd_size: u8,          // 0x2c
    pub rsvd_pos: u8,           // 0x2d
    pub vesapm_seg: u16,        // 0x2e
    pub vesapm_off: u16,        // 0x30
    pub pages: u16,             // 0x32
    pub vesa_attributes: u16,   // 0x34
    pub capabilities: u32,      // 0x36
    pub ext_lfb_base: u32,      // 0x3a
    pub reserved: [u8; 2],      // 0x3e
}

le_fields!(ScreenInfo {
    orig_x,
    orig_y,
    ext_mem_k,
    orig_video_page,
    orig_video_mode,
    orig_video_cols,
    flags,
    unused2,
    orig_video_ega_bx,
    unused3,
    orig_video_lines,
    orig_video_is_vga,
    orig_video_points,
    lfb_width,
    lfb_height,
    lfb_depth,
    lfb_base,
    lfb_size,
    cl_magic,
    cl_offset,
    lfb_linelength,
    red_size,
    red_pos,
    green_size,
    green_pos,
    blue_size,
    blue_pos,
    rsvd_size,
    rsvd_pos,
    vesapm_seg,
    vesapm_off,
    pages,
    vesa_attributes,
    capabilities,
    ext_lfb_base,
});

/// `orig_video_isVGA` for a firmware (EFI GOP) framebuffer: efifb/simpledrm bind to it.
pub const VIDEO_TYPE_EFI: u8 = 0x70;
pub const VIDEO_CAPABILITY_SKIP_QUIRKS: u32 = 1 << 0;
pub const VIDEO_CAPABILITY_64BIT_BASE: u32 = 1 << 1;

/// `struct boot_e820_entry`, 20 bytes.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootE820Entry {
    pub addr: u64,
    pub size: u64,
    pub typ: u32,
}

le_fields!(BootE820Entry { addr, size, typ });

/// e820 types Linux understands (arch/x86/include/asm/e820/types.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    Ram = 1,
    Reserved = 2,
    Acpi = 3,
    Nvs = 4,
    Unusable = 5,
}

impl BootE820Entry {
    pub fn new(addr: GuestPhysAddr, size: u64, typ: E820Type) -> Self {
        BootE820Entry { addr: addr.raw(), size, typ: typ as u32 }
    }

    pub(super) fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
}

pub const E820_MAX_ENTRIES_ZEROPAGE: usize = 128;
pub const BOOT_PARAMS_SIZE: usize = 4096;

/// `struct boot_params`. Only the fields a 64-bit loader sets are named; the rest is
/// legacy BIOS data that stays zero.
#[repr(C, packed)]
pub struct BootParams {
    pub screen_info: ScreenInfo,     // 0x000
    _apm_bios_info: [u8; 0x14],      // 0x040
    _pad2: [u8; 4],                  // 0x054
    pub tboot_addr: u64,             // 0x058
    _ist_info: [u8; 0x10],           // 0x060
    pub acpi_rsdp_addr: u64,         // 0x070
    _pad3: [u8; 8],                  // 0x078
    _hd0_info: [u8; 16],             // 0x080
    _hd1_info: [u8; 16],             // 0x090
    _sys_desc_table: [u8; 0x10],     // 0x0a0
    _olpc_ofw_header: [u8; 0x10],    // 0x0b0
    pub ext_ramdisk_image: u32,      // 0x0c0
    pub ext_ramdisk_size: u32,       // 0x0c4
    pub ext_cmd_line_ptr: u32,       // 0x0c8
    _pad4: [u8; 112],                // 0x0cc
    pub cc_blob_address: u32,        // 0x13c
    _edid_info: [u8; 0x80],          // 0x140
    _efi_info: [u8; 0x20],           // 0x1c0
    pub alt_mem_k: u32,              // 0x1e0
    pub scratch: u32,                // 0x1e4
    pub e820_entries: u8,            // 0x1e8
    pub eddbuf_entries: u8,          // 0x1e9
    pub edd_mbr_sig_buf_entries: u8, // 0x1ea
    pub kbd_status: u8,              // 0x1eb
    pub secure_boot: u8,             // 0x1ec
    _pad5: [u8; 2],                  // 0x1ed
    /// Non-zero tells the kernel a loader copied garbage in; we build from zeros.
    pub sentinel: u8, // 0x1ef
    _pad6: [u8; 1],                  // 0x1f0
    pub hdr: SetupHeader,            // 0x1f1
    _pad7: [u8; 0x290 - 0x1f1 - size_of::<SetupHeader>()],
    _edd_mbr_sig_buffer: [u32; 16],                             // 0x290
    pub e820_table: [BootE820Entry; E820_MAX_ENTRIES_ZEROPAGE], // 0x2d0
    _pad8: [u8; 48],                                            // 0xcd0
    _eddbuf: [u8; 6 * 82],                                      // 0xd00
    _pad9: [u8; 276],                                           // 0xeec
}

impl core::fmt::Debug for BootParams {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BootParams").finish_non_exhaustive()
    }
}

const _: () = {
    assert!(size_of::<ScreenInfo>() == 0x40);
    assert!(offset_of!(ScreenInfo, orig_video_is_vga) == 0x0f);
    assert!(offset_of!(ScreenInfo, lfb_base) == 0x18);
    assert!(offset_of!(ScreenInfo, lfb_linelength) == 0x24);
    assert!(offset_of!(ScreenInfo, capabilities) == 0x36);
    assert!(offset_of!(ScreenInfo, ext_lfb_base) == 0x3a);
    assert!(size_of::<BootE820Entry>() == 20);
    assert!(offset_of!(BootParams, screen_info) == 0x000);
    assert!(offset_of!(BootParams, tboot_addr) == 0x058);
    assert!(offset_of!(BootParams, acpi_rsdp_addr) == 0x070);
    assert!(offset_of!(BootParams, ext_ramdisk_image) == 0x0c0);
    assert!(offset_of!(BootParams, ext_cmd_line_ptr) == 0x0c8);
    assert!(offset_of!(BootParams, cc_blob_address) == 0x13c);
    assert!(offset_of!(BootParams, e820_entries) == 0x1e8);
    assert!(offset_of!(BootParams, sentinel) == 0x1ef);
    assert!(offset_of!(BootParams, hdr) == SETUP_HEADER_OFFSET);
    assert!(offset_of!(BootParams, e820_table) == 0x2d0);
    assert!(size_of::<BootParams>() == BOOT_PARAMS_SIZE);
};

/// How pixels are laid out in a 32-bit framebuffer word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelLayout {
    /// Blue in the lowest byte (GOP `PixelBlueGreenRedReserved8BitPerColor`), the common one.
    Bgrx,
    /// Red in the lowest byte (GOP `PixelRedGreenBlueReserved8BitPerColor`).
    Rgbx,
}

/// A guest framebuffer in guest RAM, presented to Linux as an EFI (GOP) framebuffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framebuffer {
    pub base: GuestPhysAddr,
    pub width: u32,
    pub height: u32,
    /// Bytes per scanline.
    pub stride: u32,
    pub layout: PixelLayout,
}

impl Framebuffer {
    /// The byte size efifb maps: `lfb_linelength * lfb_height`, as the EFI stub sets it.
    pub fn size(&self) -> u64 {
        // The product of two u32 values fits a u64.
        u64::from(self.stride).wrapping_mul(u64::from(self.height))
    }

    pub fn screen_info(&self) -> Result<ScreenInfo, LinuxBootError> {
        let bad = LinuxBootError::BadFramebuffer;
        let width = u16::try_from(self.width).map_err(|_| bad("width over 65535"))?;
        let height = u16::try_from(self.height).map_err(|_| bad("height over 65535"))?;
        let stride = u16::try_from(self.stride).map_err(|_| bad("stride over 65535 bytes"))?;
        if width == 0 || height == 0 {
            return Err(bad("zero width or height"));
        }
        if u64::from(stride) < u64::from(width) * 4 {
            return Err(bad("stride shorter than a 32-bit scanline"));
        }
        let size = u32::try_from(self.size()).map_err(|_| bad("over 4 GiB"))?;
        let base = self.base.raw();
        if !self.base.is_aligned(4096) {
            return Err(bad("base not page aligned"));
        }
        let (red_pos, blue_pos) = match self.layout {
            PixelLayout::Bgrx => (16, 0),
            PixelLayout::Rgbx => (0, 16),
        };
        let mut capabilities = VIDEO_CAPABILITY_SKIP_QUIRKS;
        if base >> 32 != 0 {
            capabilities |= VIDEO_CAPABILITY_64BIT_BASE;
        }
        Ok(ScreenInfo {
            orig_video_is_vga: VIDEO_TYPE_EFI,
            lfb_width: width,
            lfb_height: height,
            lfb_depth: 32,
            lfb_base: base as u32,
            ext_lfb_base: (base >> 32) as u32,
            lfb_size: size,
            lfb_linelength: stride,
            red_size: 8,
            red_pos,
            green_size: 8,
            green_pos: 8,
            blue_size: 8,
            blue_pos,
            rsvd_size: 8,
            rsvd_pos: 24,
            capabilities,
            ..ScreenInfo::default()
        })
    }
}

/// Sorts the map, merges touching entries of the same type and rejects overlaps, empty
/// entries and maps the zero page cannot hold.
pub fn normalise_e820(entries: &[BootE820Entry]) -> Result<Vec<BootE820Entry>, LinuxBootError> {
    let mut sorted: Vec<BootE820Entry> = entries.to_vec();
    sorted.sort_by_key(|e| e.addr);
    let mut out: Vec<BootE820Entry> = Vec::with_capacity(sorted.len());
    for e in sorted {
        if e.size == 0 || e.addr.checked_add(e.size).is_none() {
            return Err(LinuxBootError::EmptyE820Entry { addr: e.addr });
        }
        if let Some(last) = out.last_mut() {
            if e.addr < last.end() {
                return Err(LinuxBootError::OverlappingE820 { first: last.addr, second: e.addr });
            }
            if e.addr == last.end() && e.typ == last.typ {
                // `e` starts at `last`'s end and its own end did not overflow (checked
                // above), so the merged size fits.
                last.size = last.size.wrapping_add(e.size);
                continue;
            }
        }
        out.push(e);
    }
    if out.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(LinuxBootError::TooManyE820Entries { count: out.len() });
    }
    Ok(out)
}

/// What goes into the zero page besides the image's own setup header.
#[derive(Debug, Clone, Copy)]
pub struct BootParamsInput<'a> {
    pub e820: &'a [BootE820Entry],
    pub cmdline: GuestPhysAddr,
    /// (address, size); size 0 means none.
    pub initrd: (GuestPhysAddr, u64),
    pub framebuffer: Option<Framebuffer>,
    pub acpi_rsdp: Option<GuestPhysAddr>,
}

/// The kernel's heap below the setup code; unused by the 64-bit entry, but boot.rst asks
/// for `CAN_USE_HEAP` and a sane `heap_end_ptr` from every modern loader.
const HEAP_END_PTR: u16 = 0xfe00;

/// Builds the 4 KiB zero page.
pub fn build_boot_params(kernel: &BzImage<'_>, input: &BootParamsInput<'_>) -> Result<Vec<u8>, LinuxBootError> {
    let mut page = vec![0u8; BOOT_PARAMS_SIZE];
    let e820 = normalise_e820(input.e820)?;
    let version = kernel.header.version;
    // Start from the image's header, as boot.rst asks, then set the loader's fields.
    let mut raw_hdr = [0u8; size_of::<SetupHeader>()];
    let theirs = kernel.header_bytes();
    for (dst, src) in raw_hdr.iter_mut().zip(theirs) {
        *dst = *src;
    }
    let mut hdr = SetupHeader::read_le(&raw_hdr);
    hdr.type_of_loader = 0xff; // "undefined" loader ID
    hdr.loadflags = (hdr.loadflags | LOADED_HIGH | CAN_USE_HEAP) & !super::bzimage::KEEP_SEGMENTS;
    hdr.heap_end_ptr = HEAP_END_PTR;
    let cmdline = input.cmdline.raw();
    hdr.cmd_line_ptr = cmdline as u32;
    let (initrd, initrd_size) = (input.initrd.0.raw(), input.initrd.1);
    if initrd_size != 0 {
        hdr.ramdisk_image = initrd as u32;
        hdr.ramdisk_size = initrd_size as u32;
    }
    hdr.write_le(page.get_mut(SETUP_HEADER_OFFSET..).unwrap_or_default());
    ((cmdline >> 32) as u32).write(&mut page, offset_of!(BootParams, ext_cmd_line_ptr));
    if initrd_size != 0 {
        ((initrd >> 32) as u32).write(&mut page, offset_of!(BootParams, ext_ramdisk_image));
        ((initrd_size >> 32) as u32).write(&mut page, offset_of!(BootParams, ext_ramdisk_size));
    }
    if let Some(fb) = input.framebuffer {
        fb.screen_info()?.write_le(page.get_mut(offset_of!(BootParams, screen_info)..).unwrap_or_default());
    }
    if let Some(rsdp) = input.acpi_rsdp {
        if version < PROTOCOL_ACPI_RSDP {
            return Err(LinuxBootError::RsdpNeedsProtocol214 { version });
        }
        rsdp.raw().write(&mut page, offset_of!(BootParams, acpi_rsdp_addr));
    }
    (e820.len() as u8).write(&mut page, offset_of!(BootParams, e820_entries));
    let table = offset_of!(BootParams, e820_table);
    // `normalise_e820` capped the entries at the table's length.
    let slots = page.get_mut(table..).unwrap_or_default().chunks_exact_mut(size_of::<BootE820Entry>());
    for (slot, e) in slots.zip(&e820) {
        e.write_le(slot);
    }
    Ok(page)
}
