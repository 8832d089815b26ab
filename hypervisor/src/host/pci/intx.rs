//! Which host I/O APIC input each function's INTx pin drives: the firmware's `_PRT`
//! answers for the function's path from its root bus (bridges without a `_PRT`
//! swizzle), see `platform::acpi::aml`.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::host::acpi::aml::IntxRoute;
use crate::host::pci::{PciDevice, PciInventory};

use crate::hw::Bdf;

/// The `_PRT` lookup: (segment, root bus, path of (device, function) from the root
/// bus, pin 1-4) → the route (`PciInterruptRouting::route`).
pub type RouteLookup<'a> = &'a dyn Fn(u16, u8, &[(u8, u8)], u8) -> Option<IntxRoute>;

/// The path from `bdf`'s root bus: the root bus and each hop's (device, function),
/// the function itself last. `None` for a bus no bridge leads to and that is not a
/// root bus, or a bridge loop.
pub fn path_from_root(inventory: &PciInventory, bdf: Bdf) -> Option<(u8, Vec<(u8, u8)>)> {
    let mut path = alloc::vec![(bdf.device, bdf.function)];
    let mut bus = bdf.bus;
    // At most 256 buses deep: more is a loop in what firmware programmed.
    for _ in 0..256 {
        let bridge = inventory
            .devices()
            .iter()
            .find(|d| d.bdf.segment == bdf.segment && d.bridge.is_some_and(|b| b.secondary == bus && b.primary != bus));
        let Some(bridge) = bridge else { return Some((bus, path)) };
        path.insert(0, (bridge.bdf.device, bridge.bdf.function));
        bus = bridge.bdf.bus;
    }
    None
}

/// The host INTx route of every endpoint with an interrupt pin that `lookup` can
/// place; the rest are absent (they get MSI only).
pub fn host_routes(inventory: &PciInventory, lookup: RouteLookup<'_>) -> Vec<(Bdf, IntxRoute)> {
    inventory
        .devices()
        .iter()
        .filter(|d| d.header_type == 0 && (1..=4).contains(&d.interrupt_pin))
        .filter_map(|d| route_of(inventory, d, lookup).map(|r| (d.bdf, r)))
        .collect()
}

fn route_of(inventory: &PciInventory, d: &PciDevice, lookup: RouteLookup<'_>) -> Option<IntxRoute> {
    let (root, path) = path_from_root(inventory, d.bdf)?;
    lookup(d.bdf.segment, root, &path, d.interrupt_pin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::iommu::fake_mem::{pci_bridge, pci_dev, qemu_q35_inventory};

    #[test]
    fn paths_run_from_the_root_bus_through_each_bridge() {
        let inv = qemu_q35_inventory();
        assert_eq!(path_from_root(&inv, Bdf::new(0, 0, 4, 0)), Some((0, alloc::vec![(4, 0)])));
        assert_eq!(path_from_root(&inv, Bdf::new(0, 1, 0, 0)), Some((0, alloc::vec![(3, 0), (0, 0)])));
        // Two bridges deep: root port 00:1c.0 -> switch port 02:00.0 -> 03:00.0.
        let inv = PciInventory::new(
            alloc::vec![pci_bridge(0, 0x1c, 0, 2, 3), pci_bridge(2, 0, 0, 3, 3), pci_dev(3, 0, 0, [0x02, 0x80])],
            true,
        );
        assert_eq!(path_from_root(&inv, Bdf::new(0, 3, 0, 0)), Some((0, alloc::vec![(0x1c, 0), (0, 0), (0, 0)])));
        // A loop in what firmware programmed ends.
        let inv = PciInventory::new(alloc::vec![pci_bridge(5, 0, 0, 6, 6), pci_bridge(6, 0, 0, 5, 5)], true);
        assert_eq!(path_from_root(&inv, Bdf::new(0, 5, 1, 0)), None);
    }

    #[test]
    fn endpoints_with_a_pin_get_the_lookups_answer() {
        let mut inv = qemu_q35_inventory();
        let mut no_pin = pci_dev(0, 5, 0, [0x03, 0x00]);
        no_pin.interrupt_pin = 0;
        let mut devices = inv.devices().to_vec();
        devices.push(no_pin);
        inv = PciInventory::new(devices, true);
        let line = |gsi| IntxRoute { gsi, level_triggered: true, active_low: true };
        let lookup = |seg: u16, root: u8, path: &[(u8, u8)], pin: u8| {
            assert_eq!((seg, root), (0, 0));
            // Slot 4 routed, others not (like a `_PRT` without them).
            (path[0].0 == 4 || path[0].0 == 3).then(|| line(16 + u32::from(path[0].0) + u32::from(pin)))
        };
        let routes = host_routes(&inv, &lookup);
        assert_eq!(
            routes,
            [(Bdf::new(0, 1, 0, 0), line(20)), (Bdf::new(0, 0, 4, 0), line(21)),],
            "bridges and pinless functions left out; 01:00.0 answered through its root port's path"
        );
    }
}
