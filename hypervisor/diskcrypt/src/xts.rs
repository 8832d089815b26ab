//! AES-256-XTS (IEEE 1619-2007) over whole data units (sectors).
//!
//! The tweak of a data unit is its 128-bit number, little-endian, encrypted with the
//! second key; block j of the unit uses that times x^j in GF(2^128). Data units are a
//! whole number of 16-byte blocks, so no ciphertext stealing is needed.
#![forbid(unsafe_code)]

use crate::ni::{self, Aes256Ni};
use crate::soft::{Aes256Soft, BatchBlocks};
use core::fmt;
use zeroize::Zeroize;

/// The largest data unit IEEE 1619-2007 allows: 2^20 blocks of 16 bytes.
pub const MAX_DATA_UNIT: usize = 16 << 20;

/// Which AES implementation an [`Xts`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The AES-NI instructions (inline assembly, eight blocks in flight).
    AesNi,
    /// Constant-time bitsliced software AES (fixsliced, four blocks at a time).
    Software,
}

impl Backend {
    /// AES-NI if CPUID.1:ECX.AESNI[bit 25] is set, else the software fallback.
    pub fn detect() -> Backend {
        if ni::available() { Backend::AesNi } else { Backend::Software }
    }
}

/// Why an XTS call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XtsError {
    /// The sector size is not a multiple of 16 bytes between 16 bytes and
    /// [`MAX_DATA_UNIT`], or the data is empty or not a whole number of sectors.
    Length,
    /// The two 256-bit halves of the key are equal, which makes the tweak predictable
    /// (NIST SP 800-38E requires refusing such a key).
    EqualKeyHalves,
    /// AES-NI was asked for on a CPU without it.
    NoAesNi,
}

impl fmt::Display for XtsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XtsError::Length => "data is not a whole number of sectors of a multiple of 16 bytes",
            XtsError::EqualKeyHalves => "the two halves of the XTS key are equal",
            XtsError::NoAesNi => "this CPU has no AES-NI",
        })
    }
}

// One `Xts` per VM disk, never moved in a hot path; boxing the larger variant would
// need an allocator.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Ni { data: Aes256Ni, tweak: Aes256Ni },
    Soft { data: Aes256Soft, tweak: Aes256Soft },
}

/// An AES-256-XTS key, expanded for one backend.
pub struct Xts {
    engine: Engine,
}

impl fmt::Debug for Xts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Xts").field("backend", &self.backend()).finish_non_exhaustive()
    }
}

impl Drop for Xts {
    fn drop(&mut self) {
        // The software schedules wipe themselves; the AES-NI ones are plain arrays.
        if let Engine::Ni { data, tweak } = &mut self.engine {
            data.zeroize();
            tweak.zeroize();
        }
    }
}

impl Xts {
    /// Expands a 512-bit XTS key: bytes 0..32 encrypt the data, bytes 32..64 the tweak.
    /// Uses AES-NI when the CPU has it.
    pub fn new(key: &[u8; 64]) -> Result<Xts, XtsError> {
        Xts::with_backend(key, Backend::detect())
    }

    /// As [`Xts::new`] with a chosen backend (tests and benchmarks).
    pub fn with_backend(key: &[u8; 64], backend: Backend) -> Result<Xts, XtsError> {
        let (data_key, tweak_key) = key.split_at(32);
        let data_key: &[u8; 32] = data_key.try_into().map_err(|_| XtsError::Length)?;
        let tweak_key: &[u8; 32] = tweak_key.try_into().map_err(|_| XtsError::Length)?;
        let equal = data_key.iter().zip(tweak_key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if equal {
            return Err(XtsError::EqualKeyHalves);
        }
        let engine = match backend {
            Backend::AesNi if !ni::available() => return Err(XtsError::NoAesNi),
            Backend::AesNi => Engine::Ni { data: Aes256Ni::new(data_key), tweak: Aes256Ni::new(tweak_key) },
            Backend::Software => Engine::Soft { data: Aes256Soft::new(data_key), tweak: Aes256Soft::new(tweak_key) },
        };
        Ok(Xts { engine })
    }

    /// The AES implementation in use.
    pub fn backend(&self) -> Backend {
        match self.engine {
            Engine::Ni { .. } => Backend::AesNi,
            Engine::Soft { .. } => Backend::Software,
        }
    }

    /// Encrypts one sector in place; its size is `data.len()` (512 or 4096 usually).
    pub fn encrypt_sector(&self, sector: u128, data: &mut [u8]) -> Result<(), XtsError> {
        self.encrypt_sectors(sector, data.len(), data)
    }

    /// Decrypts one sector in place.
    pub fn decrypt_sector(&self, sector: u128, data: &mut [u8]) -> Result<(), XtsError> {
        self.decrypt_sectors(sector, data.len(), data)
    }

    /// Encrypts consecutive sectors of `sector_size` bytes in place, the first being
    /// number `first_sector` (numbers wrap at 2^128).
    pub fn encrypt_sectors(&self, first_sector: u128, sector_size: usize, data: &mut [u8]) -> Result<(), XtsError> {
        check_lengths(sector_size, data)?;
        match &self.engine {
            Engine::Ni { data: k1, tweak: k2 } => k1.xts_encrypt(k2, first_sector, sector_size, data),
            Engine::Soft { data: k1, tweak: k2 } => {
                soft_xts(k1, k2, first_sector, sector_size, data, Direction::Encrypt)
            }
        }
        Ok(())
    }

    /// Decrypts consecutive sectors in place; see [`Xts::encrypt_sectors`].
    pub fn decrypt_sectors(&self, first_sector: u128, sector_size: usize, data: &mut [u8]) -> Result<(), XtsError> {
        check_lengths(sector_size, data)?;
        match &self.engine {
            Engine::Ni { data: k1, tweak: k2 } => k1.xts_decrypt(k2, first_sector, sector_size, data),
            Engine::Soft { data: k1, tweak: k2 } => {
                soft_xts(k1, k2, first_sector, sector_size, data, Direction::Decrypt)
            }
        }
        Ok(())
    }
    /// Encrypts consecutive sectors from `src` into `dst` (same length) in one pass:
    /// what [`Xts::encrypt_sectors`] does to a copy of `src`, without the copy.
    pub fn encrypt_sectors_to(
        &self,
        first_sector: u128,
        sector_size: usize,
        src: &[u8],
        dst: &mut [u8],
    ) -> Result<(), XtsError> {
        self.sectors_to(Direction::Encrypt, first_sector, sector_size, src, dst)
    }

    /// Decrypts consecutive sectors from `src` into `dst` (same length) in one pass.
    pub fn decrypt_sectors_to(
        &self,
        first_sector: u128,
        sector_size: usize,
        src: &[u8],
        dst: &mut [u8],
    ) -> Result<(), XtsError> {
        self.sectors_to(Direction::Decrypt, first_sector, sector_size, src, dst)
    }

    fn sectors_to(
        &self,
        dir: Direction,
        first: u128,
        sector_size: usize,
        src: &[u8],
        dst: &mut [u8],
    ) -> Result<(), XtsError> {
        check_lengths(sector_size, src)?;
        if src.len() != dst.len() {
            return Err(XtsError::Length);
        }
        match &self.engine {
            Engine::Ni { data: k1, tweak: k2 } => {
                k1.xts_to(dir == Direction::Encrypt, k2, first, sector_size, src, dst);
            }
            Engine::Soft { data: k1, tweak: k2 } => {
                dst.copy_from_slice(src);
                soft_xts(k1, k2, first, sector_size, dst, dir);
            }
        }
        Ok(())
    }
}

fn check_lengths(sector_size: usize, data: &[u8]) -> Result<(), XtsError> {
    let size_ok = (16..=MAX_DATA_UNIT).contains(&sector_size) && sector_size.is_multiple_of(16);
    if !size_ok || data.is_empty() || !data.len().is_multiple_of(sector_size) {
        return Err(XtsError::Length);
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Encrypt,
    Decrypt,
}

/// Multiplies a tweak by x in GF(2^128), XTS bit order (IEEE 1619 §5.2), without a
/// branch on its value.
fn mul_x(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127).wrapping_neg() & 0x87)
}

/// XTS on the software cipher, four blocks per AES call; the tweaks of up to four
/// sectors are encrypted together too.
fn soft_xts(data_key: &Aes256Soft, tweak_key: &Aes256Soft, first: u128, unit: usize, data: &mut [u8], dir: Direction) {
    let mut batch: BatchBlocks = [[0; 16]; 4];
    for (group, sectors) in data.chunks_mut(4 * unit).enumerate() {
        let mut tweak_blocks: BatchBlocks = [[0; 16]; 4];
        for (i, block) in tweak_blocks.iter_mut().enumerate() {
            *block = first.wrapping_add((group * 4 + i) as u128).to_le_bytes();
        }
        tweak_key.encrypt4(&mut tweak_blocks);
        for (sector, tweak_block) in sectors.chunks_exact_mut(unit).zip(tweak_blocks.iter()) {
            let mut tweak = u128::from_le_bytes(*tweak_block);
            for chunk in sector.chunks_mut(64) {
                let mut tweaks = [0u128; 4];
                for ((block, slot), t) in chunk.chunks_exact(16).zip(batch.iter_mut()).zip(tweaks.iter_mut()) {
                    *t = tweak;
                    tweak = mul_x(tweak);
                    let mut x = [0; 16];
                    x.copy_from_slice(block);
                    *slot = (u128::from_le_bytes(x) ^ *t).to_le_bytes();
                }
                match dir {
                    Direction::Encrypt => data_key.encrypt4(&mut batch),
                    Direction::Decrypt => data_key.decrypt4(&mut batch),
                }
                for ((block, slot), t) in chunk.chunks_exact_mut(16).zip(batch.iter()).zip(tweaks.iter()) {
                    block.copy_from_slice(&(u128::from_le_bytes(*slot) ^ *t).to_le_bytes());
                }
            }
        }
    }
    batch.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_x_shifts_and_reduces() {
        assert_eq!(mul_x(1), 2);
        assert_eq!(mul_x(1 << 63), 1 << 64);
        assert_eq!(mul_x(1 << 127), 0x87);
        assert_eq!(mul_x((1 << 127) | 1), 0x87 ^ 2);
    }

    #[test]
    fn lengths_are_checked() {
        let xts = Xts::with_backend(&core::array::from_fn(|i| i as u8), Backend::Software).unwrap();
        let mut buf = [0u8; 1024];
        assert_eq!(xts.encrypt_sector(0, &mut buf[..15]), Err(XtsError::Length));
        assert_eq!(xts.encrypt_sector(0, &mut buf[..0]), Err(XtsError::Length));
        assert_eq!(xts.encrypt_sector(0, &mut buf[..520]), Err(XtsError::Length));
        assert_eq!(xts.encrypt_sectors(0, 512, &mut buf[..768]), Err(XtsError::Length));
        assert_eq!(xts.encrypt_sectors(0, 0, &mut buf), Err(XtsError::Length));
        assert_eq!(buf, [0u8; 1024], "a refused call must leave the data alone");
        let mut out = [0u8; 1024];
        assert_eq!(xts.encrypt_sectors_to(0, 512, &buf, &mut out[..512]), Err(XtsError::Length));
        assert_eq!(xts.decrypt_sectors_to(0, 512, &buf[..500], &mut out[..500]), Err(XtsError::Length));
        assert_eq!(out, [0u8; 1024], "a refused call must leave the output alone");
        assert_eq!(xts.encrypt_sector(0, &mut buf[..16]), Ok(()));
        assert_eq!(xts.encrypt_sectors(0, 512, &mut buf), Ok(()));
    }

    #[test]
    fn equal_key_halves_are_refused() {
        let key = [7u8; 64];
        assert_eq!(Xts::with_backend(&key, Backend::Software).err(), Some(XtsError::EqualKeyHalves));
    }
}
