//! Assigned devices' INTx lines, delivered to the VM that owns them.
//!
//! A device without MSI signals on a level-triggered, shared PCI interrupt line that
//! the firmware's `_PRT` ties to a host I/O APIC input (GSI). Each such GSI given to
//! a VM gets a host vector of its own, level-triggered, remapped by VT-d like the
//! keyboard's pin, and one input of the VM's I/O APIC (its guest GSI, which the VM's
//! `_PRT` names for the device's slot and pin). The cycle, as VFIO does it:
//!
//! 1. the device asserts its line; the host I/O APIC sends the host vector; the
//!    interrupt handler records it and leaves it un-EOI'd
//!    (`device_vectors::LEVEL`);
//! 2. [`acknowledge`] masks the host pin, then EOIs (the line is still asserted,
//!    but the masked pin cannot fire again), and the guest's line goes high;
//! 3. the guest's driver services the device and EOIs; its I/O APIC drops the line
//!    (a resample pin) and reports it, and [`resample`] unmasks the host pin: if the
//!    device still asserts, the cycle starts again at once.
//!
//! So a device interrupts its VM once per guest interrupt, never storms the host, and
//! a guest that never EOIs only silences its own device. A GSI carries the devices of
//! one VM only: a second VM's device on the same line gets no INTx (its MSI still
//! works), since one VM's slow EOI would hold the other's interrupts.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use log::{info, warn};

use crate::arch::x86::device_vectors;
use crate::host::acpi::aml::IntxRoute;
use crate::host::ioapic::{HostIoapics, IoapicRegs, PinMode};
use crate::host::iommu::{Iommu, MsiTarget};
use crate::hw::Bdf;
use crate::hw::MsiMessage;
use crate::vm::passthrough::IntxRouteError;
use crate::vm::passthrough::host_vectors::Fired;
use crate::vm::passthrough::host_vectors::{GuestTarget, HostVector, HostVectorTable, INTX_INDEX, VectorOwner};

/// The guest GSIs given to assigned devices' INTx lines: the VM's I/O APIC inputs
/// above the ISA range (16-23), one per host GSI the VM's devices use.
pub const GUEST_GSIS: core::ops::RangeInclusive<u8> = 16..=23;

/// Routes host GSI `host.gsi`, which `owner`'s device drives, into guest GSI
/// `guest_gsi` of VM `owner.vm`: a level-triggered host vector on CPU `cpu`, the pin
/// remapped by `iommu` where it can, unmasked. A GSI the VM already has keeps its
/// vector. Refused (with the reason) when another VM's device uses that GSI or no
/// vector is free.
pub fn route<R: IoapicRegs>(
    table: &mut HostVectorTable,
    iommu: &mut dyn Iommu,
    ioapics: &mut HostIoapics<R>,
    owner: VectorOwner,
    host: IntxRoute,
    guest_gsi: u8,
    cpu: u32,
) -> Result<u8, IntxRouteError> {
    let owner = VectorOwner { index: INTX_INDEX, ..owner };
    if let Some((vector, other)) = line_of(table, host.gsi) {
        if other.owner.vm != owner.vm {
            return Err(IntxRouteError::LineTaken { gsi: host.gsi, other: other.owner.bdf });
        }
        info!(
            target: "intx",
            "vm {} {}: INTx GSI {} ({}) -> host vector {vector:#x} (shared with {}) -> guest GSI {guest_gsi}",
            owner.vm,
            owner.bdf,
            host.gsi,
            describe(host.pin_mode()),
            other.owner.bdf
        );
        return Ok(vector);
    }
    let vector = table.allocate_for(owner.vm).ok_or(IntxRouteError::NoVector)?;
    let target = MsiTarget { vector, dest_apic_id: cpu };
    // The handler must already know to leave the EOI when the first interrupt comes.
    device_vectors::LEVEL.record(vector);
    let mut remap = |pin, t| iommu.map_ioapic_pin(pin, t);
    if let Err(error) = ioapics.route(host.gsi, host.pin_mode(), target, false, &mut remap) {
        device_vectors::LEVEL.take_one(vector);
        return Err(IntxRouteError::Ioapic { gsi: host.gsi, error });
    }
    let entry = HostVector {
        owner,
        target: GuestTarget::Intx { host_gsi: host.gsi, guest_gsi },
        message: MsiMessage { address: 0, data: 0 },
    };
    table.set(vector, entry);
    info!(
        target: "intx",
        "vm {} {}: INTx GSI {} ({}) -> host vector {vector:#x} -> guest GSI {guest_gsi}",
        owner.vm,
        owner.bdf,
        host.gsi,
        describe(host.pin_mode())
    );
    Ok(vector)
}

fn describe(mode: PinMode) -> &'static str {
    match (mode.level, mode.active_low) {
        (true, true) => "level, active low",
        (true, false) => "level, active high",
        (false, true) => "edge, active low",
        (false, false) => "edge, active high",
    }
}

/// The host vector carrying `host_gsi`, if any VM has it.
fn line_of(table: &HostVectorTable, host_gsi: u32) -> Option<(u8, HostVector)> {
    table.all().find(|(_, e)| matches!(e.target, GuestTarget::Intx { host_gsi: g, .. } if g == host_gsi))
}

/// Step 2 for the INTx lines among `fired`: mask each host pin, then EOI it.
pub fn acknowledge(fired: &[Fired]) {
    let Some(ioapics) = crate::host::ioapic::HOST_IOAPICS.get() else { return };
    let vectors = mask_fired_lines(&mut ioapics.lock(), fired);
    // Every pin masked before any EOI: an EOI ends the highest vector in service,
    // which may be another of these lines.
    for vector in vectors {
        device_vectors::acknowledge_level(vector);
    }
}

/// Masks the host pins of the INTx lines among `fired`; returns their vectors.
fn mask_fired_lines<R: IoapicRegs>(ioapics: &mut HostIoapics<R>, fired: &[Fired]) -> Vec<u8> {
    let mut vectors = Vec::new();
    for f in fired {
        if let GuestTarget::Intx { host_gsi, .. } = f.target {
            ioapics.set_masked(host_gsi, true);
            vectors.push(f.host_vector);
        }
    }
    vectors
}

/// Step 3: VM `vm` ended the interrupts on the guest GSIs set in `guest_gsis` (bit per
/// GSI): unmask the host pins behind them.
pub fn resample<R: IoapicRegs>(table: &HostVectorTable, ioapics: &mut HostIoapics<R>, vm: u32, guest_gsis: u32) {
    for (_, e) in table.all().filter(|(_, e)| e.owner.vm == vm) {
        if let GuestTarget::Intx { host_gsi, guest_gsi } = e.target
            && guest_gsis & 1u32.wrapping_shl(u32::from(guest_gsi)) != 0
        {
            ioapics.set_masked(host_gsi, false);
        }
    }
}

/// Masks and frees every INTx line `vm` has (its devices are stopped first). Returns
/// how many there were.
pub fn unroute_vm<R: IoapicRegs>(
    table: &mut HostVectorTable,
    ioapics: &mut HostIoapics<R>,
    vm: u32,
    settle: &mut dyn FnMut(u8),
) -> usize {
    let lines: Vec<(u8, u32)> = table
        .owned_by(vm)
        .into_iter()
        .filter_map(|(v, e)| match e.target {
            GuestTarget::Intx { host_gsi, .. } => Some((v, host_gsi)),
            GuestTarget::Msi(_) => None,
        })
        .collect();
    for &(vector, gsi) in &lines {
        ioapics.set_masked(gsi, true);
        // An interrupt taken but not yet acknowledged is EOI'd now; one in flight
        // runs in `settle` and is recorded as awaiting its EOI again.
        device_vectors::acknowledge_level(vector);
        settle(vector);
        device_vectors::acknowledge_level(vector);
        device_vectors::LEVEL.take_one(vector);
        table.free(vector);
        info!(target: "intx", "vm {vm}: INTx GSI {gsi} masked, host vector {vector:#x} released");
    }
    lines.len()
}

/// The guest GSI for a device of `vm` on host GSI `host_gsi`: the one the VM already
/// uses for that line, else the first free one of [`GUEST_GSIS`]. `taken` are the
/// (host GSI, guest GSI) pairs the VM has so far.
pub fn guest_gsi_for(taken: &[(u32, u8)], host_gsi: u32) -> Option<u8> {
    if let Some(&(_, g)) = taken.iter().find(|(h, _)| *h == host_gsi) {
        return Some(g);
    }
    GUEST_GSIS.clone().find(|g| !taken.iter().any(|(_, t)| t == g))
}

/// Logs a device whose INTx is not routed.
pub fn not_routed(vm: &str, bdf: Bdf, why: IntxRouteError) {
    warn!(target: "intx", "{bdf} in VM {vm}: INTx not routed: {why}");
}

#[cfg(test)]
mod tests;
