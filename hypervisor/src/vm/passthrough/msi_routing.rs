//! Assigned devices' MSI and MSI-X vectors, delivered to the VM that owns them.
//!
//! When a guest enables a vector, its device gets a host vector of its own
//! ([`HostVectorTable`]) and an IOMMU remapping entry that only it can use, aimed at
//! that host vector on the CPU running the VMs; the device is programmed with the
//! remapped message the IOMMU returns, never with the guest's address/data. The
//! interrupt arrives as a host interrupt (one `#VMEXIT(INTR)` if a VM is running),
//! the IDT records its host vector, and the scheduler (or the running VM's loop)
//! resolves it here to (VM, guest route) and raises the guest's vector in that VM's
//! local APIC. Changing the guest vector or destination only changes the table;
//! disabling, masking or tearing the VM down removes the IOMMU entry and frees the
//! host vector.
//!
//! Everything here is plain logic over `&mut dyn Iommu` and the table; the VM layer
//! supplies the locks and `settle`, which lets interrupts already accepted for a
//! vector run before the vector is freed (so none reaches its next owner).
#![forbid(unsafe_code)]

use log::{debug, info, warn};

use crate::devices::vpci::msi::MsiRoute;
use crate::host::iommu::{Iommu, MsiTarget};
use crate::hw::MsiMessage;
use crate::limited;
use crate::log_limit::Source;
use crate::vm::passthrough::host_vectors::{GuestTarget, HostVector, HostVectorTable, VECTORS_PER_VM, VectorOwner};

/// Routes `owner`'s vector per `route` (or tears it down with `None`) and returns
/// the message the device must send, `None` to keep it masked. `cpu` is the local
/// APIC id of the CPU that runs VMs.
pub fn route(
    table: &mut HostVectorTable,
    iommu: &mut dyn Iommu,
    owner: VectorOwner,
    route: Option<MsiRoute>,
    cpu: u32,
    settle: &mut dyn FnMut(u8),
) -> Option<MsiMessage> {
    let existing = table.find(owner);
    let Some(route) = route else {
        if let Some(vector) = existing {
            release(table, iommu, vector, settle);
        }
        return None;
    };
    if let Some(vector) = existing {
        // Same device vector, new guest vector or destination: the IOMMU entry and the
        // device's message stay as they are.
        let entry = table.get(vector)?;
        table.set(vector, HostVector { target: GuestTarget::Msi(route), ..entry });
        debug!(target: "msi", "vm {} {} vector {}: now guest vector {:#x}", owner.vm, owner.bdf, owner.index, route.vector);
        return Some(entry.message);
    }
    if table.count_owned_by(owner.vm) >= VECTORS_PER_VM {
        limited!(
            Source::Routes,
            owner.vm,
            warn!(
                target: "msi",
                "vm {} {} vector {}: the VM already holds {VECTORS_PER_VM} host vectors; stays masked",
                owner.vm, owner.bdf, owner.index
            )
        );
        return None;
    }
    let Some(vector) = table.allocate_for(owner.vm) else {
        limited!(
            Source::Routes,
            owner.vm,
            warn!(target: "msi", "vm {} {} vector {}: no host vector left in its share or free; stays masked", owner.vm, owner.bdf, owner.index)
        );
        return None;
    };
    match iommu.map_msi(owner.bdf, owner.index, MsiTarget { vector, dest_apic_id: cpu }) {
        Ok(message) => {
            table.set(vector, HostVector { owner, target: GuestTarget::Msi(route), message });
            limited!(
                Source::Routes,
                owner.vm,
                info!(
                    target: "msi",
                    "vm {} {} vector {}: host vector {vector:#x} on cpu {cpu} -> guest vector {:#x} (remapped by {})",
                    owner.vm, owner.bdf, owner.index, route.vector, iommu.name()
                )
            );
            Some(message)
        }
        Err(e) => {
            limited!(
                Source::Routes,
                owner.vm,
                warn!(target: "msi", "vm {} {} vector {}: cannot remap ({e}); stays masked", owner.vm, owner.bdf, owner.index)
            );
            None
        }
    }
}

/// Removes the IOMMU entry behind `vector`, lets interrupts it already delivered
/// run, and frees it.
fn release(table: &mut HostVectorTable, iommu: &mut dyn Iommu, vector: u8, settle: &mut dyn FnMut(u8)) {
    let Some(entry) = table.get(vector) else { return };
    let o = entry.owner;
    if let Err(e) = iommu.unmap_msi(o.bdf, o.index) {
        // Detach already dropped it, or the unit failed: the device was stopped
        // first, so nothing more arrives either way.
        debug!(target: "msi", "vm {} {} vector {}: unmap: {e}", o.vm, o.bdf, o.index);
    }
    settle(vector);
    table.free(vector);
    limited!(
        Source::Routes,
        o.vm,
        info!(target: "msi", "vm {} {} vector {}: host vector {vector:#x} released", o.vm, o.bdf, o.index)
    );
}

/// Tears down every MSI/MSI-X vector `vm` owns (its devices are already stopped).
/// Returns how many there were. Its INTx lines are `intx_routing`'s.
pub fn unroute_vm(table: &mut HostVectorTable, iommu: &mut dyn Iommu, vm: u32, settle: &mut dyn FnMut(u8)) -> usize {
    let mut owned = table.owned_by(vm);
    owned.retain(|(_, e)| matches!(e.target, GuestTarget::Msi(_)));
    for (vector, _) in &owned {
        release(table, iommu, *vector, settle);
    }
    owned.len()
}

#[cfg(test)]
mod tests;
