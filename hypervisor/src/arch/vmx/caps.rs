//! VMX capabilities: what the VMX capability MSRs allow (Intel SDM Vol. 3 Appendix A),
//! the control values adjusted to them, IA32_FEATURE_CONTROL, and the CR0/CR4 fixed
//! bits. Pure over an [`MsrSource`] and a [`CpuidSource`], so it is tested on the host
//! with Bochs's Skylake-X values.
#![forbid(unsafe_code)]

use super::fields::{entry_ctl, exit_ctl, pin, proc1, proc2};
use crate::arch::x86::cpuid::{CpuidSource, GUEST_XCR0_ALLOWED, xsave_area_bytes};

/// The VMX capability MSRs (SDM Vol. 3 A.1-A.10).
pub mod msr {
    pub const FEATURE_CONTROL: u32 = 0x3a;
    pub const VMX_BASIC: u32 = 0x480;
    pub const VMX_PINBASED_CTLS: u32 = 0x481;
    pub const VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const VMX_EXIT_CTLS: u32 = 0x483;
    pub const VMX_ENTRY_CTLS: u32 = 0x484;
    pub const VMX_MISC: u32 = 0x485;
    pub const VMX_CR0_FIXED0: u32 = 0x486;
    pub const VMX_CR0_FIXED1: u32 = 0x487;
    pub const VMX_CR4_FIXED0: u32 = 0x488;
    pub const VMX_CR4_FIXED1: u32 = 0x489;
    pub const VMX_PROCBASED_CTLS2: u32 = 0x48b;
    pub const VMX_EPT_VPID_CAP: u32 = 0x48c;
    pub const VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    pub const VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    pub const VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    pub const VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
}

/// IA32_FEATURE_CONTROL bits (SDM Vol. 4 Table 2-2).
pub mod feature_control {
    pub const LOCK: u64 = 1 << 0;
    pub const VMXON_IN_SMX: u64 = 1 << 1;
    pub const VMXON_OUTSIDE_SMX: u64 = 1 << 2;
}

/// Where MSR values come from (the CPU, or a table in tests).
pub trait MsrSource {
    fn read(&self, msr: u32) -> u64;
}

/// One control's capability MSR: bits 31:0 must be 1 where set (allowed 0-settings),
/// bits 63:32 may be 1 where set (allowed 1-settings) (SDM Vol. 3 A.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowed(pub u64);

impl Allowed {
    pub const fn must_be_one(self) -> u32 {
        self.0 as u32
    }
    pub const fn may_be_one(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub const fn allows(self, bits: u32) -> bool {
        self.may_be_one() & bits == bits
    }
    /// `wanted` plus every bit that must be 1, minus what may not be 1; `Err` names the
    /// `required` bits the CPU cannot set.
    pub const fn adjust(self, wanted: u32, required: u32) -> Result<u32, u32> {
        let value = (wanted | self.must_be_one()) & self.may_be_one();
        let missing = required & !value;
        if missing != 0 { Err(missing) } else { Ok(value) }
    }
}

/// What IA32_FEATURE_CONTROL allows, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureControl {
    /// Locked with VMXON outside SMX allowed: nothing to do.
    Enabled,
    /// Unlocked: write this value (VMXON outside SMX, then lock) before VMXON.
    LockWith(u64),
    /// Locked with VMXON outside SMX disallowed: only the firmware setup can change it.
    DisabledByFirmware,
}

impl FeatureControl {
    pub const fn from_msr(value: u64) -> FeatureControl {
        if value & feature_control::LOCK == 0 {
            FeatureControl::LockWith(value | feature_control::LOCK | feature_control::VMXON_OUTSIDE_SMX)
        } else if value & feature_control::VMXON_OUTSIDE_SMX != 0 {
            FeatureControl::Enabled
        } else {
            FeatureControl::DisabledByFirmware
        }
    }
}

/// EPT and VPID capability bits (SDM Vol. 3 A.10).
pub mod ept_cap {
    pub const WALK_4: u64 = 1 << 6;
    pub const MEMTYPE_WB: u64 = 1 << 14;
    pub const PAGE_2M: u64 = 1 << 16;
    pub const INVEPT: u64 = 1 << 20;
    pub const ACCESSED_DIRTY: u64 = 1 << 21;
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    pub const INVEPT_ALL: u64 = 1 << 26;
    pub const INVVPID: u64 = 1 << 32;
    pub const INVVPID_SINGLE: u64 = 1 << 41;
    pub const INVVPID_ALL: u64 = 1 << 42;
}

/// Everything the backend needs to know about this CPU's VMX.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmxFeatures {
    /// VMCS revision identifier (IA32_VMX_BASIC bits 30:0).
    pub revision: u32,
    /// IA32_VMX_BASIC bit 55: the TRUE_* control MSRs exist.
    pub true_ctls: bool,
    pub pin: Allowed,
    pub proc1: Allowed,
    pub proc2: Allowed,
    pub exit: Allowed,
    pub entry: Allowed,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub ept_vpid: u64,
    /// CPUID 1:ECX[26]: XSAVE (else FXSAVE is used for guest state).
    pub xsave: bool,
    pub xsave_bytes: u32,
    /// XCR0 components offered to guests.
    pub xcr0_mask: u64,
    /// Every XCR0 component the CPU has: the guest's extended state is switched with
    /// all of them (as on SVM).
    pub xsave_switch_mask: u64,
    pub tsc_aux: bool,
}

/// Why VMX cannot be used, or what failed while using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxError {
    NotSupported,
    /// IA32_FEATURE_CONTROL is locked with VMX off: the firmware setup must enable
    /// "Intel Virtualization Technology" (VT-x).
    DisabledByFirmware,
    /// A control the backend needs is missing (pin, proc1, proc2, exit, entry), with
    /// the bits; or EPT lacks 4-level walks, write-back or INVEPT.
    MissingControl {
        which: &'static str,
        bits: u32,
    },
    /// VMXON failed even though the checks above passed.
    VmxonFailed,
    /// VMCLEAR/VMPTRLD/VMWRITE failed: the VM-instruction error number.
    VmcsAccess {
        field: u32,
        error: u32,
    },
    OutOfFrames,
    MisalignedFrame,
    XsaveAreaTooLarge,
    /// VPID 0 or one that does not fit 16 bits.
    BadConfig,
}

/// The controls the backend sets, adjusted to the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub proc1: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

impl VmxFeatures {
    /// `None` unless CPUID says the CPU has VMX.
    pub fn probe(cpuid: &impl CpuidSource, msrs: &impl MsrSource) -> Option<VmxFeatures> {
        let c1 = cpuid.cpuid(1, 0);
        if c1.ecx & (1 << 5) == 0 {
            return None;
        }
        let basic = msrs.read(msr::VMX_BASIC);
        let true_ctls = basic & (1 << 55) != 0;
        let pick = |plain: u32, truer: u32| Allowed(msrs.read(if true_ctls { truer } else { plain }));
        let proc1 = pick(msr::VMX_PROCBASED_CTLS, msr::VMX_TRUE_PROCBASED_CTLS);
        let proc2 = if proc1.allows(proc1::ACTIVATE_SECONDARY) {
            Allowed(msrs.read(msr::VMX_PROCBASED_CTLS2))
        } else {
            Allowed(0)
        };
        let ept_vpid = if proc2.may_be_one() & (proc2::ENABLE_EPT | proc2::ENABLE_VPID) != 0 {
            msrs.read(msr::VMX_EPT_VPID_CAP)
        } else {
            0
        };
        let xsave = c1.ecx & (1 << 26) != 0;
        let (xcr0_mask, xsave_switch_mask, xsave_bytes) = if xsave {
            let d = cpuid.cpuid(0xd, 0);
            let supported = ((u64::from(d.edx) << 32) | u64::from(d.eax)) | 0b11;
            (supported & GUEST_XCR0_ALLOWED | 1, supported, xsave_area_bytes(cpuid, supported))
        } else {
            (0b11, 0b11, 0)
        };
        let tsc_aux = cpuid.cpuid(0x8000_0001, 0).edx & (1 << 27) != 0 || cpuid.cpuid(7, 0).ecx & (1 << 22) != 0;
        Some(VmxFeatures {
            revision: (basic & 0x7fff_ffff) as u32,
            true_ctls,
            pin: pick(msr::VMX_PINBASED_CTLS, msr::VMX_TRUE_PINBASED_CTLS),
            proc1,
            proc2,
            exit: pick(msr::VMX_EXIT_CTLS, msr::VMX_TRUE_EXIT_CTLS),
            entry: pick(msr::VMX_ENTRY_CTLS, msr::VMX_TRUE_ENTRY_CTLS),
            misc: msrs.read(msr::VMX_MISC),
            cr0_fixed0: msrs.read(msr::VMX_CR0_FIXED0),
            cr0_fixed1: msrs.read(msr::VMX_CR0_FIXED1),
            cr4_fixed0: msrs.read(msr::VMX_CR4_FIXED0),
            cr4_fixed1: msrs.read(msr::VMX_CR4_FIXED1),
            ept_vpid,
            xsave,
            xsave_bytes,
            xcr0_mask,
            xsave_switch_mask,
            tsc_aux,
        })
    }

    pub const fn unrestricted_guest(&self) -> bool {
        self.proc2.allows(proc2::UNRESTRICTED_GUEST)
    }
    pub const fn vpid(&self) -> bool {
        self.proc2.allows(proc2::ENABLE_VPID) && self.ept_vpid & ept_cap::INVVPID_SINGLE != 0
    }
    pub const fn ept_accessed_dirty(&self) -> bool {
        self.ept_vpid & ept_cap::ACCESSED_DIRTY != 0
    }
    pub const fn ept_2m_pages(&self) -> bool {
        self.ept_vpid & ept_cap::PAGE_2M != 0
    }

    /// The controls every vCPU uses. Required: EPT with 4-level walks, write-back
    /// tables and single-context INVEPT; unrestricted guest (real-mode and unpaged
    /// guests, and CR0.PE/PG free of the fixed bits); MSR and I/O bitmaps; external
    /// interrupt and NMI exiting; HLT exiting; 64-bit host; EFER and PAT switching.
    pub fn controls(&self) -> Result<Controls, VmxError> {
        let need_ept = ept_cap::WALK_4 | ept_cap::MEMTYPE_WB | ept_cap::INVEPT | ept_cap::INVEPT_SINGLE;
        if self.ept_vpid & need_ept != need_ept {
            return Err(VmxError::MissingControl { which: "ept", bits: (need_ept & !self.ept_vpid) as u32 });
        }
        let pin_need = pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING;
        let pin =
            self.pin.adjust(pin_need, pin_need).map_err(|bits| VmxError::MissingControl { which: "pin", bits })?;
        let p1_need = proc1::HLT_EXITING
            | proc1::USE_TSC_OFFSETTING
            | proc1::USE_IO_BITMAPS
            | proc1::USE_MSR_BITMAPS
            | proc1::ACTIVATE_SECONDARY;
        let p1_want = p1_need | proc1::MWAIT_EXITING | proc1::MONITOR_EXITING | proc1::RDPMC_EXITING;
        let proc1 =
            self.proc1.adjust(p1_want, p1_need).map_err(|bits| VmxError::MissingControl { which: "proc1", bits })?;
        // CR3 accesses need no exit with EPT; the "must be 1" bits of the non-TRUE MSR
        // may still force them, which costs exits but stays correct.
        let p2_need = proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST;
        let mut p2_want = p2_need | proc2::WBINVD_EXITING;
        if self.vpid() {
            p2_want |= proc2::ENABLE_VPID;
        }
        // RDTSCP and INVPCID raise #UD in the guest unless enabled.
        p2_want |= proc2::ENABLE_RDTSCP | proc2::ENABLE_INVPCID;
        let proc2 =
            self.proc2.adjust(p2_want, p2_need).map_err(|bits| VmxError::MissingControl { which: "proc2", bits })?;
        let exit_need = exit_ctl::HOST_ADDRESS_SPACE_SIZE | exit_ctl::SAVE_EFER | exit_ctl::LOAD_EFER;
        let exit_want = exit_need | exit_ctl::SAVE_DEBUG_CONTROLS | exit_ctl::SAVE_PAT | exit_ctl::LOAD_PAT;
        let exit =
            self.exit.adjust(exit_want, exit_need).map_err(|bits| VmxError::MissingControl { which: "exit", bits })?;
        let entry_need = entry_ctl::LOAD_EFER;
        let entry_want = entry_need | entry_ctl::LOAD_DEBUG_CONTROLS | entry_ctl::LOAD_PAT;
        let entry = self
            .entry
            .adjust(entry_want, entry_need)
            .map_err(|bits| VmxError::MissingControl { which: "entry", bits })?;
        // "IA-32e mode guest" is set per vCPU from the guest's EFER.LMA, never here.
        let entry = entry & !entry_ctl::IA32E_MODE_GUEST;
        Ok(Controls { pin, proc1, proc2, exit, entry })
    }

    /// `cr0` with the bits VMX operation needs set; with unrestricted guest PE and PG
    /// may stay clear in a guest (SDM Vol. 3 26.3.1.1).
    pub const fn guest_cr0(&self, cr0: u64) -> u64 {
        let fixed0 = self.cr0_fixed0 & !(1 | 1 << 31);
        (cr0 | fixed0) & self.cr0_fixed1
    }
    pub const fn guest_cr4(&self, cr4: u64) -> u64 {
        (cr4 | self.cr4_fixed0) & self.cr4_fixed1
    }
    /// Whether `cr4` has a bit this CPU cannot set in VMX operation.
    pub const fn cr4_reserved(&self, cr4: u64) -> bool {
        cr4 & !self.cr4_fixed1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86::cpuid::{CpuidResult, FakeCpuid};
    use std::collections::HashMap;

    struct FakeMsrs(HashMap<u32, u64>);
    impl MsrSource for FakeMsrs {
        fn read(&self, msr: u32) -> u64 {
            self.0.get(&msr).copied().unwrap_or(0)
        }
    }

    /// Bochs 2.7 `corei7_skylake_x` under OVMF (docs/vmx.md).
    fn bochs_skylake_x() -> (FakeCpuid, FakeMsrs) {
        let mut c = FakeCpuid::default();
        c.0.insert((1, 0), CpuidResult { ecx: 1 << 5, ..CpuidResult::default() });
        let m = FakeMsrs(HashMap::from([
            (msr::VMX_BASIC, 0x00d8_1000_0000_002b),
            (msr::VMX_TRUE_PINBASED_CTLS, 0x0000_007f_0000_0016),
            (msr::VMX_TRUE_PROCBASED_CTLS, 0xf7f9_fffe_0400_6172),
            (msr::VMX_PROCBASED_CTLS2, 0x0217_7fff_0000_0000),
            (msr::VMX_TRUE_EXIT_CTLS, 0x01ff_ffff_0003_6dfb),
            (msr::VMX_TRUE_ENTRY_CTLS, 0x0000_f3ff_0000_11fb),
            (msr::VMX_EPT_VPID_CAP, 0x0000_0f01_0633_4141),
            (msr::VMX_MISC, 0x6004_01e0),
            (msr::VMX_CR0_FIXED0, 0x8000_0021),
            (msr::VMX_CR0_FIXED1, 0xffff_ffff),
            (msr::VMX_CR4_FIXED0, 0x2000),
            (msr::VMX_CR4_FIXED1, 0x0037_27ff),
        ]));
        (c, m)
    }

    #[test]
    fn bochs_skylake_x_controls() {
        let (c, m) = bochs_skylake_x();
        let f = VmxFeatures::probe(&c, &m).unwrap();
        assert_eq!(f.revision, 0x2b);
        assert!(f.true_ctls && f.unrestricted_guest() && f.vpid() && f.ept_accessed_dirty() && f.ept_2m_pages());
        let ctl = f.controls().unwrap();
        assert_eq!(ctl.pin & 0x16, 0x16, "must-be-one pin bits kept");
        assert_ne!(ctl.pin & pin::EXTERNAL_INTERRUPT_EXITING, 0);
        assert_ne!(ctl.proc1 & proc1::USE_MSR_BITMAPS, 0);
        assert_eq!(ctl.proc1 & proc1::MONITOR_TRAP_FLAG, 0);
        assert_eq!(ctl.proc2 & (proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST | proc2::ENABLE_VPID), 0xa2);
        assert_eq!(ctl.entry & entry_ctl::IA32E_MODE_GUEST, 0);
        assert_ne!(ctl.exit & exit_ctl::LOAD_EFER, 0);
        // The TRUE MSRs let CR3 exiting be off.
        assert_eq!(ctl.proc1 & (proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING), 0);
    }

    #[test]
    fn adjusting_reports_what_the_cpu_cannot_set() {
        let a = Allowed(0x0000_00f0_0000_0010);
        assert_eq!(a.adjust(0x20, 0x20), Ok(0x30));
        assert_eq!(a.adjust(0x100, 0x100), Err(0x100));
        assert_eq!(a.adjust(0x101, 0), Ok(0x10));
        let (c, mut m) = bochs_skylake_x();
        m.0.insert(msr::VMX_PROCBASED_CTLS2, 0x0000_0002_0000_0000);
        let f = VmxFeatures::probe(&c, &m).unwrap();
        assert_eq!(f.controls(), Err(VmxError::MissingControl { which: "proc2", bits: proc2::UNRESTRICTED_GUEST }));
    }

    #[test]
    fn no_vmx_in_cpuid_is_no_backend() {
        let (_, m) = bochs_skylake_x();
        assert_eq!(VmxFeatures::probe(&FakeCpuid::default(), &m), None);
    }

    #[test]
    fn feature_control_cases() {
        // OVMF under Bochs leaves it 0 and unlocked.
        assert_eq!(FeatureControl::from_msr(0), FeatureControl::LockWith(0x5));
        assert_eq!(FeatureControl::from_msr(0x5), FeatureControl::Enabled);
        assert_eq!(FeatureControl::from_msr(0x1), FeatureControl::DisabledByFirmware);
        assert_eq!(FeatureControl::from_msr(0x3), FeatureControl::DisabledByFirmware);
    }

    #[test]
    fn fixed_bits_leave_pe_and_pg_to_an_unrestricted_guest() {
        let (c, m) = bochs_skylake_x();
        let f = VmxFeatures::probe(&c, &m).unwrap();
        assert_eq!(f.guest_cr0(0x6000_0010), 0x6000_0030);
        assert_eq!(f.guest_cr4(0x20), 0x2020);
        assert!(f.cr4_reserved(1 << 25) && !f.cr4_reserved(0x20));
    }
}
