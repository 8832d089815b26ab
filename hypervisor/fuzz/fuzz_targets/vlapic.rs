//! The local APIC: xAPIC MMIO page, x2APIC and APIC-base MSRs, timer, interrupt flow.
//! The harness and its invariants are in `hypervisor::fuzzing::vlapic`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::vlapic::run(data));
