//! The host vectors that assigned devices' remapped interrupts arrive on, and the
//! lock-free set the interrupt handler records them in.
//!
//! Host vector map (boot CPU): 0x00-0x1F exceptions, 0x20 the preemption timer,
//! [`FIRST`]..=[`LAST`] device interrupts (one per routed MSI/MSI-X vector of a VM's
//! device), 0xFF spurious. The handler only sets a bit here and EOIs the local APIC;
//! the VM layer turns each bit into the owning VM's guest vector.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

/// First host vector given to device interrupts (above the timer's 0x20 and its
/// priority class).
pub const FIRST: u8 = 0x30;
/// Last host vector given to device interrupts (below the spurious vector's class).
pub const LAST: u8 = 0xEF;
/// How many device vectors there are.
pub const COUNT: usize = (LAST - FIRST) as usize + 1;

/// Whether `vector` is a device-interrupt vector.
pub const fn is_device_vector(vector: u64) -> bool {
    vector >= FIRST as u64 && vector <= LAST as u64
}

/// 256 bits, one per host vector, set from interrupt context and taken by the
/// scheduler. Only atomic `fetch_or`/`swap`: no lock an interrupt could wait on.
#[derive(Debug)]
pub struct PendingVectors([AtomicU64; 4]);

impl Default for PendingVectors {
    fn default() -> Self {
        Self::new()
    }
}

impl PendingVectors {
    pub const fn new() -> Self {
        Self([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)])
    }

    /// Records that `vector` fired (interrupt context).
    pub fn record(&self, vector: u8) {
        if let Some(word) = self.0.get(usize::from(vector / 64)) {
            word.fetch_or(1 << (vector % 64), Ordering::AcqRel);
        }
    }

    /// Forgets a pending `vector` (its route is being torn down).
    pub fn clear(&self, vector: u8) {
        if let Some(word) = self.0.get(usize::from(vector / 64)) {
            word.fetch_and(!(1 << (vector % 64)), Ordering::AcqRel);
        }
    }

    /// Whether anything is pending.
    pub fn any(&self) -> bool {
        self.0.iter().any(|w| w.load(Ordering::Acquire) != 0)
    }

    /// Takes every pending vector (lowest first) and clears them.
    pub fn take(&self) -> heapless::Vec<u8, 256> {
        let mut out = heapless::Vec::new();
        for (i, word) in self.0.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                let _ = out.push((i as u32 * 64 + bit) as u8);
            }
        }
        out
    }
}

/// Device vectors that fired and are not yet delivered to their VMs.
pub static PENDING: PendingVectors = PendingVectors::new();

/// Before `vector` is freed: lets interrupts the local APIC already accepted for it
/// run (interrupts on for one instruction: each pending one is taken then), then
/// forgets any that were recorded. Called after the device was stopped and its
/// remapping entry invalidated, so nothing more arrives on `vector` for the old
/// owner.
pub fn settle(vector: u8) {
    let enabled = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::enable();
    core::hint::spin_loop();
    if !enabled {
        x86_64::instructions::interrupts::disable();
    }
    PENDING.clear(vector);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_recorded_once_and_taken_in_order() {
        let p = PendingVectors::new();
        assert!(!p.any());
        for v in [0xef, 0x30, 0x41, 0x30, 0x80] {
            p.record(v);
        }
        assert!(p.any());
        assert_eq!(p.take().as_slice(), &[0x30, 0x41, 0x80, 0xef]);
        assert!(!p.any() && p.take().is_empty());
        p.record(0x41);
        p.record(0x42);
        p.clear(0x41);
        assert_eq!(p.take().as_slice(), &[0x42]);
    }

    #[test]
    fn device_range_avoids_exceptions_timer_and_spurious() {
        assert!(!is_device_vector(0x20) && !is_device_vector(0x1f) && !is_device_vector(0xff));
        assert!(is_device_vector(u64::from(FIRST)) && is_device_vector(u64::from(LAST)));
        assert_eq!(COUNT, 192);
    }
}
