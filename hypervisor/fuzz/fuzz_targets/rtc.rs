//! The RTC and CMOS RAM (ports 0x70/0x71) with the guest TSC moving.
//! The harness and its invariants are in `hypervisor::fuzzing::rtc`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::rtc::run(data));
