//! Extended-state (XCR0, XSAVE, FXSAVE) and debug-register instructions: what every
//! backend's world switch uses to give each guest its own x87/SSE/AVX state and
//! DR0-3, which neither VMRUN nor VM entry switches. Each one is `unsafe` with its
//! contract spelled out.

use core::arch::asm;

/// XGETBV(0): the current XCR0. Requires CR4.OSXSAVE (else #UD).
///
/// # Safety
/// CR4.OSXSAVE must be set.
pub unsafe fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// XSETBV(0): sets XCR0.
///
/// # Safety
/// CR4.OSXSAVE must be set and `value` must be a valid XCR0 for this CPU (bit 0 set,
/// only supported components, AVX only with SSE); the hypervisor itself never uses
/// extended state, so any valid value is sound for it.
pub unsafe fn set_xcr0(value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack, preserves_flags))
    }
}

/// XSAVE64 of the components in `mask` (ANDed with XCR0) to `area`.
///
/// # Safety
/// CR4.OSXSAVE must be set; `area` must be 64-byte aligned, writable, and large enough
/// for every component in `mask & XCR0` (CPUID 0xD).
pub unsafe fn xsave(area: *mut u8, mask: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("xsave64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
            options(nostack, preserves_flags))
    }
}

/// XRSTOR64 of the components in `mask` from `area`.
///
/// # Safety
/// As for [`xsave`]; additionally `area` must hold a valid XSAVE image (an all-zero
/// image is valid and means "initial state").
pub unsafe fn xrstor(area: *const u8, mask: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("xrstor64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
            options(nostack, preserves_flags))
    }
}

/// FXSAVE64 to a 512-byte, 16-byte aligned `area`.
///
/// # Safety
/// CR4.OSFXSR must be set and `area` must be a writable, 16-byte aligned 512-byte
/// region.
pub unsafe fn fxsave(area: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("fxsave64 [{}]", in(reg) area, options(nostack, preserves_flags)) }
}

/// FXRSTOR64 from a 512-byte, 16-byte aligned `area`.
///
/// # Safety
/// As for [`fxsave`]; `area` must hold a valid image (MXCSR reserved bits clear).
pub unsafe fn fxrstor(area: *const u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area, options(nostack, preserves_flags)) }
}

/// Reads debug register DR`N` (0-3).
///
/// # Safety
/// CPL 0.
pub unsafe fn read_dr<const N: u8>() -> u64 {
    let value: u64;
    // SAFETY: guaranteed by the caller; reading a breakpoint address has no effect.
    unsafe {
        match N {
            0 => asm!("mov {}, dr0", out(reg) value, options(nomem, nostack, preserves_flags)),
            1 => asm!("mov {}, dr1", out(reg) value, options(nomem, nostack, preserves_flags)),
            2 => asm!("mov {}, dr2", out(reg) value, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov {}, dr3", out(reg) value, options(nomem, nostack, preserves_flags)),
        }
    }
    value
}

/// Writes debug register DR`N` (0-3).
///
/// # Safety
/// CPL 0, and the host's DR7 must not enable breakpoint `N` with an address the
/// hypervisor does not expect to trap on (the hypervisor keeps DR7 disabled).
pub unsafe fn write_dr<const N: u8>(value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        match N {
            0 => asm!("mov dr0, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            1 => asm!("mov dr1, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            2 => asm!("mov dr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov dr3, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
        }
    }
}

/// The executing CPU's DR0-3 and TSC_AUX, as the guest switch (`switched.rs`) sees them.
#[derive(Debug)]
pub struct HostSwitched;

impl crate::arch::x86::switched::SwitchedCpu for HostSwitched {
    fn dr(&self, n: usize) -> u64 {
        // SAFETY: the hypervisor runs at CPL 0; reading DRn has no side effect.
        unsafe {
            match n {
                0 => read_dr::<0>(),
                1 => read_dr::<1>(),
                2 => read_dr::<2>(),
                _ => read_dr::<3>(),
            }
        }
    }
    fn set_dr(&mut self, n: usize, value: u64) {
        // SAFETY: CPL 0; the host's DR7 enables no breakpoint (#VMEXIT and VM exit
        // disable them all), so a guest address in DRn cannot fire in the hypervisor.
        unsafe {
            match n {
                0 => write_dr::<0>(value),
                1 => write_dr::<1>(value),
                2 => write_dr::<2>(value),
                _ => write_dr::<3>(value),
            }
        }
    }
    fn tsc_aux(&self) -> u64 {
        // SAFETY: only called when the CPU has TSC_AUX (the backends' `tsc_aux` feature).
        unsafe { x86_64::registers::model_specific::Msr::new(crate::hw::msr::TSC_AUX).read() }
    }
    fn set_tsc_aux(&mut self, value: u64) {
        // Bits 63:32 are reserved (WRMSR #GPs): the MSR handler already refuses such
        // values, and the mask keeps that from being this block's precondition.
        let value = value & u64::from(u32::MAX);
        // SAFETY: as above; TSC_AUX only feeds RDTSCP/RDPID, which the hypervisor does
        // not use, and a 32-bit value is one WRMSR accepts.
        unsafe { x86_64::registers::model_specific::Msr::new(crate::hw::msr::TSC_AUX).write(value) }
    }
}
