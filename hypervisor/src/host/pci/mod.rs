//! Host PCI enumeration with `pci_types`: ECAM when the MCFG describes it, else the
//! legacy 0xcf8/0xcfc ports. The result is a plain [`PciInventory`].

pub mod access;
pub mod assign;
mod config_access;
mod enumerate;
#[cfg(test)]
mod fake;
// Test support, also used by the passthrough fuzz harness (`crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
pub(crate) mod fake_cfg;
pub mod intx;
pub mod model;
pub mod reset;
pub mod rom;
#[cfg(test)]
mod tests;

pub use config_access::{ConfigAccess, PciError};

use crate::hw::Bdf;
use alloc::vec::Vec;

pub use enumerate::enumerate;
pub use model::{Bar, BarKind, BridgeBuses, Capability, CapabilityDetail, ExtCapability, PciDevice, Rom, class_name};

use crate::host::acpi::PlatformTables;

/// Every PCI function found, in bus-walk order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciInventory {
    devices: Vec<PciDevice>,
    /// Whether extended config space (and so PCIe extended capabilities) was reachable.
    extended_config: bool,
}

impl PciInventory {
    pub fn new(devices: Vec<PciDevice>, extended_config: bool) -> Self {
        Self { devices, extended_config }
    }
    pub fn devices(&self) -> &[PciDevice] {
        &self.devices
    }
    pub fn find(&self, bdf: Bdf) -> Option<&PciDevice> {
        self.devices.iter().find(|d| d.bdf == bdf)
    }
    pub fn extended_config(&self) -> bool {
        self.extended_config
    }

    /// Logs one line per function (target "pci").
    pub fn log_all(&self) {
        log::info!(
            target: "pci",
            "{} functions ({} config access)",
            self.devices.len(),
            if self.extended_config { "ECAM" } else { "legacy port" }
        );
        for d in &self.devices {
            log::info!(target: "pci", "{}", d.summary());
        }
    }
}

/// Enumerates the host's PCI hierarchy. Must run before any guest can reach PCI
/// devices: BARs are sized with decode briefly disabled.
pub fn scan(tables: &PlatformTables) -> PciInventory {
    let mut devices = Vec::new();
    let mut extended = false;
    for (cs, root_bus) in access::host_config_spaces(tables) {
        extended |= cs.has_extended();
        devices.extend(enumerate(&cs, root_bus));
    }
    PciInventory::new(devices, extended)
}
