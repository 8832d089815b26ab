//! Shared hardware vocabulary: the plain types and register constants that host
//! drivers, guest device models and the wiring between them all speak. This is the
//! bottom layer; it imports nothing else of the hypervisor.
#![deny(unsafe_code)]

pub mod access;
pub mod bdf;
pub mod calendar;
pub mod mmio;
pub mod msi;
pub mod msr;
pub mod pci;

pub use access::AccessSize;
pub use bdf::Bdf;
pub use msi::MsiMessage;
