//! The SVM and extended-state instructions (AMD APM Vol. 3). Each one can break the
//! machine if misused, so each is `unsafe` with its contract spelled out.

use core::arch::asm;

use crate::memory::addr::HostPhysAddr;

/// VMLOAD: loads FS, GS, TR, LDTR (with hidden state), KernelGsBase, STAR, LSTAR,
/// CSTAR, SFMASK and SYSENTER_* from the VMCB at `vmcb`.
///
/// # Safety
/// EFER.SVME must be set, `vmcb` must be a 4 KiB-aligned page holding valid state,
/// and nothing may depend on the current FS/GS/TR/LDTR/syscall MSRs until they are
/// restored.
pub unsafe fn vmload(vmcb: HostPhysAddr) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("vmload rax", in("rax") vmcb.raw(), options(nostack, preserves_flags)) }
}

/// VMSAVE: the counterpart of [`vmload`], storing that state into the VMCB.
///
/// # Safety
/// EFER.SVME must be set and `vmcb` must be a 4 KiB-aligned page the hypervisor owns
/// exclusively.
pub unsafe fn vmsave(vmcb: HostPhysAddr) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("vmsave rax", in("rax") vmcb.raw(), options(nostack, preserves_flags)) }
}

/// STGI: sets the global interrupt flag.
///
/// # Safety
/// EFER.SVME must be set; pending interrupts and NMIs are delivered afterwards, so host
/// handlers must be ready.
pub unsafe fn stgi() {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("stgi", options(nomem, nostack, preserves_flags)) }
}

/// CLGI: clears the global interrupt flag.
///
/// # Safety
/// EFER.SVME must be set; interrupts, NMIs and SMIs stay held until STGI.
pub unsafe fn clgi() {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("clgi", options(nomem, nostack, preserves_flags)) }
}

/// INVLPGA: invalidates the TLB mapping of guest virtual address `gva` in `asid`.
///
/// # Safety
/// EFER.SVME must be set.
pub unsafe fn invlpga(gva: u64, asid: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("invlpga rax, ecx", in("rax") gva, in("ecx") asid, options(nostack, preserves_flags)) }
}

/// The extended-state and debug-register instructions both backends use.
pub use crate::arch::x86::ext_state::{fxrstor, fxsave, read_dr, set_xcr0, write_dr, xcr0, xrstor, xsave};
