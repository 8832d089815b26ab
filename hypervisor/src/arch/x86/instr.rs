//! Thin wrappers over privileged instructions. Instructions whose misuse can break
//! memory safety or the machine stay `unsafe`; harmless reads are safe.

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device the hypervisor owns, and the write must not break
/// an invariant another part of the hypervisor relies on.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees the port write is sound.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) }
}

/// Writes a word to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller guarantees the port write is sound.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags)) }
}

/// Writes a dword to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller guarantees the port write is sound.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// Reads can have side effects on devices (e.g. clear status); the port must be one the
/// hypervisor owns.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller guarantees the port read is sound.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Reads a word from an I/O port.
///
/// # Safety
/// As for [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: the caller guarantees the port read is sound.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Reads a dword from an I/O port.
///
/// # Safety
/// As for [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller guarantees the port read is sound.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Resets the CPU by triple fault: loads an empty IDT and raises an exception, which
/// cannot be delivered (#GP, then #DF, then shutdown; SDM Vol. 3 §6.15 "Interrupt 8").
/// On PC chipsets the shutdown cycle resets the machine.
///
/// # Safety
/// Everything on this CPU is lost; the caller must have stopped what needs stopping.
pub unsafe fn triple_fault() -> ! {
    let empty = x86_64::structures::DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::zero() };
    x86_64::instructions::interrupts::disable();
    // SAFETY: loading an IDT that no interrupt can use is only harmful to this CPU,
    // which the caller is resetting; interrupts are off so nothing arrives first.
    unsafe { x86_64::instructions::tables::lidt(&empty) };
    // SAFETY: the exception cannot be delivered; the CPU shuts down and resets.
    unsafe { asm!("int3", options(noreturn)) }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is allowed at CPL 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A 64-bit random number from RDRAND, or `None` when the CPU has no RDRAND
/// (CPUID.1:ECX[30]) or it failed ten times in a row (Intel DRNG guide §5.2.1 advises
/// ten retries).
pub fn rdrand64() -> Option<u64> {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 30) == 0 {
        return None;
    }
    for _ in 0..10 {
        let value: u64;
        let ok: u8;
        // SAFETY: RDRAND exists (checked above); it only writes the named registers and
        // the flags.
        unsafe { asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack)) }
        if ok != 0 {
            return Some(value);
        }
    }
    None
}

/// 128 unpredictable bits: RDRAND when the CPU has it, mixed with TSC readings so a
/// missing or weak RDRAND still gives distinct values per call and per machine.
pub fn random_128() -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, half) in out.chunks_exact_mut(8).enumerate() {
        let mut x = rdrand64().unwrap_or(0) ^ rdtsc().rotate_left(if i == 0 { 17 } else { 41 });
        // splitmix64 finaliser: spreads the TSC's low-entropy bits over the word.
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        half.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// Halts the CPU forever with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The initial local APIC id of the executing CPU (CPUID.1:EBX[31:24]).
pub fn apic_id() -> u32 {
    core::arch::x86_64::__cpuid(1).ebx >> 24
}
