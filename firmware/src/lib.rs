//! The loader's decisions, kept free of UEFI calls so they run under `cargo test`:
//! which GOP mode to pick, and how the UEFI memory map condenses into Bulkhead's. ELF
//! validation lives in the shared `elfload` crate.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod gop;
pub mod install;
pub mod memory_map;
