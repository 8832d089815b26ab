//! An assigned function's filtered configuration space and MSI-X table over a fake host device.
//! The harness and its invariants are in `hypervisor::fuzzing::pci_passthrough`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::pci_passthrough::run(data));
