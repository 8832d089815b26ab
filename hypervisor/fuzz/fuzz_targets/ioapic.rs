//! The I/O APIC MMIO window and pins, delivering to a local APIC the vCPU serves.
//! The harness and its invariants are in `hypervisor::fuzzing::ioapic`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::ioapic::run(data));
