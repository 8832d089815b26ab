//! Turning VMX operation on for the executing CPU (Intel SDM Vol. 3 24.7 "Enabling and
//! entering VMX operation"): IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits, CR4.VMXE, a
//! VMXON region per CPU, VMXON.

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

use super::caps::{FeatureControl, MsrSource, VmxError, VmxFeatures, msr};
use super::instr;
use crate::memory::frames::FrameSource;

/// Reads the executing CPU's MSRs. Only used for MSRs that exist when CPUID reports
/// VMX (the capability MSRs and IA32_FEATURE_CONTROL).
#[derive(Debug, Clone, Copy)]
pub struct HostMsrs;

impl MsrSource for HostMsrs {
    fn read(&self, msr: u32) -> u64 {
        // SAFETY: called only after CPUID.1:ECX.VMX was seen (`VmxFeatures::probe`
        // checks it before reading any MSR); every VMX capability MSR read here
        // exists on such a CPU, and PROCBASED_CTLS2 / EPT_VPID_CAP are read only when
        // the controls that announce them are allowed (SDM Vol. 3 A.3.3, A.10).
        unsafe { instr::rdmsr(msr) }
    }
}

/// Whether this (single) CPU is in VMX operation.
static VMX_ON: AtomicBool = AtomicBool::new(false);

pub fn is_enabled() -> bool {
    VMX_ON.load(Ordering::Acquire)
}

/// Turns VMX on: locks IA32_FEATURE_CONTROL with VMXON allowed when the firmware left
/// it unlocked, refuses when the firmware locked VMX off, sets the CR0/CR4 fixed bits
/// and CR4.VMXE (plus the extended-state bits guest switching needs), and runs VMXON
/// on a fresh region that stays allocated while VMX is on.
pub fn enable<F: FrameSource>(features: &VmxFeatures, frames: &mut F) -> Result<(), VmxError> {
    if is_enabled() {
        return Ok(());
    }
    // The controls are checked before anything changes on the CPU.
    features.controls()?;
    match FeatureControl::from_msr(HostMsrs.read(msr::FEATURE_CONTROL)) {
        FeatureControl::Enabled => {}
        FeatureControl::LockWith(value) => {
            // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX; it is unlocked
            // (checked above), so the write cannot #GP, and it only allows VMXON.
            unsafe { instr::wrmsr(msr::FEATURE_CONTROL, value) };
            log::info!(target: "vmx", "IA32_FEATURE_CONTROL was unlocked: locked with VMXON outside SMX ({value:#x})");
        }
        FeatureControl::DisabledByFirmware => return Err(VmxError::DisabledByFirmware),
    }
    let region = frames.alloc_zeroed().ok_or(VmxError::OutOfFrames)?;
    let page = frames.table_mut(region);
    // Bits 30:0 of the first dword: the VMCS revision identifier (SDM Vol. 3 25.11.5).
    page[0] = u64::from(features.revision);
    let cr0_fixed = Cr0Flags::from_bits_truncate(features.cr0_fixed0);
    // SAFETY: the fixed-0 bits (PE, NE, PG on every CPU so far) are already set in
    // long mode except possibly NE, which only selects native x87 error reporting.
    unsafe { Cr0::update(|cr0| *cr0 |= cr0_fixed) };
    let mut cr4 = Cr4Flags::from_bits_truncate(features.cr4_fixed0)
        | Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS
        | Cr4Flags::OSFXSR
        | Cr4Flags::OSXMMEXCPT_ENABLE;
    if features.xsave {
        cr4 |= Cr4Flags::OSXSAVE;
    }
    // SAFETY: VMXE only allows VMXON; the extended-state bits only allow those
    // instructions (the hypervisor is soft-float and keeps no extended state).
    unsafe { Cr4::update(|c| *c |= cr4) };
    // SAFETY: CR4.VMXE is set, the fixed bits hold, FEATURE_CONTROL allows VMXON
    // outside SMX, and `region` is a zeroed 4 KiB-aligned frame with the revision id
    // that the caller keeps allocated for as long as VMX stays on.
    if unsafe { instr::vmxon(region.raw()) }.is_err() {
        frames.free(region);
        return Err(VmxError::VmxonFailed);
    }
    // Breakpoint addresses start at zero, as on SVM: DR0-3 are not switched by VM entry.
    // SAFETY: CPL 0; DR7 enables no breakpoint in the hypervisor.
    unsafe {
        crate::arch::x86::ext_state::write_dr::<0>(0);
        crate::arch::x86::ext_state::write_dr::<1>(0);
        crate::arch::x86::ext_state::write_dr::<2>(0);
        crate::arch::x86::ext_state::write_dr::<3>(0);
    }
    VMX_ON.store(true, Ordering::Release);
    log::info!(
        target: "vmx",
        "VMX on (VMCS revision {:#x}, unrestricted guest={}, VPID={}, EPT A/D={}, 2M={}), VMXON region {region}",
        features.revision,
        features.unrestricted_guest(),
        features.vpid(),
        features.ept_accessed_dirty(),
        features.ept_2m_pages()
    );
    log::info!(target: "vmx", "guest extended state switched with XCR0 {:#x} ({} bytes); guests offered {:#x}",
        features.xsave_switch_mask, features.xsave_bytes, features.xcr0_mask);
    Ok(())
}
