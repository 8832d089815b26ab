//! Frames on random links and the uplink, with random time steps, through the router.
//! The harness and its invariants are in `service_vm::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| service_vm::fuzzing::run(data));
