//! Bulkhead's virtual disks: each VM's disk is an extent of the data partition, found
//! through a small on-disk table, encrypted with the VM's own key.
//!
//! Everything here is generic over [`BlockDevice`], so the format, the crash
//! consistency and the encryption are tested on the host against RAM; the hypervisor
//! implements the trait for its NVMe driver. The layout, the key hierarchy and the
//! crash-consistency argument are in docs/disk-layout.md.
//!
//! ```text
//! Store::open(dev) -> Opened::Blank            -> Store::format(dev, passphrase, kdf, rng)
//!                   -> Opened::Locked(locked)  -> locked.unlock(passphrase) -> Store
//! store.volume(dev, &VolumeSpec { name, size_bytes, mode, cipher }, rng) -> Volume
//! volume.read / write / flush (dev, sector, buf)
//! volume.read_to / write_from (dev, sector, &mut dyn Buffers): each byte moved once
//! ```
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod buffers;
pub mod device;
// The fuzz targets' harness (hypervisor/fuzz), never in the image.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gpt;
mod io;
mod keys;
mod store;
pub mod table;
mod transfer;
mod volume;

pub use buffers::{Buffers, Slices};
pub use bulkhead_diskcrypt::KdfParams;
pub use device::{BlockDevice, DeviceError, DmaSegment, RamDevice};
pub use keys::Rng;
pub use store::{LockedStore, Opened, Refused, Store, StoreError, VolumeInfo, VolumeSpec};
pub use table::{Cipher, TableError};
pub use volume::{CHUNK_SECTORS, Mode, Volume, VolumeError};
