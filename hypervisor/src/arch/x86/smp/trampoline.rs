//! The real-mode entry of application processors: the code a startup IPI points at
//! (real mode, then 32-bit protected mode, then long mode) and the data page it reads.
//!
//! Three pages below 640 KiB hold it, side by side (`phys::ap_start_pages`):
//! - code: [`code`] copied as is. It finds its own address from CS, so it needs no
//!   patching and can stay read-only and executable while APs start;
//! - data (code + 4 KiB): the GDT the trampoline loads, the 32-bit page-table root,
//!   the stack and entry point of the AP being started, and the byte it writes first
//!   to say it runs. [`write_data_page`] fills it for each AP;
//! - root (code + 8 KiB): a copy of the hypervisor's PML4, because MOV CR3 in 32-bit
//!   mode takes only 32 bits and the hypervisor's own root may lie above 4 GiB.
//!
//! The code page is mapped executable (read-only) only while APs start; its PTE is
//! shared with the copied root, so the AP can run it once paging is on. The AP loads
//! the hypervisor's own root as soon as it reaches Rust and never touches these pages
//! again.

use core::arch::global_asm;

/// Offsets in the data page.
pub mod data {
    /// u32: the trampoline writes 1 here as its first act.
    pub const ALIVE: usize = 0x00;
    /// u32: the page-table root loaded in 32-bit mode.
    pub const ROOT_32: usize = 0x08;
    /// The GDTR: u16 limit, u32 base.
    pub const GDTR: usize = 0x10;
    /// u64: the AP's stack top.
    pub const STACK_TOP: usize = 0x20;
    /// u64: the 64-bit entry point (`extern "sysv64" fn(u64) -> !`).
    pub const ENTRY: usize = 0x28;
    /// u64: the entry's argument (the CPU's index).
    pub const ARGUMENT: usize = 0x30;
    /// The GDT: null, 32-bit code (0x08), data (0x10), 64-bit code (0x18).
    pub const GDT: usize = 0x40;
    pub const GDT_ENTRIES: usize = 4;
    /// End of what [`super::write_data_page`] writes; the trampoline's stack grows
    /// down from the end of the page, far above.
    pub const END: usize = GDT + GDT_ENTRIES * 8;
}

/// Bytes from the code page to the data page (the trampoline addresses its data
/// relative to its own base).
pub const DATA_OFFSET: u64 = 0x1000;
/// Bytes from the code page to the copied root.
pub const ROOT_OFFSET: u64 = 0x2000;
const PAGE: usize = 4096;

/// Segment descriptors (Intel SDM Vol. 3 3.4.5, AMD APM Vol. 2 4.8): flat 4 GiB,
/// present, ring 0, accessed already set so loading them never writes the GDT.
const CODE32: u64 = 0x00CF_9B00_0000_FFFF;
const DATA: u64 = 0x00CF_9300_0000_FFFF;
/// L = 1, D = 0 (APM Vol. 2 4.8.1).
const CODE64: u64 = 0x00AF_9B00_0000_FFFF;
const GDT: [u64; data::GDT_ENTRIES] = [0, CODE32, DATA, CODE64];
const SEL_CODE32: u32 = 0x08;
const SEL_DATA: u32 = 0x10;
const SEL_CODE64: u32 = 0x18;

// Entered in real mode at CS:IP = (vector << 8):0 (SDM Vol. 3 9.4.4.1). EBX keeps the
// code page's linear address throughout. The real-mode and 32-bit stacks are the end
// of the data page. Far jumps are far returns so that no absolute address is in the
// code.
global_asm!(
    ".pushsection .rodata.bulkhead_ap_trampoline,\"a\",@progbits",
    ".balign 16",
    ".global bulkhead_ap_trampoline",
    "bulkhead_ap_trampoline:",
    ".code16",
    "cli",
    "cld",
    "movw %cs, %ax",
    "movw %ax, %ds",
    "movw %ax, %ss",
    "movw ${stack16}, %sp",
    "movzwl %ax, %ebx",
    "shll $4, %ebx",
    "movl $1, {alive}",
    "lgdtl {gdtr}",
    "movl %cr0, %eax",
    "orl $1, %eax",
    "movl %eax, %cr0",
    "leal (2f - bulkhead_ap_trampoline)(%ebx), %eax",
    "pushl ${code32}",
    "pushl %eax",
    "lretl",
    ".code32",
    "2:",
    "movw ${data_sel}, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movw %ax, %fs",
    "movw %ax, %gs",
    "leal {stack16}(%ebx), %esp",
    // CR4.PAE, then the 32-bit root, then EFER.LME | EFER.NXE (the hypervisor's
    // tables use NX bits, which are reserved while NXE is clear).
    "movl %cr4, %eax",
    "orl $0x20, %eax",
    "movl %eax, %cr4",
    "movl {root32}(%ebx), %eax",
    "movl %eax, %cr3",
    "movl $0xC0000080, %ecx",
    "rdmsr",
    "orl $0x900, %eax",
    "wrmsr",
    // PG | WP | PE: long mode (compatibility) with ring 0 honouring read-only pages.
    "movl %cr0, %eax",
    "orl $0x80010001, %eax",
    "movl %eax, %cr0",
    "leal (3f - bulkhead_ap_trampoline)(%ebx), %eax",
    "pushl ${code64}",
    "pushl %eax",
    "lretl",
    ".code64",
    "3:",
    "movl %ebx, %ebx",
    "movq {stack_top}(%rbx), %rsp",
    "movq {argument}(%rbx), %rdi",
    "movq {entry}(%rbx), %rax",
    "xorl %ebp, %ebp",
    "callq *%rax",
    "4:",
    "cli",
    "hlt",
    "jmp 4b",
    ".global bulkhead_ap_trampoline_end",
    "bulkhead_ap_trampoline_end:",
    ".popsection",
    stack16 = const DATA_OFFSET as usize + PAGE,
    alive = const DATA_OFFSET as usize + data::ALIVE,
    gdtr = const DATA_OFFSET as usize + data::GDTR,
    root32 = const DATA_OFFSET as usize + data::ROOT_32,
    stack_top = const DATA_OFFSET as usize + data::STACK_TOP,
    argument = const DATA_OFFSET as usize + data::ARGUMENT,
    entry = const DATA_OFFSET as usize + data::ENTRY,
    code32 = const SEL_CODE32,
    data_sel = const SEL_DATA,
    code64 = const SEL_CODE64,
    options(att_syntax),
);

unsafe extern "C" {
    static bulkhead_ap_trampoline: u8;
    static bulkhead_ap_trampoline_end: u8;
}

/// The trampoline's machine code, to be copied to the code page.
pub fn code() -> &'static [u8] {
    let start = &raw const bulkhead_ap_trampoline;
    let end = &raw const bulkhead_ap_trampoline_end;
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: both symbols delimit the bytes the `global_asm!` block above emits into
    // a read-only section of this image; nothing writes them.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// What one AP is started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApLaunch {
    /// Physical address of the code page.
    pub code_base: u64,
    /// The PML4 the AP loads in 32-bit mode (the copy at `code_base + ROOT_OFFSET`).
    pub root_32: u64,
    /// The AP's stack top (16-byte aligned).
    pub stack_top: u64,
    /// `extern "sysv64" fn(u64) -> !` in the hypervisor's text.
    pub entry: u64,
    pub argument: u64,
}

/// Why the trampoline cannot be set up as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrampolineError {
    /// The code page is not page aligned, is page 0, or lies where a startup IPI
    /// cannot point (at or above 0xA0000).
    BadCodeBase(u64),
    /// The 32-bit root does not fit CR3 in 32-bit mode.
    RootAbove4GiB(u64),
    /// The stack top is not 16-byte aligned (the System V entry expects it).
    UnalignedStack(u64),
    /// A page given is smaller than 4 KiB, or the code does not fit one.
    PageTooSmall,
}

/// The startup IPI vector for a code page: its page number (SDM Vol. 3 9.4.4.1:
/// CS = vector << 8, IP = 0).
pub fn sipi_vector(code_base: u64) -> Result<u8, TrampolineError> {
    if !code_base.is_multiple_of(PAGE as u64) || !(1..0xA_0000).contains(&code_base) {
        return Err(TrampolineError::BadCodeBase(code_base));
    }
    u8::try_from(code_base >> 12).map_err(|_| TrampolineError::BadCodeBase(code_base))
}

/// Copies [`code`] into the code page.
pub fn write_code_page(page: &mut [u8]) -> Result<(), TrampolineError> {
    let code = code();
    page.get_mut(..code.len()).ok_or(TrampolineError::PageTooSmall)?.copy_from_slice(code);
    Ok(())
}

/// Fills the data page for one AP and clears its "alive" flag.
pub fn write_data_page(page: &mut [u8], launch: &ApLaunch) -> Result<(), TrampolineError> {
    sipi_vector(launch.code_base)?;
    let root_32 = u32::try_from(launch.root_32).map_err(|_| TrampolineError::RootAbove4GiB(launch.root_32))?;
    if !launch.stack_top.is_multiple_of(16) {
        return Err(TrampolineError::UnalignedStack(launch.stack_top));
    }
    if page.len() < PAGE {
        return Err(TrampolineError::PageTooSmall);
    }
    // Below 0xA0000 plus two pages: fits 32 bits (checked by `sipi_vector`).
    let gdt_base = launch.code_base.saturating_add(DATA_OFFSET).saturating_add(data::GDT as u64) as u32;
    let gdt_limit = (data::GDT_ENTRIES * 8 - 1) as u16;
    let mut put = |offset: usize, bytes: &[u8]| {
        if let Some(dst) = page.get_mut(offset..offset.saturating_add(bytes.len())) {
            dst.copy_from_slice(bytes);
        }
    };
    put(data::ALIVE, &0u32.to_le_bytes());
    put(data::ROOT_32, &root_32.to_le_bytes());
    put(data::GDTR, &gdt_limit.to_le_bytes());
    put(data::GDTR + 2, &gdt_base.to_le_bytes());
    put(data::STACK_TOP, &launch.stack_top.to_le_bytes());
    put(data::ENTRY, &launch.entry.to_le_bytes());
    put(data::ARGUMENT, &launch.argument.to_le_bytes());
    for (i, descriptor) in GDT.iter().enumerate() {
        put(data::GDT.saturating_add(i.saturating_mul(8)), &descriptor.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(page: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(page[offset..offset + 8].try_into().unwrap())
    }

    fn launch() -> ApLaunch {
        ApLaunch { code_base: 0x9c000, root_32: 0x9e000, stack_top: 0x1_2345_0000, entry: 0x400_1230, argument: 3 }
    }

    #[test]
    fn the_data_page_carries_the_aps_stack_entry_root_and_a_gdt_at_its_linear_address() {
        let mut page = vec![0xaa_u8; PAGE];
        write_data_page(&mut page, &launch()).unwrap();
        assert_eq!(&page[data::ALIVE..data::ALIVE + 4], &[0, 0, 0, 0], "the alive flag starts clear");
        assert_eq!(u32::from_le_bytes(page[data::ROOT_32..data::ROOT_32 + 4].try_into().unwrap()), 0x9e000);
        assert_eq!(u16::from_le_bytes([page[data::GDTR], page[data::GDTR + 1]]), 31);
        let gdt_base = u32::from_le_bytes(page[data::GDTR + 2..data::GDTR + 6].try_into().unwrap());
        assert_eq!(gdt_base, 0x9c000 + 0x1000 + data::GDT as u32);
        assert_eq!(u64_at(&page, data::STACK_TOP), 0x1_2345_0000);
        assert_eq!(u64_at(&page, data::ENTRY), 0x400_1230);
        assert_eq!(u64_at(&page, data::ARGUMENT), 3);
        // Selector 0x18 is a 64-bit code segment (L set, D clear), 0x08 a 32-bit one.
        let code64 = u64_at(&page, data::GDT + 0x18);
        assert!(code64 & (1 << 53) != 0 && code64 & (1 << 54) == 0);
        let code32 = u64_at(&page, data::GDT + 0x08);
        assert!(code32 & (1 << 53) == 0 && code32 & (1 << 54) != 0);
        assert_eq!(u64_at(&page, data::GDT), 0);
        // Nothing past the GDT is touched (the trampoline's stack lives there).
        assert!(page[data::END..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn bad_launches_are_refused() {
        let mut page = vec![0u8; PAGE];
        let root = ApLaunch { root_32: 0x1_0000_0000, ..launch() };
        assert_eq!(write_data_page(&mut page, &root), Err(TrampolineError::RootAbove4GiB(0x1_0000_0000)));
        for base in [0, 0x9c800, 0xa0000, 0x10_0000] {
            let l = ApLaunch { code_base: base, ..launch() };
            assert_eq!(write_data_page(&mut page, &l), Err(TrampolineError::BadCodeBase(base)));
        }
        let stack = ApLaunch { stack_top: 0x1008, ..launch() };
        assert_eq!(write_data_page(&mut page, &stack), Err(TrampolineError::UnalignedStack(0x1008)));
        assert_eq!(write_data_page(&mut page[..100], &launch()), Err(TrampolineError::PageTooSmall));
    }

    #[test]
    fn the_sipi_vector_is_the_code_pages_number() {
        assert_eq!(sipi_vector(0x9c000), Ok(0x9c));
        assert_eq!(sipi_vector(0x1000), Ok(0x01));
        assert_eq!(sipi_vector(0xa0000), Err(TrampolineError::BadCodeBase(0xa0000)));
    }

    #[test]
    fn the_code_fits_its_page_and_reads_its_data_page() {
        let code = code();
        assert!(!code.is_empty() && code.len() < PAGE, "{} bytes", code.len());
        assert_eq!(code[0], 0xfa, "starts with cli");
        // `lgdtl` of the data page's GDTR, 16-bit addressing: 66 0F 01 /2 with disp16.
        let gdtr = (DATA_OFFSET as u16 + data::GDTR as u16).to_le_bytes();
        let lgdt = [0x66, 0x0f, 0x01, 0x16, gdtr[0], gdtr[1]];
        assert!(code.windows(6).any(|w| w == lgdt), "no lgdt of the GDTR at its offset");
        let mut page = vec![0u8; PAGE];
        write_code_page(&mut page).unwrap();
        assert_eq!(&page[..code.len()], code);
        assert_eq!(write_code_page(&mut page[..8]), Err(TrampolineError::PageTooSmall));
    }
}
