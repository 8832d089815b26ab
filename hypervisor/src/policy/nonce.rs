//! Check-in nonces: 16 bytes from RDRAND when the CPU has it, always mixed with the
//! TSC and a counter, so two check-ins never share one even without RDRAND (they are
//! then guessable, which lets a replayed answer through only if the attacker also
//! holds an answer the server signed for that guess).
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::x86::instr::{rdrand64, rdtsc};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Two 64-bit halves from the given sources: each half mixes its own RDRAND value with
/// the TSC and the counter.
pub fn combine(random: [Option<u64>; 2], tsc: u64, count: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, (half, r)) in out.chunks_exact_mut(8).zip(random).enumerate() {
        let salt = mix(tsc ^ mix(count.wrapping_add(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        half.copy_from_slice(&(r.map_or(salt, |r| r ^ salt)).to_le_bytes());
    }
    out
}

/// A fresh nonce.
pub fn fresh() -> [u8; 16] {
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    combine([rdrand64(), rdrand64()], rdtsc(), count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_rdrand_the_counter_still_makes_each_nonce_different() {
        let a = combine([None, None], 1000, 0);
        let b = combine([None, None], 1000, 1);
        assert_ne!(a, b);
        assert_ne!(a[..8], a[8..]);
    }

    #[test]
    fn rdrand_values_change_the_nonce() {
        assert_ne!(combine([Some(1), Some(2)], 5, 0), combine([Some(3), Some(2)], 5, 0));
        assert_ne!(fresh(), fresh());
    }
}
