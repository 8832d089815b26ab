//! The guest PCI configuration space through 0xCF8/0xCFC (and 0xCF9) and ECAM.
//! The harness and its invariants are in `hypervisor::fuzzing::pci_host`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::pci_host::run(data));
