//! The interrupts of a payload VM, which has no interrupt controller: a set of
//! pending vectors (a stand-in for the local APIC's IRR) that the `RAISE_INTERRUPT`
//! hypercall and the VM's assigned devices fill, and the vCPU loop injects highest
//! first. There is no in-service state and no EOI.
#![forbid(unsafe_code)]

use crate::devices::irq::{ApicMessage, ApicSink, DeliveryMode};
use crate::vcpu::dispatch::InterruptSink;

/// Virtual interrupts waiting for the vCPU, and the end of a `SLEEP`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingIrqs {
    vectors: [u64; 4],
    /// Host TSC at which a sleeping vCPU wakes without an interrupt.
    wake_at: Option<u64>,
    /// The sleep ran out: the vCPU is to resume (no vector to inject).
    woken: bool,
}

impl PendingIrqs {
    /// The highest pending vector, cleared. With none, a finished sleep is over.
    pub fn take_highest(&mut self) -> Option<u8> {
        let vector = self.take_vector();
        if vector.is_none() {
            self.woken = false;
        }
        vector
    }

    /// Ends the sleep if its time has come by host TSC `now`.
    pub fn poll_wake(&mut self, now: u64) {
        if self.wake_at.is_some_and(|at| now >= at) {
            self.wake_at = None;
            self.woken = true;
        }
    }

    /// When a sleeping vCPU wakes by itself (host TSC).
    pub fn wake_at(&self) -> Option<u64> {
        self.wake_at
    }

    /// A device line is asserted: the vCPU is to resume (no vector to inject).
    pub fn wake(&mut self) {
        self.wake_at = None;
        self.woken = true;
    }

    fn take_vector(&mut self) -> Option<u8> {
        for (word, bits) in self.vectors.iter_mut().enumerate().rev() {
            if *bits != 0 {
                let bit = 63u32.saturating_sub(bits.leading_zeros());
                *bits &= !(1u64 << bit);
                return u8::try_from(word.saturating_mul(64).saturating_add(bit as usize)).ok();
            }
        }
        None
    }

    /// Whether the vCPU has something to wake for: a vector, or a finished sleep.
    pub fn any(&self) -> bool {
        self.woken || self.vectors.iter().any(|w| *w != 0)
    }
}

impl InterruptSink for PendingIrqs {
    fn raise(&mut self, vector: u8) {
        if let Some(word) = self.vectors.get_mut(usize::from(vector / 64)) {
            *word |= 1u64 << (vector % 64);
        }
    }

    fn sleep_until(&mut self, deadline: Option<u64>) -> Option<bool> {
        self.woken = false;
        if self.vectors.iter().any(|w| *w != 0) {
            self.vectors = [0; 4];
            self.wake_at = None;
            return Some(false);
        }
        self.wake_at = deadline;
        Some(true)
    }
}

/// A payload VM's one vCPU as an interrupt destination: APIC id 0, named by a
/// physical destination 0 or the broadcast, or by any logical destination (with one
/// CPU, a flat logical mask that names a CPU names it). Fixed and lowest-priority
/// interrupts are raised; other delivery modes are not modelled and dropped.
impl ApicSink for PendingIrqs {
    fn deliver(&mut self, msg: &ApicMessage) -> bool {
        let broadcast = if msg.short_dest { 0xff } else { u32::MAX };
        let to_me = if msg.logical { msg.dest != 0 } else { msg.dest == 0 || msg.dest == broadcast };
        let fixed = matches!(msg.delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority);
        if !to_me || !fixed || msg.vector < 16 {
            log::debug!(target: "vm", "payload VM: interrupt message {msg:?} not deliverable; dropped");
            return false;
        }
        self.raise(msg.vector);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(vector: u8, dest: u32, logical: bool, delivery: DeliveryMode) -> ApicMessage {
        ApicMessage { vector, delivery, logical, dest, short_dest: true, level: false }
    }

    #[test]
    fn highest_vector_first() {
        let mut p = PendingIrqs::default();
        p.raise(0x40);
        p.raise(0xc1);
        p.raise(0x51);
        assert_eq!((p.take_highest(), p.take_highest(), p.take_highest()), (Some(0xc1), Some(0x51), Some(0x40)));
        assert!(!p.any());
        assert_eq!(p.take_highest(), None);
    }

    #[test]
    fn device_messages_respect_destination_and_delivery_mode() {
        let mut p = PendingIrqs::default();
        assert!(p.deliver(&msg(0x51, 0, false, DeliveryMode::Fixed)));
        assert!(p.deliver(&msg(0x52, 0xff, false, DeliveryMode::LowestPriority)));
        assert!(p.deliver(&msg(0x53, 0x01, true, DeliveryMode::Fixed)));
        assert!(!p.deliver(&msg(0x54, 3, false, DeliveryMode::Fixed)), "another APIC id");
        assert!(!p.deliver(&msg(0x55, 0, true, DeliveryMode::Fixed)), "empty logical mask");
        assert!(!p.deliver(&msg(0x56, 0, false, DeliveryMode::Nmi)), "not modelled");
        assert!(!p.deliver(&msg(0x02, 0, false, DeliveryMode::Fixed)), "reserved vector");
        assert_eq!((p.take_highest(), p.take_highest(), p.take_highest()), (Some(0x53), Some(0x52), Some(0x51)));
        assert!(!p.any());
    }

    #[test]
    fn a_sleep_ends_at_its_deadline_or_at_an_interrupt() {
        let mut p = PendingIrqs::default();
        assert_eq!(p.sleep_until(Some(1000)), Some(true));
        p.poll_wake(999);
        assert!(!p.any(), "woke early");
        p.poll_wake(1000);
        assert!(p.any(), "did not wake at the deadline");
        assert_eq!(p.take_highest(), None, "a timed wake injects nothing");
        assert!(!p.any(), "the wake is consumed once");
        assert_eq!(p.sleep_until(None), Some(true));
        p.poll_wake(u64::MAX);
        assert!(!p.any(), "a sleep without a deadline waits for an interrupt");
        p.raise(0x40);
        assert!(p.any(), "an interrupt wakes the sleeper");
        // A polling kernel (interrupts off) sleeps again: the interrupt that woke it is
        // taken and the call returns at once; the next one halts.
        assert_eq!(p.sleep_until(Some(5)), Some(false));
        assert!(!p.any());
        assert_eq!(p.sleep_until(Some(5)), Some(true));
        // An asserted device line wakes it without a vector.
        p.wake();
        assert!(p.any());
        assert_eq!(p.take_highest(), None);
        assert!(!p.any());
    }
}
