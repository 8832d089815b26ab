//! The VM's virtio-net device, found on its PCI bus and driven by virtio-drivers with
//! DMA memory from the payload's static arena.

use crate::virtio_pci::{self, ArenaHal};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::PciTransport;

pub type Net = VirtIONetRaw<ArenaHal, PciTransport, 16>;

/// The first virtio-net function on bus 0, set up.
pub fn open() -> Option<Net> {
    Net::new(virtio_pci::open(DeviceType::Network)?).ok()
}
