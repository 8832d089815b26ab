//! The payload's IDT: lets a check expect a fault (e.g. #GP from a denied MSR) and skip
//! the faulting instruction, counts test and device interrupts, and reports anything
//! else.

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The vector the hypervisor injects for interrupt checks.
pub const TEST_VECTOR: u8 = 0x40;
/// Vectors a payload gives its assigned device's MSI (counted per vector).
pub const DEVICE_VECTORS: [u8; 2] = [0x51, 0x52];

static EXPECTED_VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
static SKIP_BYTES: AtomicU64 = AtomicU64::new(0);
static CAUGHT: AtomicU32 = AtomicU32::new(0);
static TEST_IRQS: AtomicU32 = AtomicU32::new(0);
static DEVICE_IRQS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];

#[repr(C)]
struct Frame {
    regs: [u64; 15],
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

static mut IDT: [Gate; 256] =
    [Gate { offset_low: 0, selector: 0, ist: 0, attributes: 0, offset_mid: 0, offset_high: 0, reserved: 0 }; 256];

#[unsafe(naked)]
extern "sysv64" fn common() {
    naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
        "mov rdi, rsp",
        "call {handler}",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
        "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
        "add rsp, 16",
        "iretq",
        handler = sym handle,
    )
}

macro_rules! stubs {
    ($($name:ident = $vector:literal $(, $err:ident)?;)*) => {
        $(
            #[unsafe(naked)]
            extern "sysv64" fn $name() {
                stubs!(@body $vector $(, $err)?)
            }
        )*
        const STUBS: &[(u8, extern "sysv64" fn())] = &[$(($vector, $name)),*];
    };
    (@body $vector:literal, err) => {
        naked_asm!(concat!("push ", $vector), "jmp {c}", c = sym common)
    };
    (@body $vector:literal) => {
        naked_asm!("push 0", concat!("push ", $vector), "jmp {c}", c = sym common)
    };
}

stubs! {
    v0 = 0; v1 = 1; v2 = 2; v3 = 3; v4 = 4; v5 = 5; v6 = 6; v7 = 7;
    v8 = 8, err; v10 = 10, err; v11 = 11, err; v12 = 12, err; v13 = 13, err; v14 = 14, err;
    v16 = 16; v17 = 17, err; v18 = 18; v19 = 19; v64 = 64; v81 = 81; v82 = 82;
}

extern "sysv64" fn handle(frame: &mut Frame) {
    if frame.vector == u64::from(TEST_VECTOR) {
        TEST_IRQS.fetch_add(1, Ordering::SeqCst);
        return;
    }
    if let Some(i) = DEVICE_VECTORS.iter().position(|v| u64::from(*v) == frame.vector) {
        DEVICE_IRQS[i].fetch_add(1, Ordering::SeqCst);
        return;
    }
    if frame.vector == EXPECTED_VECTOR.load(Ordering::SeqCst) {
        EXPECTED_VECTOR.store(u64::MAX, Ordering::SeqCst);
        CAUGHT.fetch_add(1, Ordering::SeqCst);
        frame.rip += SKIP_BYTES.load(Ordering::SeqCst);
        return;
    }
    crate::println!(
        "PAYLOAD EXCEPTION vector {} error {:#x} at rip {:#x} (regs {:x?})",
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.regs
    );
    crate::hypercall::shutdown(2);
}

pub fn init() {
    for &(vector, stub) in STUBS {
        let addr = stub as usize as u64;
        let gate = Gate {
            offset_low: addr as u16,
            selector: 0x10,
            ist: 0,
            attributes: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (addr >> 16) as u16,
            offset_high: (addr >> 32) as u32,
            reserved: 0,
        };
        // SAFETY: single-threaded payload; the IDT is written before it is loaded.
        unsafe { (&raw mut IDT).cast::<Gate>().add(usize::from(vector)).write(gate) };
    }
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer { limit: (256 * 16 - 1) as u16, base: (&raw const IDT) as u64 };
    // SAFETY: the pointer describes the static IDT filled above.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack)) };
}

/// Runs `f`, which must fault with `vector` on an instruction `insn_len` bytes long;
/// returns whether it did. The handler skips the faulting instruction.
pub fn expect_fault(vector: u8, insn_len: u64, f: impl FnOnce()) -> bool {
    let before = CAUGHT.load(Ordering::SeqCst);
    SKIP_BYTES.store(insn_len, Ordering::SeqCst);
    EXPECTED_VECTOR.store(u64::from(vector), Ordering::SeqCst);
    f();
    EXPECTED_VECTOR.store(u64::MAX, Ordering::SeqCst);
    CAUGHT.load(Ordering::SeqCst) > before
}

pub fn test_irqs() -> u32 {
    TEST_IRQS.load(Ordering::SeqCst)
}

/// How many interrupts arrived on each of [`DEVICE_VECTORS`].
pub fn device_irqs() -> [u32; 2] {
    [DEVICE_IRQS[0].load(Ordering::SeqCst), DEVICE_IRQS[1].load(Ordering::SeqCst)]
}
