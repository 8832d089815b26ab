use super::*;

/// A kernel image with an a.out-kludge header at file offset `at`, loaded at 1 MiB
/// (the header at 1 MiB + `at`), 0x2000 bytes of file, bss to 0x3000, entry at 0x40.
fn aout_kernel(at: usize, flags: u32) -> Vec<u8> {
    let mut image = vec![0u8; 0x2000];
    let base = 0x10_0000u32;
    let fields = [
        HEADER_MAGIC,
        flags,
        0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
        base + at as u32,
        base,
        base + 0x2000,
        base + 0x3000,
        base + 0x40,
    ];
    for (i, f) in fields.iter().enumerate() {
        image[at + 4 * i..at + 4 * i + 4].copy_from_slice(&f.to_le_bytes());
    }
    image[0x40] = 0xf4;
    image
}

const AOUT: u32 = header::FLAG_ADDRESSES | header::FLAG_PAGE_ALIGN | header::FLAG_MEMORY_INFO;

fn request<'a>(image: &'a [u8], modules: &'a [Module<'a>]) -> MultibootRequest<'a> {
    MultibootRequest { image, cmdline: "quiet root=none", modules, ram_bytes: 16 << 20 }
}

fn write_at<'p>(p: &'p MultibootPlan<'_>, what: &str) -> (u64, &'p [u8]) {
    let (gpa, _, data) = p.writes.iter().find(|(_, w, _)| *w == what).unwrap_or_else(|| panic!("no {what}"));
    (gpa.raw(), data)
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

#[test]
fn plans_an_aout_kludge_kernel_with_info_modules_and_memory_map() {
    let image = aout_kernel(0x10, AOUT);
    let modules = [Module { string: "first", data: b"one" }, Module { string: "second", data: &[7u8; 5000] }];
    let p = plan(&request(&image, &modules)).unwrap();
    assert_eq!(p.entry, InitialState::Protected32 { eip: 0x10_0040, eax: 0x2BAD_B002, ebx: INFO_GPA as u32 });
    let (gpa, kernel) = write_at(&p, "kernel");
    assert_eq!((gpa, kernel.len()), (0x10_0000, 0x2000));
    let (_, info) = write_at(&p, "Multiboot information");
    let flags = u32_at(info, 0);
    assert_eq!(flags & 0x24d, 0x24d, "mem, cmdline, mods, mmap, loader name: {flags:#x}");
    assert_eq!((u32_at(info, 4), u32_at(info, 8)), (636, 15 * 1024));
    // The command line is a NUL-terminated string where cmdline points.
    let (strings_gpa, strings) = write_at(&p, "command line");
    let cmd = (u32_at(info, 16) as u64 - strings_gpa) as usize;
    assert_eq!(&strings[cmd..cmd + 16], b"quiet root=none\0");
    // Modules: page-aligned above the kernel's bss, in order, with their strings.
    assert_eq!(u32_at(info, 20), 2);
    let (mods_gpa, mods) = write_at(&p, "module list");
    assert_eq!(u32_at(info, 24) as u64, mods_gpa);
    let starts: Vec<u32> = (0..2).map(|i| u32_at(mods, 16 * i)).collect();
    assert_eq!(starts, [0x10_3000, 0x10_4000]);
    assert_eq!(u32_at(mods, 20), 0x10_4000 + 5000, "mod_end of the second module");
    let s = (u32_at(mods, 24) as u64 - strings_gpa) as usize;
    assert_eq!(&strings[s..s + 7], b"second\0");
    let placed: Vec<u64> = p.writes.iter().filter(|w| w.1 == "boot module").map(|w| w.0.raw()).collect();
    assert_eq!(placed, [0x10_3000, 0x10_4000]);
    // Memory map: RAM below 636 KiB and from 1 MiB to the end, the hole reserved.
    let (mmap_gpa, mmap) = write_at(&p, "memory map");
    assert_eq!((u32_at(info, 48) as u64, u32_at(info, 44) as usize), (mmap_gpa, mmap.len()));
    let entries: Vec<(u64, u64, u32)> = mmap
        .chunks(24)
        .map(|e| {
            assert_eq!(u32_at(e, 0), 20);
            (
                u64::from_le_bytes(e[4..12].try_into().unwrap()),
                u64::from_le_bytes(e[12..20].try_into().unwrap()),
                u32_at(e, 20),
            )
        })
        .collect();
    assert_eq!(entries, [(0, 0x9_F000, 1), (0x9_F000, 0x6_1000, 2), (0x10_0000, 15 << 20, 1)]);
}

#[test]
fn finds_the_header_only_aligned_in_the_first_8k() {
    assert_eq!(find(&aout_kernel(0x1fe0, AOUT)).unwrap().offset, 0x1fe0);
    // Its address fields past the 8 KiB limit.
    let mut image = vec![0u8; 0x3000];
    for (i, f) in [HEADER_MAGIC, AOUT, 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(AOUT)].iter().enumerate() {
        image[0x1ff0 + 4 * i..0x1ff4 + 4 * i].copy_from_slice(&f.to_le_bytes());
    }
    assert_eq!(find(&image), Err(MultibootError::TruncatedHeader));
    // Misaligned: not a header.
    let mut image = vec![0u8; 0x3000];
    image[2..6].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    assert_eq!(find(&image), Err(MultibootError::NoHeader));
    // Beyond 8192 bytes: not searched.
    let mut image = vec![0u8; 0x3000];
    image[0x2000..0x2004].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    assert_eq!(find(&image), Err(MultibootError::NoHeader));
    // The checksum straddling the 8 KiB limit.
    let mut image = vec![0u8; 0x3000];
    image[0x1ff8..0x1ffc].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    assert_eq!(find(&image), Err(MultibootError::TruncatedHeader));
    assert_eq!(find(&HEADER_MAGIC.to_le_bytes()), Err(MultibootError::TruncatedHeader));
    assert_eq!(find(&[]), Err(MultibootError::NoHeader));
}

#[test]
fn refuses_malformed_headers() {
    let mut bad_sum = aout_kernel(0, AOUT);
    bad_sum[8] ^= 1;
    assert_eq!(find(&bad_sum), Err(MultibootError::BadChecksum));
    assert_eq!(find(&aout_kernel(0, AOUT | 1 << 2)), Err(MultibootError::VideoModeRequired));
    assert_eq!(find(&aout_kernel(0, AOUT | 1 << 5)), Err(MultibootError::UnsupportedFlags(1 << 5)));
    // Optional bits above 16 are fine.
    assert!(find(&aout_kernel(0, AOUT | 1 << 20)).is_ok());
    // Address fields cut off by the end of the image.
    let image = aout_kernel(0, AOUT);
    assert_eq!(find(&image[..20]), Err(MultibootError::TruncatedHeader));
}

fn with_fields(f: impl FnOnce(&mut Addresses)) -> Result<KernelLoad, MultibootError> {
    let image = aout_kernel(0x10, AOUT);
    let h = find(&image).unwrap();
    let mut a = h.addresses.unwrap();
    f(&mut a);
    plan_addresses(&image, h.offset, &a, KERNEL_MIN..16 << 20)
}

#[test]
fn refuses_address_fields_that_do_not_fit() {
    assert!(with_fields(|_| {}).is_ok());
    assert!(matches!(with_fields(|a| a.load_addr = a.header_addr + 4), Err(MultibootError::BadAddresses(_))));
    // load_addr so far below the header that it would start before the file.
    assert!(matches!(with_fields(|a| a.load_addr -= 0x20), Err(MultibootError::BadAddresses(_))));
    assert!(matches!(with_fields(|a| a.load_end_addr = a.load_addr + 0x2001), Err(MultibootError::BadAddresses(_))));
    assert!(matches!(with_fields(|a| a.load_end_addr = a.load_addr - 1), Err(MultibootError::BadAddresses(_))));
    assert!(matches!(with_fields(|a| a.bss_end_addr = a.load_addr + 4), Err(MultibootError::BadAddresses(_))));
    assert!(matches!(with_fields(|a| a.bss_end_addr = u32::MAX), Err(MultibootError::OutsideMemory { .. })));
    assert_eq!(with_fields(|a| a.entry_addr = a.load_addr + 0x2000), Err(MultibootError::EntryOutside(0x10_2000)));
    // Below 1 MiB (over the boot information): refused.
    let low = with_fields(|a| {
        a.header_addr -= 0x10_0000;
        a.load_addr -= 0x10_0000;
        a.load_end_addr -= 0x10_0000;
        a.bss_end_addr -= 0x10_0000;
        a.entry_addr -= 0x10_0000;
    });
    assert!(matches!(low, Err(MultibootError::OutsideMemory { start: 0, .. })));
    // load_end_addr 0: the rest of the file.
    assert_eq!(with_fields(|a| a.load_end_addr = 0).unwrap().file_len, 0x2000);
}

#[test]
fn refuses_elf32_without_addresses_and_garbage() {
    let flags = header::FLAG_MEMORY_INFO;
    let mut elf32 = aout_kernel(0x80, flags);
    elf32[..5].copy_from_slice(b"\x7fELF\x01");
    let err = plan(&request(&elf32, &[])).unwrap_err();
    assert_eq!(err, MultibootError::Elf32WithoutAddresses);
    assert!(err.to_string().contains("flag 16"));
    let not_elf = aout_kernel(0x80, flags);
    assert!(matches!(plan(&request(&not_elf, &[])), Err(MultibootError::Elf(_))));
    assert_eq!(plan(&request(b"nothing here", &[])), Err(MultibootError::NoHeader));
}

#[test]
fn refuses_what_does_not_fit_the_vm() {
    let image = aout_kernel(0, AOUT);
    let big = vec![0u8; 16 << 20];
    let modules = [Module { string: "big", data: &big }];
    assert_eq!(plan(&request(&image, &modules)), Err(MultibootError::ModulesDoNotFit));
    let many = [Module { string: "m", data: b"" }; MAX_MODULES + 1];
    assert_eq!(plan(&request(&image, &many)), Err(MultibootError::TooManyModules(MAX_MODULES + 1)));
    let long = "x".repeat(MAX_CMDLINE + 1);
    let req = MultibootRequest { cmdline: &long, ..request(&image, &[]) };
    assert_eq!(plan(&req), Err(MultibootError::CmdlineTooLong(MAX_CMDLINE + 1)));
    let name = "n".repeat(MAX_MODULE_STRING + 1);
    let modules = [Module { string: &name, data: b"" }];
    assert_eq!(plan(&request(&image, &modules)), Err(MultibootError::ModuleStringTooLong));
    let req = MultibootRequest { ram_bytes: 1 << 20, ..request(&image, &[]) };
    assert_eq!(plan(&req), Err(MultibootError::TooSmall { ram_bytes: 1 << 20 }));
}

#[test]
fn plans_the_real_multiboot_kernel_when_built() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/x86_64-unknown-none/release/multiboot");
    let Ok(image) = std::fs::read(path) else {
        eprintln!("SKIPPED: build the payloads first (cargo build -p payloads --target x86_64-unknown-none --release)");
        return;
    };
    let p = plan(&request(&image, &[])).unwrap();
    let InitialState::Protected32 { eip, eax, .. } = p.entry else { panic!("not a 32-bit entry") };
    assert_eq!(eax, BOOTLOADER_MAGIC);
    assert!((p.kernel.load_addr..p.kernel.bss_end).contains(&u64::from(eip)));
    // The same file without flag 16 loads as an ELF64 executable from its segments.
    let h = find(&image).unwrap();
    let mut elf = image.clone();
    let flags = h.flags & !header::FLAG_ADDRESSES;
    elf[h.offset + 4..h.offset + 8].copy_from_slice(&flags.to_le_bytes());
    let sum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
    elf[h.offset + 8..h.offset + 12].copy_from_slice(&sum.to_le_bytes());
    let e = plan(&request(&elf, &[])).unwrap();
    assert_eq!(e.entry, p.entry, "the ELF entry is the header's entry_addr");
    assert_eq!(e.kernel.load_addr, p.kernel.load_addr);
    let (gpa, segment) = write_at(&e, "kernel segment");
    assert_eq!(gpa, p.kernel.load_addr);
    assert_eq!(&segment[..32], &elf[h.offset..h.offset + 32], "the segment starts with the header");
}
