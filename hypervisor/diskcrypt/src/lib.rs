//! Bulkhead's disk encryption.
//!
//! - [`Xts`]: AES-256-XTS (IEEE 1619-2007) over 512- or 4096-byte sectors, with the
//!   tweak the 128-bit little-endian sector number (dm-crypt `plain64`). It runs on
//!   AES-NI when CPUID says so, else on a constant-time bitsliced software AES.
//! - [`wrap_key`]/[`unwrap_key`]: RFC 3394 AES key wrap of a VM's 512-bit XTS key under
//!   a 256-bit key-encryption key (KEK), with its integrity check.
//! - [`derive_kek`]: the KEK from a passphrase with Argon2id.
//!
//! No RNG here: salts and keys come from the caller (the hypervisor has RDRAND). Key
//! material is wiped when dropped. See docs/disk-encryption.md.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

mod kdf;
mod keywrap;
mod ni;
mod soft;
mod xts;

#[cfg(feature = "alloc")]
pub use kdf::derive_kek;
pub use kdf::{KdfBlock, KdfError, KdfParams, derive_kek_with_memory};
pub use keywrap::{Kek, WRAPPED_KEY_LEN, WrappedKey, WrongPassphrase, unwrap_key, wrap_key};
pub use xts::{Backend, MAX_DATA_UNIT, Xts, XtsError};
