//! Where a Linux guest goes in guest-physical memory, and the CPU state for the 64-bit
//! entry (boot.rst, "64-bit BOOT PROTOCOL"): long mode with paging, identity mapping
//! over the kernel, zero page, command line and initrd; a GDT with flat `__BOOT_CS`
//! (0x10) and `__BOOT_DS` (0x18); interrupts off; RSI = zero page; RIP = load + 0x200.

use alloc::borrow::Cow;
use alloc::vec;
use alloc::vec::Vec;
use core::iter;

use super::bootparams::{BootE820Entry, BootParamsInput, E820Type, Framebuffer, build_boot_params, normalise_e820};
use super::bzimage::BzImage;
use super::error::LinuxBootError;
use crate::memory::addr::{GuestPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};

/// Low-memory layout: all below the EBDA/VGA hole at 0x9f000, above the real-mode IVT.
pub const GDT_ADDR: u64 = 0x500;
/// PML4, one PDPT and four page directories of 2 MiB pages.
pub const PAGE_TABLES_ADDR: u64 = 0x1000;
const PAGE_TABLE_PAGES: u64 = 6;
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
/// The decompressor sets its own stack at once; this one only has to be valid.
pub const STACK_TOP: u64 = 0x2_0000;
pub const CMDLINE_ADDR: u64 = 0x2_0000;
pub const CMDLINE_LIMIT: u64 = 0x8_0000;
/// The identity map covers the low 4 GiB, where everything here is placed.
pub const IDENTITY_MAP_SIZE: u64 = 4 << 30;
/// Where the 64-bit entry point sits in the protected-mode kernel.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// Linux's default load address (CONFIG_PHYSICAL_START) for images that give none.
const DEFAULT_LOAD: u64 = 0x100_0000;

pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
/// Flat 64-bit code: P, DPL 0, S, execute/read, accessed; G and L.
const CODE64_DESCRIPTOR: u64 = 0x00af_9b00_0000_ffff;
/// Flat data: P, DPL 0, S, read/write, accessed; G and D/B.
const DATA_DESCRIPTOR: u64 = 0x00cf_9300_0000_ffff;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;

/// Guest-physical addresses picked for one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinuxLayout {
    pub gdt: GuestPhysAddr,
    pub page_tables: GuestPhysAddr,
    pub boot_params: GuestPhysAddr,
    pub stack_top: GuestPhysAddr,
    pub cmdline: GuestPhysAddr,
    /// Load address of the protected-mode kernel.
    pub kernel: GuestPhysAddr,
    /// `kernel + init_size`: the kernel may use everything up to here while booting.
    pub kernel_end: GuestPhysAddr,
    /// Page aligned; meaningful only when `initrd_len` is not 0.
    pub initrd: GuestPhysAddr,
    pub initrd_len: u64,
    pub entry: GuestPhysAddr,
}

/// Places a kernel, its initrd and command line in a guest whose RAM is contiguous from
/// 0 to `mem_size` (the low RAM block, below any PCI hole). The kernel goes at its
/// preferred address, the initrd as high as the kernel allows.
pub fn plan_layout(
    mem_size: u64,
    kernel: &BzImage<'_>,
    initrd_len: u64,
    cmdline_len: u64,
) -> Result<LinuxLayout, LinuxBootError> {
    let max = kernel.cmdline_max().min(CMDLINE_LIMIT - CMDLINE_ADDR - 1);
    if cmdline_len > max {
        return Err(LinuxBootError::CmdlineTooLong { len: cmdline_len, max });
    }
    let align = u64::from(kernel.header.kernel_alignment).max(PAGE_SIZE);
    let pref = kernel.header.pref_address;
    let load = match (kernel.relocatable(), pref) {
        (_, 0) => DEFAULT_LOAD,
        (true, pref) => pref.checked_next_multiple_of(align).unwrap_or(u64::MAX),
        // boot.rst: a non-relocatable kernel must be loaded at pref_address.
        (false, pref) => pref,
    };
    let kernel_end = load.saturating_add(kernel.init_size());
    let usable = mem_size.min(IDENTITY_MAP_SIZE);
    if kernel_end > usable {
        return Err(LinuxBootError::NotEnoughMemory { what: "kernel", needed: kernel_end, available: usable });
    }
    let mut initrd = 0;
    if initrd_len != 0 {
        let limit = usable.min(u64::from(kernel.header.initrd_addr_max) + 1);
        let floor = kernel_end.next_multiple_of(PAGE_SIZE);
        initrd = limit.checked_sub(initrd_len).map(|a| a & !(PAGE_SIZE - 1)).filter(|&a| a >= floor).ok_or(
            LinuxBootError::NotEnoughMemory {
                what: "initrd",
                needed: initrd_len,
                available: limit.saturating_sub(floor),
            },
        )?;
    }
    Ok(LinuxLayout {
        gdt: GuestPhysAddr::new(GDT_ADDR),
        page_tables: GuestPhysAddr::new(PAGE_TABLES_ADDR),
        boot_params: GuestPhysAddr::new(BOOT_PARAMS_ADDR),
        stack_top: GuestPhysAddr::new(STACK_TOP),
        cmdline: GuestPhysAddr::new(CMDLINE_ADDR),
        kernel: GuestPhysAddr::new(load),
        kernel_end: GuestPhysAddr::new(kernel_end),
        initrd: GuestPhysAddr::new(initrd),
        initrd_len,
        // `load` <= `kernel_end` <= 4 GiB (checked above): no wrap.
        entry: GuestPhysAddr::new(load.wrapping_add(ENTRY_64_OFFSET)),
    })
}

/// A segment register: selector plus the GDT descriptor it was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub selector: u16,
    pub descriptor: u64,
}

impl LoadSegment {
    pub fn base(&self) -> u64 {
        let d = self.descriptor;
        ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24)
    }

    /// The limit in bytes, after the granularity bit is applied.
    pub fn limit(&self) -> u32 {
        let d = self.descriptor;
        let raw = ((d & 0xffff) | (((d >> 48) & 0xf) << 16)) as u32;
        if d & (1 << 55) != 0 { (raw << 12) | 0xfff } else { raw }
    }

    /// VMCB segment attributes: access byte in 7:0, flags nibble in 11:8 (AMD APM Vol. 2,
    /// 15.5.1 "Segment State in the VMCB").
    pub fn vmcb_attributes(&self) -> u16 {
        let d = self.descriptor;
        (((d >> 40) & 0xff) | (((d >> 52) & 0xf) << 8)) as u16
    }

    /// VMX access rights: access byte in 7:0, flags nibble in 15:12 (Intel SDM Vol. 3,
    /// 25.4.1 "Guest Register State").
    pub fn vmx_access_rights(&self) -> u32 {
        let d = self.descriptor;
        (((d >> 40) & 0xff) | (((d >> 52) & 0xf) << 12)) as u32
    }
}

/// Register state at the 64-bit entry. The vendor layer adds what its own checks need
/// (EFER.SVME for VMRUN, a usable TR for VM entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryState {
    pub rip: u64,
    pub rsi: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: LoadSegment,
    /// DS, ES, SS (and FS, GS) all hold `__BOOT_DS`.
    pub data: LoadSegment,
    pub gdt_base: u64,
    pub gdt_limit: u16,
}

/// "Put these bytes at this guest-physical address."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryWrite<'a> {
    pub gpa: GuestPhysAddr,
    pub what: &'static str,
    pub data: Cow<'a, [u8]>,
}

/// Everything needed to start a Linux guest: apply `writes` in order, then enter with
/// `entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan<'a> {
    pub layout: LinuxLayout,
    pub writes: Vec<MemoryWrite<'a>>,
    pub entry: EntryState,
}

#[derive(Debug, Clone, Copy)]
pub struct BootRequest<'a> {
    pub kernel: BzImage<'a>,
    pub initrd: &'a [u8],
    /// Without the NUL, which the plan adds.
    pub cmdline: &'a [u8],
    /// Contiguous RAM from GPA 0 (see [`plan_layout`]).
    pub mem_size: u64,
    /// The VM's memory map; RAM entries must cover everything placed here.
    pub e820: &'a [BootE820Entry],
    pub framebuffer: Option<Framebuffer>,
    pub acpi_rsdp: Option<GuestPhysAddr>,
}

/// Plans a complete boot. The kernel and initrd are borrowed, not copied.
pub fn build_boot_plan<'a>(req: &BootRequest<'a>) -> Result<BootPlan<'a>, LinuxBootError> {
    // Up to the first NUL, if any.
    let cmdline_text = req.cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let layout = plan_layout(req.mem_size, &req.kernel, req.initrd.len() as u64, cmdline_text.len() as u64)?;
    let e820 = normalise_e820(req.e820)?;
    let ram = |what: &'static str, addr: u64, len: u64| {
        let inside =
            e820.iter().any(|e| e.typ == E820Type::Ram as u32 && e.addr <= addr && addr.saturating_add(len) <= e.end());
        if inside { Ok(()) } else { Err(LinuxBootError::NotInRam { what, addr, len }) }
    };
    if let Some(fb) = req.framebuffer {
        let (start, end) = (fb.base.raw(), fb.base.raw().saturating_add(fb.size()));
        let overlaps_ram = e820.iter().any(|e| e.typ == E820Type::Ram as u32 && e.addr < end && start < e.end());
        if overlaps_ram {
            return Err(LinuxBootError::BadFramebuffer("it is RAM in the e820 map; mark it reserved"));
        }
    }
    let boot_params = build_boot_params(
        &req.kernel,
        &BootParamsInput {
            e820: &e820,
            cmdline: layout.cmdline,
            initrd: (layout.initrd, layout.initrd_len),
            framebuffer: req.framebuffer,
            acpi_rsdp: req.acpi_rsdp,
        },
    )?;
    let mut cmdline = cmdline_text.to_vec();
    cmdline.push(0);
    let gdt: Vec<u8> = [0, 0, CODE64_DESCRIPTOR, DATA_DESCRIPTOR].iter().flat_map(|d| d.to_le_bytes()).collect();

    let mut writes = vec![
        write(layout.gdt, "GDT", Cow::Owned(gdt)),
        write(layout.page_tables, "identity page tables", Cow::Owned(identity_page_tables(layout.page_tables))),
        write(layout.boot_params, "zero page", Cow::Owned(boot_params)),
        write(layout.cmdline, "command line", Cow::Owned(cmdline)),
        write(layout.kernel, "kernel", Cow::Borrowed(req.kernel.kernel())),
    ];
    if !req.initrd.is_empty() {
        writes.push(write(layout.initrd, "initrd", Cow::Borrowed(req.initrd)));
    }
    for w in &writes {
        ram(w.what, w.gpa.raw(), w.data.len() as u64)?;
    }
    ram("kernel (init_size)", layout.kernel.raw(), req.kernel.init_size())?;
    ram("boot stack", layout.stack_top.raw().saturating_sub(PAGE_SIZE), PAGE_SIZE)?;

    let data = LoadSegment { selector: BOOT_DS, descriptor: DATA_DESCRIPTOR };
    let entry = EntryState {
        rip: layout.entry.raw(),
        rsi: layout.boot_params.raw(),
        rsp: layout.stack_top.raw(),
        rflags: 1 << 1, // reserved bit; IF clear
        cr0: CR0_PE | CR0_ET | CR0_NE | CR0_PG,
        cr3: layout.page_tables.raw(),
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        cs: LoadSegment { selector: BOOT_CS, descriptor: CODE64_DESCRIPTOR },
        data,
        gdt_base: layout.gdt.raw(),
        gdt_limit: 4 * 8 - 1,
    };
    Ok(BootPlan { layout, writes, entry })
}

fn write<'a>(gpa: GuestPhysAddr, what: &'static str, data: Cow<'a, [u8]>) -> MemoryWrite<'a> {
    MemoryWrite { gpa, what, data }
}

/// PML4 → one PDPT → four page directories of 2 MiB pages: the low 4 GiB, identity
/// mapped. 2 MiB pages need no CPUID feature (1 GiB pages would need PDPE1GB).
pub fn identity_page_tables(base: GuestPhysAddr) -> Vec<u8> {
    const FLAGS: u64 = PTE_PRESENT | PTE_WRITABLE;
    const DIRECTORIES: u64 = PAGE_TABLE_PAGES - 2;
    // Page `i` (< PAGE_TABLE_PAGES) of the tables, which sit in low memory: no wrap.
    let table = |i: u64| base.raw().wrapping_add(i.wrapping_mul(PAGE_SIZE));
    let pml4 = iter::once(table(1) | FLAGS).chain(iter::repeat_n(0, 511));
    // PDPT entry `gib` (< 4) points at directory page 2 + gib.
    let pdpt = (0..DIRECTORIES).map(|gib| table(gib.wrapping_add(2)) | FLAGS).chain(iter::repeat_n(0, 508));
    // The directories back to back: entry n (< 2048) maps n * 2 MiB, below 4 GiB.
    let directories = (0..DIRECTORIES * 512).map(|n| n.wrapping_mul(LARGE_PAGE_SIZE) | FLAGS | PTE_HUGE);
    pml4.chain(pdpt).chain(directories).flat_map(u64::to_le_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tables_map_the_low_4_gib_with_2_mib_pages() {
        let base = 0x1000;
        let bytes = identity_page_tables(GuestPhysAddr::new(base));
        assert_eq!(bytes.len() as u64, PAGE_TABLE_PAGES * PAGE_SIZE);
        let entry = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(entry(0), (base + 0x1000) | 3);
        assert!((1..512).all(|i| entry(i) == 0));
        for gib in 0..4 {
            assert_eq!(entry(512 + gib), (base + 0x2000 + gib as u64 * 0x1000) | 3);
        }
        assert!((516..1024).all(|i| entry(i) == 0));
        for i in 0..2048 {
            assert_eq!(entry(1024 + i), (i as u64 * (2 << 20)) | 0x83, "entry {i}");
        }
    }
}
