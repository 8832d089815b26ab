//! Which host vector belongs to which (VM, device, MSI/MSI-X index), and where the
//! guest wants it delivered. One table for the machine: VMs run on the boot CPU, and
//! every routed device vector arrives there on its own host vector.
//!
//! The table is plain data, changed only from the scheduler's context (the VM's
//! `InterruptRouter` during an exit, teardown, delivery); the interrupt handler never
//! reads it: it only records the host vector (`arch::x86::device_vectors`).
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use alloc::vec::Vec;

use crate::arch::x86::device_vectors::{COUNT, FIRST, LAST};
use crate::devices::vpci::msi::MsiRoute;
use crate::hw::Bdf;
use crate::hw::MsiMessage;

/// Host vectors one VM may hold at a time, so a VM with a large MSI-X device cannot
/// take every vector and leave other VMs' devices without interrupts. A NIC needs
/// about 5, an NVMe or Wi-Fi card one per CPU plus one.
pub const VECTORS_PER_VM: usize = 64;

/// The device vector a host vector stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorOwner {
    pub vm: u32,
    pub bdf: Bdf,
    /// MSI (0) or MSI-X table index, or [`INTX_INDEX`] for the INTx line.
    pub index: u16,
}

/// [`VectorOwner::index`] of a device's INTx line (no MSI-X table has 65,536 entries).
pub const INTX_INDEX: u16 = u16::MAX;

/// What a host vector becomes in its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestTarget {
    /// A message-signalled interrupt: the guest's vector and destination.
    Msi(MsiRoute),
    /// A level-triggered INTx line: host I/O APIC input `host_gsi` drives input
    /// `guest_gsi` of the VM's I/O APIC.
    Intx { host_gsi: u32, guest_gsi: u8 },
}

/// One allocated host vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostVector {
    pub owner: VectorOwner,
    /// Where the interrupt goes in the guest.
    pub target: GuestTarget,
    /// The remapped message the device was given for it (MSI; unused for INTx).
    pub message: MsiMessage,
}

/// Host vectors [`FIRST`]..=[`LAST`] and their owners.
#[derive(Debug, Clone)]
pub struct HostVectorTable {
    slots: [Option<HostVector>; COUNT],
    /// Where the next search starts: vectors are handed out round robin, so a vector
    /// just freed is the last to be reused.
    next: usize,
}

impl Default for HostVectorTable {
    fn default() -> Self {
        Self::new()
    }
}

fn vector_of(slot: usize) -> u8 {
    u8::try_from(slot).map_or(LAST, |s| FIRST.saturating_add(s))
}

fn slot_of(vector: u8) -> Option<usize> {
    (FIRST..=LAST).contains(&vector).then(|| usize::from(vector.saturating_sub(FIRST)))
}

impl HostVectorTable {
    pub const fn new() -> Self {
        Self { slots: [None; COUNT], next: 0 }
    }

    /// The host vector `owner` already has.
    pub fn find(&self, owner: VectorOwner) -> Option<u8> {
        self.slots.iter().position(|s| s.is_some_and(|s| s.owner == owner)).map(vector_of)
    }

    /// A free host vector for `owner` (not yet usable: [`Self::set`] it once the
    /// IOMMU entry exists). `None` when all are taken.
    pub fn allocate(&mut self) -> Option<u8> {
        let free = |i: &usize| self.slots.get(*i) == Some(&None);
        let slot = (self.next..COUNT).find(free).or_else(|| (0..self.next).find(free))?;
        self.next = slot.saturating_add(1);
        Some(vector_of(slot))
    }

    /// Gives `vector` to `entry`'s owner (or updates its route).
    pub fn set(&mut self, vector: u8, entry: HostVector) {
        if let Some(s) = slot_of(vector).and_then(|i| self.slots.get_mut(i)) {
            *s = Some(entry);
        }
    }

    /// What `vector` is routed to.
    pub fn get(&self, vector: u8) -> Option<HostVector> {
        slot_of(vector).and_then(|i| self.slots.get(i)).copied().flatten()
    }

    /// Frees `vector`; returns what it was.
    pub fn free(&mut self, vector: u8) -> Option<HostVector> {
        slot_of(vector).and_then(|i| self.slots.get_mut(i)).and_then(Option::take)
    }

    /// Every vector in use and its owner.
    pub fn all(&self) -> impl Iterator<Item = (u8, HostVector)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.map(|s| (vector_of(i), s)))
    }

    /// Every vector `vm` owns.
    pub fn owned_by(&self, vm: u32) -> Vec<(u8, HostVector)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.filter(|s| s.owner.vm == vm).map(|s| (vector_of(i), s)))
            .collect()
    }

    /// How many vectors `vm` holds.
    pub fn count_owned_by(&self, vm: u32) -> usize {
        self.slots.iter().filter(|s| s.is_some_and(|s| s.owner.vm == vm)).count()
    }

    /// How many vectors are in use.
    pub fn used(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn owner(vm: u32, index: u16) -> VectorOwner {
        VectorOwner { vm, bdf: Bdf::new(0, 1, 0, 0), index }
    }

    fn entry(o: VectorOwner, vector: u8) -> HostVector {
        HostVector {
            owner: o,
            target: GuestTarget::Msi(MsiRoute { vector, dest: 0, logical: false, delivery: 0 }),
            message: MsiMessage { address: 0xfee0_0010, data: 0 },
        }
    }

    #[test]
    fn vectors_are_handed_out_round_robin_and_found_by_owner() {
        let mut t = HostVectorTable::new();
        let a = t.allocate().unwrap();
        t.set(a, entry(owner(0, 0), 0x51));
        let b = t.allocate().unwrap();
        t.set(b, entry(owner(1, 0), 0x51));
        assert_eq!((a, b), (FIRST, FIRST + 1));
        assert_eq!(t.find(owner(1, 0)), Some(b));
        assert_eq!(t.find(owner(1, 1)), None);
        assert_eq!(t.get(a).unwrap().owner.vm, 0);
        assert_eq!(t.free(a).unwrap().owner, owner(0, 0));
        assert_eq!(t.get(a), None);
        // The freed vector is not the next one handed out.
        assert_eq!(t.allocate(), Some(FIRST + 2));
        assert_eq!(t.owned_by(1).iter().map(|(v, _)| *v).collect::<Vec<_>>(), [b]);
        assert_eq!(t.used(), 1);
    }

    #[test]
    fn exhaustion_and_foreign_vectors() {
        let mut t = HostVectorTable::new();
        for i in 0..COUNT {
            let v = t.allocate().unwrap();
            t.set(v, entry(owner(0, i as u16), 0x40));
        }
        assert_eq!(t.allocate(), None, "every device vector taken");
        assert_eq!(t.used(), COUNT);
        // The timer, exceptions and the spurious vector are never in the table.
        for v in [0u8, 0x20, 0x2f, 0xf0, 0xff] {
            assert_eq!(t.get(v), None);
            assert_eq!(t.free(v), None);
            t.set(v, entry(owner(9, 0), 0x40));
            assert!(t.owned_by(9).is_empty());
        }
        t.free(LAST);
        assert_eq!(t.allocate(), Some(LAST));
    }
}
