//! Which VMs a fault the IOMMU reports can have come from.
//!
//! A fault names a requester id as one unit saw it. The id names a function only
//! together with that unit and its PCI segment, and behind a PCIe-to-PCI (or
//! conventional PCI) bridge it may be an alias that several functions' requests
//! carry. So a fault stops the one VM that owns the requester on that unit; where
//! the report cannot tell which VM it was, it stops every VM that can have caused
//! it (never an innocent one alone); a fault no VM can have caused stops nobody.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::host::iommu::IommuFault;
use crate::host::pci::PciInventory;
use crate::host::pci::assign::is_pcie_to_pci_bridge;
use crate::host::pci::reset::parent_bridge;
use crate::hw::Bdf;

/// How one assigned function shows up in fault reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultIds {
    /// The unit that translates it (the `unit` its faults carry).
    pub unit: usize,
    /// Requester ids other than its own that its requests may arrive with, on its
    /// segment: the firmware's alias (AMD-Vi IVRS) and those of the PCIe-to-PCI or
    /// conventional bridges above it (the bridge's id, its secondary bus's 00.0).
    pub aliases: Vec<u16>,
    /// The buses (secondary..=subordinate) below the topmost such bridge: a fault
    /// from an id there that no VM owns may still be this function's.
    pub behind: Option<(u8, u8)>,
}

/// A function a running VM owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFunction {
    pub vm: u32,
    pub bdf: Bdf,
    pub ids: FaultIds,
}

/// Why a fault was attributed as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The requester is a function the VM owns, on the unit that reported it.
    Requester,
    /// The requester id is an alias that the candidates' functions' requests carry.
    Alias,
    /// No VM owns the requester, but it sits below a bridge the candidates'
    /// functions sit below.
    BehindBridge,
    /// No VM can have caused it.
    Unknown,
}

/// The VMs to stop for one fault (empty exactly when `why` is `Unknown`), each once,
/// in the order their functions were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub vms: Vec<u32>,
    pub why: Why,
}

/// Attributes `fault` to the VMs owning `owned`. Only functions on the reporting
/// unit and segment count; an exact requester match and alias matches together make
/// the candidates, and only when there are none does the bridge a function sits
/// behind count.
pub fn attribute(fault: &IommuFault, owned: &[OwnedFunction]) -> Attribution {
    let on_unit = |f: &&OwnedFunction| f.ids.unit == fault.unit && f.bdf.segment == fault.bdf.segment;
    let rid = fault.bdf.requester_id();
    let mut vms = Vec::new();
    let mut why = Why::Requester;
    for f in owned.iter().filter(on_unit) {
        if f.bdf == fault.bdf {
            add(&mut vms, f.vm);
        } else if f.ids.aliases.contains(&rid) {
            add(&mut vms, f.vm);
            why = Why::Alias;
        }
    }
    if vms.is_empty() {
        let below = |f: &&OwnedFunction| f.ids.behind.is_some_and(|(lo, hi)| (lo..=hi).contains(&fault.bdf.bus));
        for f in owned.iter().filter(on_unit).filter(below) {
            add(&mut vms, f.vm);
        }
        why = if vms.is_empty() { Why::Unknown } else { Why::BehindBridge };
    }
    Attribution { vms, why }
}

fn add(vms: &mut Vec<u32>, vm: u32) {
    if !vms.contains(&vm) {
        vms.push(vm);
    }
}

/// How `bdf`, translated by unit `unit`, shows up in fault reports: `firmware_alias`
/// (the driver's, see `Iommu::firmware_alias`) plus the ids of every PCIe-to-PCI or
/// conventional bridge above it in `inventory`.
pub fn fault_ids(inventory: &PciInventory, bdf: Bdf, unit: usize, firmware_alias: Option<u16>) -> FaultIds {
    let own = bdf.requester_id();
    let mut ids = FaultIds { unit, aliases: Vec::new(), behind: None };
    let push = |ids: &mut FaultIds, id: u16| {
        if id != own && !ids.aliases.contains(&id) {
            ids.aliases.push(id);
        }
    };
    if let Some(a) = firmware_alias {
        push(&mut ids, a);
    }
    let mut dev = inventory.devices().iter().find(|d| d.bdf == bdf);
    // A bus has at most 255 bridges above it; the bound also ends a cycle a broken
    // topology could make.
    for _ in 0..=u8::MAX {
        let Some(parent) = dev.and_then(|d| parent_bridge(d, inventory)) else { break };
        if is_pcie_to_pci_bridge(parent) {
            push(&mut ids, parent.bdf.requester_id());
            if let Some(b) = parent.bridge {
                push(&mut ids, Bdf::new(bdf.segment, b.secondary, 0, 0).requester_id());
                ids.behind = Some((b.secondary, b.subordinate));
            }
        }
        dev = Some(parent);
    }
    ids
}

/// "both" for two VMs, "all N" for more, "it" for one.
pub fn how_many(n: usize) -> alloc::string::String {
    match n {
        0 | 1 => "it".into(),
        2 => "both".into(),
        n => alloc::format!("all {n}"),
    }
}

#[cfg(test)]
mod tests;
