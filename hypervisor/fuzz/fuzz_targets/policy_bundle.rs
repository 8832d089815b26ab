//! Arbitrary bytes as a policy bundle: the acceptance rules, the decoder and
//! `Config::from_policy`. The harness and its invariants are in
//! `hypervisor::fuzzing::policy`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::policy::run(data));
