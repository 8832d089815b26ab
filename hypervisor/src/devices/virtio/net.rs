//! The virtio network device (VIRTIO 1.2 §5.1) on the modern PCI transport: one
//! receive and one transmit queue, a MAC address, link status and the MTU in its
//! configuration. Frames carry the 12-byte `virtio_net_hdr` (§5.1.6; with VERSION_1
//! num_buffers is always there). Checksum offload is offered both ways
//! (`net_header`); segmentation offload is not. What moves frames is the link in `vm/`.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::pci_transport::{TransportSpec, VirtioPciTransport};
use super::virtqueue::{QueueError, SplitQueue};
use super::{feature, status};
use crate::devices::bus::MmioDevice;
use crate::devices::vpci::config_space::{BarRegion, VpciError};
use crate::devices::vpci::host_bridge::VirtualPciFunction;
use crate::hw::{AccessSize, MsiMessage};

/// Virtio device type 1 (§5.1) and PCI class "Ethernet controller".
pub const NET_DEVICE_TYPE: u16 = 1;
const CLASS_ETHERNET: u32 = 0x02_00_00;

/// Network feature bits (§5.1.3).
pub mod net_feature {
    pub const CSUM: u64 = 1 << 0;
    pub const GUEST_CSUM: u64 = 1 << 1;
    pub const MTU: u64 = 1 << 3;
    pub const MAC: u64 = 1 << 5;
    pub const STATUS: u64 = 1 << 16;
}

/// What the device offers: checksum offload both ways (see `net_header`), no
/// segmentation offload.
pub const NET_FEATURES: u64 = feature::VERSION_1
    | feature::RING_EVENT_IDX
    | net_feature::CSUM
    | net_feature::GUEST_CSUM
    | net_feature::MAC
    | net_feature::STATUS
    | net_feature::MTU;

pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;

/// `struct virtio_net_hdr` with VERSION_1 (§5.1.6): flags, gso_type, hdr_len,
/// gso_size, csum_start, csum_offset, num_buffers.
pub const NET_HDR_LEN: usize = 12;
/// The largest frame (without the header) the device carries: a 64 KiB IP packet plus
/// an Ethernet header with a VLAN tag, as other virtio-net devices allow.
pub const MAX_FRAME_LEN: u64 = 65550;
pub const DEFAULT_MTU: u16 = 1500;

/// Device configuration (§5.1.4): mac[6], status le16, max_virtqueue_pairs le16, mtu le16.
const CONFIG_MAC: usize = 0;
const CONFIG_STATUS: usize = 6;
const CONFIG_MAX_PAIRS: usize = 8;
const CONFIG_MTU: usize = 10;
const CONFIG_LEN: u16 = 12;
const LINK_UP: u16 = 1;

/// One virtio-net PCI function.
#[derive(Debug)]
pub struct VirtioNet {
    transport: VirtioPciTransport,
    mac: [u8; 6],
    link_up: bool,
    /// The error that put the device in NEEDS_RESET, kept for one log line.
    error: Option<QueueError>,
}

impl VirtioNet {
    pub fn new(mac: [u8; 6], mtu: u16) -> Result<Self, VpciError> {
        let spec = TransportSpec {
            device_type: NET_DEVICE_TYPE,
            class: CLASS_ETHERNET,
            device_features: NET_FEATURES,
            num_queues: 2,
            queue_size: super::virtqueue::MAX_QUEUE_SIZE,
            device_config_len: CONFIG_LEN,
        };
        let mut transport = VirtioPciTransport::new(spec)?;
        transport.set_device_config(CONFIG_MAC, &mac);
        transport.set_device_config(CONFIG_MAX_PAIRS, &1u16.to_le_bytes());
        transport.set_device_config(CONFIG_MTU, &mtu.clamp(68, 65535).to_le_bytes());
        let mut net = VirtioNet { transport, mac, link_up: false, error: None };
        net.set_link_up(true);
        Ok(net)
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn transport(&self) -> &VirtioPciTransport {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut VirtioPciTransport {
        &mut self.transport
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Sets the link status the driver reads (VIRTIO_NET_S_LINK_UP) and tells a running
    /// driver the configuration changed.
    pub fn set_link_up(&mut self, up: bool) {
        if self.link_up == up {
            return;
        }
        self.link_up = up;
        self.transport.set_device_config(CONFIG_STATUS, &u16::from(up).wrapping_mul(LINK_UP).to_le_bytes());
        if self.transport.status() & status::DRIVER_OK != 0 {
            self.transport.signal_config();
        }
    }

    /// Its VM stopped: the device forgets its queues (so nothing touches the VM's memory
    /// any more) until the VM's next start brings it up again.
    pub fn reset_by_host(&mut self) {
        self.transport.reset_by_host();
        self.error = None;
    }

    /// Features the driver accepted.
    pub fn negotiated(&self) -> u64 {
        self.transport.negotiated()
    }

    /// The driver is ready and the link is up: frames may flow.
    pub fn carries_frames(&self) -> bool {
        self.link_up && self.transport.is_running()
    }

    /// The receive queue. The device takes a buffer only when a frame arrives (it
    /// drops rather than waits), so it asks for no doorbells there.
    pub fn rx_queue(&mut self) -> Option<&mut SplitQueue> {
        let q = self.transport.queue_mut(RX_QUEUE).filter(|q| q.is_live())?;
        q.wants_notifications = false;
        Some(q)
    }

    pub fn tx_queue(&mut self) -> Option<&mut SplitQueue> {
        self.transport.queue_mut(TX_QUEUE).filter(|q| q.is_live())
    }

    /// The driver broke a rule: NEEDS_RESET; returns `true` (and keeps `error` for the
    /// log) the first time until the driver resets the device.
    pub fn fail(&mut self, error: QueueError) -> bool {
        let first = self.transport.fail();
        if first {
            self.error = Some(error);
        }
        first
    }

    /// The error that put the device in NEEDS_RESET, once.
    pub fn take_error(&mut self) -> Option<QueueError> {
        self.error.take()
    }

    /// Queues the driver notified since the last call (bit per queue).
    pub fn take_notified(&mut self) -> u32 {
        self.transport.take_notified()
    }

    /// MSI-X messages to deliver to the guest.
    pub fn take_messages(&mut self, out: &mut Vec<MsiMessage>) {
        self.transport.take_messages(out);
    }

    /// Whether its INTx line is asserted (MSI-X off and the ISR not yet read).
    pub fn intx_asserted(&self) -> bool {
        self.transport.intx_asserted()
    }
}

impl VirtualPciFunction for VirtioNet {
    fn config_read(&mut self, offset: u16, size: AccessSize) -> u32 {
        self.transport.config_read(offset, size)
    }
    fn config_write(&mut self, offset: u16, size: AccessSize, value: u32) {
        self.transport.config_write(offset, size, value);
    }
    fn bars(&self) -> Vec<BarRegion> {
        self.transport.bars()
    }
}

/// The BAR, as the VM's MMIO bus reaches it (offsets from the BAR's start).
impl MmioDevice for VirtioNet {
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        self.transport.bar_read(offset, size)
    }
    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        if let Err(e) = self.transport.bar_write(offset, size, value) {
            self.fail(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::pci_transport::BAR_SIZE;

    #[test]
    fn configuration_holds_mac_status_and_mtu() {
        let mut net = VirtioNet::new([0x0a, 0xb3, 0xec, 0, 0, 7], 1500).unwrap();
        let read = |net: &mut VirtioNet, at: u64, size| net.read(0x1000 + at, size);
        assert_eq!(read(&mut net, 0, AccessSize::Dword), 0x00ec_b30a);
        assert_eq!(read(&mut net, 4, AccessSize::Word), 0x0700);
        assert_eq!(read(&mut net, 6, AccessSize::Word), 1, "link up");
        assert_eq!(read(&mut net, 10, AccessSize::Word), 1500);
        let before = net.read(0x15, AccessSize::Byte);
        net.set_link_up(false);
        assert_eq!(read(&mut net, 6, AccessSize::Word), 0);
        assert_ne!(net.read(0x15, AccessSize::Byte), before, "config generation moved");
        assert!(!net.carries_frames());
        assert_eq!(net.bars()[0].size, BAR_SIZE);
    }

    #[test]
    fn a_host_reset_stops_a_running_device() {
        use crate::devices::virtio::fake_driver::{DriverRings, bring_up};
        let mut net = VirtioNet::new([2, 0, 0, 0, 0, 1], 1500).unwrap();
        let (rx, tx) = (DriverRings::new(0x1000, 16), DriverRings::new(0x8000, 16));
        bring_up(&mut net, &[&rx, &tx]);
        assert!(net.carries_frames());
        net.reset_by_host();
        assert!(!net.carries_frames());
        assert!(net.rx_queue().is_none() && net.tx_queue().is_none());
        assert_eq!(net.transport().status(), 0);
    }
}
