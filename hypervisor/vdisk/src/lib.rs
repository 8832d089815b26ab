//! Bulkhead's virtual disks: each VM's disk is an extent of the data partition, found
//! through a small on-disk table, encrypted with the VM's own key.
//!
//! Everything here is generic over [`BlockDevice`], so the format, the crash
//! consistency and the encryption are tested on the host against RAM; the hypervisor
//! implements the trait for its NVMe driver.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod device;
pub mod gpt;

pub use device::{BlockDevice, DeviceError, RamDevice};
