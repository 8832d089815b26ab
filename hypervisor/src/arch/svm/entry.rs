//! The world switch: enter the guest with VMRUN and come back on #VMEXIT.
//!
//! VMRUN itself switches only RAX, RSP, RIP, RFLAGS, the segment registers CS/SS/DS/ES,
//! GDTR/IDTR, CR0/CR2/CR3/CR4, DR6/DR7 and EFER (APM Vol. 2 15.5.1). The stub adds:
//! - the other 14 GPRs, loaded from and stored back to a [`GuestRegisters`] block
//!   (its RAX and RSP slots are not used: those live in the VMCB);
//! - VMSAVE/VMLOAD of the "hidden" state (FS, GS, TR, LDTR with their hidden parts,
//!   KernelGsBase, STAR, LSTAR, CSTAR, SFMASK, SYSENTER_*) for host and guest;
//! - the interrupt pattern `clgi; sti; vmrun; cli; stgi` (APM 15.17, spike findings):
//!   with V_INTR_MASKING = 1 and the INTR intercept, a host interrupt that arrives
//!   while the guest runs becomes #VMEXIT(INTR) and stays pending; the stub returns
//!   with RFLAGS.IF = 0 and GIF = 1, and the caller delivers it by opening an interrupt
//!   window (`sti; nop; cli`) when it is ready. NMIs are held while GIF = 0 and taken
//!   right after the final STGI.
//!
//! Guest extended state (x87/SSE/AVX) and XCR0 are switched by the caller around this
//! stub (`arch::svm::vcpu`): the hypervisor is soft-float and never touches them.

use core::arch::naked_asm;

use crate::arch::regs::{GuestRegisters, offsets};

/// Runs the guest once.
///
/// Arguments (System V): `vmcb_pa` in RDI, `regs` in RSI, `host_save_pa` in RDX.
///
/// # Safety
/// The caller guarantees, for the executing CPU:
/// - EFER.SVME is set and VM_HSAVE_PA points at this CPU's 4 KiB host save area;
/// - `vmcb_pa` is the physical address of a 4 KiB-aligned VMCB that passes the VMRUN
///   consistency checks (APM 15.5.1; a VMCB that fails them gives a normal return
///   with EXITCODE = VMEXIT_INVALID) and intercepts VMRUN;
/// - `host_save_pa` is the physical address of a 4 KiB page used only for this
///   VMSAVE/VMLOAD of host state;
/// - `regs` is valid for reads and writes of a `GuestRegisters`;
/// - no other CPU runs the same VMCB.
///
/// On return RFLAGS.IF = 0 and GIF = 1; FS/GS/TR/LDTR and the syscall MSRs are the
/// host's again; the guest's RAX, RSP, RIP and RFLAGS are in the VMCB.
#[unsafe(naked)]
pub unsafe extern "sysv64" fn svm_run(vmcb_pa: u64, regs: *mut GuestRegisters, host_save_pa: u64) {
    naked_asm!(
        // Host callee-saved registers.
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // [rsp+16] = regs, [rsp+8] = host save area, [rsp] = guest VMCB.
        "push rsi",
        "push rdx",
        "push rdi",
        "clgi",
        // Host FS/GS/TR/LDTR/syscall MSRs into the host save area.
        "mov rax, rdx",
        "vmsave rax",
        // IF = 1 so that physical interrupts exit the guest (held by GIF = 0 here).
        "sti",
        // Guest GPRs; RSI last because it holds the pointer.
        "mov rax, rdi",
        "mov rbx, [rsi + {rbx}]",
        "mov rcx, [rsi + {rcx}]",
        "mov rdx, [rsi + {rdx}]",
        "mov rdi, [rsi + {rdi}]",
        "mov rbp, [rsi + {rbp}]",
        "mov r8,  [rsi + {r8}]",
        "mov r9,  [rsi + {r9}]",
        "mov r10, [rsi + {r10}]",
        "mov r11, [rsi + {r11}]",
        "mov r12, [rsi + {r12}]",
        "mov r13, [rsi + {r13}]",
        "mov r14, [rsi + {r14}]",
        "mov r15, [rsi + {r15}]",
        "mov rsi, [rsi + {rsi}]",
        "vmload rax",
        "vmrun rax",
        // #VMEXIT: RAX = guest VMCB (host RAX), RSP = host RSP, GIF = 0.
        "vmsave rax",
        "cli",
        // Free a register for the GPR block pointer.
        "push rdi",
        "mov rdi, [rsp + 24]",
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
        // Drop the guest VMCB address, restore the host's hidden state.
        "pop rax",
        "pop rax",
        "vmload rax",
        "pop rsi",
        "stgi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
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
