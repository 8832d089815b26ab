//! The guest-state area of a new vCPU (Intel SDM Vol. 3 25.4) for each arch-neutral
//! initial state, and the segment access-rights format. Pure: produces the VMCS writes
//! as a list, so it is tested on the host against the VM-entry checks it must pass
//! (SDM Vol. 3 27.3.1).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::caps::VmxFeatures;
use super::fields::*;
use crate::arch::backend::InitialState;
use crate::arch::regs::{GuestRegisters, Segment, cr};

/// Power-on PAT.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// Access rights bit 16: the segment is unusable.
pub const AR_UNUSABLE: u32 = 1 << 16;

/// VMX access rights (bits 7:0 access byte, 15:12 AVL/L/DB/G, 16 unusable) from the
/// compressed 12-bit form `Segment::attrib` uses; a segment that is not present is
/// unusable.
pub const fn ar_from_attrib(attrib: u16) -> u32 {
    if attrib & Segment::ATTR_PRESENT == 0 {
        return AR_UNUSABLE;
    }
    (attrib as u32 & 0xff) | ((attrib as u32 & 0xf00) << 4)
}

/// The compressed form of VMX access rights; an unusable segment reads as not present.
pub const fn attrib_from_ar(ar: u32) -> u16 {
    if ar & AR_UNUSABLE != 0 {
        return 0;
    }
    ((ar & 0xff) | ((ar >> 4) & 0xf00)) as u16
}

/// The selector, base, limit and access-rights fields of each segment register.
#[derive(Debug)]
pub struct SegFields {
    pub selector: u32,
    pub base: u32,
    pub limit: u32,
    pub ar: u32,
}

pub const ES: SegFields =
    SegFields { selector: GUEST_ES_SELECTOR, base: GUEST_ES_BASE, limit: GUEST_ES_LIMIT, ar: GUEST_ES_AR };
pub const CS: SegFields =
    SegFields { selector: GUEST_CS_SELECTOR, base: GUEST_CS_BASE, limit: GUEST_CS_LIMIT, ar: GUEST_CS_AR };
pub const SS: SegFields =
    SegFields { selector: GUEST_SS_SELECTOR, base: GUEST_SS_BASE, limit: GUEST_SS_LIMIT, ar: GUEST_SS_AR };
pub const DS: SegFields =
    SegFields { selector: GUEST_DS_SELECTOR, base: GUEST_DS_BASE, limit: GUEST_DS_LIMIT, ar: GUEST_DS_AR };
pub const FS: SegFields =
    SegFields { selector: GUEST_FS_SELECTOR, base: GUEST_FS_BASE, limit: GUEST_FS_LIMIT, ar: GUEST_FS_AR };
pub const GS: SegFields =
    SegFields { selector: GUEST_GS_SELECTOR, base: GUEST_GS_BASE, limit: GUEST_GS_LIMIT, ar: GUEST_GS_AR };
pub const LDTR: SegFields =
    SegFields { selector: GUEST_LDTR_SELECTOR, base: GUEST_LDTR_BASE, limit: GUEST_LDTR_LIMIT, ar: GUEST_LDTR_AR };
pub const TR: SegFields =
    SegFields { selector: GUEST_TR_SELECTOR, base: GUEST_TR_BASE, limit: GUEST_TR_LIMIT, ar: GUEST_TR_AR };

fn push_segment(out: &mut Vec<(u32, u64)>, f: &SegFields, s: Segment) {
    out.push((f.selector, u64::from(s.selector)));
    out.push((f.base, s.base));
    out.push((f.limit, u64::from(s.limit)));
    out.push((f.ar, u64::from(ar_from_attrib(s.attrib))));
}

/// The guest's CR0 and CR4 as the guest wrote them (the read shadows), its EFER,
/// and whether it starts in IA-32e mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestControl {
    pub cr0: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// The VMCS guest-state writes for `initial`, and the GPRs it sets in `regs`.
pub fn initial(
    initial: InitialState,
    features: &VmxFeatures,
    regs: &mut GuestRegisters,
) -> (Vec<(u32, u64)>, GuestControl) {
    *regs = GuestRegisters { rflags: 0x2, ..GuestRegisters::default() };
    let mut out = Vec::new();
    let seg = |selector, attrib, limit, base| Segment { selector, attrib, limit, base };
    let (control, cs, data, tr, gdt_limit, cr3) = match initial {
        InitialState::Reset | InitialState::Startup { .. } => {
            // CD | NW | ET (SDM Vol. 3 Table 10-1).
            let control = GuestControl { cr0: 0x6000_0010, cr4: 0, efer: 0 };
            let cs = match initial {
                InitialState::Startup { vector } => {
                    regs.rip = 0;
                    let selector = u16::from(vector) << 8;
                    seg(selector, 0x9b, 0xffff, u64::from(selector) << 4)
                }
                _ => {
                    regs.rip = 0xfff0;
                    seg(0xf000, 0x9b, 0xffff, 0xffff_0000)
                }
            };
            (control, cs, seg(0, 0x93, 0xffff, 0), seg(0, 0x83, 0xffff, 0), 0xffff, 0)
        }
        InitialState::Long64 { rip, rsp, cr3, rsi } => {
            regs.rip = rip;
            regs.rsp = rsp;
            regs.rsi = rsi;
            // PE | MP | ET | NE | WP | PG.
            let control =
                GuestControl { cr0: 0x8005_0033, cr4: cr::CR4_PAE, efer: cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE };
            (control, seg(0x10, 0xa9b, 0xffff_ffff, 0), seg(0x18, 0xc93, 0xffff_ffff, 0), seg(0, 0x8b, 0x67, 0), 0, cr3)
        }
        InitialState::Protected32 { eip, eax, ebx } => {
            regs.rip = u64::from(eip);
            regs.rax = u64::from(eax);
            regs.rbx = u64::from(ebx);
            let control = GuestControl { cr0: 0x11, cr4: 0, efer: 0 };
            (control, seg(0x10, 0xc9b, 0xffff_ffff, 0), seg(0x18, 0xc93, 0xffff_ffff, 0), seg(0, 0x8b, 0x67, 0), 0, 0)
        }
    };
    push_segment(&mut out, &CS, cs);
    for f in [&ES, &SS, &DS, &FS, &GS] {
        push_segment(&mut out, f, data);
    }
    push_segment(&mut out, &LDTR, seg(0, 0x82, 0xffff, 0));
    push_segment(&mut out, &TR, tr);
    out.extend_from_slice(&[
        (GUEST_GDTR_BASE, 0),
        (GUEST_GDTR_LIMIT, gdt_limit),
        (GUEST_IDTR_BASE, 0),
        (GUEST_IDTR_LIMIT, gdt_limit),
        (GUEST_CR0, features.guest_cr0(control.cr0)),
        (CR0_READ_SHADOW, control.cr0),
        (GUEST_CR3, cr3),
        (GUEST_CR4, features.guest_cr4(control.cr4)),
        (CR4_READ_SHADOW, control.cr4),
        (GUEST_IA32_EFER, control.efer),
        (GUEST_IA32_PAT, PAT_DEFAULT),
        (GUEST_DR7, 0x400),
        (GUEST_IA32_DEBUGCTL, 0),
        (GUEST_RFLAGS, regs.rflags),
        (GUEST_RIP, regs.rip),
        (GUEST_RSP, regs.rsp),
        (GUEST_SYSENTER_CS, 0),
        (GUEST_SYSENTER_ESP, 0),
        (GUEST_SYSENTER_EIP, 0),
        (GUEST_INTERRUPTIBILITY, 0),
        (GUEST_ACTIVITY_STATE, 0),
        (GUEST_PENDING_DBG_EXCEPTIONS, 0),
        // No shadow VMCS.
        (VMCS_LINK_POINTER, u64::MAX),
    ]);
    (out, control)
}

/// The CR0 bits the guest may not own (fixed to a value it might not want, other
/// than PE and PG, which unrestricted guest frees): owned by the hypervisor, read
/// through the shadow, and a guest write that changes them exits.
pub const fn cr0_host_mask(features: &VmxFeatures) -> u64 {
    ((features.cr0_fixed0 & !(1 | 1 << 31)) | !features.cr0_fixed1) & 0xffff_ffff
}

/// The CR4 bits the guest may not own (VMXE, and every bit VMX operation forbids).
pub const fn cr4_host_mask(features: &VmxFeatures) -> u64 {
    (features.cr4_fixed0 | !features.cr4_fixed1) & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> VmxFeatures {
        VmxFeatures {
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_27ff,
            ..VmxFeatures::default()
        }
    }

    fn get(writes: &[(u32, u64)], field: u32) -> u64 {
        writes.iter().rev().find(|(f, _)| *f == field).map(|(_, v)| *v).unwrap()
    }

    #[test]
    fn access_rights_round_trip() {
        // 64-bit code: access byte 0x9b, L and G.
        assert_eq!(ar_from_attrib(0xa9b), 0xa09b);
        assert_eq!(attrib_from_ar(0xa09b), 0xa9b);
        assert_eq!(ar_from_attrib(0xc93), 0xc093);
        assert_eq!(ar_from_attrib(0), AR_UNUSABLE);
        assert_eq!(attrib_from_ar(AR_UNUSABLE | 0x93), 0);
    }

    #[test]
    fn long_mode_state_passes_the_entry_checks_it_must() {
        let mut regs = GuestRegisters::default();
        let init = InitialState::Long64 { rip: 0x10_0000, rsp: 0x20_0000, cr3: 0x3000, rsi: 7 };
        let (w, control) = initial(init, &features(), &mut regs);
        assert_eq!((regs.rip, regs.rsp, regs.rsi, regs.rflags), (0x10_0000, 0x20_0000, 7, 2));
        // CR0 keeps NE, CR4 gets VMXE in the real register but not in the shadow.
        assert_eq!(get(&w, GUEST_CR0), 0x8005_0033);
        assert_eq!(get(&w, GUEST_CR4), 0x2020);
        assert_eq!(get(&w, CR4_READ_SHADOW), 0x20);
        assert_ne!(control.efer & cr::EFER_LMA, 0);
        // CS: 64-bit code (L=1, D=0); TR: busy 64-bit TSS; LDTR usable.
        assert_eq!(get(&w, GUEST_CS_AR), 0xa09b);
        assert_eq!(get(&w, GUEST_TR_AR), 0x8b);
        assert_eq!(get(&w, GUEST_LDTR_AR), 0x82);
        assert_eq!(get(&w, GUEST_SS_AR) & 0x60, 0, "SS.DPL = CPL = 0");
        assert_eq!(get(&w, VMCS_LINK_POINTER), u64::MAX);
    }

    #[test]
    fn reset_state_is_real_mode_with_ne_forced() {
        let mut regs = GuestRegisters::default();
        let (w, control) = initial(InitialState::Reset, &features(), &mut regs);
        assert_eq!(regs.rip, 0xfff0);
        assert_eq!(get(&w, GUEST_CS_BASE), 0xffff_0000);
        assert_eq!(get(&w, GUEST_CR0), 0x6000_0030);
        assert_eq!(get(&w, CR0_READ_SHADOW), 0x6000_0010);
        assert_eq!(control.efer, 0);
        // A 16-bit busy TSS is allowed outside IA-32e mode.
        assert_eq!(get(&w, GUEST_TR_AR), 0x83);
        assert_eq!(cr0_host_mask(&features()), 0x20);
        assert_eq!(cr4_host_mask(&features()), 0xffc8_d800 | 0x2000);
    }
}
