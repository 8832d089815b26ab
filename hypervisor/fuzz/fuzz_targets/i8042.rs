//! The i8042 keyboard controller (ports 0x60/0x64) with host key bytes in between.
//! The harness and its invariants are in `hypervisor::fuzzing::i8042`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::i8042::run(data));
