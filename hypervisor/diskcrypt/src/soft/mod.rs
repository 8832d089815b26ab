//! Constant-time software AES-256: the fixsliced implementation of RustCrypto's `aes`
//! crate 0.9.4 (`src/backends/fixslice/`), copied here and cut down to AES-256 on
//! 64-bit words, four blocks per call.
//!
//! Why a copy: `aes` picks its backend at run time and offers no way to ask for the
//! software one from a single crate (only a global `--cfg aes_backend="soft"`), so on
//! a host with AES-NI its soft code could be neither tested nor measured. On
//! `x86_64-unknown-none` it would be the soft code anyway. The code is fully bitsliced
//! and uses no look-up table, so its timing does not depend on the key or the data.
//!
//! Provenance and licence: adapted by the RustCrypto developers from the C
//! implementation of Alexandre Adomnicai (Nanyang Technological University),
//! "Fixslicing AES-like Ciphers", <https://eprint.iacr.org/2020/1123.pdf>; MIT OR
//! Apache-2.0, Copyright (c) 2018-2024 The RustCrypto Project Developers. Changes
//! here: the `Word` trait keeps only the `u64` implementation and four-block arrays
//! replace `cipher`'s `Array`; the `compact` variant and the other key sizes are gone.
//! The round functions themselves are unchanged.
#![forbid(unsafe_code)]
#![allow(clippy::all)]

mod aes256;
mod mix_columns;
mod sbox;
mod utils;
mod word;

use word::Word;
use zeroize::Zeroize;

type State<W> = [W; 8];

/// Four 16-byte blocks, processed together.
pub(crate) type BatchBlocks = [[u8; 16]; 4];

/// An expanded AES-256 key for the fixsliced cipher (one schedule serves both ways).
#[derive(Clone)]
pub(crate) struct Aes256Soft {
    round_keys: aes256::RoundKeys<u64>,
}

impl Aes256Soft {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Aes256Soft { round_keys: aes256::key_schedule::<u64>(key) }
    }

    /// Encrypts four blocks in place.
    pub(crate) fn encrypt4(&self, blocks: &mut BatchBlocks) {
        *blocks = aes256::encrypt(&self.round_keys, blocks);
    }

    /// Decrypts four blocks in place.
    pub(crate) fn decrypt4(&self, blocks: &mut BatchBlocks) {
        *blocks = aes256::decrypt(&self.round_keys, blocks);
    }
}

impl Drop for Aes256Soft {
    fn drop(&mut self) {
        self.round_keys.zeroize();
    }
}
