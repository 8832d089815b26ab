//! A virtio-blk device over a memory disk, with a hostile driver.
//! The harness and its invariants are in `hypervisor::fuzzing::virtio_blk`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::virtio_blk::run(data));
