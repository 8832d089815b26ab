//! Arbitrary bytes as the virtual disks' volume table (a slot, a slot with a correct
//! checksum, a decrypted entry list, the start of a partition). The harness and its
//! invariants are in `bulkhead_vdisk::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bulkhead_vdisk::fuzzing::run(data);
});
