//! Guest registers. [`GuestRegisters`] is the block the world-switch code loads and
//! stores (its layout is part of that contract); [`RegisterFile`] is how decision code
//! reads and writes guest state without knowing where the vendor keeps it (SVM keeps
//! RAX, RSP, RIP, RFLAGS, control registers and segments in the VMCB).
#![forbid(unsafe_code)]

use core::fmt;

/// General-purpose registers in instruction-encoding order (ModRM.reg / REX.R numbering,
/// Intel SDM Vol. 2 Table 2-2, AMD APM Vol. 3 Table 1-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Gpr {
    pub const ALL: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The register with encoding `index` (only the low four bits are used).
    pub const fn from_index(index: u8) -> Gpr {
        match index & 0xf {
            0 => Gpr::Rax,
            1 => Gpr::Rcx,
            2 => Gpr::Rdx,
            3 => Gpr::Rbx,
            4 => Gpr::Rsp,
            5 => Gpr::Rbp,
            6 => Gpr::Rsi,
            7 => Gpr::Rdi,
            8 => Gpr::R8,
            9 => Gpr::R9,
            10 => Gpr::R10,
            11 => Gpr::R11,
            12 => Gpr::R12,
            13 => Gpr::R13,
            14 => Gpr::R14,
            // Only 15 is left after the mask.
            _ => Gpr::R15,
        }
    }

    pub const fn index(self) -> u8 {
        self as u8
    }

    pub const fn name(self) -> &'static str {
        match self {
            Gpr::Rax => "rax",
            Gpr::Rcx => "rcx",
            Gpr::Rdx => "rdx",
            Gpr::Rbx => "rbx",
            Gpr::Rsp => "rsp",
            Gpr::Rbp => "rbp",
            Gpr::Rsi => "rsi",
            Gpr::Rdi => "rdi",
            Gpr::R8 => "r8",
            Gpr::R9 => "r9",
            Gpr::R10 => "r10",
            Gpr::R11 => "r11",
            Gpr::R12 => "r12",
            Gpr::R13 => "r13",
            Gpr::R14 => "r14",
            Gpr::R15 => "r15",
        }
    }
}

/// Guest GPRs plus RIP and RFLAGS, in encoding order so that register `n` lives at byte
/// offset `8 * n`. The world-switch code (`arch::svm::entry`) depends on this layout:
/// it loads and stores every GPR except RAX and RSP (which VMRUN takes from the VMCB).
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestRegisters {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// Byte offsets used by the world-switch assembly.
pub mod offsets {
    use super::GuestRegisters;
    use core::mem::offset_of;

    pub const RAX: usize = offset_of!(GuestRegisters, rax);
    pub const RCX: usize = offset_of!(GuestRegisters, rcx);
    pub const RDX: usize = offset_of!(GuestRegisters, rdx);
    pub const RBX: usize = offset_of!(GuestRegisters, rbx);
    pub const RSP: usize = offset_of!(GuestRegisters, rsp);
    pub const RBP: usize = offset_of!(GuestRegisters, rbp);
    pub const RSI: usize = offset_of!(GuestRegisters, rsi);
    pub const RDI: usize = offset_of!(GuestRegisters, rdi);
    pub const R8: usize = offset_of!(GuestRegisters, r8);
    pub const R9: usize = offset_of!(GuestRegisters, r9);
    pub const R10: usize = offset_of!(GuestRegisters, r10);
    pub const R11: usize = offset_of!(GuestRegisters, r11);
    pub const R12: usize = offset_of!(GuestRegisters, r12);
    pub const R13: usize = offset_of!(GuestRegisters, r13);
    pub const R14: usize = offset_of!(GuestRegisters, r14);
    pub const R15: usize = offset_of!(GuestRegisters, r15);
}

const _: () = {
    assert!(core::mem::size_of::<GuestRegisters>() == 18 * 8);
    assert!(offsets::RAX == 0 && offsets::RCX == 8 && offsets::RDX == 16);
    assert!(offsets::RBX == 24 && offsets::RSP == 32 && offsets::RBP == 40);
    assert!(offsets::RSI == 48 && offsets::RDI == 56 && offsets::R8 == 64);
    assert!(offsets::R15 == 120);
};

impl GuestRegisters {
    pub fn get(&self, r: Gpr) -> u64 {
        match r {
            Gpr::Rax => self.rax,
            Gpr::Rcx => self.rcx,
            Gpr::Rdx => self.rdx,
            Gpr::Rbx => self.rbx,
            Gpr::Rsp => self.rsp,
            Gpr::Rbp => self.rbp,
            Gpr::Rsi => self.rsi,
            Gpr::Rdi => self.rdi,
            Gpr::R8 => self.r8,
            Gpr::R9 => self.r9,
            Gpr::R10 => self.r10,
            Gpr::R11 => self.r11,
            Gpr::R12 => self.r12,
            Gpr::R13 => self.r13,
            Gpr::R14 => self.r14,
            Gpr::R15 => self.r15,
        }
    }

    pub fn set(&mut self, r: Gpr, value: u64) {
        let slot = match r {
            Gpr::Rax => &mut self.rax,
            Gpr::Rcx => &mut self.rcx,
            Gpr::Rdx => &mut self.rdx,
            Gpr::Rbx => &mut self.rbx,
            Gpr::Rsp => &mut self.rsp,
            Gpr::Rbp => &mut self.rbp,
            Gpr::Rsi => &mut self.rsi,
            Gpr::Rdi => &mut self.rdi,
            Gpr::R8 => &mut self.r8,
            Gpr::R9 => &mut self.r9,
            Gpr::R10 => &mut self.r10,
            Gpr::R11 => &mut self.r11,
            Gpr::R12 => &mut self.r12,
            Gpr::R13 => &mut self.r13,
            Gpr::R14 => &mut self.r14,
            Gpr::R15 => &mut self.r15,
        };
        *slot = value;
    }
}

/// The register dump that goes into logs and stop reasons.
impl fmt::Debug for GuestRegisters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rip={:#018x} rflags={:#010x}", self.rip, self.rflags)?;
        for (i, r) in Gpr::ALL.iter().enumerate() {
            let sep = if i % 4 == 0 { "\n  " } else { " " };
            write!(f, "{sep}{:>3}={:#018x}", r.name(), self.get(*r))?;
        }
        Ok(())
    }
}

/// RFLAGS bits used by emulation (APM Vol. 2 3.1.6).
pub mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    /// The arithmetic status flags an ALU instruction rewrites.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
}

/// Control-register bits decision code looks at.
pub mod cr {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_LA57: u64 = 1 << 12;
    pub const CR4_SMEP: u64 = 1 << 20;
    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
    pub const EFER_SVME: u64 = 1 << 12;
}

/// Segment registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegReg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
}

/// A segment register's hidden state. `attrib` uses the compressed 12-bit form of the
/// AMD VMCB (APM Vol. 2 15.5.1: bits 7:0 = descriptor access byte, bits 11:8 = AVL, L,
/// D/B, G); a VMX backend converts its access-rights field to this form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

impl Segment {
    pub const ATTR_PRESENT: u16 = 1 << 7;
    pub const ATTR_LONG: u16 = 1 << 9;
    pub const ATTR_DB: u16 = 1 << 10;

    pub const fn is_long(&self) -> bool {
        self.attrib & Self::ATTR_LONG != 0
    }
    pub const fn is_32bit(&self) -> bool {
        self.attrib & Self::ATTR_DB != 0
    }
}

/// How the guest CPU is currently decoding instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    /// CR0.PE = 0.
    Real,
    /// Protected or compatibility mode with a 16-bit code segment.
    Protected16,
    /// Protected or compatibility mode with a 32-bit code segment.
    Protected32,
    /// 64-bit mode: EFER.LMA = 1 and CS.L = 1.
    Long64,
}

impl CpuMode {
    pub fn from_state(cr0: u64, efer: u64, cs: &Segment) -> CpuMode {
        if cr0 & cr::CR0_PE == 0 {
            CpuMode::Real
        } else if efer & cr::EFER_LMA != 0 && cs.is_long() {
            CpuMode::Long64
        } else if cs.is_32bit() {
            CpuMode::Protected32
        } else {
            CpuMode::Protected16
        }
    }

    /// Mask applied to RIP after advancing it (16/32-bit code wraps).
    pub const fn ip_mask(self) -> u64 {
        match self {
            CpuMode::Long64 => u64::MAX,
            CpuMode::Protected32 => 0xffff_ffff,
            CpuMode::Real | CpuMode::Protected16 => 0xffff,
        }
    }
}

/// Control registers and EFER.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlRegs {
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// MSRs whose guest value lives in vendor state (the VMCB on AMD, the VMCS or the
/// MSR load/store areas on Intel) rather than in the common MSR model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorMsr {
    Efer,
    Star,
    Lstar,
    Cstar,
    Sfmask,
    FsBase,
    GsBase,
    KernelGsBase,
    SysenterCs,
    SysenterEsp,
    SysenterEip,
    Pat,
    /// TSC_AUX: not in the VMCB, but loaded into the CPU for each run (RDPID reads it
    /// without an exit).
    TscAux,
}

/// Guest register state as decision code sees it.
pub trait RegisterFile {
    fn gpr(&self, r: Gpr) -> u64;
    fn set_gpr(&mut self, r: Gpr, value: u64);
    fn rip(&self) -> u64;
    fn rflags(&self) -> u64;
    fn set_rflags(&mut self, value: u64);
    fn control(&self) -> ControlRegs;
    /// Sets CR2 (before injecting a #PF).
    fn set_cr2(&mut self, value: u64);
    fn segment(&self, seg: SegReg) -> Segment;
    /// Current privilege level.
    fn cpl(&self) -> u8;
    /// The guest's view of a vendor-held MSR (EFER without SVME, for instance).
    fn msr(&self, msr: VendorMsr) -> u64;
    /// Stores a vendor-held MSR. Validation has already been done by the caller.
    fn set_msr(&mut self, msr: VendorMsr, value: u64);
    fn tsc_offset(&self) -> u64;
    fn set_tsc_offset(&mut self, value: u64);
    /// The guest's XCR0 (switched in and out around guest entry).
    fn xcr0(&self) -> u64;
    fn set_xcr0(&mut self, value: u64);

    fn mode(&self) -> CpuMode {
        let c = self.control();
        CpuMode::from_state(c.cr0, c.efer, &self.segment(SegReg::Cs))
    }

    /// A copy of the GPRs, RIP and RFLAGS, for register dumps.
    fn snapshot(&self) -> GuestRegisters {
        let mut out = GuestRegisters::default();
        for r in Gpr::ALL {
            out.set(r, self.gpr(r));
        }
        out.rip = self.rip();
        out.rflags = self.rflags();
        out
    }
}

/// A plain in-memory register file for tests of decision code.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeRegs {
    pub regs: GuestRegisters,
    pub control: ControlRegs,
    pub segs: [Segment; 6],
    pub cpl: u8,
    pub msrs: [u64; 13],
    pub tsc_offset: u64,
    pub xcr0: u64,
}

#[cfg(test)]
impl FakeRegs {
    /// A 64-bit kernel-mode guest with paging on and CR3 = `cr3`.
    pub fn long_mode(cr3: u64) -> FakeRegs {
        let mut segs = [Segment::default(); 6];
        segs[1].attrib = 0x29b; // present code, L=1
        FakeRegs {
            regs: GuestRegisters { rflags: 0x2, ..GuestRegisters::default() },
            control: ControlRegs {
                cr0: cr::CR0_PE | cr::CR0_PG,
                cr2: 0,
                cr3,
                cr4: cr::CR4_PAE,
                efer: cr::EFER_LME | cr::EFER_LMA | cr::EFER_SVME,
            },
            segs,
            xcr0: 1,
            ..FakeRegs::default()
        }
    }

    fn seg_index(seg: SegReg) -> usize {
        seg as usize
    }
}

#[cfg(test)]
impl RegisterFile for FakeRegs {
    fn gpr(&self, r: Gpr) -> u64 {
        self.regs.get(r)
    }
    fn set_gpr(&mut self, r: Gpr, value: u64) {
        self.regs.set(r, value)
    }
    fn rip(&self) -> u64 {
        self.regs.rip
    }
    fn rflags(&self) -> u64 {
        self.regs.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.regs.rflags = value
    }
    fn control(&self) -> ControlRegs {
        self.control
    }
    fn set_cr2(&mut self, value: u64) {
        self.control.cr2 = value
    }
    fn segment(&self, seg: SegReg) -> Segment {
        self.segs[Self::seg_index(seg)]
    }
    fn cpl(&self) -> u8 {
        self.cpl
    }
    fn msr(&self, msr: VendorMsr) -> u64 {
        self.msrs[msr as usize]
    }
    fn set_msr(&mut self, msr: VendorMsr, value: u64) {
        self.msrs[msr as usize] = value
    }
    fn tsc_offset(&self) -> u64 {
        self.tsc_offset
    }
    fn set_tsc_offset(&mut self, value: u64) {
        self.tsc_offset = value
    }
    fn xcr0(&self) -> u64 {
        self.xcr0
    }
    fn set_xcr0(&mut self, value: u64) {
        self.xcr0 = value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpr_accessors_follow_encoding_order() {
        let mut r = GuestRegisters::default();
        for g in Gpr::ALL {
            r.set(g, 0x100 + u64::from(g.index()));
        }
        assert_eq!(r.rax, 0x100);
        assert_eq!(r.rbx, 0x103);
        assert_eq!(r.rdi, 0x107);
        assert_eq!(r.r15, 0x10f);
        assert_eq!(Gpr::from_index(0x1c), Gpr::R12);
    }

    #[test]
    fn every_encoding_maps_to_its_register_and_name() {
        for index in 0..=u8::MAX {
            let g = Gpr::from_index(index);
            assert_eq!(g.index(), index & 0xf);
            assert_eq!(Some(&g), Gpr::ALL.get(usize::from(index & 0xf)));
            assert_eq!(g.name(), format!("{g:?}").to_lowercase());
        }
    }

    #[test]
    fn cpu_mode_from_state() {
        let long = Segment { attrib: 0x29b, ..Segment::default() };
        let compat32 = Segment { attrib: 0x49b, ..Segment::default() };
        let lma = cr::EFER_LMA | cr::EFER_LME;
        assert_eq!(CpuMode::from_state(0x10, 0, &long), CpuMode::Real);
        assert_eq!(CpuMode::from_state(1, lma, &long), CpuMode::Long64);
        assert_eq!(CpuMode::from_state(1, lma, &compat32), CpuMode::Protected32);
        assert_eq!(CpuMode::from_state(1, 0, &long), CpuMode::Protected16);
    }

    #[test]
    fn dump_names_registers() {
        let r = GuestRegisters { r13: 0xdead, ..GuestRegisters::default() };
        let text = format!("{r:?}");
        assert!(text.contains("r13=0x000000000000dead"));
    }
}
