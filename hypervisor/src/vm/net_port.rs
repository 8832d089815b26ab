//! A VM's end of a link: its virtio-net PCI function (00:10.0 for its first link,
//! 00:11.0 for the next, ...), the function's BAR at a fixed place at the top of the
//! 32-bit PCI window, and the wire it shares with the other VM. After an exit that
//! rang a doorbell the wire carries frames at once; the scheduler polls again before
//! each VM's turn for what the per-poll bound left over, and delivers each device's
//! MSI-X messages to its VM (waking it from HLT).
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::devices::bus::{BusError, BusRange, MemBus, MmioDevice};
use crate::devices::layout::PCI_MMIO32_END;
use crate::devices::shared::Shared;
use crate::devices::virtio::net::{DEFAULT_MTU, VirtioNet};
use crate::devices::virtio::pci_transport::{BAR_INDEX, BAR_SIZE};
use crate::devices::vpci::config_space::{BAR0, VpciError};
use crate::devices::vpci::host_bridge::{VirtualPciFunction, VpciHost};
use crate::devices::vpci::msi::MsiRoute;
use crate::hw::{AccessSize, Bdf, MsiMessage};
use crate::memory::direct_map::DirectMap;
use crate::memory::guest::{GuestMemory, GuestMemoryMap};
use crate::vm::link::{Link, LinkEnd, LinkPoll};
use crate::vm::passthrough::host_vectors::GuestTarget;
use crate::vm::platform::Platform;

/// The PCI device number of a VM's first link.
pub const FIRST_NET_SLOT: u8 = 0x10;

/// Why a VM's virtio-net function could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetPortError {
    Pci(VpciError),
    Bus(BusError),
    /// The BAR's place does not make a bus range.
    BarPlace(u64),
}

impl core::fmt::Display for NetPortError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetPortError::Pci(e) => write!(f, "virtio-net function: {e:?}"),
            NetPortError::Bus(e) => write!(f, "virtio-net BAR: {e:?}"),
            NetPortError::BarPlace(at) => write!(f, "virtio-net BAR: no room at {at:#x}"),
        }
    }
}

/// A link's wire and the two VMs' memory maps (each VM adds its own when it is built).
#[derive(Debug)]
pub struct LinkWire {
    link: Link,
    maps: [Option<GuestMemoryMap>; 2],
    /// The last poll left frames in a transmit queue.
    more: bool,
}

impl LinkWire {
    pub fn new(link: Link) -> Self {
        LinkWire { link, maps: [None, None], more: false }
    }

    pub fn set_map(&mut self, side: usize, map: GuestMemoryMap) {
        if let Some(slot) = self.maps.get_mut(side) {
            *slot = Some(map);
        }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Carries frames both ways (nothing until both VMs exist).
    pub fn poll(&mut self) -> LinkPoll {
        let [Some(a), Some(b)] = &self.maps else { return LinkPoll::default() };
        let mut mem_a = GuestMemory::new(a, DirectMap);
        let mut mem_b = GuestMemory::new(b, DirectMap);
        let poll = self.link.poll(&mut mem_a, &mut mem_b);
        self.more = poll.more;
        poll
    }
}

/// Creates the wire for a link between VMs with ids `vm_a` and `vm_b`, whose
/// link is the `port_a`-th of VM a and the `port_b`-th of VM b; returns their ports.
/// `b_is_service` trusts b's checksum verdicts (see [`LinkEnd`]).
pub fn connect(
    vm_a: u32,
    port_a: u8,
    vm_b: u32,
    port_b: u8,
    b_is_service: bool,
) -> Result<(NetPort, NetPort), NetPortError> {
    let mac_a = mac(vm_a, port_a);
    let mac_b = mac(vm_b, port_b);
    let dev_a = Shared::new(VirtioNet::new(mac_a, DEFAULT_MTU).map_err(NetPortError::Pci)?);
    let dev_b = Shared::new(VirtioNet::new(mac_b, DEFAULT_MTU).map_err(NetPortError::Pci)?);
    let link = Link::new(
        LinkEnd { device: dev_a.clone(), vm_id: vm_a, vouches_for_checksums: false },
        LinkEnd { device: dev_b.clone(), vm_id: vm_b, vouches_for_checksums: b_is_service },
    );
    let wire = Shared::new(LinkWire::new(link));
    Ok((
        NetPort { device: dev_a, wire: wire.clone(), side: 0, index: port_a, mac: mac_a },
        NetPort { device: dev_b, wire, side: 1, index: port_b, mac: mac_b },
    ))
}

/// A locally administered unicast MAC naming the VM and its port: 0a:b3:ec:00:VM:PORT.
pub fn mac(vm: u32, port: u8) -> [u8; 6] {
    [0x0a, 0xb3, 0xec, 0, vm as u8, port]
}

/// One VM's end of one link.
#[derive(Debug, Clone)]
pub struct NetPort {
    pub device: Shared<VirtioNet>,
    pub wire: Shared<LinkWire>,
    /// Which end of the wire (0 or 1).
    pub side: usize,
    /// The link's number among the VM's links.
    pub index: u8,
    pub mac: [u8; 6],
}

impl NetPort {
    pub fn bdf(&self) -> Bdf {
        Bdf::masked(0, FIRST_NET_SLOT.wrapping_add(self.index), 0)
    }

    /// Where its BAR sits: from the top of the 32-bit window down (assigned devices'
    /// BARs are placed from its bottom up).
    pub fn bar_address(&self) -> u64 {
        PCI_MMIO32_END.saturating_sub(BAR_SIZE.saturating_mul(u64::from(self.index).saturating_add(1)))
    }

    /// On every VM start: the device as after power-on, its BAR placed, the function on
    /// the VM's PCI bus and the BAR on its MMIO bus.
    pub fn attach(&self, pci: &mut VpciHost, mmio: &mut MemBus) -> Result<(), NetPortError> {
        let base = self.bar_address();
        {
            let mut fresh = VirtioNet::new(self.mac, DEFAULT_MTU).map_err(NetPortError::Pci)?;
            fresh.config_write(BAR0.wrapping_add(u16::from(BAR_INDEX).wrapping_mul(4)), AccessSize::Dword, base as u32);
            *self.device.lock() = fresh;
        }
        pci.add_function(self.bdf(), Box::new(self.device.clone())).map_err(NetPortError::Pci)?;
        let range = BusRange::new(base, BAR_SIZE).ok_or(NetPortError::BarPlace(base))?;
        mmio.insert(range, Box::new(NetBar { device: self.device.clone(), base })).map_err(NetPortError::Bus)
    }

    /// Its VM stopped: the device lets go of the VM's rings, so the wire neither reads
    /// nor writes the stopped VM's memory (frames for it are dropped and counted).
    pub fn stop(&self) {
        self.device.lock().reset_by_host();
    }

    /// After an exit: if the driver rang a doorbell (or frames were left over), the
    /// wire carries frames now.
    pub fn after_exit(&self) {
        let notified = self.device.lock().take_notified() != 0;
        let mut wire = self.wire.lock();
        if notified || wire.more {
            wire.poll();
        }
    }

    /// Carries what an earlier poll left over.
    pub fn poll_leftover(&self) {
        let mut wire = self.wire.lock();
        if wire.more {
            wire.poll();
        }
    }

    /// Raises the device's ready MSI-X messages in the VM's local APIC; returns how
    /// many were accepted.
    pub fn deliver(&self, vm: u32, platform: &mut Platform, delivered: &mut u64) -> usize {
        let mut messages: Vec<MsiMessage> = Vec::new();
        let intx = {
            let mut device = self.device.lock();
            device.take_messages(&mut messages);
            device.intx_asserted()
        };
        deliver_messages(&messages, intx, vm, platform, delivered)
    }
}

/// Raises a virtio device's ready MSI-X messages in its VM's local APIC (and wakes a
/// payload-style VM for an asserted INTx line); returns how many were accepted.
pub fn deliver_messages(
    messages: &[MsiMessage],
    intx: bool,
    vm: u32,
    platform: &mut Platform,
    delivered: &mut u64,
) -> usize {
    // Without MSI-X (a driver that does not set it up, as virtio-drivers does not),
    // the asserted line wakes a payload-style VM, which has no I/O APIC and polls
    // its devices after each wake; a desktop's INTx is not wired.
    if intx {
        platform.wake_for_line();
    }
    let mut accepted = 0usize;
    // A message outside the interrupt window (the guest's own mistake) is dropped.
    for route in messages.iter().filter_map(|m| MsiRoute::decode(m.address, m.data)) {
        if platform.deliver_device_interrupt(vm, GuestTarget::Msi(route), delivered) {
            accepted = accepted.saturating_add(1);
        }
    }
    accepted
}

/// The BAR on the VM's MMIO bus, where it was placed. If the guest moves the BAR or
/// turns memory decoding off, the old place reads all-ones and drops writes.
struct NetBar {
    device: Shared<VirtioNet>,
    base: u64,
}

impl NetBar {
    fn decoding(&self, device: &VirtioNet) -> bool {
        device.transport().bar_decoded_at() == Some(self.base)
    }
}

impl MmioDevice for NetBar {
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        let mut device = self.device.lock();
        if self.decoding(&device) { MmioDevice::read(&mut *device, offset, size) } else { size.mask() }
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        let mut device = self.device.lock();
        if self.decoding(&device) {
            MmioDevice::write(&mut *device, offset, size, value);
        }
    }
}
