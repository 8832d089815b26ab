//! Randomness for disk keys, salts and overlay keys: RDRAND only. A key made from the
//! TSC would be guessable, so without RDRAND no disk store is created (see
//! `disks::prepare`).
#![forbid(unsafe_code)]

use crate::arch::x86::instr::rdrand64;

/// Whether the CPU gives random numbers.
pub fn available() -> bool {
    rdrand64().is_some()
}

/// Fills `buf` from RDRAND. Should RDRAND stop answering after [`available`] said yes
/// (it retries ten times per word), the rest is mixed from the TSC rather than left
/// zero, and the failure is logged.
pub fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let word = rdrand64().unwrap_or_else(|| {
            log::error!(target: "storage", "RDRAND stopped answering: a key is weaker than it should be");
            u64::from_le_bytes(crate::arch::x86::instr::random_128()[..8].try_into().unwrap_or([0; 8]))
        });
        for (slot, byte) in chunk.iter_mut().zip(word.to_le_bytes()) {
            *slot = byte;
        }
    }
}
