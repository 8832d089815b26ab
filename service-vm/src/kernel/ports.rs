//! The link ports: one virtio-net device per connected desktop on the VM's PCI bus, at
//! 00:10.0, 00:11.0, ... in link order (the hypervisor's layout), each driven in
//! batches by [`LinkPort`].

use alloc::vec::Vec;

use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{Command, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};

use super::hal::IdentityHal;
pub use super::link_port::LinkPort;
use super::pci::PortConfigAccess;

/// Every virtio-net function on bus 0, in device order, set up and ready.
pub fn find(root: &mut PciRoot<PortConfigAccess>) -> Vec<LinkPort> {
    let mut ports = Vec::new();
    let found: Vec<_> = root.enumerate_bus(0).collect();
    for (function, info) in found {
        if virtio_device_type(&info) != Some(DeviceType::Network) {
            continue;
        }
        root.set_command(function, Command::MEMORY_SPACE | Command::BUS_MASTER);
        let transport = match PciTransport::new::<IdentityHal, _>(root, function) {
            Ok(t) => t,
            Err(e) => {
                log::warn!(target: "ports", "link port at {function}: {e}; left out");
                continue;
            }
        };
        match LinkPort::new(transport) {
            Ok(port) => {
                log::info!(target: "ports", "link port {} at {function}: MAC {:02x?}", ports.len(), port.mac_address());
                ports.push(port);
            }
            Err(e) => log::warn!(target: "ports", "link port at {function}: {e}; left out"),
        }
    }
    ports
}
