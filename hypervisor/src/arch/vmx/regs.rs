//! [`RegisterFile`] over a VMX vCPU: GPRs, RIP and RFLAGS from the register block
//! (synced with the VMCS around each run), control registers as the guest sees them
//! (read shadows for the bits the hypervisor owns), segments and most MSRs from the
//! VMCS, the syscall MSRs and TSC_AUX from the vCPU.

use super::cr_access::guest_view;
use super::fields::*;
use super::guest_state::{self, SegFields};
use super::vcpu::{VmxVcpu, read, set};
use crate::arch::regs::{ControlRegs, CpuMode, Gpr, RegisterFile, SegReg, Segment, VendorMsr};

/// The register view decision code uses; the vCPU's VMCS is current while it lives.
#[derive(Debug)]
pub struct VmxRegs<'a> {
    pub(super) vcpu: &'a mut VmxVcpu,
}

fn fields(seg: SegReg) -> &'static SegFields {
    match seg {
        SegReg::Es => &guest_state::ES,
        SegReg::Cs => &guest_state::CS,
        SegReg::Ss => &guest_state::SS,
        SegReg::Ds => &guest_state::DS,
        SegReg::Fs => &guest_state::FS,
        SegReg::Gs => &guest_state::GS,
    }
}

impl RegisterFile for VmxRegs<'_> {
    fn gpr(&self, r: Gpr) -> u64 {
        self.vcpu.regs.get(r)
    }
    fn set_gpr(&mut self, r: Gpr, value: u64) {
        self.vcpu.regs.set(r, value)
    }
    fn rip(&self) -> u64 {
        self.vcpu.regs.rip
    }
    fn rflags(&self) -> u64 {
        self.vcpu.regs.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.vcpu.regs.rflags = value | 2;
    }
    fn control(&self) -> ControlRegs {
        ControlRegs {
            cr0: guest_view(read(GUEST_CR0), read(CR0_READ_SHADOW), read(CR0_GUEST_HOST_MASK)),
            // VM exits do not touch CR2: the CPU's register is the guest's.
            cr2: x86_64::registers::control::Cr2::read_raw(),
            cr3: read(GUEST_CR3),
            cr4: guest_view(read(GUEST_CR4), read(CR4_READ_SHADOW), read(CR4_GUEST_HOST_MASK)),
            efer: read(GUEST_IA32_EFER),
        }
    }
    fn set_cr2(&mut self, value: u64) {
        // SAFETY: the hypervisor never reads CR2 for itself outside its #PF handler,
        // which reports a host fault and stops; between exits CR2 is the guest's.
        unsafe { core::arch::asm!("mov cr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
    }
    fn segment(&self, seg: SegReg) -> Segment {
        let f = fields(seg);
        Segment {
            selector: read(f.selector) as u16,
            attrib: guest_state::attrib_from_ar(read(f.ar) as u32),
            limit: read(f.limit) as u32,
            base: read(f.base),
        }
    }
    fn cpl(&self) -> u8 {
        // SS.DPL is the CPL (SDM Vol. 3 25.4.1).
        ((read(GUEST_SS_AR) >> 5) & 3) as u8
    }
    fn msr(&self, msr: VendorMsr) -> u64 {
        let m = &self.vcpu.msrs;
        match msr {
            VendorMsr::Efer => read(GUEST_IA32_EFER),
            VendorMsr::Star => m.star,
            VendorMsr::Lstar => m.lstar,
            VendorMsr::Cstar => m.cstar,
            VendorMsr::Sfmask => m.sfmask,
            VendorMsr::FsBase => read(GUEST_FS_BASE),
            VendorMsr::GsBase => read(GUEST_GS_BASE),
            VendorMsr::KernelGsBase => m.kernel_gs_base,
            VendorMsr::SysenterCs => read(GUEST_SYSENTER_CS),
            VendorMsr::SysenterEsp => read(GUEST_SYSENTER_ESP),
            VendorMsr::SysenterEip => read(GUEST_SYSENTER_EIP),
            VendorMsr::Pat => read(GUEST_IA32_PAT),
            VendorMsr::TscAux => self.vcpu.switched.tsc_aux,
        }
    }
    fn set_msr(&mut self, msr: VendorMsr, value: u64) {
        let m = &mut self.vcpu.msrs;
        let field = match msr {
            VendorMsr::Efer => {
                self.vcpu.set_efer(value);
                return;
            }
            VendorMsr::Star => return m.star = value,
            VendorMsr::Lstar => return m.lstar = value,
            VendorMsr::Cstar => return m.cstar = value,
            VendorMsr::Sfmask => return m.sfmask = value,
            VendorMsr::KernelGsBase => return m.kernel_gs_base = value,
            VendorMsr::TscAux => return self.vcpu.switched.tsc_aux = value,
            VendorMsr::FsBase => GUEST_FS_BASE,
            VendorMsr::GsBase => GUEST_GS_BASE,
            VendorMsr::SysenterCs => GUEST_SYSENTER_CS,
            VendorMsr::SysenterEsp => GUEST_SYSENTER_ESP,
            VendorMsr::SysenterEip => GUEST_SYSENTER_EIP,
            VendorMsr::Pat => GUEST_IA32_PAT,
        };
        set(field, value);
    }
    fn tsc_offset(&self) -> u64 {
        read(TSC_OFFSET)
    }
    fn set_tsc_offset(&mut self, value: u64) {
        set(TSC_OFFSET, value);
    }
    fn xcr0(&self) -> u64 {
        self.vcpu.xcr0
    }
    fn set_xcr0(&mut self, value: u64) {
        self.vcpu.xcr0 = value;
    }
    fn mode(&self) -> CpuMode {
        self.vcpu.mode()
    }
}
