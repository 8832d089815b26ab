//! Which IOMMU unit translates which PCI function: DMAR device scopes (VT-d spec
//! §8.3.1) resolved against the host PCI inventory, and IVHD device entries (AMD
//! IOMMU spec §5.2.2.2). Pure; shared by the drivers and the assignability report.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::host::acpi::dmar::{Dmar, Drhd, ScopeKind};
use crate::host::acpi::ivrs::{Ivhd, IvhdEntry};
use crate::host::pci::PciInventory;
use crate::hw::Bdf;

/// The PCI functions one DMAR unit claims.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitScope {
    pub segment: u16,
    /// INCLUDE_PCI_ALL: everything on the segment no other unit claims.
    pub include_all: bool,
    /// Functions named by endpoint scopes, and the bridges of sub-hierarchy scopes.
    pub devices: Vec<Bdf>,
    /// Bus ranges (inclusive) below sub-hierarchy bridges.
    pub bus_ranges: Vec<(u8, u8)>,
    /// I/O APICs behind the unit: (I/O APIC id, the address its interrupts carry as
    /// their requester id).
    pub ioapics: Vec<(u8, Bdf)>,
}

impl UnitScope {
    /// Whether the scope names `bdf` explicitly (not through INCLUDE_PCI_ALL).
    pub fn names(&self, bdf: Bdf) -> bool {
        bdf.segment == self.segment
            && (self.devices.contains(&bdf) || self.bus_ranges.iter().any(|(a, b)| (*a..=*b).contains(&bdf.bus)))
    }
}

/// Resolves every DRHD's scopes. A path hop through a bridge the inventory does not
/// know is dropped (logged): firmware may list devices that are absent.
pub fn dmar_scopes(dmar: &Dmar, inventory: &PciInventory) -> Vec<UnitScope> {
    dmar.units.iter().map(|u| drhd_scope(u, inventory)).collect()
}

fn drhd_scope(unit: &Drhd, inventory: &PciInventory) -> UnitScope {
    let mut scope = UnitScope { segment: unit.segment, include_all: unit.include_pci_all, ..UnitScope::default() };
    for s in &unit.scopes {
        if s.kind == ScopeKind::IoApic {
            // An I/O APIC sits on the bus its scope starts at (one hop).
            if let [hop] = s.path.as_slice() {
                let bdf = Bdf::new(unit.segment, s.start_bus, hop.device & 0x1f, hop.function & 7);
                scope.ioapics.push((s.enumeration_id, bdf));
            }
            continue;
        }
        if !matches!(s.kind, ScopeKind::PciEndpoint | ScopeKind::PciSubHierarchy) {
            continue;
        }
        let mut bus = s.start_bus;
        let mut target = None;
        for (i, hop) in s.path.iter().enumerate() {
            let bdf = Bdf::new(unit.segment, bus, hop.device & 0x1f, hop.function & 7);
            if i.wrapping_add(1) == s.path.len() {
                target = Some(bdf);
                break;
            }
            match inventory.find(bdf).and_then(|d| d.bridge) {
                Some(b) => bus = b.secondary,
                None => {
                    log::debug!(target: "iommu", "DMAR scope hop {bdf} is not a known bridge; scope skipped");
                    break;
                }
            }
        }
        let Some(bdf) = target else { continue };
        scope.devices.push(bdf);
        if s.kind == ScopeKind::PciSubHierarchy
            && let Some(b) = inventory.find(bdf).and_then(|d| d.bridge)
            && b.secondary <= b.subordinate
        {
            scope.bus_ranges.push((b.secondary, b.subordinate));
        }
    }
    scope
}

/// The DMAR unit that translates `bdf`: an explicit scope first, else the segment's
/// INCLUDE_PCI_ALL unit (VT-d spec §8.3: it claims what no other unit lists).
pub fn dmar_unit_for(scopes: &[UnitScope], bdf: Bdf) -> Option<usize> {
    scopes
        .iter()
        .position(|s| s.names(bdf))
        .or_else(|| scopes.iter().position(|s| s.include_all && s.segment == bdf.segment))
}

/// Whether an IVHD's device entries cover requester id `devid` (§5.2.2.2).
pub fn ivhd_covers(ivhd: &Ivhd, devid: u16) -> bool {
    ivhd.entries.iter().any(|e| match *e {
        IvhdEntry::All { .. } => true,
        IvhdEntry::Select { devid: d, .. }
        | IvhdEntry::AliasSelect { devid: d, .. }
        | IvhdEntry::ExtSelect { devid: d, .. }
        | IvhdEntry::AcpiHid { devid: d, .. }
        | IvhdEntry::Special { devid: d, .. } => d == devid,
        IvhdEntry::Range { first, last, .. }
        | IvhdEntry::AliasRange { first, last, .. }
        | IvhdEntry::ExtRange { first, last, .. } => (first..=last).contains(&devid),
    })
}

/// The requester id `devid`'s requests arrive with, when firmware declares an alias
/// (e.g. devices behind a PCIe-to-PCI bridge).
pub fn ivhd_alias(ivhd: &Ivhd, devid: u16) -> Option<u16> {
    ivhd.entries.iter().find_map(|e| match *e {
        IvhdEntry::AliasSelect { devid: d, alias, .. } if d == devid => Some(alias),
        IvhdEntry::AliasRange { first, last, alias, .. } if (first..=last).contains(&devid) => Some(alias),
        _ => None,
    })
}

/// The IVHD data byte (DTE settings: INITPass, EIntPass, NMIPass, SysMgt, Lint0/1Pass)
/// for `devid`; the most specific entry wins over ALL.
pub fn ivhd_data(ivhd: &Ivhd, devid: u16) -> u8 {
    let mut all = 0;
    for e in &ivhd.entries {
        match *e {
            IvhdEntry::All { data } => all = data,
            IvhdEntry::Select { devid: d, data }
            | IvhdEntry::AliasSelect { devid: d, data, .. }
            | IvhdEntry::ExtSelect { devid: d, data, .. }
            | IvhdEntry::Special { devid: d, data, .. }
                if d == devid =>
            {
                return data;
            }
            IvhdEntry::Range { first, last, data }
            | IvhdEntry::AliasRange { first, last, data, .. }
            | IvhdEntry::ExtRange { first, last, data, .. }
                if (first..=last).contains(&devid) =>
            {
                return data;
            }
            _ => {}
        }
    }
    all
}

/// The IVHD (index into `units`) that covers `bdf`.
pub fn ivrs_unit_for(units: &[&Ivhd], bdf: Bdf) -> Option<usize> {
    units.iter().position(|u| u.segment == bdf.segment && ivhd_covers(u, bdf.requester_id()))
}

/// The largest requester id any IVHD entry names (for sizing the device table).
pub fn ivhd_max_devid(ivhd: &Ivhd) -> u16 {
    ivhd.entries
        .iter()
        .map(|e| match *e {
            IvhdEntry::All { .. } => u16::MAX,
            IvhdEntry::Select { devid, .. }
            | IvhdEntry::ExtSelect { devid, .. }
            | IvhdEntry::Special { devid, .. }
            | IvhdEntry::AcpiHid { devid, .. } => devid,
            IvhdEntry::AliasSelect { devid, alias, .. } => devid.max(alias),
            IvhdEntry::Range { last, .. } | IvhdEntry::ExtRange { last, .. } => last,
            IvhdEntry::AliasRange { last, alias, .. } => last.max(alias),
        })
        .max()
        .unwrap_or(0)
        .max(ivhd.iommu_devid)
}
