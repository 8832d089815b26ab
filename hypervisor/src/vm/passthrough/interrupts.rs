//! The interrupt seam between assigned devices and VMs: the machine's host vector
//! table, and the device interrupts that fired, resolved to their VM and guest
//! target. MSI/MSI-X routing (`msi_routing`) and INTx routing (`intx_routing`) both
//! program the table and neither imports the other; this module is the one place
//! that takes what fired and lets INTx lines be acknowledged.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::arch::x86::device_vectors;
use crate::vm::passthrough::host_vectors::{Fired, HostVectorTable, resolve};

/// The machine's host vector table.
pub static VECTORS: spin::Mutex<HostVectorTable> = spin::Mutex::new(HostVectorTable::new());

/// Takes the device interrupts that fired since the last call, for every VM. INTx
/// lines among them are masked on the host and acknowledged here (until their guest
/// EOIs), whoever they are for.
pub fn take_fired() -> Vec<Fired> {
    let fired = device_vectors::PENDING.take();
    if fired.is_empty() {
        return Vec::new();
    }
    let fired = resolve(&VECTORS.lock(), &fired);
    crate::vm::passthrough::intx_routing::acknowledge(&fired);
    fired
}

/// Takes the device interrupts that fired for `vm`; those of other VMs stay
/// pending. Returns them and whether another VM has some waiting.
pub fn take_fired_for(vm: u32) -> (Vec<Fired>, bool) {
    let (mine, others): (Vec<Fired>, Vec<Fired>) = take_fired().into_iter().partition(|f| f.vm == vm);
    for f in &others {
        device_vectors::PENDING.record(f.host_vector);
    }
    (mine, !others.is_empty())
}
