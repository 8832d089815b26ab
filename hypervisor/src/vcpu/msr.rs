//! MSR policy for intercepted RDMSR/WRMSR. An allow-list: MSRs listed here are read or
//! written as described; every other MSR raises #GP(0) in the guest, which is what
//! hardware does for MSRs it does not implement (Linux probes with `rdmsr_safe`).
//!
//! | MSR | Treatment |
//! |---|---|
//! | EFER | vendor state; guest sees SVME clear, may set SCE/LME/NXE only |
//! | STAR, LSTAR, CSTAR, SFMASK, FS/GS/KernelGS base, SYSENTER_* | vendor state (normally passed through by the permission bitmap; handled here when intercepted) |
//! | PAT | vendor state (the VMCB's G_PAT); values with reserved memory types → #GP |
//! | TSC | reads host TSC + offset; writes move the offset |
//! | TSC_AUX | vendor state (loaded into the CPU for each run: RDPID reads it without an exit; RDTSCP is intercepted) |
//! | APIC_BASE | stored; only the enable/x2APIC bits may change, base stays 0xFEE0_0000 |
//! | MTRRcap, MTRRdefType | synthesised: no variable or fixed ranges, default type WB; writes are ignored |
//! | MISC_ENABLE | synthesised (fast strings); writes ignored |
//! | FEATURE_CONTROL | reads as locked with VMX off; writes #GP |
//! | BIOS_SIGN_ID (microcode revision) | reads 0; writes ignored |
//! | HWCR | reads 0; writes ignored |
//! | VM_CR | reads SVMDIS so SVM looks disabled by firmware; writes #GP |
//! | KVM_WALL_CLOCK_NEW, KVM_SYSTEM_TIME_NEW | not here: [`route`] sends them to the vCPU's [`crate::vcpu::pvclock::PvClock`] (which needs guest memory and the time); `MsrState` faults them |
#![forbid(unsafe_code)]

use crate::arch::regs::{RegisterFile, VendorMsr, cr};

use crate::hw::msr;

/// Which component an MSR access goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrRoute {
    /// [`MsrState::read`] / [`MsrState::write`] (including the #GP for unknown MSRs).
    State,
    /// The vCPU's kvmclock, when the VM offers it (CPUID `kvm_features`); otherwise
    /// these fall through to `MsrState`, which faults them.
    PvClock,
    /// The vCPU's paravirtual EOI flag ([`crate::vcpu::pv_eoi`]), likewise.
    PvEoi,
}

/// Where the exit glue sends an RDMSR/WRMSR of `msr`.
pub fn route(msr: u32) -> MsrRoute {
    match msr {
        msr::KVM_WALL_CLOCK_NEW | msr::KVM_SYSTEM_TIME_NEW => MsrRoute::PvClock,
        msr::KVM_PV_EOI_EN => MsrRoute::PvEoi,
        _ => MsrRoute::State,
    }
}

/// The guest-visible MSR state that is not vendor-held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrState {
    pub apic_base: u64,
    /// IA32_TSC_ADJUST (SDM Vol. 3 §17.17.3): what the guest added to its TSC since
    /// reset, through this MSR or by writing IA32_TSC.
    pub tsc_adjust: u64,
}

/// The default APIC base, with the BSP flag on vCPU 0.
pub const APIC_BASE_DEFAULT: u64 = 0xfee0_0000;
const APIC_ENABLE: u64 = 1 << 11;
const APIC_X2APIC: u64 = 1 << 10;
const APIC_BSP: u64 = 1 << 8;
/// MTRRdefType: E (enabled) = 1, default type 6 (WB).
const MTRR_DEF_TYPE_VALUE: u64 = (1 << 11) | 6;
/// EFER bits a guest may set (SCE, LME, NXE); LMA is read-only (set by the CPU).
const EFER_WRITABLE: u64 = cr::EFER_SCE | cr::EFER_LME | cr::EFER_NXE;

/// The MSR access must raise #GP(0) in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrFault;

impl MsrState {
    pub fn new(bsp: bool) -> MsrState {
        MsrState { apic_base: APIC_BASE_DEFAULT | APIC_ENABLE | if bsp { APIC_BSP } else { 0 }, tsc_adjust: 0 }
    }

    fn vendor(msr: u32) -> Option<VendorMsr> {
        use msr::*;
        Some(match msr {
            EFER => VendorMsr::Efer,
            STAR => VendorMsr::Star,
            LSTAR => VendorMsr::Lstar,
            CSTAR => VendorMsr::Cstar,
            SFMASK => VendorMsr::Sfmask,
            FS_BASE => VendorMsr::FsBase,
            GS_BASE => VendorMsr::GsBase,
            KERNEL_GS_BASE => VendorMsr::KernelGsBase,
            SYSENTER_CS => VendorMsr::SysenterCs,
            SYSENTER_ESP => VendorMsr::SysenterEsp,
            SYSENTER_EIP => VendorMsr::SysenterEip,
            PAT => VendorMsr::Pat,
            _ => return None,
        })
    }

    /// RDMSR. `host_tsc` is the host's TSC at the time of the exit.
    pub fn read(&self, msr: u32, regs: &impl RegisterFile, host_tsc: u64) -> Result<u64, MsrFault> {
        use msr::*;
        if let Some(v) = Self::vendor(msr) {
            return Ok(regs.msr(v));
        }
        Ok(match msr {
            TSC => host_tsc.wrapping_add(regs.tsc_offset()),
            TSC_ADJUST => self.tsc_adjust,
            TSC_AUX => regs.msr(VendorMsr::TscAux),
            APIC_BASE => self.apic_base,
            MTRR_CAP => 0,
            MTRR_DEF_TYPE => MTRR_DEF_TYPE_VALUE,
            MISC_ENABLE => 1,
            FEATURE_CONTROL => 1,
            BIOS_SIGN_ID | HWCR => 0,
            VM_CR => 1 << 4,
            _ => return Err(MsrFault),
        })
    }

    /// WRMSR.
    pub fn write(&mut self, msr: u32, value: u64, regs: &mut impl RegisterFile, host_tsc: u64) -> Result<(), MsrFault> {
        use msr::*;
        match msr {
            EFER => {
                if value & !(EFER_WRITABLE | cr::EFER_LMA) != 0 {
                    return Err(MsrFault);
                }
                let lma = regs.msr(VendorMsr::Efer) & cr::EFER_LMA;
                regs.set_msr(VendorMsr::Efer, (value & EFER_WRITABLE) | lma);
            }
            PAT => {
                let valid = value.to_le_bytes().iter().all(|t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7));
                if !valid {
                    return Err(MsrFault);
                }
                regs.set_msr(VendorMsr::Pat, value);
            }
            FS_BASE | GS_BASE | KERNEL_GS_BASE | LSTAR | CSTAR | SYSENTER_ESP | SYSENTER_EIP => {
                if !is_canonical(value) {
                    return Err(MsrFault);
                }
                if let Some(v) = Self::vendor(msr) {
                    regs.set_msr(v, value);
                }
            }
            STAR | SFMASK | SYSENTER_CS => {
                if let Some(v) = Self::vendor(msr) {
                    regs.set_msr(v, value);
                }
            }
            TSC => {
                // A TSC write moves TSC_ADJUST by the same amount (§17.17.3).
                let delta = value.wrapping_sub(host_tsc.wrapping_add(regs.tsc_offset()));
                self.tsc_adjust = self.tsc_adjust.wrapping_add(delta);
                regs.set_tsc_offset(value.wrapping_sub(host_tsc));
            }
            TSC_ADJUST => {
                let delta = value.wrapping_sub(self.tsc_adjust);
                regs.set_tsc_offset(regs.tsc_offset().wrapping_add(delta));
                self.tsc_adjust = value;
            }
            TSC_AUX => {
                if value >> 32 != 0 {
                    return Err(MsrFault);
                }
                regs.set_msr(VendorMsr::TscAux, value);
            }
            APIC_BASE => {
                let fixed = APIC_BASE_DEFAULT | APIC_BSP;
                let changeable = APIC_ENABLE | APIC_X2APIC;
                if value & !(fixed | changeable) != 0 || value & fixed != self.apic_base & fixed {
                    return Err(MsrFault);
                }
                self.apic_base = value;
            }
            MTRR_DEF_TYPE | MISC_ENABLE | BIOS_SIGN_ID | HWCR => {
                log::debug!(target: "vcpu", "ignoring write of {value:#x} to MSR {msr:#x}");
            }
            _ => return Err(MsrFault),
        }
        Ok(())
    }
}

fn is_canonical(v: u64) -> bool {
    let top = (v as i64) >> 47;
    top == 0 || top == -1
}

#[cfg(test)]
mod tests {
    use super::msr::*;
    use super::*;
    use crate::arch::regs::FakeRegs;

    #[test]
    fn unknown_msrs_fault() {
        let mut s = MsrState::new(true);
        let mut r = FakeRegs::long_mode(0);
        assert_eq!(s.read(0x48, &r, 0), Err(MsrFault));
        assert_eq!(s.read(VM_HSAVE_PA, &r, 0), Err(MsrFault));
        assert_eq!(s.read(0x800, &r, 0), Err(MsrFault));
        assert_eq!(s.write(0xc001_0117, 0x1000, &mut r, 0), Err(MsrFault));
        assert_eq!(s.write(FEATURE_CONTROL, 5, &mut r, 0), Err(MsrFault));
        assert_eq!(s.write(VM_CR, 0, &mut r, 0), Err(MsrFault));
    }

    #[test]
    fn kvmclock_msrs_route_to_pvclock_and_fault_here() {
        let mut s = MsrState::new(true);
        let mut r = FakeRegs::long_mode(0);
        for msr in [KVM_WALL_CLOCK_NEW, KVM_SYSTEM_TIME_NEW] {
            assert_eq!(route(msr), MsrRoute::PvClock);
            assert_eq!(s.read(msr, &r, 0), Err(MsrFault));
            assert_eq!(s.write(msr, 0x1001, &mut r, 0), Err(MsrFault));
        }
        // The old-style kvmclock MSRs (0x11, 0x12) are not offered.
        assert_eq!(route(0x12), MsrRoute::State);
        assert_eq!(route(EFER), MsrRoute::State);
    }

    #[test]
    fn efer_hides_svme_and_rejects_reserved_bits() {
        let mut s = MsrState::new(true);
        let mut r = FakeRegs::long_mode(0);
        r.set_msr(VendorMsr::Efer, cr::EFER_LMA | cr::EFER_LME);
        s.write(EFER, cr::EFER_LME | cr::EFER_SCE | cr::EFER_NXE | cr::EFER_LMA, &mut r, 0).unwrap();
        assert_eq!(r.msr(VendorMsr::Efer), cr::EFER_LME | cr::EFER_SCE | cr::EFER_NXE | cr::EFER_LMA);
        assert_eq!(s.write(EFER, cr::EFER_SVME, &mut r, 0), Err(MsrFault));
        assert_eq!(s.write(EFER, 1 << 20, &mut r, 0), Err(MsrFault));
    }

    #[test]
    fn tsc_reads_and_writes_go_through_the_offset() {
        let mut s = MsrState::new(true);
        let mut r = FakeRegs::long_mode(0);
        s.write(TSC, 1000, &mut r, 5000).unwrap();
        assert_eq!(r.tsc_offset(), 1000u64.wrapping_sub(5000));
        assert_eq!(s.read(TSC, &r, 6000).unwrap(), 2000);
        s.write(TSC_AUX, 7, &mut r, 0).unwrap();
        assert_eq!(s.read(TSC_AUX, &r, 0).unwrap(), 7);
        assert_eq!(s.write(TSC_AUX, 1 << 32, &mut r, 0), Err(MsrFault));
    }

    #[test]
    fn tsc_adjust_follows_the_sdm() {
        let mut s = MsrState::new(true);
        let mut r = FakeRegs::long_mode(0);
        assert_eq!(s.read(TSC_ADJUST, &r, 0).unwrap(), 0, "zero from reset");
        // Writing TSC_ADJUST moves the TSC by the difference.
        s.write(TSC_ADJUST, 500, &mut r, 1000).unwrap();
        assert_eq!(s.read(TSC, &r, 1000).unwrap(), 1500);
        s.write(TSC_ADJUST, 200, &mut r, 1000).unwrap();
        assert_eq!(s.read(TSC, &r, 1000).unwrap(), 1200);
        // Writing the TSC moves TSC_ADJUST by the same amount.
        s.write(TSC, 1300, &mut r, 1000).unwrap();
        assert_eq!(s.read(TSC_ADJUST, &r, 0).unwrap(), 300);
        assert_eq!(s.read(TSC, &r, 2000).unwrap(), 2300);
    }

    #[test]
    fn apic_base_and_synthesised_msrs() {
        let mut s = MsrState::new(true);
        let mut r = FakeRegs::long_mode(0);
        assert_eq!(s.read(APIC_BASE, &r, 0).unwrap(), 0xfee0_0900);
        s.write(APIC_BASE, 0xfee0_0100, &mut r, 0).unwrap();
        assert_eq!(s.write(APIC_BASE, 0xfed0_0900, &mut r, 0), Err(MsrFault));
        assert_eq!(s.write(APIC_BASE, 0xfee0_0800, &mut r, 0), Err(MsrFault));
        assert_eq!(MsrState::new(false).apic_base, 0xfee0_0800);
        assert_eq!(s.read(MTRR_CAP, &r, 0).unwrap(), 0);
        assert_eq!(s.read(MTRR_DEF_TYPE, &r, 0).unwrap(), 0x806);
        s.write(MTRR_DEF_TYPE, 0, &mut r, 0).unwrap();
        assert_eq!(s.read(MTRR_DEF_TYPE, &r, 0).unwrap(), 0x806);
        assert_eq!(s.read(VM_CR, &r, 0).unwrap(), 0x10);
    }

    #[test]
    fn pat_and_canonical_checks() {
        let mut s = MsrState::new(true);
        let mut r = FakeRegs::long_mode(0);
        s.write(PAT, 0x0007_0406_0007_0406, &mut r, 0).unwrap();
        assert_eq!(s.read(PAT, &r, 0).unwrap(), 0x0007_0406_0007_0406);
        assert_eq!(s.write(PAT, 0x02, &mut r, 0), Err(MsrFault));
        assert_eq!(s.write(LSTAR, 0x8000_0000_0000, &mut r, 0), Err(MsrFault));
        s.write(LSTAR, 0xffff_ffff_8100_0000, &mut r, 0).unwrap();
        assert_eq!(s.read(LSTAR, &r, 0).unwrap(), 0xffff_ffff_8100_0000);
    }
}
