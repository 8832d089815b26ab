//! TSC frequency: from CPUID leaf 0x15/0x16 where the CPU reports it, otherwise measured
//! against PIT channel 2 (the classic gate-on-port-0x61 method, no interrupts needed).

use super::instr;

const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
const PORT_B: u16 = 0x61;
const PIT_HZ: u64 = 1_193_182;

static TICKS_PER_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// TSC ticks per millisecond (measured once, then cached).
pub fn ticks_per_ms() -> u64 {
    let ticks = from_cpuid().unwrap_or_else(measure_with_pit);
    TICKS_PER_MS.store(ticks, core::sync::atomic::Ordering::Relaxed);
    ticks
}

/// The value [`ticks_per_ms`] measured at boot.
pub fn cached_ticks_per_ms() -> u64 {
    TICKS_PER_MS.load(core::sync::atomic::Ordering::Relaxed)
}

fn from_cpuid() -> Option<u64> {
    let max = core::arch::x86_64::__cpuid(0).eax;
    if max < 0x15 {
        return None;
    }
    let leaf = core::arch::x86_64::__cpuid(0x15);
    let (denominator, numerator, crystal_hz) = (u64::from(leaf.eax), u64::from(leaf.ebx), u64::from(leaf.ecx));
    if denominator == 0 || numerator == 0 || crystal_hz == 0 {
        return None;
    }
    // Both factors are 32-bit, so the product fits; `denominator` is non-zero (above).
    Some(crystal_hz.checked_mul(numerator)?.checked_div(denominator)? / 1000)
}

/// Counts TSC ticks while PIT channel 2 counts down 10 ms.
fn measure_with_pit() -> u64 {
    let count = (PIT_HZ / 100) as u16; // 10 ms
    // SAFETY: the PIT and port B belong to the hypervisor; channel 2 drives only the PC
    // speaker gate, which stays off (bit 1 clear).
    unsafe {
        let b = instr::inb(PORT_B);
        instr::outb(PORT_B, (b & !0x02) | 0x01); // gate on, speaker off
        instr::outb(PIT_COMMAND, 0b1011_0000); // channel 2, lo/hi, mode 0, binary
        instr::outb(PIT_CHANNEL2, count as u8);
        instr::outb(PIT_CHANNEL2, (count >> 8) as u8);
        let start = instr::rdtsc();
        // OUT2 (bit 5 of port B) goes high when the count reaches zero.
        for _ in 0..100_000_000u64 {
            if instr::inb(PORT_B) & 0x20 != 0 {
                break;
            }
        }
        let end = instr::rdtsc();
        instr::outb(PORT_B, b);
        // TSC deltas are modulo 2^64.
        (end.wrapping_sub(start) / 10).max(1)
    }
}
