//! The contracts between Bulkhead's separately built pieces: the UEFI loader hands the
//! hypervisor a [`BootInfo`]; guests talk to the hypervisor through the hypercalls in
//! [`hypercall`]. Everything here is `#[repr(C)]`, versioned and free of dependencies so
//! that the loader, the hypervisor, the service VM and the test payloads agree on it.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod boot;
pub mod disk;
pub mod hypercall;
pub mod manifest;
pub mod nv;
pub mod payload;

pub use boot::*;
