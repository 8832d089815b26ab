//! RFC 3394 AES key wrap: a VM's 512-bit XTS key sealed under a 256-bit KEK.
//!
//! Key wrap is deterministic and needs no nonce: it is a strong pseudorandom permutation
//! over the whole key, and what it protects is itself uniformly random. Unwrapping checks
//! the 64-bit integrity value (A6A6A6A6A6A6A6A6), so a wrong KEK (wrong passphrase) or
//! an altered wrapped key is refused, except with probability 2^-64. It runs on the
//! constant-time software AES: 48 block operations per key, so speed does not matter,
//! and it never touches the XMM registers.
#![forbid(unsafe_code)]

use crate::soft::{Aes256Soft, BatchBlocks};
use core::fmt;
use zeroize::{Zeroize, Zeroizing};

/// RFC 3394 §2.2.3.1 default initial value.
const IV: [u8; 8] = [0xa6; 8];

/// Size of a wrapped 512-bit key: the integrity block plus eight 64-bit blocks.
pub const WRAPPED_KEY_LEN: usize = 72;

/// A 256-bit key-encryption key, wiped on drop.
pub struct Kek(Zeroizing<[u8; 32]>);

impl Kek {
    /// Takes raw key bytes (from [`crate::derive_kek`], or a platform secret).
    pub fn from_bytes(bytes: [u8; 32]) -> Kek {
        Kek(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(..)")
    }
}

/// A VM's XTS key wrapped under a KEK; safe to store on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey(pub [u8; WRAPPED_KEY_LEN]);

/// Unwrapping failed its integrity check: the KEK (so the passphrase) is wrong, or the
/// wrapped key was altered. Key wrap cannot tell the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongPassphrase;

impl fmt::Display for WrongPassphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wrong passphrase, or the wrapped key was altered")
    }
}

/// Wraps a VM's 512-bit XTS key under `kek`.
pub fn wrap_key(vm_key: &[u8; 64], kek: &Kek) -> WrappedKey {
    let cipher = Aes256Soft::new(kek.as_bytes());
    let mut r = Zeroizing::new([[0u8; 8]; 8]);
    for (block, chunk) in r.iter_mut().zip(vm_key.chunks_exact(8)) {
        block.copy_from_slice(chunk);
    }
    let a = wrap_blocks(&cipher, &mut r[..]);
    let mut out = [0u8; WRAPPED_KEY_LEN];
    out[..8].copy_from_slice(&a);
    for (chunk, block) in out[8..].chunks_exact_mut(8).zip(r.iter()) {
        chunk.copy_from_slice(block);
    }
    WrappedKey(out)
}

/// Unwraps a VM's XTS key; refuses it if the integrity check fails.
pub fn unwrap_key(wrapped: &WrappedKey, kek: &Kek) -> Result<Zeroizing<[u8; 64]>, WrongPassphrase> {
    let cipher = Aes256Soft::new(kek.as_bytes());
    let mut r = Zeroizing::new([[0u8; 8]; 8]);
    for (block, chunk) in r.iter_mut().zip(wrapped.0[8..].chunks_exact(8)) {
        block.copy_from_slice(chunk);
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&wrapped.0[..8]);
    let a = unwrap_blocks(&cipher, a, &mut r[..]);
    // Compare without an early exit.
    if a.iter().zip(IV.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0 {
        return Err(WrongPassphrase);
    }
    let mut key = Zeroizing::new([0u8; 64]);
    for (chunk, block) in key.chunks_exact_mut(8).zip(r.iter()) {
        chunk.copy_from_slice(block);
    }
    Ok(key)
}

/// RFC 3394 §2.2.1 (index form): wraps the 64-bit blocks `r` in place, returns A.
fn wrap_blocks(cipher: &Aes256Soft, r: &mut [[u8; 8]]) -> [u8; 8] {
    let n = r.len() as u64;
    let mut a = IV;
    let mut b: BatchBlocks = [[0; 16]; 4];
    for j in 0..6u64 {
        for (i, ri) in r.iter_mut().enumerate() {
            b[0][..8].copy_from_slice(&a);
            b[0][8..].copy_from_slice(ri);
            cipher.encrypt4(&mut b);
            let t = n * j + i as u64 + 1;
            a.copy_from_slice(&b[0][..8]);
            a = (u64::from_be_bytes(a) ^ t).to_be_bytes();
            ri.copy_from_slice(&b[0][8..]);
        }
    }
    b.zeroize();
    a
}

/// RFC 3394 §2.2.2 (index form): unwraps `r` in place from A, returns the final A.
fn unwrap_blocks(cipher: &Aes256Soft, mut a: [u8; 8], r: &mut [[u8; 8]]) -> [u8; 8] {
    let n = r.len() as u64;
    let mut b: BatchBlocks = [[0; 16]; 4];
    for j in (0..6u64).rev() {
        for (i, ri) in r.iter_mut().enumerate().rev() {
            let t = n * j + i as u64 + 1;
            b[0][..8].copy_from_slice(&(u64::from_be_bytes(a) ^ t).to_be_bytes());
            b[0][8..].copy_from_slice(ri);
            cipher.decrypt4(&mut b);
            a.copy_from_slice(&b[0][..8]);
            ri.copy_from_slice(&b[0][8..]);
        }
    }
    b.zeroize();
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 3394 §4.6: wrap 256 bits of key data with a 256-bit KEK.
    #[test]
    fn rfc3394_vector_4_6() {
        let kek: [u8; 32] = core::array::from_fn(|i| i as u8);
        let cipher = Aes256Soft::new(&kek);
        let data = hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        let mut r: Vec<[u8; 8]> = data.chunks(8).map(|c| c.try_into().unwrap()).collect();
        let a = wrap_blocks(&cipher, &mut r);
        let mut out = a.to_vec();
        r.iter().for_each(|b| out.extend_from_slice(b));
        assert_eq!(out, hex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"));
        let a = unwrap_blocks(&cipher, a, &mut r);
        assert_eq!(a, IV);
        assert_eq!(r.concat(), data);
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let kek = Kek::from_bytes(core::array::from_fn(|i| (i * 7 + 3) as u8));
        let vm_key: [u8; 64] = core::array::from_fn(|i| (i * 13 + 1) as u8);
        let wrapped = wrap_key(&vm_key, &kek);
        assert_ne!(&wrapped.0[8..], &vm_key[..], "the wrapped key must not contain the key in clear");
        assert_eq!(*unwrap_key(&wrapped, &kek).unwrap(), vm_key);
        // Any single flipped bit, anywhere, is caught.
        for byte in 0..WRAPPED_KEY_LEN {
            for bit in 0..8 {
                let mut bad = wrapped.clone();
                bad.0[byte] ^= 1 << bit;
                assert_eq!(unwrap_key(&bad, &kek), Err(WrongPassphrase), "byte {byte} bit {bit}");
            }
        }
        let other = Kek::from_bytes(core::array::from_fn(|i| (i * 7 + 4) as u8));
        assert_eq!(unwrap_key(&wrapped, &other), Err(WrongPassphrase));
    }
}
