//! The world switch: VMLAUNCH/VMRESUME and the VM-exit landing point.
//!
//! VM entry loads the guest's RSP, RIP, RFLAGS, control registers, segments,
//! descriptor tables, DR7, EFER, PAT and SYSENTER_* from the VMCS; VM exit loads the
//! host's from the VMCS host-state area (SDM Vol. 3 28.5). The stub adds the 15 other
//! GPRs, loaded from and stored back to a [`GuestRegisters`] block (its RSP slot is
//! unused: RSP lives in the VMCS), and writes HOST_RSP and HOST_RIP itself, since only
//! it knows the stack pointer at entry and its landing address.
//!
//! External-interrupt exiting without "acknowledge interrupt on exit" leaves a host
//! interrupt pending in the local APIC; VM exit clears RFLAGS.IF, so the stub returns
//! with IF = 0, as the SVM stub does, and the caller delivers the interrupt when it
//! opens a window (`sti; nop; cli`).

use core::arch::naked_asm;

use super::fields::{HOST_RIP, HOST_RSP};
use crate::arch::regs::{GuestRegisters, offsets};

/// What [`vmx_run`] returns.
pub mod outcome {
    /// The guest ran and exited: the exit fields are valid.
    pub const EXITED: u64 = 0;
    /// VMLAUNCH/VMRESUME failed with VMfailInvalid (no current VMCS).
    pub const FAIL_INVALID: u64 = 1;
    /// VMfailValid: the VM-instruction error field says why (e.g. 7 = invalid
    /// control fields, 8 = invalid host state).
    pub const FAIL_VALID: u64 = 2;
}

/// Runs the guest of the current VMCS once.
///
/// Arguments (System V): `regs` in RDI, `launched` in RSI (0: VMLAUNCH, else VMRESUME).
///
/// # Safety
/// The caller guarantees, for the executing CPU: VMX operation is on; the vCPU's VMCS
/// is current and its host-state area describes this CPU (CR0/CR3/CR4, selectors,
/// FS/GS/TR/GDTR/IDTR bases, EFER, PAT); `launched` matches the VMCS's launch state;
/// `regs` is valid for reads and writes of a `GuestRegisters`.
///
/// On return RFLAGS.IF = 0; the guest's RSP, RIP and RFLAGS are in the VMCS.
#[unsafe(naked)]
pub unsafe extern "sysv64" fn vmx_run(regs: *mut GuestRegisters, launched: u64) -> u64 {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // [rsp] = regs: the landing point finds it there (HOST_RSP = this RSP).
        "push rdi",
        "cli",
        "mov rax, {host_rsp}",
        "vmwrite rax, rsp",
        "lea rbx, [rip + 2f]",
        "mov rax, {host_rip}",
        "vmwrite rax, rbx",
        // Sets ZF for the launch/resume choice below; MOVs leave the flags alone.
        "test rsi, rsi",
        "mov rax, [rdi + {rax}]",
        "mov rbx, [rdi + {rbx}]",
        "mov rcx, [rdi + {rcx}]",
        "mov rdx, [rdi + {rdx}]",
        "mov rsi, [rdi + {rsi}]",
        "mov rbp, [rdi + {rbp}]",
        "mov r8,  [rdi + {r8}]",
        "mov r9,  [rdi + {r9}]",
        "mov r10, [rdi + {r10}]",
        "mov r11, [rdi + {r11}]",
        "mov r12, [rdi + {r12}]",
        "mov r13, [rdi + {r13}]",
        "mov r14, [rdi + {r14}]",
        "mov r15, [rdi + {r15}]",
        "mov rdi, [rdi + {rdi}]",
        "jz 3f",
        "vmresume",
        "jmp 4f",
        "3:",
        "vmlaunch",
        // Only reached when the instruction failed: CF = VMfailInvalid, ZF = VMfailValid.
        "4:",
        "mov eax, {fail_valid}",
        "jnc 5f",
        "mov eax, {fail_invalid}",
        "5:",
        "jmp 6f",
        // VM exit: RSP = HOST_RSP, guest GPRs still live.
        "2:",
        "push rdi",
        "mov rdi, [rsp + 8]",
        "mov [rdi + {rax}], rax",
        "mov [rdi + {rbx}], rbx",
        "mov [rdi + {rcx}], rcx",
        "mov [rdi + {rdx}], rdx",
        "mov [rdi + {rsi}], rsi",
        "mov [rdi + {rbp}], rbp",
        "mov [rdi + {r8}],  r8",
        "mov [rdi + {r9}],  r9",
        "mov [rdi + {r10}], r10",
        "mov [rdi + {r11}], r11",
        "mov [rdi + {r12}], r12",
        "mov [rdi + {r13}], r13",
        "mov [rdi + {r14}], r14",
        "mov [rdi + {r15}], r15",
        "pop rax",
        "mov [rdi + {rdi}], rax",
        "xor eax, eax",
        "6:",
        // Drop the saved regs pointer, restore the host's callee-saved registers.
        "add rsp, 8",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        host_rsp = const HOST_RSP,
        host_rip = const HOST_RIP,
        fail_valid = const outcome::FAIL_VALID,
        fail_invalid = const outcome::FAIL_INVALID,
        rax = const offsets::RAX,
        rbx = const offsets::RBX,
        rcx = const offsets::RCX,
        rdx = const offsets::RDX,
        rsi = const offsets::RSI,
        rdi = const offsets::RDI,
        rbp = const offsets::RBP,
        r8 = const offsets::R8,
        r9 = const offsets::R9,
        r10 = const offsets::R10,
        r11 = const offsets::R11,
        r12 = const offsets::R12,
        r13 = const offsets::R13,
        r14 = const offsets::R14,
        r15 = const offsets::R15,
    )
}
