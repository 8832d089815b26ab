//! The Virtual Machine Control Block (AMD APM Vol. 2, Appendix B "Layout of VMCB"):
//! a 4 KiB, 4 KiB-aligned page with the control area at 0x000–0x3FF (Table B-1) and
//! the state save area from 0x400 (Table B-2). Every field's offset is asserted at
//! compile time against those tables.

use core::mem::{offset_of, size_of};

use bitflags::bitflags;

use crate::arch::exit::{Event, EventKind};

/// VMCB control area (APM Vol. 2 Table B-1).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VmcbControl {
    /// 000h: bits 15:0 intercept CR0–15 reads, 31:16 writes.
    pub intercept_cr: u32,
    /// 004h: bits 15:0 intercept DR0–15 reads, 31:16 writes.
    pub intercept_dr: u32,
    /// 008h: one bit per exception vector.
    pub intercept_exceptions: u32,
    /// 00Ch: [`InterceptMisc1`].
    pub intercept_misc1: u32,
    /// 010h: [`InterceptMisc2`].
    pub intercept_misc2: u32,
    /// 014h: [`InterceptMisc3`].
    pub intercept_misc3: u32,
    _reserved_018: [u8; 0x24],
    /// 03Ch: PAUSE filter threshold.
    pub pause_filter_threshold: u16,
    /// 03Eh: PAUSE filter count.
    pub pause_filter_count: u16,
    /// 040h: physical base of the 12 KiB I/O permission map.
    pub iopm_base_pa: u64,
    /// 048h: physical base of the 8 KiB MSR permission map.
    pub msrpm_base_pa: u64,
    /// 050h: added to the TSC while the guest runs.
    pub tsc_offset: u64,
    /// 058h: guest ASID (bits 31:0).
    pub guest_asid: u32,
    /// 05Ch: TLB_CONTROL (bits 39:32 of the quadword at 058h), [`tlb_control`].
    pub tlb_control: u8,
    _reserved_05d: [u8; 3],
    /// 060h: V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR, ...
    /// ([`int_ctl`]).
    pub int_ctl: u64,
    /// 068h: bit 0 interrupt shadow, bit 1 guest interrupt mask ([`int_state`]).
    pub int_state: u64,
    /// 070h: EXITCODE.
    pub exit_code: u64,
    /// 078h: EXITINFO1.
    pub exit_info1: u64,
    /// 080h: EXITINFO2.
    pub exit_info2: u64,
    /// 088h: EXITINTINFO (event being delivered when the exit happened).
    pub exit_int_info: u64,
    /// 090h: bit 0 NP_ENABLE, bit 1 SEV, bit 2 SEV-ES, ... ([`nested_ctl`]).
    pub nested_ctl: u64,
    /// 098h: AVIC APIC_BAR.
    pub avic_apic_bar: u64,
    /// 0A0h: guest-physical address of the GHCB (SEV-ES).
    pub ghcb_gpa: u64,
    /// 0A8h: EVENTINJ ([`encode_event`]).
    pub event_inj: u64,
    /// 0B0h: nested page table CR3 (nCR3).
    pub ncr3: u64,
    /// 0B8h: bit 0 LBR virtualisation, bit 1 virtual VMSAVE/VMLOAD.
    pub virt_ext: u64,
    /// 0C0h: VMCB clean bits (bits 31:0).
    pub vmcb_clean: u32,
    _reserved_0c4: u32,
    /// 0C8h: next sequential RIP (NRIP save).
    pub next_rip: u64,
    /// 0D0h: number of guest instruction bytes fetched (decode assists).
    pub insn_len: u8,
    /// 0D1h: guest instruction bytes.
    pub insn_bytes: [u8; 15],
    /// 0E0h: AVIC APIC backing page pointer.
    pub avic_backing_page: u64,
    _reserved_0e8: u64,
    /// 0F0h: AVIC logical table pointer.
    pub avic_logical_table: u64,
    /// 0F8h: AVIC physical table pointer.
    pub avic_physical_table: u64,
    _reserved_100: u64,
    /// 108h: VMSA pointer (SEV-ES).
    pub vmsa_pa: u64,
    _reserved_110: [u8; 0x3e0 - 0x110],
    /// 3E0h–3FFh: reserved for host usage.
    pub host_reserved: [u8; 0x20],
}

/// A segment register in the VMCB (APM Vol. 2 Table B-2; attrib format 15.5.1).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmcbSegment {
    pub selector: u16,
    /// Descriptor bits 47:40 in 7:0 (type, S, DPL, P) and 55:52 in 11:8 (AVL, L, D/B, G).
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// VMCB state save area (APM Vol. 2 Table B-2); offsets relative to VMCB 400h.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VmcbSave {
    /// 000h
    pub es: VmcbSegment,
    /// 010h
    pub cs: VmcbSegment,
    /// 020h
    pub ss: VmcbSegment,
    /// 030h
    pub ds: VmcbSegment,
    /// 040h
    pub fs: VmcbSegment,
    /// 050h
    pub gs: VmcbSegment,
    /// 060h (only limit and base are used)
    pub gdtr: VmcbSegment,
    /// 070h
    pub ldtr: VmcbSegment,
    /// 080h (only limit and base are used)
    pub idtr: VmcbSegment,
    /// 090h
    pub tr: VmcbSegment,
    _reserved_0a0: [u8; 0xcb - 0xa0],
    /// 0CBh: current privilege level.
    pub cpl: u8,
    _reserved_0cc: u32,
    /// 0D0h
    pub efer: u64,
    _reserved_0d8: [u8; 0x148 - 0xd8],
    /// 148h
    pub cr4: u64,
    /// 150h
    pub cr3: u64,
    /// 158h
    pub cr0: u64,
    /// 160h
    pub dr7: u64,
    /// 168h
    pub dr6: u64,
    /// 170h
    pub rflags: u64,
    /// 178h
    pub rip: u64,
    _reserved_180: [u8; 0x1d8 - 0x180],
    /// 1D8h
    pub rsp: u64,
    /// 1E0h: S_CET
    pub s_cet: u64,
    /// 1E8h: SSP
    pub ssp: u64,
    /// 1F0h: ISST_ADDR
    pub isst_addr: u64,
    /// 1F8h
    pub rax: u64,
    /// 200h
    pub star: u64,
    /// 208h
    pub lstar: u64,
    /// 210h
    pub cstar: u64,
    /// 218h
    pub sfmask: u64,
    /// 220h
    pub kernel_gs_base: u64,
    /// 228h
    pub sysenter_cs: u64,
    /// 230h
    pub sysenter_esp: u64,
    /// 238h
    pub sysenter_eip: u64,
    /// 240h
    pub cr2: u64,
    _reserved_248: [u8; 0x268 - 0x248],
    /// 268h: guest PAT (used with nested paging).
    pub g_pat: u64,
    /// 270h: DBGCTL
    pub dbgctl: u64,
    /// 278h: BR_FROM
    pub br_from: u64,
    /// 280h: BR_TO
    pub br_to: u64,
    /// 288h: LASTEXCPFROM
    pub last_excp_from: u64,
    /// 290h: LASTEXCPTO
    pub last_excp_to: u64,
    _reserved_298: [u8; 0x2e0 - 0x298],
    /// 2E0h: SPEC_CTRL
    pub spec_ctrl: u64,
    _reserved_2e8: [u8; 0xc00 - 0x2e8],
}

/// The whole VMCB page.
#[repr(C, align(4096))]
#[derive(Debug, Clone, Copy)]
pub struct Vmcb {
    pub control: VmcbControl,
    pub save: VmcbSave,
}

// Table B-1.
const _: () = {
    assert!(size_of::<VmcbControl>() == 0x400);
    assert!(offset_of!(VmcbControl, intercept_cr) == 0x000);
    assert!(offset_of!(VmcbControl, intercept_dr) == 0x004);
    assert!(offset_of!(VmcbControl, intercept_exceptions) == 0x008);
    assert!(offset_of!(VmcbControl, intercept_misc1) == 0x00c);
    assert!(offset_of!(VmcbControl, intercept_misc2) == 0x010);
    assert!(offset_of!(VmcbControl, intercept_misc3) == 0x014);
    assert!(offset_of!(VmcbControl, pause_filter_threshold) == 0x03c);
    assert!(offset_of!(VmcbControl, pause_filter_count) == 0x03e);
    assert!(offset_of!(VmcbControl, iopm_base_pa) == 0x040);
    assert!(offset_of!(VmcbControl, msrpm_base_pa) == 0x048);
    assert!(offset_of!(VmcbControl, tsc_offset) == 0x050);
    assert!(offset_of!(VmcbControl, guest_asid) == 0x058);
    assert!(offset_of!(VmcbControl, tlb_control) == 0x05c);
    assert!(offset_of!(VmcbControl, int_ctl) == 0x060);
    assert!(offset_of!(VmcbControl, int_state) == 0x068);
    assert!(offset_of!(VmcbControl, exit_code) == 0x070);
    assert!(offset_of!(VmcbControl, exit_info1) == 0x078);
    assert!(offset_of!(VmcbControl, exit_info2) == 0x080);
    assert!(offset_of!(VmcbControl, exit_int_info) == 0x088);
    assert!(offset_of!(VmcbControl, nested_ctl) == 0x090);
    assert!(offset_of!(VmcbControl, avic_apic_bar) == 0x098);
    assert!(offset_of!(VmcbControl, ghcb_gpa) == 0x0a0);
    assert!(offset_of!(VmcbControl, event_inj) == 0x0a8);
    assert!(offset_of!(VmcbControl, ncr3) == 0x0b0);
    assert!(offset_of!(VmcbControl, virt_ext) == 0x0b8);
    assert!(offset_of!(VmcbControl, vmcb_clean) == 0x0c0);
    assert!(offset_of!(VmcbControl, next_rip) == 0x0c8);
    assert!(offset_of!(VmcbControl, insn_len) == 0x0d0);
    assert!(offset_of!(VmcbControl, insn_bytes) == 0x0d1);
    assert!(offset_of!(VmcbControl, avic_backing_page) == 0x0e0);
    assert!(offset_of!(VmcbControl, avic_logical_table) == 0x0f0);
    assert!(offset_of!(VmcbControl, avic_physical_table) == 0x0f8);
    assert!(offset_of!(VmcbControl, vmsa_pa) == 0x108);
    assert!(offset_of!(VmcbControl, host_reserved) == 0x3e0);
};

// Table B-2 (offsets from the start of the save area at VMCB 400h).
const _: () = {
    assert!(size_of::<VmcbSegment>() == 16);
    assert!(size_of::<VmcbSave>() == 0xc00);
    assert!(offset_of!(VmcbSave, es) == 0x000);
    assert!(offset_of!(VmcbSave, cs) == 0x010);
    assert!(offset_of!(VmcbSave, ss) == 0x020);
    assert!(offset_of!(VmcbSave, ds) == 0x030);
    assert!(offset_of!(VmcbSave, fs) == 0x040);
    assert!(offset_of!(VmcbSave, gs) == 0x050);
    assert!(offset_of!(VmcbSave, gdtr) == 0x060);
    assert!(offset_of!(VmcbSave, ldtr) == 0x070);
    assert!(offset_of!(VmcbSave, idtr) == 0x080);
    assert!(offset_of!(VmcbSave, tr) == 0x090);
    assert!(offset_of!(VmcbSave, cpl) == 0x0cb);
    assert!(offset_of!(VmcbSave, efer) == 0x0d0);
    assert!(offset_of!(VmcbSave, cr4) == 0x148);
    assert!(offset_of!(VmcbSave, cr3) == 0x150);
    assert!(offset_of!(VmcbSave, cr0) == 0x158);
    assert!(offset_of!(VmcbSave, dr7) == 0x160);
    assert!(offset_of!(VmcbSave, dr6) == 0x168);
    assert!(offset_of!(VmcbSave, rflags) == 0x170);
    assert!(offset_of!(VmcbSave, rip) == 0x178);
    assert!(offset_of!(VmcbSave, rsp) == 0x1d8);
    assert!(offset_of!(VmcbSave, s_cet) == 0x1e0);
    assert!(offset_of!(VmcbSave, ssp) == 0x1e8);
    assert!(offset_of!(VmcbSave, isst_addr) == 0x1f0);
    assert!(offset_of!(VmcbSave, rax) == 0x1f8);
    assert!(offset_of!(VmcbSave, star) == 0x200);
    assert!(offset_of!(VmcbSave, lstar) == 0x208);
    assert!(offset_of!(VmcbSave, cstar) == 0x210);
    assert!(offset_of!(VmcbSave, sfmask) == 0x218);
    assert!(offset_of!(VmcbSave, kernel_gs_base) == 0x220);
    assert!(offset_of!(VmcbSave, sysenter_cs) == 0x228);
    assert!(offset_of!(VmcbSave, sysenter_esp) == 0x230);
    assert!(offset_of!(VmcbSave, sysenter_eip) == 0x238);
    assert!(offset_of!(VmcbSave, cr2) == 0x240);
    assert!(offset_of!(VmcbSave, g_pat) == 0x268);
    assert!(offset_of!(VmcbSave, dbgctl) == 0x270);
    assert!(offset_of!(VmcbSave, br_from) == 0x278);
    assert!(offset_of!(VmcbSave, br_to) == 0x280);
    assert!(offset_of!(VmcbSave, last_excp_from) == 0x288);
    assert!(offset_of!(VmcbSave, last_excp_to) == 0x290);
    assert!(offset_of!(VmcbSave, spec_ctrl) == 0x2e0);
    // The whole page.
    assert!(size_of::<Vmcb>() == 0x1000);
    assert!(core::mem::align_of::<Vmcb>() == 0x1000);
    assert!(offset_of!(Vmcb, save) == 0x400);
};

const ZERO_SEGMENT: VmcbSegment = VmcbSegment { selector: 0, attrib: 0, limit: 0, base: 0 };

impl Vmcb {
    /// An all-zero VMCB.
    pub const fn zeroed() -> Vmcb {
        Vmcb {
            control: VmcbControl {
                intercept_cr: 0,
                intercept_dr: 0,
                intercept_exceptions: 0,
                intercept_misc1: 0,
                intercept_misc2: 0,
                intercept_misc3: 0,
                _reserved_018: [0; 0x24],
                pause_filter_threshold: 0,
                pause_filter_count: 0,
                iopm_base_pa: 0,
                msrpm_base_pa: 0,
                tsc_offset: 0,
                guest_asid: 0,
                tlb_control: 0,
                _reserved_05d: [0; 3],
                int_ctl: 0,
                int_state: 0,
                exit_code: 0,
                exit_info1: 0,
                exit_info2: 0,
                exit_int_info: 0,
                nested_ctl: 0,
                avic_apic_bar: 0,
                ghcb_gpa: 0,
                event_inj: 0,
                ncr3: 0,
                virt_ext: 0,
                vmcb_clean: 0,
                _reserved_0c4: 0,
                next_rip: 0,
                insn_len: 0,
                insn_bytes: [0; 15],
                avic_backing_page: 0,
                _reserved_0e8: 0,
                avic_logical_table: 0,
                avic_physical_table: 0,
                _reserved_100: 0,
                vmsa_pa: 0,
                _reserved_110: [0; 0x3e0 - 0x110],
                host_reserved: [0; 0x20],
            },
            save: VmcbSave {
                es: ZERO_SEGMENT,
                cs: ZERO_SEGMENT,
                ss: ZERO_SEGMENT,
                ds: ZERO_SEGMENT,
                fs: ZERO_SEGMENT,
                gs: ZERO_SEGMENT,
                gdtr: ZERO_SEGMENT,
                ldtr: ZERO_SEGMENT,
                idtr: ZERO_SEGMENT,
                tr: ZERO_SEGMENT,
                _reserved_0a0: [0; 0xcb - 0xa0],
                cpl: 0,
                _reserved_0cc: 0,
                efer: 0,
                _reserved_0d8: [0; 0x148 - 0xd8],
                cr4: 0,
                cr3: 0,
                cr0: 0,
                dr7: 0,
                dr6: 0,
                rflags: 0,
                rip: 0,
                _reserved_180: [0; 0x1d8 - 0x180],
                rsp: 0,
                s_cet: 0,
                ssp: 0,
                isst_addr: 0,
                rax: 0,
                star: 0,
                lstar: 0,
                cstar: 0,
                sfmask: 0,
                kernel_gs_base: 0,
                sysenter_cs: 0,
                sysenter_esp: 0,
                sysenter_eip: 0,
                cr2: 0,
                _reserved_248: [0; 0x268 - 0x248],
                g_pat: 0,
                dbgctl: 0,
                br_from: 0,
                br_to: 0,
                last_excp_from: 0,
                last_excp_to: 0,
                _reserved_298: [0; 0x2e0 - 0x298],
                spec_ctrl: 0,
                _reserved_2e8: [0; 0xc00 - 0x2e8],
            },
        }
    }
}

/// CR intercept bit for reads of CRn (APM Vol. 2 15.9).
pub const fn intercept_cr_read(n: u8) -> u32 {
    1 << (n & 15)
}
/// CR intercept bit for writes of CRn (16 above the read bits).
pub const fn intercept_cr_write(n: u8) -> u32 {
    intercept_cr_read(n) << 16
}
/// DR intercept bit for reads of DRn (APM Vol. 2 15.10).
pub const fn intercept_dr_read(n: u8) -> u32 {
    1 << (n & 15)
}
/// DR intercept bit for writes of DRn (16 above the read bits).
pub const fn intercept_dr_write(n: u8) -> u32 {
    intercept_dr_read(n) << 16
}
/// Exception intercept bit for `vector` (APM Vol. 2 15.12).
pub const fn intercept_exception(vector: u8) -> u32 {
    1 << (vector & 31)
}

bitflags! {
    /// VMCB 00Ch (APM Vol. 2 Table B-1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct InterceptMisc1: u32 {
        const INTR = 1 << 0;
        const NMI = 1 << 1;
        const SMI = 1 << 2;
        const INIT = 1 << 3;
        const VINTR = 1 << 4;
        const CR0_SEL_WRITE = 1 << 5;
        const IDTR_READ = 1 << 6;
        const GDTR_READ = 1 << 7;
        const LDTR_READ = 1 << 8;
        const TR_READ = 1 << 9;
        const IDTR_WRITE = 1 << 10;
        const GDTR_WRITE = 1 << 11;
        const LDTR_WRITE = 1 << 12;
        const TR_WRITE = 1 << 13;
        const RDTSC = 1 << 14;
        const RDPMC = 1 << 15;
        const PUSHF = 1 << 16;
        const POPF = 1 << 17;
        const CPUID = 1 << 18;
        const RSM = 1 << 19;
        const IRET = 1 << 20;
        const INTN = 1 << 21;
        const INVD = 1 << 22;
        const PAUSE = 1 << 23;
        const HLT = 1 << 24;
        const INVLPG = 1 << 25;
        const INVLPGA = 1 << 26;
        const IOIO_PROT = 1 << 27;
        const MSR_PROT = 1 << 28;
        const TASK_SWITCH = 1 << 29;
        const FERR_FREEZE = 1 << 30;
        const SHUTDOWN = 1 << 31;
    }

    /// VMCB 010h (APM Vol. 2 Table B-1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct InterceptMisc2: u32 {
        /// Must be set, or VMRUN fails.
        const VMRUN = 1 << 0;
        const VMMCALL = 1 << 1;
        const VMLOAD = 1 << 2;
        const VMSAVE = 1 << 3;
        const STGI = 1 << 4;
        const CLGI = 1 << 5;
        const SKINIT = 1 << 6;
        const RDTSCP = 1 << 7;
        const ICEBP = 1 << 8;
        const WBINVD = 1 << 9;
        const MONITOR = 1 << 10;
        const MWAIT = 1 << 11;
        const MWAIT_ARMED = 1 << 12;
        const XSETBV = 1 << 13;
        const RDPRU = 1 << 14;
        const EFER_WRITE_TRAP = 1 << 15;
    }

    /// VMCB 014h (APM Vol. 2 Table B-1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct InterceptMisc3: u32 {
        const INVLPGB = 1 << 0;
        const INVLPGB_ILLEGAL = 1 << 1;
        const INVPCID = 1 << 2;
        const MCOMMIT = 1 << 3;
        const TLBSYNC = 1 << 4;
    }
}

/// TLB_CONTROL values (APM Vol. 2 15.16.1).
pub mod tlb_control {
    pub const DO_NOTHING: u8 = 0;
    pub const FLUSH_ALL: u8 = 1;
    /// Needs the FlushByAsid feature.
    pub const FLUSH_GUEST: u8 = 3;
    /// Needs the FlushByAsid feature.
    pub const FLUSH_GUEST_NON_GLOBAL: u8 = 7;
}

/// VMCB 060h fields (APM Vol. 2 15.21.1, Table B-1).
pub mod int_ctl {
    pub const V_TPR_MASK: u64 = 0xff;
    pub const V_IRQ: u64 = 1 << 8;
    pub const V_GIF: u64 = 1 << 9;
    pub const V_NMI: u64 = 1 << 11;
    pub const V_NMI_MASK: u64 = 1 << 12;
    pub const V_INTR_PRIO_SHIFT: u32 = 16;
    pub const V_INTR_PRIO_MASK: u64 = 0xf << V_INTR_PRIO_SHIFT;
    pub const V_IGN_TPR: u64 = 1 << 20;
    /// Physical interrupts are masked by the host's RFLAGS.IF, not the guest's.
    pub const V_INTR_MASKING: u64 = 1 << 24;
    pub const V_GIF_ENABLE: u64 = 1 << 25;
    pub const V_NMI_ENABLE: u64 = 1 << 26;
    pub const AVIC_ENABLE: u64 = 1 << 31;
    pub const V_INTR_VECTOR_SHIFT: u32 = 32;
    pub const V_INTR_VECTOR_MASK: u64 = 0xff << V_INTR_VECTOR_SHIFT;

    /// A pending virtual interrupt: V_IRQ, priority, vector, ignoring V_TPR.
    pub const fn virtual_interrupt(vector: u8, priority: u8) -> u64 {
        V_IRQ | V_IGN_TPR | (((priority & 0xf) as u64) << V_INTR_PRIO_SHIFT) | ((vector as u64) << V_INTR_VECTOR_SHIFT)
    }
}

/// VMCB 068h (APM Vol. 2 15.21.5).
pub mod int_state {
    pub const INTERRUPT_SHADOW: u64 = 1 << 0;
    pub const GUEST_INTERRUPT_MASK: u64 = 1 << 1;
}

/// VMCB 090h (APM Vol. 2 Table B-1).
pub mod nested_ctl {
    pub const NP_ENABLE: u64 = 1 << 0;
}

/// EVENTINJ / EXITINTINFO format (APM Vol. 2 15.20, Figure 15-4).
pub mod event {
    pub const VECTOR_MASK: u64 = 0xff;
    pub const TYPE_SHIFT: u32 = 8;
    pub const TYPE_INTR: u64 = 0;
    pub const TYPE_NMI: u64 = 2;
    pub const TYPE_EXCEPTION: u64 = 3;
    pub const TYPE_SOFT_INT: u64 = 4;
    /// Error code valid.
    pub const EV: u64 = 1 << 11;
    pub const VALID: u64 = 1 << 31;
    pub const ERROR_CODE_SHIFT: u32 = 32;
}

/// Encodes an event as all 64 bits of EVENTINJ (QEMU keeps a stale error-code half
/// otherwise).
pub const fn encode_event(e: &Event) -> u64 {
    let kind = match e.kind {
        EventKind::ExternalInterrupt => event::TYPE_INTR,
        EventKind::Nmi => event::TYPE_NMI,
        EventKind::Exception => event::TYPE_EXCEPTION,
        EventKind::SoftwareInterrupt => event::TYPE_SOFT_INT,
    };
    let mut v = event::VALID | (kind << event::TYPE_SHIFT) | e.vector as u64;
    if let Some(code) = e.error_code {
        v |= event::EV | ((code as u64) << event::ERROR_CODE_SHIFT);
    }
    v
}

/// Decodes EXITINTINFO; `None` unless the valid bit (31) is set.
pub const fn decode_event(raw: u64) -> Option<Event> {
    if raw & event::VALID == 0 {
        return None;
    }
    let kind = match (raw >> event::TYPE_SHIFT) & 7 {
        event::TYPE_NMI => EventKind::Nmi,
        event::TYPE_EXCEPTION => EventKind::Exception,
        event::TYPE_SOFT_INT => EventKind::SoftwareInterrupt,
        _ => EventKind::ExternalInterrupt,
    };
    let error_code = if raw & event::EV != 0 { Some((raw >> event::ERROR_CODE_SHIFT) as u32) } else { None };
    Some(Event { kind, vector: (raw & event::VECTOR_MASK) as u8, error_code })
}

impl From<VmcbSegment> for crate::arch::regs::Segment {
    fn from(s: VmcbSegment) -> Self {
        crate::arch::regs::Segment { selector: s.selector, attrib: s.attrib, limit: s.limit, base: s.base }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_encoding_writes_all_64_bits() {
        let gp = encode_event(&Event::gp(0x1234));
        assert_eq!(gp, 0x0000_1234_8000_0b0d);
        let irq = encode_event(&Event::interrupt(0x40));
        assert_eq!(irq, 0x8000_0040);
        assert_eq!(decode_event(gp), Some(Event::gp(0x1234)));
        // QEMU's stale error code with the valid bit clear decodes as nothing.
        assert_eq!(decode_event(0x0000_1234_0000_0000), None);
        // The spike's triple fault: INT3 being delivered.
        let e = decode_event(0x8000_0403).map(|e| (e.kind, e.vector));
        assert_eq!(e, Some((EventKind::SoftwareInterrupt, 3)));
    }

    #[test]
    fn intercept_bits() {
        assert_eq!(intercept_cr_write(8), 1 << 24);
        assert_eq!(intercept_cr_read(0), 1);
        assert_eq!(intercept_dr_write(7), 1 << 23);
        assert_eq!(intercept_exception(18), 1 << 18);
        assert_eq!(InterceptMisc1::SHUTDOWN.bits(), 0x8000_0000);
        assert_eq!(InterceptMisc1::CPUID.bits(), 0x0004_0000);
        assert_eq!(InterceptMisc2::XSETBV.bits(), 0x2000);
        assert_eq!(int_ctl::virtual_interrupt(0x41, 0xf), 0x41_0010_0100 | (0xf << 16));
    }

    #[test]
    fn zeroed_vmcb_is_zero() {
        let v = Vmcb::zeroed();
        assert_eq!(v.control.exit_code, 0);
        assert_eq!(v.save.spec_ctrl, 0);
    }
}
