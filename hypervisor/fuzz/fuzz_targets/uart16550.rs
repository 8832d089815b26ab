//! The 16550 UART (COM1) with host serial input in between.
//! The harness and its invariants are in `hypervisor::fuzzing::uart16550`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::uart16550::run(data));
