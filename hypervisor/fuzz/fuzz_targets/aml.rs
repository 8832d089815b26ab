//! The AML interpreter: arbitrary DSDT/SSDT bodies, _PIC and _PRT evaluated, routes asked.
//! The harness and its invariants are in `hypervisor::fuzzing::aml`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::aml::run(data));
