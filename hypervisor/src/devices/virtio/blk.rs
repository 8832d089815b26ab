//! The virtio block device (VIRTIO 1.2 §5.2) on the modern PCI transport: one request
//! queue, capacity in 512-byte sectors, seg_max, size_max and blk_size in its
//! configuration, flush, and read-only disks. Requests are checked by `blk_request`
//! before anything moves and carried out by `blk_serve` against a [`BlockBackend`]
//! the device owns, so a guest reaches its own disk and nothing else. See
//! docs/virtio-blk.md.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::blk_backend::{BlockBackend, SECTOR_SIZE};
use super::blk_request::{QUEUE_SIZE, Reject, SEG_MAX, SIZE_MAX};
use super::feature;
use super::pci_transport::{BAR_INDEX, TransportSpec, VirtioPciTransport};
use super::virtqueue::{DescChain, QueueError, SplitQueue};
use crate::devices::bus::MmioDevice;
use crate::devices::vpci::config_space::{BAR0, BarRegion, VpciError};
use crate::devices::vpci::host_bridge::VirtualPciFunction;
use crate::hw::{AccessSize, MsiMessage};

/// Virtio device type 2 (§5.2; PCI device ID 0x1042) and PCI class "other mass
/// storage controller".
pub const BLK_DEVICE_TYPE: u16 = 2;
const CLASS_MASS_STORAGE_OTHER: u32 = 0x01_80_00;

/// Block feature bits (§5.2.3).
pub mod blk_feature {
    pub const SIZE_MAX: u64 = 1 << 1;
    pub const SEG_MAX: u64 = 1 << 2;
    pub const RO: u64 = 1 << 5;
    pub const BLK_SIZE: u64 = 1 << 6;
    pub const FLUSH: u64 = 1 << 9;
}

/// What every disk offers; read-only disks add VIRTIO_BLK_F_RO. Indirect descriptors
/// are not offered (the split-queue code does not follow them).
pub const BLK_FEATURES: u64 = feature::VERSION_1
    | feature::RING_EVENT_IDX
    | blk_feature::SIZE_MAX
    | blk_feature::SEG_MAX
    | blk_feature::BLK_SIZE
    | blk_feature::FLUSH;

/// The one request queue.
pub const REQUEST_QUEUE: u16 = 0;

/// `struct virtio_blk_config` (§5.2.4) up to and including blk_size: the fields the
/// offered features give meaning to. Later fields (topology, writeback, discard, ...)
/// belong to features not offered and read as zero past the end.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkConfig {
    /// In 512-byte sectors whatever blk_size is (§5.2.4).
    pub capacity: u64,
    pub size_max: u32,
    pub seg_max: u32,
    /// `struct virtio_blk_geometry` (cylinders le16, heads u8, sectors u8), unused.
    pub geometry: u32,
    pub blk_size: u32,
}

const CONFIG_LEN: u16 = 24;
const _: () = assert!(core::mem::size_of::<BlkConfig>() == CONFIG_LEN as usize);
const _: () = assert!(core::mem::offset_of!(BlkConfig, capacity) == 0);
const _: () = assert!(core::mem::offset_of!(BlkConfig, size_max) == 8);
const _: () = assert!(core::mem::offset_of!(BlkConfig, seg_max) == 12);
const _: () = assert!(core::mem::offset_of!(BlkConfig, geometry) == 16);
const _: () = assert!(core::mem::offset_of!(BlkConfig, blk_size) == 20);

impl BlkConfig {
    fn to_bytes(self) -> [u8; CONFIG_LEN as usize] {
        let mut out = [0u8; CONFIG_LEN as usize];
        let fields: [(usize, &[u8]); 5] = [
            (0, &self.capacity.to_le_bytes()),
            (8, &self.size_max.to_le_bytes()),
            (12, &self.seg_max.to_le_bytes()),
            (16, &self.geometry.to_le_bytes()),
            (20, &self.blk_size.to_le_bytes()),
        ];
        for (at, bytes) in fields {
            if let Some(slot) = out.get_mut(at..at.saturating_add(bytes.len())) {
                slot.copy_from_slice(bytes);
            }
        }
        out
    }
}

/// What the device did with the requests it took, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkCounters {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub get_ids: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Requests completed with IOERR.
    pub io_errors: u64,
    /// Requests completed with UNSUPP.
    pub unsupported: u64,
    /// Refused requests with nowhere to put a status (returned with nothing written).
    pub no_status: u64,
    /// Why the last request was refused.
    pub last_reject: Option<Reject>,
}

impl core::fmt::Display for BlkCounters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "reads={} writes={} flushes={} get_id={} bytes_read={} bytes_written={} ioerr={} unsupp={} no_status={}",
            self.reads,
            self.writes,
            self.flushes,
            self.get_ids,
            self.bytes_read,
            self.bytes_written,
            self.io_errors,
            self.unsupported,
            self.no_status
        )
    }
}

/// Bytes the device moves between guest memory and the backend at a time.
pub(super) const CHUNK_BYTES: usize = 64 * 1024;
const _: () = assert!((CHUNK_BYTES as u64).is_multiple_of(SECTOR_SIZE));

/// One virtio-blk PCI function and the disk behind it.
pub struct VirtioBlk {
    pub(super) transport: VirtioPciTransport,
    pub(super) backend: Box<dyn BlockBackend + Send>,
    pub(super) chain: DescChain,
    /// Bounce buffer between guest memory and the backend, [`CHUNK_BYTES`] long.
    pub(super) chunk: Vec<u8>,
    /// The current request's data buffers in host memory, found while checking them.
    pub(super) host: super::blk_serve::HostSegments,
    pub(super) counters: BlkCounters,
    /// The error that put the device in NEEDS_RESET, kept for one log line.
    pub(super) error: Option<QueueError>,
    /// The last [`Self::serve`] stopped at its bound with requests still waiting.
    pub(super) leftover: bool,
}

impl core::fmt::Debug for VirtioBlk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VirtioBlk")
            .field("capacity_sectors", &self.backend.capacity_sectors())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn transport_for(backend: &dyn BlockBackend) -> Result<VirtioPciTransport, VpciError> {
    let read_only = if backend.read_only() { blk_feature::RO } else { 0 };
    let spec = TransportSpec {
        device_type: BLK_DEVICE_TYPE,
        class: CLASS_MASS_STORAGE_OTHER,
        device_features: BLK_FEATURES | read_only,
        num_queues: 1,
        queue_size: QUEUE_SIZE,
        device_config_len: CONFIG_LEN,
    };
    let mut transport = VirtioPciTransport::new(spec)?;
    let config = BlkConfig {
        capacity: backend.capacity_sectors(),
        size_max: SIZE_MAX,
        seg_max: SEG_MAX,
        geometry: 0,
        blk_size: SECTOR_SIZE as u32,
    };
    transport.set_device_config(0, &config.to_bytes());
    Ok(transport)
}

impl VirtioBlk {
    pub fn new(backend: Box<dyn BlockBackend + Send>) -> Result<Self, VpciError> {
        Ok(VirtioBlk {
            transport: transport_for(&*backend)?,
            backend,
            chain: DescChain::default(),
            chunk: alloc::vec![0; CHUNK_BYTES],
            host: Default::default(),
            counters: BlkCounters::default(),
            error: None,
            leftover: false,
        })
    }

    /// As after power-on, with its BAR at `bar`: the transport starts over, the disk
    /// keeps its contents unless it is reset-on-boot (every VM start).
    pub fn power_on(&mut self, bar: u64) -> Result<(), VpciError> {
        self.backend.vm_started();
        self.transport = transport_for(&*self.backend)?;
        let bar_offset = BAR0.wrapping_add(u16::from(BAR_INDEX).wrapping_mul(4));
        self.transport.config_write(bar_offset, AccessSize::Dword, bar as u32);
        self.error = None;
        self.leftover = false;
        Ok(())
    }

    pub fn transport(&self) -> &VirtioPciTransport {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut VirtioPciTransport {
        &mut self.transport
    }

    pub fn backend(&self) -> &dyn BlockBackend {
        &*self.backend
    }

    pub fn counters(&self) -> BlkCounters {
        self.counters
    }

    /// Its VM stopped: the device forgets its queue, so nothing touches the VM's memory
    /// until the next start; the disk is kept.
    pub fn reset_by_host(&mut self) {
        self.transport.reset_by_host();
        self.error = None;
        self.leftover = false;
    }

    /// Whether the last [`Self::serve`] left requests waiting.
    pub fn has_leftover(&self) -> bool {
        self.leftover
    }

    /// The request queue, once the driver enabled it.
    pub fn request_queue(&mut self) -> Option<&mut SplitQueue> {
        self.transport.queue_mut(REQUEST_QUEUE).filter(|q| q.is_live())
    }

    /// The driver broke a ring rule: NEEDS_RESET; `true` (and `error` kept for the log)
    /// the first time until the driver resets the device.
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

    /// Whether the driver rang the doorbell since the last call.
    pub fn take_notified(&mut self) -> bool {
        self.transport.take_notified() != 0
    }

    pub fn take_messages(&mut self, out: &mut Vec<MsiMessage>) {
        self.transport.take_messages(out);
    }

    pub fn intx_asserted(&self) -> bool {
        self.transport.intx_asserted()
    }

    /// Features the driver accepted.
    pub fn negotiated(&self) -> u64 {
        self.transport.negotiated()
    }

    /// The driver finished setting up and nothing failed.
    pub fn is_running(&self) -> bool {
        self.transport.is_running()
    }
}

impl VirtualPciFunction for VirtioBlk {
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
impl MmioDevice for VirtioBlk {
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
mod tests;
