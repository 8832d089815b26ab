//! The host vectors that assigned devices' remapped interrupts arrive on, and the
//! lock-free set the interrupt handler records them in.
//!
//! Host vector map (boot CPU): 0x00-0x1F exceptions, 0x20 the preemption timer,
//! [`FIRST`]..=[`LAST`] device interrupts (one per routed MSI/MSI-X vector of a VM's
//! device), 0xFF spurious. The handler only sets a bit here and EOIs the local APIC;
//! the VM layer turns each bit into the owning VM's guest vector.
//!
//! Level-triggered vectors (a device's INTx line through the I/O APIC) are the
//! exception: their EOI would let the still-asserted line fire again at once, so the
//! handler leaves it to the VM layer, which masks the pin first ([`acknowledge_level`]).
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

    /// Whether `vector` is in the set.
    pub fn contains(&self, vector: u8) -> bool {
        self.0.get(usize::from(vector / 64)).is_some_and(|w| w.load(Ordering::Acquire) & (1 << (vector % 64)) != 0)
    }

    /// Removes `vector`; returns whether it was in the set.
    pub fn take_one(&self, vector: u8) -> bool {
        let bit = 1 << (vector % 64);
        self.0.get(usize::from(vector / 64)).is_some_and(|w| w.fetch_and(!bit, Ordering::AcqRel) & bit != 0)
    }

    /// Whether anything is pending.
    pub fn any(&self) -> bool {
        self.0.iter().any(|w| w.load(Ordering::Acquire) != 0)
    }

    /// Takes every pending vector (lowest first) and clears them.
    pub fn take(&self) -> heapless::Vec<u8, 256> {
        let mut out = heapless::Vec::new();
        // Word i holds vectors 64 * i ..= 64 * i + 63.
        for (base, word) in (0..=u8::MAX).step_by(64).zip(self.0.iter()) {
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits ^= 1 << bit;
                // `bit` is below 64 and `base` a multiple of 64, so OR is the sum.
                let _ = out.push(base | bit as u8);
            }
        }
        out
    }
}

/// Device vectors that fired and are not yet delivered to their VMs.
pub static PENDING: PendingVectors = PendingVectors::new();

/// Vectors routed from level-triggered I/O APIC pins: the handler does not EOI them.
pub static LEVEL: PendingVectors = PendingVectors::new();

/// Level-triggered vectors taken but not yet EOI'd (still in the local APIC's ISR).
pub static AWAITING_EOI: PendingVectors = PendingVectors::new();

/// What the interrupt handler does with device vector `vector`: records it, and tells
/// whether to EOI now (edge: yes; level: later, by [`acknowledge_level`]).
pub fn on_interrupt(vector: u8) -> bool {
    PENDING.record(vector);
    if LEVEL.contains(vector) {
        AWAITING_EOI.record(vector);
        false
    } else {
        true
    }
}

/// Ends a level-triggered `vector` whose I/O APIC pin the caller has just masked:
/// the EOI clears the pin's remote IRR, and the masked pin cannot fire again until
/// it is unmasked. Each taken interrupt is EOI'd once, whoever calls first. Outside
/// interrupt handlers only, so the vector is the highest one in service.
pub fn acknowledge_level(vector: u8) {
    if !AWAITING_EOI.contains(vector) {
        return;
    }
    // With interrupts off, no other vector can come into service between the two.
    x86_64::instructions::interrupts::without_interrupts(|| {
        if AWAITING_EOI.take_one(vector) {
            super::lapic::eoi();
        }
    });
}

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
    fn every_vector_is_taken_back_exactly() {
        let p = PendingVectors::new();
        for v in 0..=u8::MAX {
            p.record(v);
        }
        let all: heapless::Vec<u8, 256> = (0..=u8::MAX).collect();
        assert_eq!(p.take(), all);
        assert!(!p.any());
    }

    #[test]
    fn membership_and_single_removal() {
        let p = PendingVectors::new();
        p.record(0x77);
        assert!(p.contains(0x77) && !p.contains(0x76));
        assert!(p.take_one(0x77));
        assert!(!p.take_one(0x77), "taken once");
        assert!(!p.contains(0x77) && !p.any());
    }

    #[test]
    fn device_range_avoids_exceptions_timer_and_spurious() {
        assert!(!is_device_vector(0x20) && !is_device_vector(0x1f) && !is_device_vector(0xff));
        assert!(is_device_vector(u64::from(FIRST)) && is_device_vector(u64::from(LAST)));
        assert_eq!(COUNT, 192);
    }
}
