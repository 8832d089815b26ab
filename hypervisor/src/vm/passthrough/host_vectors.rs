//! Which host vector belongs to which (VM, device, MSI/MSI-X index), and where the
//! guest wants it delivered. One table for the machine: VMs run on the boot CPU, and
//! every routed device vector arrives there on its own host vector.
//!
//! The table is plain data, changed only from the scheduler's context (the VM's
//! `InterruptRouter` during an exit, teardown, delivery); the interrupt handler never
//! reads it: it only records the host vector (`arch::x86::device_vectors`).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use log::debug;

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
    /// (VM, vectors) set aside for each device-owning VM when it is created: what its
    /// devices can use, and no other VM can take them, also while it restarts.
    reserved: Vec<(u32, usize)>,
}

/// A VM whose devices need more host vectors than are left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorShortage {
    pub vm: u32,
    pub wanted: usize,
    pub available: usize,
}

impl core::fmt::Display for VectorShortage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "its devices need {} host interrupt vectors but only {} of {COUNT} are left (other VMs' devices hold the rest)",
            self.wanted, self.available
        )
    }
}

/// Host vectors a VM's devices can use: per function its largest MSI-X table or MSI
/// vector count plus its INTx line, capped at [`VECTORS_PER_VM`].
pub fn vectors_wanted(devices: &[&crate::host::pci::PciDevice]) -> usize {
    use crate::host::pci::CapabilityDetail;
    let per_device = |d: &crate::host::pci::PciDevice| {
        let messages = d
            .capabilities
            .iter()
            .map(|c| match c.detail {
                CapabilityDetail::MsiX { table_size, .. } => usize::from(table_size),
                CapabilityDetail::Msi { max_vectors, .. } => usize::from(max_vectors),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        messages.saturating_add(1)
    };
    devices.iter().fold(0usize, |sum, d| sum.saturating_add(per_device(d))).min(VECTORS_PER_VM)
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
        Self { slots: [None; COUNT], next: 0, reserved: Vec::new() }
    }

    /// Sets aside `wanted` vectors for `vm` (replacing what it had set aside), or says
    /// why not: the others' reservations and the vectors VMs without one hold leave
    /// too few.
    pub fn reserve(&mut self, vm: u32, wanted: usize) -> Result<(), VectorShortage> {
        let others: usize = self.reserved.iter().filter(|r| r.0 != vm).fold(0usize, |sum, r| sum.saturating_add(r.1));
        let unreserved_use =
            self.slots.iter().flatten().filter(|s| s.owner.vm != vm && self.reservation(s.owner.vm).is_none()).count();
        let available = COUNT.saturating_sub(others).saturating_sub(unreserved_use);
        if wanted > available {
            return Err(VectorShortage { vm, wanted, available });
        }
        self.reserved.retain(|r| r.0 != vm);
        self.reserved.push((vm, wanted));
        Ok(())
    }

    /// Gives `vm`'s reservation back (the VM is gone for good).
    pub fn unreserve(&mut self, vm: u32) {
        self.reserved.retain(|r| r.0 != vm);
    }

    /// The vectors set aside for `vm`.
    pub fn reservation(&self, vm: u32) -> Option<usize> {
        self.reserved.iter().find(|r| r.0 == vm).map(|r| r.1)
    }

    /// A free host vector for a device of `vm`, within its reservation (or, without
    /// one, [`VECTORS_PER_VM`] and only vectors no reservation needs). `None` when the
    /// VM has its share or none is free for it.
    pub fn allocate_for(&mut self, vm: u32) -> Option<u8> {
        let owned = self.count_owned_by(vm);
        if owned >= self.reservation(vm).unwrap_or(VECTORS_PER_VM) {
            return None;
        }
        let free = COUNT.saturating_sub(self.used());
        let held_for_others = self
            .reserved
            .iter()
            .filter(|r| r.0 != vm)
            .fold(0usize, |sum, r| sum.saturating_add(r.1.saturating_sub(self.count_owned_by(r.0))));
        if free <= held_for_others {
            return None;
        }
        self.allocate()
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

/// A device interrupt to deliver: the VM and where its guest wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub host_vector: u8,
    pub vm: u32,
    pub target: GuestTarget,
}

/// The routes behind host vectors that fired. Vectors with no route (freed since)
/// are dropped.
pub fn resolve(table: &HostVectorTable, fired: &[u8]) -> Vec<Fired> {
    fired
        .iter()
        .filter_map(|&v| match table.get(v) {
            Some(e) => Some(Fired { host_vector: v, vm: e.owner.vm, target: e.target }),
            None => {
                debug!(target: "msi", "host vector {v:#x} fired with no route; dropped");
                None
            }
        })
        .collect()
}

#[cfg(test)]
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

    #[test]
    fn reservations_refuse_a_fourth_vm_and_keep_a_restarting_vms_vectors() {
        let mut t = HostVectorTable::new();
        for vm in 0..3 {
            t.reserve(vm, VECTORS_PER_VM).unwrap();
        }
        // A fourth device-owning VM is refused up front, with the numbers.
        assert_eq!(t.reserve(3, 1), Err(VectorShortage { vm: 3, wanted: 1, available: 0 }));
        assert!(alloc::format!("{}", t.reserve(3, 5).unwrap_err()).contains("need 5 host interrupt vectors"));
        // Each VM gets its share and no more.
        for vm in 0..3 {
            for i in 0..VECTORS_PER_VM {
                let v = t.allocate_for(vm).unwrap();
                t.set(v, entry(owner(vm, i as u16), 0x40));
            }
            assert_eq!(t.allocate_for(vm), None);
        }
        // VM 0 restarts: its vectors are freed, and while it is down nobody takes them.
        for (v, _) in t.owned_by(0) {
            t.free(v);
        }
        assert_eq!(t.allocate_for(7), None, "a VM without a reservation cannot take them");
        assert_eq!(t.allocate_for(1), None, "nor can a VM that has its share");
        for i in 0..VECTORS_PER_VM {
            let v = t.allocate_for(0).unwrap_or_else(|| panic!("restarted VM lost vector {i}"));
            t.set(v, entry(owner(0, i as u16), 0x40));
        }
        // A VM gone for good gives its reservation back.
        for (v, _) in t.owned_by(2) {
            t.free(v);
        }
        t.unreserve(2);
        t.reserve(3, 10).unwrap();
    }

    #[test]
    fn without_reservations_a_vm_cannot_starve_a_reserved_one() {
        let mut t = HostVectorTable::new();
        t.reserve(0, 10).unwrap();
        let mut taken = 0;
        for vm in 1..4 {
            while let Some(v) = t.allocate_for(vm) {
                t.set(v, entry(owner(vm, taken as u16), 0x40));
                taken += 1;
            }
        }
        assert_eq!(taken, COUNT - 10);
        for i in 0..10 {
            let v = t.allocate_for(0).unwrap();
            t.set(v, entry(owner(0, i), 0x40));
        }
        // What unreserved VMs hold counts against a later reservation.
        assert_eq!(t.reserve(9, 1).unwrap_err().available, 0);
    }
}
