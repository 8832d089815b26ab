//! The interrupts of a payload VM, which has no interrupt controller: a set of
//! pending vectors (a stand-in for the local APIC's IRR) that the `RAISE_INTERRUPT`
//! hypercall and the VM's assigned devices fill, and the vCPU loop injects highest
//! first. There is no in-service state and no EOI.
#![forbid(unsafe_code)]

use crate::devices::irq::{ApicMessage, ApicSink, DeliveryMode};
use crate::vcpu::dispatch::InterruptSink;

/// Virtual interrupts waiting for the vCPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingIrqs([u64; 4]);

impl PendingIrqs {
    /// The highest pending vector, cleared.
    pub fn take_highest(&mut self) -> Option<u8> {
        for (word, bits) in self.0.iter_mut().enumerate().rev() {
            if *bits != 0 {
                let bit = 63u32.saturating_sub(bits.leading_zeros());
                *bits &= !(1u64 << bit);
                return u8::try_from(word.saturating_mul(64).saturating_add(bit as usize)).ok();
            }
        }
        None
    }

    pub fn any(&self) -> bool {
        self.0.iter().any(|w| *w != 0)
    }
}

impl InterruptSink for PendingIrqs {
    fn raise(&mut self, vector: u8) {
        if let Some(word) = self.0.get_mut(usize::from(vector / 64)) {
            *word |= 1u64 << (vector % 64);
        }
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
}
