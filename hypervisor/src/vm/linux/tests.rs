//! Zero page and layout tests, on synthetic images and (when the guest cache has one)
//! on Debian's real kernel.

use alloc::vec::Vec;
use core::mem::offset_of;

use super::bootparams::BOOT_PARAMS_SIZE;
use super::bzimage::tests::synthetic;
use super::bzimage::{CAN_USE_HEAP, LOADED_HIGH, SETUP_HEADER_OFFSET, XLF_KERNEL_64};
use super::layout::{BOOT_CS, BOOT_DS, ENTRY_64_OFFSET};
use super::*;
use crate::memory::addr::GuestPhysAddr;

const MIB: u64 = 1 << 20;

fn gpa(a: u64) -> GuestPhysAddr {
    GuestPhysAddr::new(a)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn ram_map(mem: u64) -> Vec<BootE820Entry> {
    alloc::vec![
        BootE820Entry::new(gpa(0), 0x9_f000, E820Type::Ram),
        BootE820Entry::new(gpa(0x9_f000), 0x6_1000, E820Type::Reserved),
        BootE820Entry::new(gpa(0x10_0000), mem - 0x10_0000, E820Type::Ram),
    ]
}

#[test]
fn zero_page_carries_header_e820_cmdline_initrd_fb_rsdp() {
    let img = synthetic(0x4000);
    let bz = BzImage::parse(&img).unwrap();
    let fb = Framebuffer {
        base: gpa(0x1_2000_0000), // above 4 GiB: needs ext_lfb_base
        width: 1280,
        height: 800,
        stride: 1280 * 4,
        layout: PixelLayout::Bgrx,
    };
    let e820 = ram_map(256 * MIB);
    let page = build_boot_params(
        &bz,
        &BootParamsInput {
            e820: &e820,
            cmdline: gpa(0x2_0000),
            initrd: (gpa(0x0f00_0000), 0x12_3456),
            framebuffer: Some(fb),
            acpi_rsdp: Some(gpa(0xe_0000)),
        },
    )
    .unwrap();
    assert_eq!(page.len(), BOOT_PARAMS_SIZE);
    let hdr = SetupHeader::read_le(&page[SETUP_HEADER_OFFSET..]);
    assert_eq!(hdr.type_of_loader, 0xff);
    assert_eq!(hdr.loadflags & (LOADED_HIGH | CAN_USE_HEAP), LOADED_HIGH | CAN_USE_HEAP);
    assert_eq!({ hdr.cmd_line_ptr }, 0x2_0000);
    assert_eq!(({ hdr.ramdisk_image }, { hdr.ramdisk_size }), (0x0f00_0000, 0x12_3456));
    // Copied from the image.
    assert_eq!({ hdr.pref_address }, 0x100_0000);
    assert_eq!({ hdr.xloadflags } & XLF_KERNEL_64, XLF_KERNEL_64);
    assert_eq!(u64_at(&page, 0x070), 0xe_0000);
    assert_eq!(page[0x1e8], 3);
    assert_eq!(page[0x1ef], 0, "sentinel must stay zero");
    assert_eq!(u64_at(&page, 0x2d0 + 20), 0x9_f000);
    assert_eq!(u32_at(&page, 0x2d0 + 20 + 16), E820Type::Reserved as u32);
    let si = ScreenInfo::read_le(&page);
    assert_eq!(si.orig_video_is_vga, 0x70);
    assert_eq!(({ si.lfb_width }, { si.lfb_height }, { si.lfb_depth }), (1280, 800, 32));
    assert_eq!(({ si.lfb_base }, { si.ext_lfb_base }), (0x2000_0000, 1));
    assert_eq!({ si.lfb_size }, 1280 * 4 * 800);
    assert_eq!({ si.lfb_linelength }, 5120);
    assert_eq!((si.red_pos, si.green_pos, si.blue_pos, si.rsvd_pos), (16, 8, 0, 24));
    assert_eq!({ si.capabilities } & 0b10, 0b10, "VIDEO_CAPABILITY_64BIT_BASE");
    assert_eq!(page[offset_of!(BootParams, screen_info) + 0x0f], 0x70);
}

#[test]
fn e820_is_sorted_merged_and_checked() {
    let ram = |a, s| BootE820Entry::new(gpa(a), s, E820Type::Ram);
    let out = normalise_e820(&[ram(0x2000, 0x1000), ram(0, 0x1000), ram(0x1000, 0x1000)]).unwrap();
    assert_eq!(out, [ram(0, 0x3000)]);
    let err = normalise_e820(&[ram(0, 0x2000), ram(0x1000, 0x1000)]).unwrap_err();
    assert_eq!(err, LinuxBootError::OverlappingE820 { first: 0, second: 0x1000 });
    assert!(normalise_e820(&[ram(0x1000, 0)]).is_err());
    let many: Vec<_> = (0..129u64).map(|i| BootE820Entry::new(gpa(i * 0x2000), 0x1000, E820Type::Ram)).collect();
    assert_eq!(normalise_e820(&many).unwrap_err(), LinuxBootError::TooManyE820Entries { count: 129 });
}

#[test]
fn framebuffer_and_rsdp_are_validated() {
    let fb =
        |w, h, stride| Framebuffer { base: gpa(0xc000_0000), width: w, height: h, stride, layout: PixelLayout::Rgbx };
    let si = fb(640, 480, 2560).screen_info().unwrap();
    assert_eq!((si.red_pos, si.blue_pos, { si.capabilities } & 0b10), (0, 16, 0));
    assert!(fb(640, 480, 2000).screen_info().is_err());
    assert!(fb(70000, 480, 280_000).screen_info().is_err());
    assert!(fb(0, 480, 2560).screen_info().is_err());
    let mut img = synthetic(0x2000);
    img[0x206] = 0x0d; // protocol 2.13: no acpi_rsdp_addr yet
    let bz = BzImage::parse(&img).unwrap();
    let input = BootParamsInput {
        e820: &[],
        cmdline: gpa(0x2_0000),
        initrd: (gpa(0), 0),
        framebuffer: None,
        acpi_rsdp: Some(gpa(0xe_0000)),
    };
    assert_eq!(build_boot_params(&bz, &input).unwrap_err(), LinuxBootError::RsdpNeedsProtocol214 { version: 0x020d });
}

#[test]
fn layout_places_kernel_at_pref_and_initrd_high() {
    let img = synthetic(0x4000);
    let bz = BzImage::parse(&img).unwrap();
    let l = plan_layout(256 * MIB, &bz, 5 * MIB + 123, 100).unwrap();
    assert_eq!(l.kernel, gpa(0x100_0000));
    assert_eq!(l.entry, gpa(0x100_0000 + ENTRY_64_OFFSET));
    assert_eq!(l.initrd, gpa((256 * MIB - (5 * MIB + 123)) & !0xfff));
    assert!(l.initrd.raw() + l.initrd_len <= 256 * MIB);
    // initrd_addr_max caps it in a big guest.
    let l = plan_layout(3 << 30, &bz, MIB, 0).unwrap();
    assert_eq!(l.initrd.raw() + MIB, 0x8000_0000);
    assert!(matches!(plan_layout(17 * MIB, &bz, 0, 0), Err(LinuxBootError::NotEnoughMemory { what: "kernel", .. })));
    assert!(matches!(
        plan_layout(32 * MIB, &bz, 30 * MIB, 0),
        Err(LinuxBootError::NotEnoughMemory { what: "initrd", .. })
    ));
    assert!(matches!(plan_layout(256 * MIB, &bz, 0, 4096), Err(LinuxBootError::CmdlineTooLong { max: 2047, .. })));
}

#[test]
fn boot_plan_writes_everything_into_ram_and_sets_long_mode() {
    let img = synthetic(0x4000);
    let bz = BzImage::parse(&img).unwrap();
    let initrd = [7u8; 5000];
    let e820 = ram_map(128 * MIB);
    let req = BootRequest {
        kernel: bz,
        initrd: &initrd,
        cmdline: b"console=ttyS0 panic=-1",
        mem_size: 128 * MIB,
        e820: &e820,
        framebuffer: None,
        acpi_rsdp: None,
    };
    let plan = build_boot_plan(&req).unwrap();
    let find = |what: &str| plan.writes.iter().find(|w| w.what == what).unwrap();
    assert_eq!(find("kernel").data.as_ref(), bz.kernel());
    assert_eq!(find("command line").data.as_ref(), b"console=ttyS0 panic=-1\0");
    assert_eq!(find("initrd").gpa, plan.layout.initrd);
    let zp = &find("zero page").data;
    assert_eq!(u32_at(zp, 0x228), 0x2_0000);
    assert_eq!(u32_at(zp, 0x218) as u64, plan.layout.initrd.raw());
    let e = plan.entry;
    assert_eq!((e.rip, e.rsi), (0x100_0200, 0x7000));
    assert_eq!(e.cr0 & 0x8000_0001, 0x8000_0001);
    assert_eq!((e.cr4 & 0x20, e.efer & 0x500, e.rflags & 0x200), (0x20, 0x500, 0));
    assert_eq!((e.cs.selector, e.data.selector), (BOOT_CS, BOOT_DS));
    assert_eq!((e.cs.base(), e.cs.limit()), (0, 0xffff_ffff));
    assert_eq!(e.cs.vmcb_attributes(), 0xa9b);
    assert_eq!(e.data.vmcb_attributes(), 0xc93);
    assert_eq!(e.cs.vmx_access_rights(), 0xa09b);
    let gdt = &find("GDT").data;
    assert_eq!(u64_at(gdt, usize::from(BOOT_CS)), e.cs.descriptor);
    assert_eq!(u64_at(gdt, usize::from(BOOT_DS)), e.data.descriptor);
    assert_eq!(usize::from(e.gdt_limit) + 1, gdt.len());
    // Identity map: PML4[0] → PDPT, PDPT[3] → PD 3, PD 3 maps 3 GiB + 2 MiB * 511.
    let pt = &find("identity page tables").data;
    assert_eq!(u64_at(pt, 0), 0x2000 | 3);
    assert_eq!(u64_at(pt, 4096 + 3 * 8), 0x6000 | 3);
    assert_eq!(u64_at(pt, 5 * 4096 + 511 * 8), ((3 << 30) + 511 * (2 * MIB)) | 0x83);
    assert_eq!(e.cr3, 0x1000);

    // A hole in RAM under the initrd is caught.
    let holed = [
        BootE820Entry::new(gpa(0), 64 * MIB, E820Type::Ram),
        BootE820Entry::new(gpa(64 * MIB), 64 * MIB, E820Type::Reserved),
    ];
    let err = build_boot_plan(&BootRequest { e820: &holed, ..req }).unwrap_err();
    assert!(matches!(err, LinuxBootError::NotInRam { what: "initrd", .. }), "{err}");
    // A framebuffer must not be RAM.
    let fb = Framebuffer { base: gpa(100 * MIB), width: 64, height: 64, stride: 256, layout: PixelLayout::Bgrx };
    let err = build_boot_plan(&BootRequest { framebuffer: Some(fb), ..req }).unwrap_err();
    assert!(matches!(err, LinuxBootError::BadFramebuffer(_)), "{err}");
}

/// Debian's kernel from the guest image cache (`cargo test -p images -- --ignored
/// live_cloud_guest` fills it), or `BULKHEAD_BZIMAGE`.
fn real_bzimage() -> Option<(std::path::PathBuf, Vec<u8>)> {
    let path = std::env::var_os("BULKHEAD_BZIMAGE").map(std::path::PathBuf::from).or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let extracted = target.join("guest-cache/extracted");
        let mut found: Vec<_> = std::fs::read_dir(extracted)
            .ok()?
            .filter_map(|e| std::fs::read_dir(e.ok()?.path().join("boot")).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
            .collect();
        found.sort();
        found.pop()
    })?;
    let bytes = std::fs::read(&path).ok()?;
    Some((path, bytes))
}

#[test]
fn real_debian_bzimage() {
    let Some((path, bytes)) = real_bzimage() else {
        std::eprintln!(
            "SKIPPED real_debian_bzimage: no kernel in target/guest-cache/extracted/*/boot; \
             run `cargo test -p images --lib guest::live_tests::live_cloud_guest -- --ignored` \
             or set BULKHEAD_BZIMAGE"
        );
        return;
    };
    let bz = BzImage::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let h = bz.header;
    std::eprintln!(
        "{}: protocol {:?}, setup_sects {}, kernel {:#x} bytes, init_size {:#x}, \
         alignment {:#x}, pref_address {:#x}, relocatable {}, xloadflags {:#x}, \
         initrd_addr_max {:#x}, cmdline_size {}",
        path.display(),
        bz.protocol(),
        h.setup_sects,
        bz.kernel().len(),
        { h.init_size },
        { h.kernel_alignment },
        { h.pref_address },
        bz.relocatable(),
        { h.xloadflags },
        { h.initrd_addr_max },
        { h.cmdline_size },
    );
    assert!(bz.protocol() >= (2, 15), "Debian 6.1 speaks 2.15");
    assert!(bz.relocatable() && bz.can_load_above_4g());
    assert_eq!({ h.pref_address }, 0x100_0000);
    assert_eq!({ h.kernel_alignment }, 0x20_0000);
    assert!(bz.init_size() > bz.kernel().len() as u64);
    let l = plan_layout(256 * MIB, &bz, 2 * MIB, 64).unwrap();
    assert_eq!(l.kernel, GuestPhysAddr::new(0x100_0000));
    assert!(l.kernel_end.raw() <= l.initrd.raw());
}
