//! The IDT. Every exception vector has a small assembly stub that saves all registers
//! into a [`TrapFrame`] and calls [`handle_trap`]; an exception in the hypervisor is a
//! hypervisor bug, so the handler dumps the full state and stops the machine. The
//! breakpoint and NMI vectors are recoverable. Device-interrupt vectors (see
//! [`device_vectors`]) are recorded for the scheduler and EOI'd at once, except
//! level-triggered ones, whose EOI waits until their I/O APIC pin is masked.

use core::arch::naked_asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;
use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

use super::{device_vectors, gdt, lapic};

/// Set by the preemption timer's interrupt; the scheduler takes it.
pub static TIMER_FIRED: AtomicBool = AtomicBool::new(false);
/// Set by the keyboard's interrupt: the running slice ends so the switcher reads the
/// key at once.
pub static KEYBOARD_FIRED: AtomicBool = AtomicBool::new(false);
/// TSC at the last keyboard interrupt (for the switch benchmark).
pub static KEYBOARD_IRQ_TSC: AtomicU64 = AtomicU64::new(0);
/// What the keyboard's interrupt does besides flagging it: the keyboard driver (a
/// layer above) empties the controller here, so no key waits for the switcher.
pub static KEYBOARD_HOOK: Once<fn()> = Once::new();

/// Register state at a trap, in the order the common stub pushes it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU (SDM Vol. 3 §6.14.2, 64-bit interrupt stack frame).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);
const _: () = assert!(core::mem::offset_of!(TrapFrame, vector) == 15 * 8);
const _: () = assert!(core::mem::offset_of!(TrapFrame, rip) == 17 * 8);

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

impl fmt::Display for TrapFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = EXCEPTION_NAMES.get(self.vector as usize).copied().unwrap_or("interrupt");
        writeln!(f, "{name} (vector {}) error={:#x}", self.vector, self.error_code)?;
        writeln!(
            f,
            "rip={:#018x} cs={:#x} rflags={:#x} rsp={:#018x} ss={:#x}",
            self.rip, self.cs, self.rflags, self.rsp, self.ss
        )?;
        writeln!(f, "rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", self.rax, self.rbx, self.rcx, self.rdx)?;
        writeln!(f, "rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}", self.rsi, self.rdi, self.rbp, self.r8)?;
        writeln!(f, "r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}", self.r9, self.r10, self.r11, self.r12)?;
        write!(f, "r13={:#018x} r14={:#018x} r15={:#018x}", self.r13, self.r14, self.r15)
    }
}

/// Saves the general-purpose registers, calls `handle_trap(&mut TrapFrame)`, restores
/// them, drops vector and error code, and returns from the interrupt.
#[unsafe(naked)]
extern "sysv64" fn trap_common() {
    naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
        "mov rdi, rsp",
        "cld",
        "call {handler}",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
        "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
        "add rsp, 16",
        "iretq",
        handler = sym handle_trap,
    )
}

/// Entry stubs: vectors with a CPU-pushed error code push only the vector; the others
/// push a zero error code first so every frame has the same shape.
macro_rules! stub {
    ($name:ident, $vector:literal, error_code) => {
        #[unsafe(naked)]
        extern "sysv64" fn $name() {
            naked_asm!(concat!("push ", $vector), "jmp {common}", common = sym trap_common)
        }
    };
    ($name:ident, $vector:literal) => {
        #[unsafe(naked)]
        extern "sysv64" fn $name() {
            naked_asm!("push 0", concat!("push ", $vector), "jmp {common}", common = sym trap_common)
        }
    };
}

stub!(stub_de, 0);
stub!(stub_db, 1);
stub!(stub_nmi, 2);
stub!(stub_bp, 3);
stub!(stub_of, 4);
stub!(stub_br, 5);
stub!(stub_ud, 6);
stub!(stub_nm, 7);
stub!(stub_df, 8, error_code);
stub!(stub_ts, 10, error_code);
stub!(stub_np, 11, error_code);
stub!(stub_ss, 12, error_code);
stub!(stub_gp, 13, error_code);
stub!(stub_pf, 14, error_code);
stub!(stub_mf, 16);
stub!(stub_ac, 17, error_code);
stub!(stub_mc, 18);
stub!(stub_xm, 19);
stub!(stub_ve, 20);
stub!(stub_cp, 21, error_code);
stub!(stub_hv, 28);
stub!(stub_vc, 29, error_code);
stub!(stub_sx, 30, error_code);
stub!(stub_timer, 0x20);
stub!(stub_keyboard, 0x21);
stub!(stub_work, 0xf0);
stub!(stub_spurious, 0xff);

/// Bytes per device-interrupt stub in the table below.
const DEVICE_STUB_BYTES: u64 = 16;

// One 16-byte stub per device vector, FIRST..=LAST in order: push a zero error code
// (`6a 00`) and the vector (`68 imm32`), then join `trap_common`.
core::arch::global_asm!(
    ".pushsection .text.bulkhead_device_irq_stubs,\"ax\",@progbits",
    ".balign 16",
    ".global bulkhead_device_irq_stubs",
    "bulkhead_device_irq_stubs:",
    ".set bulkhead_device_irq_vector, {first}",
    ".rept {count}",
    ".byte 0x6a, 0x00",
    ".byte 0x68",
    ".long bulkhead_device_irq_vector",
    "jmp {common}",
    ".balign 16, 0xcc",
    ".set bulkhead_device_irq_vector, bulkhead_device_irq_vector + 1",
    ".endr",
    ".popsection",
    first = const device_vectors::FIRST,
    count = const device_vectors::COUNT,
    common = sym trap_common,
);

unsafe extern "C" {
    /// The first stub of the table above.
    static bulkhead_device_irq_stubs: u8;
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

fn addr(f: extern "sysv64" fn()) -> VirtAddr {
    VirtAddr::new(f as usize as u64)
}

/// Builds the IDT (once) and loads it on the executing CPU; every CPU shares it.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        // SAFETY: each address is one of the stubs above, which preserve all registers
        // and end in iretq after the shared handler; each stub's frame layout matches its
        // vector's error-code behaviour, and the IST indices exist in the TSS. The device
        // stubs are 16 bytes apart from `bulkhead_device_irq_stubs`, one per vector in
        // order, as the `.rept` block lays them out.
        unsafe {
            idt.divide_error.set_handler_addr(addr(stub_de));
            idt.debug.set_handler_addr(addr(stub_db));
            idt.non_maskable_interrupt.set_handler_addr(addr(stub_nmi)).set_stack_index(gdt::IST_NMI);
            idt.breakpoint.set_handler_addr(addr(stub_bp));
            idt.overflow.set_handler_addr(addr(stub_of));
            idt.bound_range_exceeded.set_handler_addr(addr(stub_br));
            idt.invalid_opcode.set_handler_addr(addr(stub_ud));
            idt.device_not_available.set_handler_addr(addr(stub_nm));
            idt.double_fault.set_handler_addr(addr(stub_df)).set_stack_index(gdt::IST_DOUBLE_FAULT);
            idt.invalid_tss.set_handler_addr(addr(stub_ts));
            idt.segment_not_present.set_handler_addr(addr(stub_np));
            idt.stack_segment_fault.set_handler_addr(addr(stub_ss));
            idt.general_protection_fault.set_handler_addr(addr(stub_gp));
            idt.page_fault.set_handler_addr(addr(stub_pf));
            idt.x87_floating_point.set_handler_addr(addr(stub_mf));
            idt.alignment_check.set_handler_addr(addr(stub_ac));
            idt.machine_check.set_handler_addr(addr(stub_mc)).set_stack_index(gdt::IST_MACHINE_CHECK);
            idt.simd_floating_point.set_handler_addr(addr(stub_xm));
            idt.virtualization.set_handler_addr(addr(stub_ve));
            idt.cp_protection_exception.set_handler_addr(addr(stub_cp));
            idt.hv_injection_exception.set_handler_addr(addr(stub_hv));
            idt.vmm_communication_exception.set_handler_addr(addr(stub_vc));
            idt.security_exception.set_handler_addr(addr(stub_sx));
            idt[lapic::TIMER_VECTOR].set_handler_addr(addr(stub_timer));
            idt[lapic::KEYBOARD_VECTOR].set_handler_addr(addr(stub_keyboard));
            // One stub per device vector, DEVICE_STUB_BYTES apart in the image.
            let mut stub = (&raw const bulkhead_device_irq_stubs) as u64;
            for vector in device_vectors::FIRST..=device_vectors::LAST {
                idt[vector].set_handler_addr(VirtAddr::new(stub));
                stub = stub.wrapping_add(DEVICE_STUB_BYTES);
            }
            idt[lapic::WORK_VECTOR].set_handler_addr(addr(stub_work));
            idt[lapic::SPURIOUS_VECTOR].set_handler_addr(addr(stub_spurious));
        }
        idt
    });
    idt.load();
}

extern "sysv64" fn handle_trap(frame: &mut TrapFrame) {
    match frame.vector {
        v if v == u64::from(lapic::TIMER_VECTOR) => {
            TIMER_FIRED.store(true, Ordering::Release);
            lapic::eoi();
        }
        v if v == u64::from(lapic::KEYBOARD_VECTOR) => {
            KEYBOARD_IRQ_TSC.store(super::instr::rdtsc(), Ordering::Relaxed);
            if let Some(catch) = KEYBOARD_HOOK.get() {
                catch();
            }
            KEYBOARD_FIRED.store(true, Ordering::Release);
            lapic::eoi();
        }
        // Only wakes the CPU: its idle loop takes the mailbox's work (`smp::work`).
        v if v == u64::from(lapic::WORK_VECTOR) => lapic::eoi(),
        v if v == u64::from(lapic::SPURIOUS_VECTOR) => {}
        v if device_vectors::is_device_vector(v) => {
            if device_vectors::on_interrupt(v as u8) {
                lapic::eoi();
            }
        }
        3 => log::info!(target: "idt", "breakpoint at {:#x}", frame.rip),
        2 => log::warn!(target: "idt", "NMI at {:#x}", frame.rip),
        _ => {
            let cr2 = x86_64::registers::control::Cr2::read_raw();
            crate::logging::write_raw(format_args!(
                "\nBULKHEAD EXCEPTION in the hypervisor on cpu{}: {frame}\ncr2={cr2:#x}\n",
                super::instr::apic_id()
            ));
            crate::arch::x86::debug_exit::exit(crate::arch::x86::debug_exit::ExitCode::Failure);
            super::instr::halt_forever();
        }
    }
}
