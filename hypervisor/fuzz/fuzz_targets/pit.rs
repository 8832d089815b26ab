//! The 8254 PIT (ports 0x40..0x43, 0x61) with guest time moving and timer checks.
//! The harness and its invariants are in `hypervisor::fuzzing::pit`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::pit::run(data));
