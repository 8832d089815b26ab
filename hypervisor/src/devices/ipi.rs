//! Messages among the local APICs of one VM's vCPUs: IPIs one vCPU sends through its
//! ICR, and device messages (I/O APIC, MSI) that may reach any of them. Only the
//! APICs of the same VM are ever in the set, so a vCPU can reach no other VM.
//!
//! Fixed and NMI messages go to every APIC whose destination matches (physical or
//! logical, SDM Vol. 3 11.6.2), lowest priority to the first that takes it (the
//! lowest vCPU index: every vCPU has the same priority class here), INIT and STARTUP
//! to every matching APIC except the sender. [`route_outgoing`] says which vCPUs an
//! IPI reached, so the VM can give them the CPU (the sender often waits for them);
//! a device message just sets the receiver's IRR, and the scheduler wakes it.
#![forbid(unsafe_code)]

use crate::devices::irq::{ApicMessage, ApicSink, DeliveryMode};
use crate::devices::vlapic::Vlapic;

/// Sets bit `index` of `mask` (indices past 31 are not tracked; a VM has at most
/// `bulkhead_policy::syntax::MAX_VCPUS` vCPUs).
fn mark(mask: &mut u32, index: usize) {
    if let Some(bit) = u32::try_from(index).ok().and_then(|i| 1u32.checked_shl(i)) {
        *mask |= bit;
    }
}

/// Every local APIC of a VM, as the I/O APIC and MSIs see them.
pub struct ApicSet<'a> {
    pub lapics: &'a mut [Vlapic],
}

impl core::fmt::Debug for ApicSet<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ApicSet").field("lapics", &self.lapics.len()).finish_non_exhaustive()
    }
}

impl ApicSink for ApicSet<'_> {
    fn deliver(&mut self, msg: &ApicMessage) -> bool {
        let mut taken = false;
        for lapic in self.lapics.iter_mut() {
            if lapic.deliver(msg) {
                taken = true;
                if msg.delivery == DeliveryMode::LowestPriority {
                    break;
                }
            }
        }
        taken
    }
}

/// Offers the IPI the APIC of vCPU `from` has waiting (if any) to the VM's other
/// vCPUs; returns the vCPUs it reached. One that reached nobody is counted as
/// dropped by the sender.
pub fn route_outgoing(lapics: &mut [Vlapic], from: usize) -> u32 {
    let mut reached = 0;
    let Some(ipi) = lapics.get_mut(from).and_then(Vlapic::take_outgoing) else { return reached };
    let lowest = ipi.msg.delivery == DeliveryMode::LowestPriority;
    if lowest && ipi.self_took {
        return reached;
    }
    // The sender's APIC saw the ICR write's exit last: the IPI's send time.
    let sent_at = lapics.get(from).map_or(0, Vlapic::now);
    let timed = matches!(ipi.msg.delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority);
    for (i, lapic) in lapics.iter_mut().enumerate() {
        if i == from {
            continue;
        }
        if !ipi.all_others && !lapic.matches_destination(ipi.msg.dest, ipi.msg.logical, ipi.msg.short_dest) {
            continue;
        }
        if lapic.receive_ipi(&ipi.msg) {
            if timed {
                lapic.note_ipi_arrived(ipi.msg.vector, sent_at);
            }
            mark(&mut reached, i);
            if lowest {
                break;
            }
        }
    }
    if reached == 0
        && !ipi.self_took
        && let Some(sender) = lapics.get_mut(from)
    {
        sender.note_dropped_ipi(&ipi);
    }
    reached
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::clock::GuestClock;
    use crate::devices::vlapic::StartupSignals;
    use alloc::vec::Vec;

    fn apics(n: u32, x2apic: bool) -> Vec<Vlapic> {
        (0..n)
            .map(|id| {
                let mut l = Vlapic::new(id, id == 0, GuestClock::new(1_000_000_000).unwrap());
                if x2apic {
                    l.write_msr(0x1B, 0xFEE0_0D00, 0).unwrap();
                    l.write_msr(0x80F, 0x1FF, 0).unwrap();
                } else {
                    l.mmio_write(0xF0, crate::hw::AccessSize::Dword, 0x1FF, 0);
                }
                l
            })
            .collect()
    }

    fn icr(l: &mut Vlapic, dest: u32, lo: u32) {
        l.write_msr(0x830, (u64::from(dest) << 32) | u64::from(lo), 0).unwrap();
    }

    #[test]
    fn physical_logical_and_shorthand_destinations() {
        let mut set = apics(4, true);
        // Physical: vCPU 2 only.
        icr(&mut set[0], 2, 0x40);
        assert_eq!(route_outgoing(&mut set, 0), 1 << 2);
        assert_eq!(set[2].pending_vector(), Some(0x40));
        assert_eq!(set[1].pending_vector(), None);
        // Logical cluster 0, members 1 and 3.
        icr(&mut set[0], 0b1010, 0x800 | 0x41);
        assert_eq!(route_outgoing(&mut set, 0), 0b1010);
        // All excluding self, NMI.
        icr(&mut set[3], 0, (3 << 18) | 0x400);
        assert_eq!(route_outgoing(&mut set, 3), 0b0111);
        assert!(set[0].take_nmi() && set[1].take_nmi() && set[2].take_nmi() && !set[3].take_nmi());
        // All including self: the sender took its own share already.
        icr(&mut set[1], 0, (2 << 18) | 0x42);
        assert_eq!(route_outgoing(&mut set, 1), 0b1101);
        assert_eq!(set[1].pending_vector(), Some(0x42));
        // Nobody there: dropped, counted by the sender.
        icr(&mut set[0], 9, 0x43);
        assert_eq!(route_outgoing(&mut set, 0), 0);
        assert_eq!(set[0].dropped_ipis(), 1);
        // A sender index past the set routes nothing.
        assert_eq!(route_outgoing(&mut set, 7), 0);
    }

    #[test]
    fn init_and_startup_reach_only_their_target() {
        let mut set = apics(2, false);
        set[0].mmio_write(0x310, crate::hw::AccessSize::Dword, 1 << 24, 0);
        set[0].mmio_write(0x300, crate::hw::AccessSize::Dword, 0x4500, 0);
        assert_eq!(route_outgoing(&mut set, 0), 0b10);
        set[0].mmio_write(0x300, crate::hw::AccessSize::Dword, 0x4608, 0);
        assert_eq!(route_outgoing(&mut set, 0), 0b10);
        assert_eq!(set[1].take_startup(), StartupSignals { init: true, sipi: Some(0x08) });
        assert_eq!(set[0].take_startup(), StartupSignals::default());
        // INIT to all including self: the sender is not reset.
        set[0].mmio_write(0x300, crate::hw::AccessSize::Dword, (2 << 18) | 0x4500, 0);
        assert_eq!(route_outgoing(&mut set, 0), 0b10);
        assert!(set[0].is_enabled());
    }

    #[test]
    fn device_messages_reach_matching_apics_and_lowest_priority_one() {
        let mut set = apics(3, true);
        let msg = ApicMessage {
            vector: 0x50,
            delivery: DeliveryMode::Fixed,
            logical: false,
            dest: 0xFF,
            short_dest: true,
            level: false,
        };
        assert!(ApicSet { lapics: &mut set }.deliver(&msg));
        assert!(set.iter().all(|l| l.pending_vector() == Some(0x50)));
        let lowest = ApicMessage { vector: 0x51, delivery: DeliveryMode::LowestPriority, ..msg };
        assert!(ApicSet { lapics: &mut set }.deliver(&lowest));
        let took: Vec<bool> = set.iter_mut().map(|l| l.acknowledge(0x51)).collect();
        assert_eq!(took, [true, false, false]);
        let nobody = ApicMessage { dest: 5, ..msg };
        assert!(!ApicSet { lapics: &mut set }.deliver(&nobody));
    }
}
