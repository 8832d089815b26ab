//! The bzImage file: the real-mode setup sectors with the setup header at 0x1F1,
//! followed by the protected-mode kernel (boot.rst, "THE REAL-MODE KERNEL HEADER").

use core::mem::{offset_of, size_of};

use super::error::LinuxBootError;
use super::le::{Le, le_fields};

/// `struct setup_header` from arch/x86/include/uapi/asm/bootparam.h. Offsets in the
/// comments are within the zero page (and the image), which starts it at 0x1F1.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetupHeader {
    pub setup_sects: u8,            // 0x1f1
    pub root_flags: u16,            // 0x1f2
    pub syssize: u32,               // 0x1f4
    pub ram_size: u16,              // 0x1f8
    pub vid_mode: u16,              // 0x1fa
    pub root_dev: u16,              // 0x1fc
    pub boot_flag: u16,             // 0x1fe
    pub jump: u16,                  // 0x200
    pub header: u32,                // 0x202
    pub version: u16,               // 0x206
    pub realmode_swtch: u32,        // 0x208
    pub start_sys_seg: u16,         // 0x20c
    pub kernel_version: u16,        // 0x20e
    pub type_of_loader: u8,         // 0x210
    pub loadflags: u8,              // 0x211
    pub setup_move_size: u16,       // 0x212
    pub code32_start: u32,          // 0x214
    pub ramdisk_image: u32,         // 0x218
    pub ramdisk_size: u32,          // 0x21c
    pub bootsect_kludge: u32,       // 0x220
    pub heap_end_ptr: u16,          // 0x224
    pub ext_loader_ver: u8,         // 0x226
    pub ext_loader_type: u8,        // 0x227
    pub cmd_line_ptr: u32,          // 0x228
    pub initrd_addr_max: u32,       // 0x22c
    pub kernel_alignment: u32,      // 0x230
    pub relocatable_kernel: u8,     // 0x234
    pub min_alignment: u8,          // 0x235
    pub xloadflags: u16,            // 0x236
    pub cmdline_size: u32,          // 0x238
    pub hardware_subarch: u32,      // 0x23c
    pub hardware_subarch_data: u64, // 0x240
    pub payload_offset: u32,        // 0x248
    pub payload_length: u32,        // 0x24c
    pub setup_data: u64,            // 0x250
    pub pref_address: u64,          // 0x258
    pub init_size: u32,             // 0x260
    pub handover_offset: u32,       // 0x264
    pub kernel_info_offset: u32,    // 0x268
}

le_fields!(SetupHeader {
    setup_sects,
    root_flags,
    syssize,
    ram_size,
    vid_mode,
    root_dev,
    boot_flag,
    jump,
    header,
    version,
    realmode_swtch,
    start_sys_seg,
    kernel_version,
    type_of_loader,
    loadflags,
    setup_move_size,
    code32_start,
    ramdisk_image,
    ramdisk_size,
    bootsect_kludge,
    heap_end_ptr,
    ext_loader_ver,
    ext_loader_type,
    cmd_line_ptr,
    initrd_addr_max,
    kernel_alignment,
    relocatable_kernel,
    min_alignment,
    xloadflags,
    cmdline_size,
    hardware_subarch,
    hardware_subarch_data,
    payload_offset,
    payload_length,
    setup_data,
    pref_address,
    init_size,
    handover_offset,
    kernel_info_offset,
});

/// Where the setup header starts, in the image and in the zero page.
pub const SETUP_HEADER_OFFSET: usize = 0x1f1;

/// Only used on field offsets in the layout asserts below, far from overflow.
const fn at(off: usize) -> usize {
    off.wrapping_add(SETUP_HEADER_OFFSET)
}

/// One past the last setup header byte.
const SETUP_HEADER_END: usize = SETUP_HEADER_OFFSET + size_of::<SetupHeader>();

const _: () = {
    assert!(at(offset_of!(SetupHeader, boot_flag)) == 0x1fe);
    assert!(at(offset_of!(SetupHeader, header)) == 0x202);
    assert!(at(offset_of!(SetupHeader, version)) == 0x206);
    assert!(at(offset_of!(SetupHeader, type_of_loader)) == 0x210);
    assert!(at(offset_of!(SetupHeader, loadflags)) == 0x211);
    assert!(at(offset_of!(SetupHeader, ramdisk_image)) == 0x218);
    assert!(at(offset_of!(SetupHeader, heap_end_ptr)) == 0x224);
    assert!(at(offset_of!(SetupHeader, cmd_line_ptr)) == 0x228);
    assert!(at(offset_of!(SetupHeader, initrd_addr_max)) == 0x22c);
    assert!(at(offset_of!(SetupHeader, kernel_alignment)) == 0x230);
    assert!(at(offset_of!(SetupHeader, xloadflags)) == 0x236);
    assert!(at(offset_of!(SetupHeader, cmdline_size)) == 0x238);
    assert!(at(offset_of!(SetupHeader, pref_address)) == 0x258);
    assert!(at(offset_of!(SetupHeader, init_size)) == 0x260);
    assert!(at(offset_of!(SetupHeader, kernel_info_offset)) == 0x268);
    assert!(size_of::<SetupHeader>() == 0x26c - SETUP_HEADER_OFFSET);
};

/// "HdrS", little-endian.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
pub const BOOT_FLAG: u16 = 0xaa55;
/// 2.12 added `XLF_KERNEL_64`, the flag that promises the 64-bit entry at +0x200.
pub const MIN_PROTOCOL: u16 = 0x020c;
pub const PROTOCOL_ACPI_RSDP: u16 = 0x020e;

/// `loadflags` bits.
pub const LOADED_HIGH: u8 = 1 << 0;
pub const KEEP_SEGMENTS: u8 = 1 << 6;
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags` bits.
pub const XLF_KERNEL_64: u16 = 1 << 0;
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;

/// A validated bzImage, borrowing the file.
#[derive(Debug, Clone, Copy)]
pub struct BzImage<'a> {
    image: &'a [u8],
    pub header: SetupHeader,
    /// The header bytes the image itself defines (boot.rst: 0x202 + the byte at 0x201).
    header_len: usize,
    setup_size: usize,
}

impl<'a> BzImage<'a> {
    pub fn parse(image: &'a [u8]) -> Result<Self, LinuxBootError> {
        let raw =
            image.get(SETUP_HEADER_OFFSET..SETUP_HEADER_END).ok_or(LinuxBootError::TooSmall { len: image.len() })?;
        let header = SetupHeader::read_le(raw);
        if header.boot_flag != BOOT_FLAG {
            return Err(LinuxBootError::NoBootFlag { found: header.boot_flag });
        }
        if header.header != HDRS_MAGIC {
            return Err(LinuxBootError::NotBzImage { magic: header.header });
        }
        if header.version < MIN_PROTOCOL {
            return Err(LinuxBootError::ProtocolTooOld { version: header.version, needed: MIN_PROTOCOL });
        }
        if header.loadflags & LOADED_HIGH == 0 {
            return Err(LinuxBootError::NotLoadedHigh);
        }
        if header.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LinuxBootError::No64BitEntry);
        }
        // The jump at 0x200 is a short jmp; its displacement byte ends the header.
        // 0x202 - 0x1f1 plus one byte: no wrap.
        let header_len = (0x202 - SETUP_HEADER_OFFSET)
            .wrapping_add(usize::from(u8::read(image, 0x201)))
            .min(size_of::<SetupHeader>());
        let sects = if header.setup_sects == 0 { 4 } else { header.setup_sects };
        // At most 256 sectors of 512 bytes; a u32 times 16 and that sum fit a u64: no wrap.
        let setup_size = usize::from(sects).wrapping_add(1).wrapping_mul(512);
        let payload = u64::from(header.syssize).wrapping_mul(16);
        let needed = (setup_size as u64).wrapping_add(payload);
        if image.len() < setup_size || (image.len() as u64) < needed {
            return Err(LinuxBootError::Truncated { needed, len: image.len() as u64 });
        }
        let alignment = header.kernel_alignment;
        if !alignment.is_power_of_two() {
            return Err(LinuxBootError::BadAlignment { alignment });
        }
        // The image is at least `setup_size` long (checked above), so this never clamps.
        let kernel_len = image.len().saturating_sub(setup_size) as u64;
        if u64::from(header.init_size) < kernel_len {
            return Err(LinuxBootError::BadInitSize { init_size: header.init_size, payload: kernel_len });
        }
        Ok(BzImage { image, header, header_len, setup_size })
    }

    /// The protected-mode kernel: what is loaded at the load address.
    pub fn kernel(&self) -> &'a [u8] {
        self.image.get(self.setup_size..).unwrap_or_default()
    }

    /// The setup header as the image defines it: fields past `header_len` (from a newer
    /// protocol than the image speaks) stay zero.
    pub fn header_bytes(&self) -> &'a [u8] {
        self.image.get(SETUP_HEADER_OFFSET..).and_then(|h| h.get(..self.header_len)).unwrap_or_default()
    }

    pub fn setup_size(&self) -> usize {
        self.setup_size
    }

    pub fn protocol(&self) -> (u8, u8) {
        let v = self.header.version;
        ((v >> 8) as u8, v as u8)
    }

    /// The kernel accepts an initrd (and itself) above 4 GiB.
    pub fn can_load_above_4g(&self) -> bool {
        self.header.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0
    }

    pub fn relocatable(&self) -> bool {
        self.header.relocatable_kernel != 0
    }

    /// Memory the kernel needs from its load address while it decompresses itself.
    pub fn init_size(&self) -> u64 {
        u64::from(self.header.init_size)
    }

    /// The kernel's maximum command line length, without the NUL. Protocols before
    /// 2.06 (which this module rejects anyway) had a fixed 255.
    pub fn cmdline_max(&self) -> u64 {
        u64::from(self.header.cmdline_size)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A synthetic image shaped like Debian's: protocol 2.15, relocatable, 64-bit.
    pub(crate) fn synthetic(kernel_len: usize) -> Vec<u8> {
        let setup_sects = 27u8;
        let setup = (usize::from(setup_sects) + 1) * 512;
        let mut img = vec![0u8; setup + kernel_len];
        let h = SetupHeader {
            setup_sects,
            boot_flag: BOOT_FLAG,
            jump: 0x6aeb, // jmp +0x6a: header ends at 0x26c
            header: HDRS_MAGIC,
            version: 0x020f,
            loadflags: LOADED_HIGH,
            syssize: (kernel_len / 16) as u32,
            initrd_addr_max: 0x7fff_ffff,
            kernel_alignment: 0x20_0000,
            relocatable_kernel: 1,
            min_alignment: 21,
            xloadflags: XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G,
            cmdline_size: 2047,
            pref_address: 0x100_0000,
            init_size: (kernel_len as u32 + 0x10_0000).next_multiple_of(4096),
            ..SetupHeader::default()
        };
        h.write_le(&mut img[SETUP_HEADER_OFFSET..]);
        for (i, b) in img[setup..].iter_mut().enumerate() {
            *b = i as u8;
        }
        img
    }

    #[test]
    fn parses_synthetic_header() {
        let img = synthetic(0x4000);
        let bz = BzImage::parse(&img).unwrap();
        assert_eq!(bz.protocol(), (2, 15));
        assert_eq!(bz.setup_size(), 28 * 512);
        assert_eq!(bz.kernel().len(), 0x4000);
        assert_eq!(bz.kernel()[1], 1);
        assert_eq!(bz.header_bytes().len(), 0x26c - 0x1f1);
        assert!(bz.relocatable());
        assert_eq!({ bz.header.pref_address }, 0x100_0000);
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let mut img = synthetic(0x2000);
        let kernel = img[28 * 512..].to_vec();
        img.truncate(5 * 512);
        img.extend_from_slice(&kernel);
        img[SETUP_HEADER_OFFSET] = 0;
        let bz = BzImage::parse(&img).unwrap();
        assert_eq!(bz.setup_size(), 5 * 512);
        assert_eq!(bz.kernel(), kernel.as_slice());
    }

    #[test]
    fn rejects_bad_images_with_reasons() {
        let good = synthetic(0x2000);
        let with = |f: &dyn Fn(&mut SetupHeader)| {
            let mut img = good.clone();
            let mut h = SetupHeader::read_le(&img[SETUP_HEADER_OFFSET..]);
            f(&mut h);
            h.write_le(&mut img[SETUP_HEADER_OFFSET..]);
            BzImage::parse(&img).unwrap_err()
        };
        use LinuxBootError::*;
        assert_eq!(BzImage::parse(&good[..0x200]).unwrap_err(), TooSmall { len: 0x200 });
        assert_eq!(with(&|h| h.boot_flag = 0), NoBootFlag { found: 0 });
        assert!(matches!(with(&|h| h.header = 0x464c_457f), NotBzImage { .. }));
        assert!(matches!(with(&|h| h.version = 0x020b), ProtocolTooOld { version: 0x020b, .. }));
        assert_eq!(with(&|h| h.loadflags = 0), NotLoadedHigh);
        assert_eq!(with(&|h| h.xloadflags = 0), No64BitEntry);
        assert!(matches!(with(&|h| h.syssize = 0x1000), Truncated { .. }));
        assert!(matches!(with(&|h| h.setup_sects = 200), Truncated { .. }));
        assert_eq!(with(&|h| h.kernel_alignment = 0x3000), BadAlignment { alignment: 0x3000 });
        assert!(matches!(with(&|h| h.init_size = 0x100), BadInitSize { .. }));
        // Any prefix of a good image fails cleanly, never panics.
        for len in (0..good.len()).step_by(97) {
            assert!(BzImage::parse(&good[..len]).is_err(), "len {len}");
        }
    }

    /// Every header byte set to 0x00, 0x7f, 0x80 or 0xff: parsing and planning a boot
    /// from what parses end in a value or an error (tests run with overflow checks on).
    #[test]
    fn extreme_header_bytes_never_panic() {
        use crate::memory::addr::GuestPhysAddr;
        use crate::vm::linux::bootparams::{BootE820Entry, E820Type};
        use crate::vm::linux::layout::{BootRequest, build_boot_plan};
        let good = synthetic(0x2000);
        let e820 = [BootE820Entry::new(GuestPhysAddr::new(0), 256 << 20, E820Type::Ram)];
        let (mut parsed, mut planned) = (0, 0);
        for off in SETUP_HEADER_OFFSET..SETUP_HEADER_END {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut img = good.clone();
                img[off] = value;
                let Ok(kernel) = BzImage::parse(&img) else { continue };
                parsed += 1;
                let req = BootRequest {
                    kernel,
                    initrd: &[1; 100],
                    cmdline: b"console=ttyS0",
                    mem_size: 256 << 20,
                    e820: &e820,
                    framebuffer: None,
                    acpi_rsdp: None,
                };
                planned += usize::from(build_boot_plan(&req).is_ok());
            }
        }
        // Most fields do not matter to parsing; the check above must have run on them.
        assert!(parsed > 200 && planned > 100, "parsed {parsed}, planned {planned}");
    }
}
