//! Virtio devices (VIRTIO 1.2, OASIS virtio-v1.2-cs01): the modern PCI transport
//! (§4.1), split virtqueues (§2.7), the network device (§5.1) and the block device (§5.2). The device models are
//! pure: they read guest memory only through `memory::guest`, and what moves frames
//! between two devices (the link) lives in `vm/`. See docs/virtio-net.md and
//! docs/virtio-blk.md.
#![forbid(unsafe_code)]

pub mod blk;
pub mod blk_backend;
pub mod blk_request;
pub mod blk_serve;
#[cfg(test)]
pub mod fake_driver;
pub mod msix_vectors;
pub mod net;
pub mod net_header;
pub mod pci_transport;
pub mod virtqueue;

/// Device status bits, §2.1.
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// Reserved feature bits every device type shares, §6.
pub mod feature {
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
}

/// "No vector" for `config_msix_vector` and `queue_msix_vector`, §4.1.5.1.2.
pub const NO_VECTOR: u16 = 0xFFFF;
