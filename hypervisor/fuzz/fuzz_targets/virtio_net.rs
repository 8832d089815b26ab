//! Two virtio-net devices joined by a link, with hostile drivers on both sides.
//! The harness and its invariants are in `hypervisor::fuzzing::virtio_net`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypervisor::fuzzing::virtio_net::run(data));
