//! Detecting and turning on SVM (AMD APM Vol. 2 15.4 "Enabling SVM").
//!
//! Feature probing is pure over a [`CpuidSource`] so it is tested on the host with
//! QEMU's and real CPUs' values. Every optional feature may be absent (QEMU TCG offers
//! only nested paging): the rest of the backend checks these flags and keeps a path
//! without them.

use x86_64::registers::control::{Cr4, Cr4Flags};
use x86_64::registers::model_specific::Msr;

use super::instr;
use crate::arch::x86::cpuid::CpuidSource;
use crate::arch::x86::cpuid::GUEST_XCR0_ALLOWED;
pub use crate::arch::x86::cpuid::xsave_area_bytes;
use crate::hw::msr;
use crate::memory::addr::HostPhysAddr;
use crate::memory::frames::FrameSource;

/// SVM capabilities (CPUID 8000_0001h:ECX[2] and 8000_000Ah, APM Vol. 3 E.4.9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SvmFeatures {
    /// SVM revision (8000_000A:EAX[7:0]).
    pub revision: u8,
    /// Number of ASIDs (8000_000A:EBX).
    pub asids: u32,
    /// EDX[0]: nested paging.
    pub npt: bool,
    /// EDX[1]: LBR virtualisation.
    pub lbr_virt: bool,
    /// EDX[3]: nRIP is saved on instruction intercepts.
    pub nrip_save: bool,
    /// EDX[4]: TSC ratio MSR.
    pub tsc_rate: bool,
    /// EDX[5]: VMCB clean bits.
    pub vmcb_clean: bool,
    /// EDX[6]: TLB_CONTROL values 3 and 7.
    pub flush_by_asid: bool,
    /// EDX[7]: instruction bytes and decode information on intercepts.
    pub decode_assists: bool,
    /// EDX[10]: PAUSE filter.
    pub pause_filter: bool,
    /// EDX[13]: AVIC.
    pub avic: bool,
    /// EDX[15]: virtual VMSAVE/VMLOAD.
    pub vmsave_virt: bool,
    /// EDX[16]: virtual GIF.
    pub vgif: bool,
    /// CPUID 1:ECX[26]: XSAVE/XRSTOR/XSETBV (else FXSAVE is used for guest state).
    pub xsave: bool,
    /// Bytes of XSAVE area for [`SvmFeatures::xsave_switch_mask`] (0 without XSAVE).
    pub xsave_bytes: u32,
    /// The XCR0 components guests are offered (CPUID 0xD, XSETBV checks).
    pub xcr0_mask: u64,
    /// Every XCR0 component the CPU supports: the guest's extended state is saved and
    /// restored with all of them, because where XSETBV is not intercepted (QEMU) a
    /// guest can enable any of them without an exit, and would otherwise find another
    /// VM's values there (e.g. PKRU, or AVX state after running with XCR0 = x87|SSE).
    pub xsave_switch_mask: u64,
    /// CPUID 8000_0001:EDX[27] RDTSCP or 7:ECX[22] RDPID: the TSC_AUX MSR exists.
    pub tsc_aux: bool,
}

impl SvmFeatures {
    /// `None` unless the CPU has SVM.
    pub fn from_cpuid(src: &impl CpuidSource) -> Option<SvmFeatures> {
        let max_ext = src.cpuid(0x8000_0000, 0).eax;
        if max_ext < 0x8000_000a || src.cpuid(0x8000_0001, 0).ecx & (1 << 2) == 0 {
            return None;
        }
        let a = src.cpuid(0x8000_000a, 0);
        let bit = |n: u32| a.edx & (1 << n) != 0;
        let xsave = src.cpuid(1, 0).ecx & (1 << 26) != 0;
        let (xcr0_mask, xsave_switch_mask, xsave_bytes) = if xsave {
            let d = src.cpuid(0xd, 0);
            let supported = ((u64::from(d.edx) << 32) | u64::from(d.eax)) | 0b11;
            let mask = supported & GUEST_XCR0_ALLOWED | 1;
            (mask, supported, xsave_area_bytes(src, supported))
        } else {
            (0b11, 0b11, 0)
        };
        let tsc_aux = src.cpuid(0x8000_0001, 0).edx & (1 << 27) != 0 || src.cpuid(7, 0).ecx & (1 << 22) != 0;
        Some(SvmFeatures {
            revision: a.eax as u8,
            asids: a.ebx,
            npt: bit(0),
            lbr_virt: bit(1),
            nrip_save: bit(3),
            tsc_rate: bit(4),
            vmcb_clean: bit(5),
            flush_by_asid: bit(6),
            decode_assists: bit(7),
            pause_filter: bit(10),
            avic: bit(13),
            vmsave_virt: bit(15),
            vgif: bit(16),
            xsave,
            xsave_bytes,
            xcr0_mask,
            xsave_switch_mask,
            tsc_aux,
        })
    }
}

/// Reasons SVM cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvmError {
    /// No SVM in CPUID.
    NotSupported,
    /// SVM without nested paging: Bulkhead requires NPT.
    NoNestedPaging,
    /// VM_CR.SVMDIS is set (disabled in firmware setup).
    DisabledByFirmware,
    /// The frame source is exhausted.
    OutOfFrames,
    /// A frame's mapping is not 4 KiB-aligned.
    MisalignedFrame,
    /// The guest's extended state does not fit the per-vCPU area.
    XsaveAreaTooLarge,
    /// The vCPU configuration is invalid (ASID 0 or beyond the CPU's count).
    BadConfig,
}

const VM_CR_SVMDIS: u64 = 1 << 4;
const EFER_SVME: u64 = 1 << 12;

/// Turns SVM on for the executing CPU: checks VM_CR.SVMDIS, sets EFER.SVME, points
/// VM_HSAVE_PA at a fresh frame, and enables the CR4 bits guest extended-state
/// switching needs (OSFXSR, OSXMMEXCPT, OSXSAVE). Returns the host save area.
pub fn enable<F: FrameSource>(features: &SvmFeatures, frames: &mut F) -> Result<HostPhysAddr, SvmError> {
    let hsave = enable_quietly(features, frames)?;
    log::info!(target: "svm", "SVM enabled (rev {}, {} ASIDs, nrip={} decode_assists={} clean={} flush_by_asid={} vgif={}), host save area {hsave}",
        features.revision, features.asids, features.nrip_save, features.decode_assists,
        features.vmcb_clean, features.flush_by_asid, features.vgif);
    log::info!(target: "svm", "guest extended state switched with XCR0 {:#x} ({} bytes); guests offered {:#x}",
        features.xsave_switch_mask, features.xsave_bytes, features.xcr0_mask);
    Ok(hsave)
}

/// [`enable`] without its log lines (application processors report it in one line
/// of their own).
pub fn enable_quietly<F: FrameSource>(features: &SvmFeatures, frames: &mut F) -> Result<HostPhysAddr, SvmError> {
    if !features.npt {
        return Err(SvmError::NoNestedPaging);
    }
    // SAFETY: VM_CR exists on every CPU with SVM (APM 15.30.1); reading it has no side
    // effects.
    let vm_cr = unsafe { Msr::new(msr::VM_CR).read() };
    if vm_cr & VM_CR_SVMDIS != 0 {
        return Err(SvmError::DisabledByFirmware);
    }
    let hsave = frames.alloc_zeroed().ok_or(SvmError::OutOfFrames)?;
    let mut efer = Msr::new(msr::EFER);
    // SAFETY: reading EFER has no side effects.
    let value = unsafe { efer.read() };
    // SAFETY: setting EFER.SVME only enables the SVM instructions; it changes no
    // paging or mode state the hypervisor relies on.
    unsafe { efer.write(value | EFER_SVME) };
    let mut hsave_msr = Msr::new(msr::VM_HSAVE_PA);
    // SAFETY: SVME is now set, and `hsave` is a 4 KiB-aligned frame this CPU owns for
    // as long as SVM stays on (the caller keeps it allocated).
    unsafe { hsave_msr.write(hsave.raw()) };
    let mut flags = Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE;
    if features.xsave {
        flags |= Cr4Flags::OSXSAVE;
    }
    // SAFETY: these bits only allow the extended-state instructions; the hypervisor is
    // soft-float and never executes SSE/AVX code itself.
    unsafe { Cr4::update(|cr4| *cr4 |= flags) };
    // Breakpoint addresses start at zero: the guest switch (`switched`) keeps them zero
    // between runs, so firmware values are never shown to a guest.
    // SAFETY: CPL 0; DR7 enables no breakpoint in the hypervisor, so no address fires.
    unsafe {
        instr::write_dr::<0>(0);
        instr::write_dr::<1>(0);
        instr::write_dr::<2>(0);
        instr::write_dr::<3>(0);
    }
    Ok(hsave)
}

/// Whether EFER.SVME is set on the executing CPU.
pub fn is_enabled() -> bool {
    // SAFETY: reading EFER has no side effects.
    unsafe { Msr::new(msr::EFER).read() & EFER_SVME != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86::cpuid::CpuidResult;
    use crate::arch::x86::cpuid::FakeCpuid;

    fn cpu(edx_a: u32, ecx_1: u32) -> FakeCpuid {
        let mut f = FakeCpuid::default();
        let r = |eax, ebx, ecx, edx| CpuidResult { eax, ebx, ecx, edx };
        f.0.insert((0x8000_0000, 0), r(0x8000_001f, 0, 0, 0));
        f.0.insert((0x8000_0001, 0), r(0, 0, 1 << 2, 0));
        f.0.insert((0x8000_000a, 0), r(1, 16, 0, edx_a));
        f.0.insert((1, 0), r(0, 0, ecx_1, 0));
        f.0.insert((0xd, 0), r(0x2e7, 0, 0, 0));
        f.0.insert((0xd, 2), r(256, 576, 0, 0));
        f.0.insert((0xd, 5), r(64, 832, 0, 0));
        f.0.insert((0xd, 6), r(512, 896, 0, 0));
        f.0.insert((0xd, 7), r(1024, 1408, 0, 0));
        f.0.insert((0xd, 9), r(8, 2432, 0, 0));
        f
    }

    #[test]
    fn qemu_tcg_has_only_npt() {
        // qemu64,+svm,+npt: 8000_000A EDX = 0x1, 16 ASIDs, no XSAVE.
        let f = SvmFeatures::from_cpuid(&cpu(0x1, 0)).unwrap_or_default();
        assert!(f.npt);
        assert!(!f.nrip_save && !f.decode_assists && !f.vmcb_clean && !f.flush_by_asid);
        assert!(!f.xsave);
        assert_eq!((f.revision, f.asids, f.xsave_bytes), (1, 16, 0));
        // -cpu max: NP, VGIF, bit 28.
        let max = SvmFeatures::from_cpuid(&cpu(0x1001_0001, 0)).unwrap_or_default();
        assert!(max.vgif && max.npt && !max.nrip_save);
    }

    #[test]
    fn zen_like_cpu_and_xsave_size() {
        let f = SvmFeatures::from_cpuid(&cpu(0x0001_b4ff, 1 << 26)).unwrap_or_default();
        assert!(f.nrip_save && f.decode_assists && f.vmcb_clean && f.flush_by_asid);
        // PKRU (bit 9) is not offered, but it is switched with the rest: the area ends
        // after it (2432 + 8), not after AVX-512 (1408 + 1024).
        assert_eq!(f.xcr0_mask, 0xe7);
        assert_eq!(f.xsave_switch_mask, 0x2e7);
        assert_eq!(f.xsave_bytes, 2440);
        assert!(!f.tsc_aux);
    }

    #[test]
    fn no_svm() {
        let mut f = cpu(0x1, 0);
        f.0.insert((0x8000_0001, 0), CpuidResult::default());
        assert_eq!(SvmFeatures::from_cpuid(&f), None);
        assert_eq!(SvmFeatures::from_cpuid(&FakeCpuid::default()), None);
    }
}
