//! One link port: a thin virtio-net driver on virtio-drivers' split virtqueue and PCI
//! transport that works in batches. Each main-loop round takes the frames received
//! (up to a bound), gives their buffers back and notifies the device at most once;
//! frames to send are queued and go with one notify per round ([`LinkPort::flush`]);
//! finished transmit buffers are taken back without waiting.
//!
//! EVENT_IDX is not negotiated: virtio-drivers 0.13's `VirtQueue::should_notify`
//! under EVENT_IDX notifies whenever `avail_idx > avail_event` (not the wrap-safe
//! test of VIRTIO 1.2 §2.7.10), so it ignores a device that asks for no more
//! notifications and every buffer given back rang the doorbell. Without it, the
//! device's `VIRTQ_USED_F_NO_NOTIFY` (set on the receive queue by the hypervisor,
//! which takes a receive buffer only when a frame arrives) is honoured exactly.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use virtio_drivers::Error;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

use super::hal::IdentityHal;

/// Receive and transmit queue size; one buffer per descriptor.
pub const QUEUE: usize = 64;
/// Buffer size: the 12-byte header and a 1514-byte frame, rounded up.
const BUFFER: usize = 2048;
/// `struct virtio_net_hdr` with VERSION_1 (VIRTIO 1.2 §5.1.6).
const HDR: usize = 12;
/// `flags`: the transport checksum is known good (VIRTIO 1.2 §5.1.6).
const HDR_F_DATA_VALID: u8 = 2;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;

/// Feature bits (VIRTIO 1.2 §5.1.3, §6): MAC, STATUS, VERSION_1.
const F_MAC: u64 = 1 << 5;
const F_STATUS: u64 = 1 << 16;
const F_VERSION_1: u64 = 1 << 32;
const WANTED: u64 = F_MAC | F_STATUS | F_VERSION_1;

/// What a port counted that the router does not see.
#[derive(Debug, Default, Clone, Copy)]
pub struct PortCounters {
    /// Doorbell writes (each one exit).
    pub notifies: u64,
    /// Frames not sent: every transmit buffer in flight, or too long.
    pub tx_dropped: u64,
}

pub struct LinkPort {
    transport: PciTransport,
    mac: [u8; 6],
    rx: VirtQueue<IdentityHal, QUEUE>,
    tx: VirtQueue<IdentityHal, QUEUE>,
    rx_buffers: Vec<Box<[u8]>>,
    /// Receive buffer index by the token (head descriptor) it was added under.
    rx_by_token: [u16; QUEUE],
    tx_buffers: Vec<Box<[u8]>>,
    tx_free: Vec<u16>,
    /// Transmit buffers the device holds, oldest first: (token, buffer, length).
    tx_in_flight: VecDeque<(u16, u16, u16)>,
    /// Frames queued since the last notify.
    tx_queued: bool,
    /// The device broke the ring rules (a token we never gave): the port stops.
    broken: bool,
    pub counters: PortCounters,
}

impl LinkPort {
    /// Negotiates, sets up both queues, gives the device every receive buffer and
    /// starts the device.
    pub fn new(mut transport: PciTransport) -> Result<Self, Error> {
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = transport.read_device_features();
        if offered & F_VERSION_1 == 0 {
            return Err(Error::Unsupported);
        }
        transport.write_driver_features(offered & WANTED);
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
        if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            transport.set_status(DeviceStatus::FAILED);
            return Err(Error::Unsupported);
        }
        let mut mac = [0u8; 6];
        for (i, byte) in mac.iter_mut().enumerate() {
            *byte = transport.read_config_space::<u8>(i)?;
        }
        let rx = VirtQueue::new(&mut transport, RX_QUEUE, false, false)?;
        let mut tx = VirtQueue::new(&mut transport, TX_QUEUE, false, false)?;
        // Finished transmit buffers are taken back at the start of each round, so
        // their completion need not wake the VM (VIRTQ_AVAIL_F_NO_INTERRUPT).
        tx.set_dev_notify(false);
        let mut port = LinkPort {
            transport,
            mac,
            rx,
            tx,
            rx_buffers: (0..QUEUE).map(|_| vec![0u8; BUFFER].into_boxed_slice()).collect(),
            rx_by_token: [0; QUEUE],
            tx_buffers: (0..QUEUE).map(|_| vec![0u8; BUFFER].into_boxed_slice()).collect(),
            tx_free: (0..QUEUE as u16).rev().collect(),
            tx_in_flight: VecDeque::with_capacity(QUEUE),
            tx_queued: false,
            broken: false,
            counters: PortCounters::default(),
        };
        for i in 0..QUEUE as u16 {
            port.give_rx(i)?;
        }
        port.transport.finish_init();
        port.notify(RX_QUEUE);
        Ok(port)
    }

    pub fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    /// Reads (and so clears) the interrupt status, lowering the port's line.
    pub fn ack_interrupt(&mut self) {
        self.transport.ack_interrupt();
    }

    /// Whether a received frame waits (a read of the used ring, no exit).
    pub fn has_received(&self) -> bool {
        !self.broken && self.rx.can_pop()
    }

    /// Hands up to `budget` received frames (without the header) to `deliver`, gives
    /// their buffers back, and notifies the device once if it asks for it.
    pub fn receive(&mut self, budget: usize, mut deliver: impl FnMut(&[u8])) -> usize {
        let mut got = 0;
        while got < budget && !self.broken {
            let Some(token) = self.rx.peek_used() else { break };
            let Some(&index) = self.rx_by_token.get(usize::from(token)) else {
                self.fail("receive token out of range");
                break;
            };
            let buffer = &mut self.rx_buffers[usize::from(index)];
            // SAFETY: `token` was returned by `add` for exactly this one buffer (see
            // `give_rx`, which records the pair), and the buffer is not touched in between.
            let used = match unsafe { self.rx.pop_used(token, &[], &mut [&mut buffer[..]]) } {
                Ok(len) => len as usize,
                Err(_) => {
                    self.fail("receive token not the next used");
                    break;
                }
            };
            if let Some(frame) = buffer.get(HDR..used.min(BUFFER)) {
                deliver(frame);
            }
            got += 1;
            if self.give_rx(index).is_err() {
                self.fail("receive buffer not given back");
                break;
            }
        }
        if got > 0 && self.rx.should_notify() {
            self.notify(RX_QUEUE);
        }
        got
    }

    /// Queues one frame for sending; it goes with the next [`flush`](Self::flush).
    /// Dropped (and counted) when every transmit buffer is in flight or it is too long.
    /// `checksum_good` sets VIRTIO_NET_HDR_F_DATA_VALID, which the hypervisor passes
    /// on from the service VM's end only.
    pub fn queue(&mut self, frame: &[u8], checksum_good: bool) {
        if self.broken {
            return;
        }
        if frame.len() + HDR > BUFFER {
            self.counters.tx_dropped += 1;
            return;
        }
        if self.tx_free.is_empty() {
            self.reclaim();
        }
        let Some(index) = self.tx_free.pop() else {
            self.counters.tx_dropped += 1;
            return;
        };
        let length = frame.len() + HDR;
        let buffer = &mut self.tx_buffers[usize::from(index)];
        buffer[..HDR].fill(0);
        if checksum_good {
            buffer[0] = HDR_F_DATA_VALID;
        }
        buffer[HDR..length].copy_from_slice(frame);
        // SAFETY: the buffer stays allocated and is not written again until `reclaim`
        // pops this token with the same slice.
        match unsafe { self.tx.add(&[&buffer[..length]], &mut []) } {
            Ok(token) => {
                self.tx_in_flight.push_back((token, index, length as u16));
                self.tx_queued = true;
            }
            Err(_) => {
                self.tx_free.push(index);
                self.counters.tx_dropped += 1;
            }
        }
    }

    /// Rings the transmit doorbell once for everything queued this round.
    pub fn flush(&mut self) {
        if core::mem::take(&mut self.tx_queued) && self.tx.should_notify() {
            self.notify(TX_QUEUE);
        }
    }

    /// Takes back the transmit buffers the device has finished, without waiting.
    pub fn reclaim(&mut self) {
        while !self.broken {
            let Some(token) = self.tx.peek_used() else { break };
            let Some(at) = self.tx_in_flight.iter().position(|&(t, _, _)| t == token) else {
                self.fail("transmit token not in flight");
                break;
            };
            let (_, index, length) = self.tx_in_flight[at];
            let buffer = &self.tx_buffers[usize::from(index)];
            // SAFETY: the token was returned by `add` for this buffer slice (recorded
            // in `tx_in_flight` by `queue`).
            if unsafe { self.tx.pop_used(token, &[&buffer[..usize::from(length)]], &mut []) }.is_err() {
                self.fail("transmit token not the next used");
                break;
            }
            self.tx_in_flight.remove(at);
            self.tx_free.push(index);
        }
    }

    fn give_rx(&mut self, index: u16) -> Result<(), Error> {
        let buffer = &mut self.rx_buffers[usize::from(index)];
        // SAFETY: the buffer is owned by the port, never moved or freed while the
        // device may hold it, and read only after `pop_used` returned its token.
        let token = unsafe { self.rx.add(&[], &mut [&mut buffer[..]])? };
        let slot = self.rx_by_token.get_mut(usize::from(token)).ok_or(Error::WrongToken)?;
        *slot = index;
        Ok(())
    }

    fn notify(&mut self, queue: u16) {
        self.counters.notifies += 1;
        self.transport.notify(queue);
    }

    fn fail(&mut self, why: &str) {
        if !self.broken {
            self.broken = true;
            log::warn!(target: "ports", "link port {:02x?}: {why}; port stopped", self.mac);
            self.transport.set_status(DeviceStatus::FAILED);
        }
    }
}

impl Drop for LinkPort {
    fn drop(&mut self) {
        // The device lets go of the rings before their memory is freed.
        self.transport.set_status(DeviceStatus::empty());
    }
}
