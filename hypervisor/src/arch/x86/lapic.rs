//! The boot CPU's local APIC (Intel SDM Vol. 3 ch. 11, AMD APM Vol. 2 ch. 16): used in
//! x2APIC mode when the CPU has it, otherwise through the xAPIC MMIO page. The
//! hypervisor uses it for the preemption timer that time-slices VMs and for EOIs.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::registers::model_specific::Msr;

use super::instr;
use crate::hw::mmio::MmioRegion;

const IA32_APIC_BASE: u32 = 0x1B;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const XAPIC_DEFAULT_BASE: u64 = 0xFEE0_0000;

/// Register offsets in the xAPIC page; the x2APIC MSR is 0x800 + offset / 16.
mod reg {
    pub const ID: u32 = 0x20;
    pub const EOI: u32 = 0xB0;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const SPURIOUS: u32 = 0xF0;
    pub const LVT_TIMER: u32 = 0x320;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3E0;
}

/// Vector of the hypervisor's preemption timer.
pub const TIMER_VECTOR: u8 = 0x20;
/// The keyboard's interrupt (IRQ1 through the I/O APIC).
pub const KEYBOARD_VECTOR: u8 = 0x21;
/// The work-item IPI: wakes a CPU to look at its mailbox (`smp::mailbox`).
pub const WORK_VECTOR: u8 = 0xF0;
/// Spurious-interrupt vector (SDM 11.9: low nibble all ones on older CPUs).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

static X2APIC: AtomicBool = AtomicBool::new(false);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(XAPIC_DEFAULT_BASE);
/// LAPIC timer ticks per millisecond (divide-by-16), measured at init.
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

/// The xAPIC register page.
fn xapic_page() -> MmioRegion {
    // SAFETY: the xAPIC page (IA32_APIC_BASE, 4 KiB) is identity mapped uncacheable
    // and belongs to the hypervisor; only this module touches it.
    unsafe { MmioRegion::new(XAPIC_BASE.load(Ordering::Relaxed), 0x1000) }
}

/// The x2APIC MSR of xAPIC register `offset` (SDM Vol. 3 11.12.1.2). Offsets are this
/// module's register constants, inside the 4 KiB page, so the sum stays in 0x800..=0x8ff.
fn x2apic_msr(offset: u32) -> Msr {
    Msr::new(0x800_u32.wrapping_add(offset / 16))
}

fn read(offset: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled, so the 0x800.. MSRs exist; reads have no side
        // effects for the registers used here.
        unsafe { x2apic_msr(offset).read() as u32 }
    } else {
        xapic_page().read(u64::from(offset))
    }
}

fn write(offset: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: as in `read`; the hypervisor owns the local APIC.
        unsafe { x2apic_msr(offset).write(u64::from(value)) }
    } else {
        xapic_page().write(u64::from(offset), value)
    }
}

/// Enables the local APIC (x2APIC where available) and measures its timer against the
/// TSC. Returns whether x2APIC mode is in use.
pub fn init(tsc_per_ms: u64) -> bool {
    let x2 = core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0;
    let base = enable_local(x2);
    XAPIC_BASE.store(base & 0x000F_FFFF_FFFF_F000, Ordering::Relaxed);
    X2APIC.store(x2, Ordering::Relaxed);
    let ticks = enable_and_measure(tsc_per_ms);
    TICKS_PER_MS.store(ticks, Ordering::Relaxed);
    x2
}

/// Enables an application processor's local APIC in the boot CPU's mode (after
/// [`init`] ran there) and measures its timer. Returns its ticks per millisecond; the
/// boot CPU's figure stays the one [`arm_oneshot_us`] uses.
pub fn init_ap(tsc_per_ms: u64) -> u64 {
    enable_local(is_x2apic());
    enable_and_measure(tsc_per_ms)
}

/// Sets the enable bits (and x2APIC mode when `x2`) in IA32_APIC_BASE; returns the
/// value it had.
fn enable_local(x2: bool) -> u64 {
    let mut base_msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; we only set the enable bits.
    unsafe {
        let base = base_msr.read();
        let mut new = base | APIC_BASE_ENABLE;
        if x2 && base & APIC_BASE_ENABLE == 0 {
            // Disabled to x2APIC must pass through xAPIC mode (SDM Vol. 3 11.12.5).
            base_msr.write(new);
        }
        if x2 {
            new |= APIC_BASE_X2APIC;
        }
        base_msr.write(new);
        base
    }
}

/// Software-enables the APIC and counts its timer ticks in ~10 ms of TSC time.
fn enable_and_measure(tsc_per_ms: u64) -> u64 {
    write(reg::SPURIOUS, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(reg::TIMER_DIVIDE, 0b0011); // divide by 16
    // Measure: let the timer count down for ~10 ms of TSC time.
    write(reg::LVT_TIMER, 1 << 16 | u32::from(TIMER_VECTOR)); // masked
    write(reg::TIMER_INITIAL, u32::MAX);
    let start = instr::rdtsc();
    while instr::rdtsc().wrapping_sub(start) < tsc_per_ms.saturating_mul(10) {
        core::hint::spin_loop();
    }
    // The timer counts down from u32::MAX: this cannot wrap.
    let elapsed = u64::from(u32::MAX.wrapping_sub(read(reg::TIMER_CURRENT)));
    write(reg::TIMER_INITIAL, 0);
    (elapsed / 10).max(1)
}

/// Whether the local APIC runs in x2APIC mode (after [`init`]).
pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

pub fn id() -> u32 {
    let raw = read(reg::ID);
    if X2APIC.load(Ordering::Relaxed) { raw } else { raw >> 24 }
}

pub fn ticks_per_ms() -> u64 {
    TICKS_PER_MS.load(Ordering::Relaxed)
}

/// Arms a one-shot timer interrupt after `micros` microseconds.
pub fn arm_oneshot_us(micros: u64) {
    let ticks = (ticks_per_ms().saturating_mul(micros) / 1000).clamp(1, u64::from(u32::MAX));
    write(reg::LVT_TIMER, u32::from(TIMER_VECTOR));
    write(reg::TIMER_INITIAL, ticks as u32);
}

/// Arms a one-shot timer interrupt on `vector` after `micros` microseconds, with the
/// boot CPU's calibration (every LAPIC timer counts the same bus clock).
pub fn arm_oneshot_on(vector: u8, micros: u64) {
    let ticks = (ticks_per_ms().saturating_mul(micros) / 1000).clamp(1, u64::from(u32::MAX));
    write(reg::LVT_TIMER, u32::from(vector));
    write(reg::TIMER_INITIAL, ticks as u32);
}

/// The timer's current count (0 once a one-shot has expired).
pub fn timer_current() -> u32 {
    read(reg::TIMER_CURRENT)
}

pub fn disarm() {
    write(reg::TIMER_INITIAL, 0);
}

pub fn eoi() {
    write(reg::EOI, 0);
}

/// Interrupt Command Register values (Intel SDM Vol. 3 11.6.1, Figure 11-12; AMD APM
/// Vol. 2 16.5): delivery mode in bits 10:8, level (assert) bit 14.
pub mod icr {
    /// INIT, level assert.
    pub const INIT: u32 = 0b101 << 8 | 1 << 14;
    /// Start-up; the vector is the page number of the real-mode entry point.
    pub const STARTUP: u32 = 0b110 << 8 | 1 << 14;
    /// Fixed delivery of the vector in bits 7:0.
    pub const FIXED: u32 = 1 << 14;
    /// xAPIC: set while the previous IPI is still being sent.
    pub const DELIVERY_PENDING: u32 = 1 << 12;
}

/// Why an IPI was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpiError {
    /// An xAPIC can only address ids up to 0xFF.
    IdOutOfReach(u32),
    /// The xAPIC kept the previous IPI pending for a whole millisecond.
    Stuck,
}

/// Sends an IPI with ICR low word `low` to APIC id `dest`: one 64-bit ICR write in
/// x2APIC mode, the high word then the low word in xAPIC mode, waiting (bounded) for
/// the previous one to leave first.
pub fn send_ipi(dest: u32, low: u32) -> Result<(), IpiError> {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on, so the ICR MSR (0x830, SDM 11.12.9) exists; the
        // caller chose the IPI, which only concerns the target CPU.
        unsafe { x2apic_msr(reg::ICR_LOW).write(u64::from(dest) << 32 | u64::from(low)) };
        return Ok(());
    }
    let dest = u8::try_from(dest).map_err(|_| IpiError::IdOutOfReach(dest))?;
    wait_icr_idle()?;
    write(reg::ICR_HIGH, u32::from(dest) << 24);
    write(reg::ICR_LOW, low);
    wait_icr_idle()
}

/// xAPIC: waits up to a millisecond for the delivery-status bit to clear.
fn wait_icr_idle() -> Result<(), IpiError> {
    let start = instr::rdtsc();
    let limit = super::tsc::cached_ticks_per_ms().max(1_000_000);
    while read(reg::ICR_LOW) & icr::DELIVERY_PENDING != 0 {
        if instr::rdtsc().wrapping_sub(start) > limit {
            return Err(IpiError::Stuck);
        }
        core::hint::spin_loop();
    }
    Ok(())
}
