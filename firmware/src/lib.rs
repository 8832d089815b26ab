//! The loader's decisions, kept free of UEFI calls so they run under `cargo test`:
//! which ELF segments to load where, which GOP mode to pick, and how the UEFI memory
//! map condenses into Bulkhead's.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod elf;
pub mod gop;
pub mod memory_map;
