//! The VMX instructions (Intel SDM Vol. 3 chapter 31). Each reports VMfailInvalid
//! (CF = 1) and VMfailValid (ZF = 1) as an error instead of ignoring RFLAGS; each is
//! `unsafe` with its contract spelled out.

use core::arch::asm;

/// How a VMX instruction failed (SDM Vol. 3 31.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxFail {
    /// CF = 1: no current VMCS (or the operand was invalid before any VMCS existed).
    Invalid,
    /// ZF = 1: the VM-instruction error field has the number (SDM 31.4).
    Valid,
}

/// Turns the CF/ZF pair an instruction left into a result.
fn status(cf: u8, zf: u8) -> Result<(), VmxFail> {
    if cf != 0 {
        Err(VmxFail::Invalid)
    } else if zf != 0 {
        Err(VmxFail::Valid)
    } else {
        Ok(())
    }
}

/// VMXON with the region at physical address `pa`.
///
/// # Safety
/// CR4.VMXE is set, CR0/CR4 satisfy the fixed bits, IA32_FEATURE_CONTROL allows VMXON
/// outside SMX, and `pa` is a 4 KiB-aligned zeroed page holding the VMCS revision id
/// that stays allocated while VMX operation lasts.
pub unsafe fn vmxon(pa: u64) -> Result<(), VmxFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: guaranteed by the caller; the operand is a memory qword holding `pa`.
    unsafe {
        asm!("vmxon [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    status(cf, zf)
}

/// VMCLEAR of the VMCS at `pa`: writes its cached state back and marks it clear.
///
/// # Safety
/// VMX operation is on and `pa` is a VMCS region the caller owns.
pub unsafe fn vmclear(pa: u64) -> Result<(), VmxFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("vmclear [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    status(cf, zf)
}

/// VMPTRLD: makes the VMCS at `pa` current on this CPU.
///
/// # Safety
/// VMX operation is on and `pa` is a VMCS region (revision id written) the caller owns.
pub unsafe fn vmptrld(pa: u64) -> Result<(), VmxFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("vmptrld [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    status(cf, zf)
}

/// VMREAD of `field` from the current VMCS; 0 when it fails (no current VMCS, or a
/// field this CPU does not have).
///
/// # Safety
/// VMX operation is on.
pub unsafe fn vmread(field: u32) -> u64 {
    let value: u64;
    let (cf, zf): (u8, u8);
    // SAFETY: guaranteed by the caller; VMREAD only reads the current VMCS.
    unsafe {
        asm!("vmread {}, {}", "setc {}", "setz {}", out(reg) value, in(reg) u64::from(field),
            out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    if status(cf, zf).is_ok() { value } else { 0 }
}

/// VMWRITE of `value` to `field` of the current VMCS.
///
/// # Safety
/// VMX operation is on, and the value keeps the hypervisor's own state sound (host
/// state fields describe the host; guest fields are checked by VM entry).
pub unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmxFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("vmwrite {}, {}", "setc {}", "setz {}", in(reg) u64::from(field), in(reg) value,
            out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    status(cf, zf)
}

/// INVEPT type 1 (single context) for `eptp`, or type 2 (all contexts) when `eptp` is 0.
///
/// # Safety
/// VMX operation is on and the CPU supports the type used.
pub unsafe fn invept(eptp: u64) -> Result<(), VmxFail> {
    let descriptor: [u64; 2] = [eptp, 0];
    let kind: u64 = if eptp == 0 { 2 } else { 1 };
    let (cf, zf): (u8, u8);
    // SAFETY: guaranteed by the caller; the descriptor is 16 bytes on the stack.
    unsafe {
        asm!("invept {}, [{}]", "setc {}", "setz {}", in(reg) kind, in(reg) &descriptor,
            out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    status(cf, zf)
}

/// INVVPID type 1 (single context) for `vpid`, or type 2 (all contexts but VPID 0)
/// when `vpid` is 0.
///
/// # Safety
/// VMX operation is on and the CPU supports the type used.
pub unsafe fn invvpid(vpid: u16) -> Result<(), VmxFail> {
    let descriptor: [u64; 2] = [u64::from(vpid), 0];
    let kind: u64 = if vpid == 0 { 2 } else { 1 };
    let (cf, zf): (u8, u8);
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("invvpid {}, [{}]", "setc {}", "setz {}", in(reg) kind, in(reg) &descriptor,
            out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    status(cf, zf)
}

/// Reads an MSR.
///
/// # Safety
/// The MSR exists on this CPU (else #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: guaranteed by the caller.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).read() }
}

/// Writes an MSR.
///
/// # Safety
/// The MSR exists, the value is valid for it, and nothing the hypervisor relies on
/// changes because of it.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).write(value) }
}

/// DR6 of the executing CPU (VM entry and exit do not switch it).
///
/// # Safety
/// CPL 0.
pub unsafe fn read_dr6() -> u64 {
    let value: u64;
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov {}, dr6", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Sets DR6.
///
/// # Safety
/// CPL 0; DR6 only reports debug conditions, the hypervisor reads it nowhere else.
pub unsafe fn write_dr6(value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov dr6, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}
