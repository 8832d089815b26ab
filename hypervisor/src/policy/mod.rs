//! The signed policy on the laptop. The rules that accept or refuse a bundle are in
//! the `bulkhead-policy` crate (pure, host-tested); this module feeds them the
//! laptop's state from UEFI variables, picks the bundle to run at boot, and persists
//! what it accepted.
pub mod at_boot;
pub mod nv;
