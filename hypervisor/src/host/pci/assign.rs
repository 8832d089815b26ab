//! Which host devices can be handed to a VM, and what else would go with them.
//!
//! For each function: its reset method, the IOMMU unit that translates it, whether
//! it has ACS, and an isolation group computed roughly as Linux does: functions of a
//! multifunction device without ACS share a group, and everything below a bridge
//! without ACS shares a group (peer-to-peer traffic may bypass the IOMMU there);
//! conventional PCI below a PCIe-to-PCI bridge shares its requester id and group.
//! A group is the unit of assignment: all of its endpoints go to the same VM.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

use crate::host::acpi::PlatformTables;
use crate::host::acpi::dmar::{Dmar, ScopeKind};
use crate::host::acpi::ivrs::Ivrs;
use crate::host::iommu::scope::{UnitScope, dmar_scopes, dmar_unit_for, ivrs_unit_for};
use crate::host::pci::ConfigAccess;
use crate::host::pci::model::CapabilityDetail;
use crate::host::pci::reset::{ResetMethod, detect_reset, parent_bridge};
use crate::host::pci::{PciDevice, PciInventory};
use crate::hw::Bdf;
use crate::hw::pci::cap_id;
use crate::hw::pci::ext_cap_id;

/// Which IOMMU unit translates a device's DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IommuCoverage {
    None,
    /// DMAR unit `index` (DRHD order) at `register_base`.
    Vtd {
        index: usize,
        register_base: u64,
    },
    /// IVRS unit `index` (after de-duplication) at `base`.
    AmdVi {
        index: usize,
        base: u64,
    },
}

impl fmt::Display for IommuCoverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => write!(f, "none"),
            Self::Vtd { index, register_base } => write!(f, "DRHD{index}@{register_base:#x}"),
            Self::AmdVi { index, base } => write!(f, "IVHD{index}@{base:#x}"),
        }
    }
}

/// One line of the assignability report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    pub bdf: Bdf,
    pub vendor_id: u16,
    pub device_id: u16,
    pub class_name: &'static str,
    pub reset_method: ResetMethod,
    pub iommu_coverage: IommuCoverage,
    /// The function has an ACS extended capability.
    pub acs: bool,
    pub isolation_group: u32,
    /// A firmware-reserved memory region (DMAR RMRR, IVRS IVMD) names the device: it
    /// needs an identity mapping of that region, which a VM's domain (its RAM only)
    /// cannot give, so it is not assignable (as VFIO refuses such devices).
    pub rmrr: bool,
    /// Why the device cannot be assigned, or `None` if it can.
    pub refusal: Option<&'static str>,
}

impl DeviceReport {
    pub fn assignable(&self) -> bool {
        self.refusal.is_none()
    }
}

impl fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} {}: group {}, reset {}, iommu {}, acs {}{} -> {}",
            self.bdf,
            self.vendor_id,
            self.device_id,
            self.class_name,
            self.isolation_group,
            self.reset_method,
            self.iommu_coverage,
            if self.acs { "yes" } else { "no" },
            if self.rmrr { ", rmrr" } else { "" },
            self.refusal.unwrap_or("assignable"),
        )
    }
}

/// The report for every function of `inventory` under the firmware's IOMMU tables.
pub fn assignability(
    inventory: &PciInventory,
    tables: &PlatformTables,
    access: &impl ConfigAccess,
) -> Vec<DeviceReport> {
    let dmar = tables.dmar().filter(|d| !d.units.is_empty());
    let ivrs = if dmar.is_some() { None } else { tables.ivrs().filter(|i| !i.ivhds.is_empty()) };
    assignability_with(inventory, dmar, ivrs, access)
}

/// [`assignability`] with the IOMMU tables given directly (DMAR wins, as in
/// `PlatformTables::iommu`).
pub fn assignability_with(
    inventory: &PciInventory,
    dmar: Option<&Dmar>,
    ivrs: Option<&Ivrs>,
    access: &impl ConfigAccess,
) -> Vec<DeviceReport> {
    let scopes: Vec<UnitScope> = dmar.map(|d| dmar_scopes(d, inventory)).unwrap_or_default();
    let rmrr_scopes: Vec<UnitScope> = dmar.map(|d| rmrr_scopes(d, inventory)).unwrap_or_default();
    let ivhds = ivrs.map(|i| i.units()).unwrap_or_default();
    let groups = isolation_groups(inventory);
    inventory
        .devices()
        .iter()
        .zip(groups)
        .map(|(d, group)| {
            let coverage = match (dmar, ivrs) {
                (Some(dmar), _) => dmar_unit_for(&scopes, d.bdf)
                    .and_then(|i| {
                        dmar.units.get(i).map(|u| IommuCoverage::Vtd { index: i, register_base: u.register_base })
                    })
                    .unwrap_or(IommuCoverage::None),
                (None, Some(_)) => ivrs_unit_for(&ivhds, d.bdf)
                    .and_then(|i| ivhds.get(i).map(|u| IommuCoverage::AmdVi { index: i, base: u.base_address }))
                    .unwrap_or(IommuCoverage::None),
                (None, None) => IommuCoverage::None,
            };
            let reset = if d.header_type == 0 { detect_reset(d, inventory, access) } else { ResetMethod::None };
            let rmrr = rmrr_scopes.iter().any(|s| s.names(d.bdf));
            let ivmd = ivrs.is_some_and(|i| ivmd_names(i, d.bdf));
            let refusal = if d.header_type != 0 {
                Some("bridge")
            } else if d.class == 0x06 {
                Some("chipset function")
            } else if (d.class, d.subclass) == (0x08, 0x06) {
                Some("the IOMMU itself")
            } else if coverage == IommuCoverage::None {
                Some("no IOMMU translates it")
            } else if rmrr {
                Some("firmware-reserved DMA region (RMRR)")
            } else if ivmd {
                Some("firmware-reserved DMA region (IVMD)")
            } else if reset == ResetMethod::None {
                Some("no reset method")
            } else {
                None
            };
            DeviceReport {
                bdf: d.bdf,
                vendor_id: d.vendor_id,
                device_id: d.device_id,
                class_name: d.class_name(),
                reset_method: reset,
                iommu_coverage: coverage,
                acs: has_acs(d),
                isolation_group: group,
                rmrr: rmrr || ivmd,
                refusal,
            }
        })
        .collect()
}

fn rmrr_scopes(dmar: &Dmar, inventory: &PciInventory) -> Vec<UnitScope> {
    // Reuse the DRHD resolver: an RMRR's scopes have the same format.
    let as_units = Dmar {
        units: dmar
            .rmrrs
            .iter()
            .map(|r| crate::host::acpi::dmar::Drhd {
                register_base: 0,
                segment: r.segment,
                include_pci_all: false,
                size_pages_log2: 0,
                scopes: r.scopes.iter().filter(|s| s.kind != ScopeKind::IoApic).cloned().collect(),
            })
            .collect(),
        ..Dmar::default()
    };
    dmar_scopes(&as_units, inventory)
}

/// Whether an IVMD block (AMD IOMMU spec §5.2.3) names `bdf`: type 20h every device,
/// 21h one device id, 22h a range of ids.
fn ivmd_names(ivrs: &Ivrs, bdf: Bdf) -> bool {
    let rid = bdf.requester_id();
    ivrs.ivmds.iter().any(|m| match m.block_type {
        0x20 => true,
        0x21 => m.devid == rid,
        0x22 => (m.devid..=m.aux).contains(&rid),
        _ => false,
    })
}

fn has_acs(d: &PciDevice) -> bool {
    d.ext_capability(ext_cap_id::ACS).is_some()
}

/// PCIe port type 7: PCI Express to PCI/PCI-X bridge (PCIe 6.0 §7.5.3.2), or a
/// bridge without a PCIe capability (conventional PCI). Requests from below it
/// arrive with the bridge's requester id or its secondary bus's 00.0.
pub fn is_pcie_to_pci_bridge(d: &PciDevice) -> bool {
    matches!(d.capability(cap_id::PCI_EXPRESS).map(|c| c.detail), Some(CapabilityDetail::PciExpress { port_type: 7 }))
        || (d.bridge.is_some() && d.capability(cap_id::PCI_EXPRESS).is_none())
}

/// Isolation group numbers, one per device of `inventory`, numbered from 0 in
/// inventory order.
pub fn isolation_groups(inventory: &PciInventory) -> Vec<u32> {
    let devs = inventory.devices();
    let mut parent: Vec<usize> = (0..devs.len()).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        let mut hops = 0usize;
        while let Some(&p) = parent.get(i) {
            if p == i || hops > parent.len() {
                break;
            }
            i = p;
            hops = hops.saturating_add(1);
        }
        i
    }
    let union = |parent: &mut Vec<usize>, a: usize, b: usize| {
        let (ra, rb) = (find(parent, a), find(parent, b));
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        if let Some(slot) = parent.get_mut(hi) {
            *slot = lo;
        }
    };
    for (i, d) in devs.iter().enumerate() {
        // Functions of one multifunction device without ACS.
        if d.multifunction && !has_acs(d) {
            for (j, o) in devs.iter().enumerate() {
                if j != i && o.bdf.segment == d.bdf.segment && o.bdf.bus == d.bdf.bus && o.bdf.device == d.bdf.device {
                    union(&mut parent, i, j);
                }
            }
        }
        // Every bridge above the device: without ACS, its whole subtree is one group;
        // a PCIe-to-PCI bridge also takes the requests of what is below it.
        let mut current = d;
        let mut depth = 0u32;
        while let Some(bridge) = parent_bridge(current, inventory) {
            let Some(b) = devs.iter().position(|x| x.bdf == bridge.bdf) else { break };
            let buses = bridge.bridge.map_or((1, 0), |r| (r.secondary, r.subordinate));
            if !has_acs(bridge) || is_pcie_to_pci_bridge(bridge) {
                for (j, o) in devs.iter().enumerate() {
                    if j != i && o.bdf.segment == d.bdf.segment && (buses.0..=buses.1).contains(&o.bdf.bus) {
                        union(&mut parent, i, j);
                    }
                }
            }
            if is_pcie_to_pci_bridge(bridge) {
                union(&mut parent, i, b);
            }
            current = bridge;
            depth = depth.saturating_add(1);
            if depth > 256 {
                break;
            }
        }
    }
    // Number the groups by their first member.
    let mut numbers: Vec<(usize, u32)> = Vec::new();
    (0..devs.len())
        .map(|i| {
            let root = find(&mut parent, i);
            match numbers.iter().find(|(r, _)| *r == root) {
                Some((_, n)) => *n,
                None => {
                    let n = u32::try_from(numbers.len()).unwrap_or(u32::MAX);
                    numbers.push((root, n));
                    n
                }
            }
        })
        .collect()
}

/// Why the function that shows the hypervisor's own screen is refused.
pub const SHOWS_THE_SCREEN: &str = "shows the hypervisor's screen";

/// Refuses the function one of whose memory BARs holds `framebuffer` (the boot
/// framebuffer the hypervisor draws its screen, trust strip and switcher on): a VM
/// that owned it could draw over the trust strip or read other VMs' screens. Returns
/// the function, if one was found.
pub fn refuse_screen(reports: &mut [DeviceReport], inventory: &PciInventory, framebuffer: u64) -> Option<Bdf> {
    let dev = inventory.devices().iter().find(|d| {
        d.bars.iter().any(|b| {
            b.kind != crate::host::pci::BarKind::Io
                && framebuffer >= b.address
                && framebuffer < b.address.saturating_add(b.size)
        })
    })?;
    let report = reports.iter_mut().find(|r| r.bdf == dev.bdf)?;
    report.refusal = Some(SHOWS_THE_SCREEN);
    Some(dev.bdf)
}

/// Logs one line per device (target "pci").
pub fn log_report(reports: &[DeviceReport]) {
    let assignable = reports.iter().filter(|r| r.assignable()).count();
    log::info!(target: "pci", "passthrough: {assignable} of {} functions assignable", reports.len());
    for r in reports {
        log::info!(target: "pci", "{r}");
    }
}

#[cfg(test)]
mod tests;
