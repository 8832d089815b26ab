//! The key hierarchy below the passphrase.
//!
//! ```text
//! passphrase --Argon2id(salt, params)--> KEK --RFC 3394 unwrap--> master key (512 bit, random)
//! master --SHA-256("...volume-keys")--> volume KEK --unwrap--> each volume's XTS key
//! master --SHA-512("...table-xts")--> XTS key of the table's entries (names, extents, keys)
//! master --SHA-256("...table-mac")--> HMAC-SHA256 key of the table record
//! ```
//! A passphrase change re-wraps only the master key. Derivation by one hash of a
//! fixed label and the master key is sound because the master key is uniformly
//! random; the labels differ in their first bytes, so no two derivations collide.

use bulkhead_diskcrypt::{Kek, WrappedKey, WrongPassphrase, Xts, XtsError, unwrap_key, wrap_key};
use core::fmt;
use sha2::{Digest, Sha256, Sha512};
use zeroize::{Zeroize, Zeroizing};

const LABEL_VOLUME_KEYS: &[u8] = b"bulkhead-vdisk v1 volume-keys";
const LABEL_TABLE_XTS: &[u8] = b"bulkhead-vdisk v1 table-xts";
const LABEL_TABLE_MAC: &[u8] = b"bulkhead-vdisk v1 table-mac";

/// Fills buffers with random bytes (RDRAND in the hypervisor).
pub type Rng<'a> = &'a mut dyn FnMut(&mut [u8]);

/// A random 512-bit XTS key whose two halves differ (SP 800-38E); a generator that
/// keeps returning equal halves is broken, and gets `None`.
pub fn random_xts_key(rng: Rng<'_>) -> Option<Zeroizing<[u8; 64]>> {
    let mut key = Zeroizing::new([0u8; 64]);
    for _ in 0..4 {
        rng(&mut key[..]);
        if key[..32] != key[32..] {
            return Some(key);
        }
    }
    None
}

/// The unwrapped master key and what is derived from it; wiped on drop.
pub struct MasterKey {
    key: Zeroizing<[u8; 64]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn sha256_labelled(label: &[u8], key: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(label);
    h.update(key);
    let mut digest = h.finalize();
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&digest);
    digest.as_mut_slice().zeroize();
    out
}

impl MasterKey {
    pub fn from_bytes(key: Zeroizing<[u8; 64]>) -> MasterKey {
        MasterKey { key }
    }

    /// Unwraps the stored master key with the passphrase's KEK.
    pub fn unwrap(wrapped: &WrappedKey, kek: &Kek) -> Result<MasterKey, WrongPassphrase> {
        unwrap_key(wrapped, kek).map(MasterKey::from_bytes)
    }

    pub fn wrap(&self, kek: &Kek) -> WrappedKey {
        wrap_key(&self.key, kek)
    }

    /// Whether `other` is the same key (constant time).
    pub fn same_as(&self, other: &MasterKey) -> bool {
        self.key.iter().zip(other.key.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    fn volume_kek(&self) -> Kek {
        Kek::from_bytes(*sha256_labelled(LABEL_VOLUME_KEYS, &self.key[..]))
    }

    pub fn wrap_volume_key(&self, key: &[u8; 64]) -> WrappedKey {
        wrap_key(key, &self.volume_kek())
    }

    /// A volume's XTS key; an error means the table was altered (the table's MAC
    /// should have caught that first).
    pub fn unwrap_volume_key(&self, wrapped: &WrappedKey) -> Result<Zeroizing<[u8; 64]>, WrongPassphrase> {
        unwrap_key(wrapped, &self.volume_kek())
    }

    /// The cipher of the table's entry list.
    pub fn table_xts(&self) -> Result<Xts, XtsError> {
        let mut h = Sha512::new();
        h.update(LABEL_TABLE_XTS);
        h.update(&self.key[..]);
        let mut digest = h.finalize();
        let mut key = Zeroizing::new([0u8; 64]);
        key.copy_from_slice(&digest);
        digest.as_mut_slice().zeroize();
        Xts::new(&key)
    }

    /// HMAC-SHA256 (RFC 2104) of `data` under the table MAC key.
    pub fn table_mac(&self, data: &[u8]) -> [u8; 32] {
        hmac_sha256(&sha256_labelled(LABEL_TABLE_MAC, &self.key[..]), data)
    }
}

/// HMAC-SHA256 with a 32-byte key (RFC 2104; the key is shorter than the block, so
/// it is zero-padded).
pub fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut pad = Zeroizing::new([0u8; 64]);
    pad[..32].copy_from_slice(key);
    pad.iter_mut().for_each(|b| *b ^= 0x36);
    let inner = Sha256::new().chain_update(&pad[..]).chain_update(data).finalize();
    pad.iter_mut().for_each(|b| *b ^= 0x36 ^ 0x5c);
    let outer = Sha256::new().chain_update(&pad[..]).chain_update(inner).finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer);
    out
}

/// Compares two MACs without an early exit.
pub fn mac_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 has a 4-byte key; a 32-byte key needs another source, so
    /// this uses test case 1's shape checked against the RFC 4231 §4.2 output with
    /// its 20-byte key zero-padded to 32 (HMAC pads short keys with zeros anyway).
    #[test]
    fn hmac_matches_rfc4231_case_1() {
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        let mac = hmac_sha256(&key, b"Hi There");
        let want = [
            0xb0, 0x34, 0x4c, 0x61, 0xd8, 0xdb, 0x38, 0x53, 0x5c, 0xa8, 0xaf, 0xce, 0xaf, 0x0b, 0xf1, 0x2b, 0x88, 0x1d,
            0xc2, 0x00, 0xc9, 0x83, 0x3d, 0xa7, 0x26, 0xe9, 0x37, 0x6c, 0x2e, 0x32, 0xcf, 0xf7,
        ];
        assert_eq!(mac, want);
    }

    #[test]
    fn derived_keys_differ_and_depend_on_the_master() {
        let a = MasterKey::from_bytes(Zeroizing::new([1u8; 64]));
        let b = MasterKey::from_bytes(Zeroizing::new([2u8; 64]));
        assert_ne!(a.volume_kek().as_bytes(), b.volume_kek().as_bytes());
        assert_ne!(a.table_mac(b"x"), b.table_mac(b"x"));
        assert_ne!(a.volume_kek().as_bytes()[..], sha256_labelled(LABEL_TABLE_MAC, &a.key[..])[..]);
        let vk = [7u8; 64];
        let mut vk2 = vk;
        vk2[0] = 8;
        let w = a.wrap_volume_key(&vk2);
        assert_eq!(*a.unwrap_volume_key(&w).unwrap(), vk2);
        assert!(b.unwrap_volume_key(&w).is_err());
        assert!(a.same_as(&MasterKey::from_bytes(Zeroizing::new([1u8; 64]))));
        assert!(!a.same_as(&b));
    }

    #[test]
    fn random_keys_have_different_halves_or_none() {
        let mut counter = 0u8;
        let mut rng = |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                counter = counter.wrapping_add(1);
                *b = counter;
            }
        };
        let k = random_xts_key(&mut rng).unwrap();
        assert_ne!(k[..32], k[32..]);
        let mut stuck = |buf: &mut [u8]| buf.fill(0);
        assert!(random_xts_key(&mut stuck).is_none());
    }
}
