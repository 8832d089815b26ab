//! The on-disk volume table: one record per slot (A and B), encoded and decoded here.
//!
//! Everything read from the disk may have been written by an attacker, so decoding
//! checks every field and never panics (fuzzed by `hypervisor/fuzz` target
//! `vdisk_table`). Layout and reasons: docs/disk-layout.md.
//!
//! ```text
//! record = header (144 bytes) | entries (count x 144 bytes, encrypted) | mac (32) | checksum (32)
//! ```
//! The checksum (SHA-256 of everything before it) finds torn or stale slots before
//! the passphrase is known; the MAC (HMAC-SHA256 under a key derived from the
//! master key) finds deliberate changes after unlocking.

use alloc::vec::Vec;
use bulkhead_diskcrypt::{KdfParams, WRAPPED_KEY_LEN, WrappedKey};
use core::fmt;
use sha2::{Digest, Sha256};

/// The first bytes of both slots.
pub const MAGIC: [u8; 16] = *b"BULKHEAD-VDISK\0\0";
/// The record format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes per slot; slot A starts at byte 0 of the partition, slot B right after.
pub const SLOT_SIZE: usize = 16 * 1024;
/// The header area (both slots, the rest reserved); the first extent starts here.
pub const HEADER_AREA_MIB: u64 = 1;
/// Extents are whole MiB, aligned to 1 MiB.
pub const MIB: u64 = 1 << 20;
/// The sector of the volumes (and of the XTS tweak).
pub const SECTOR: u64 = 512;
/// At most this many volumes in a table.
pub const MAX_VOLUMES: usize = 64;
/// Volume names are 1..=32 bytes of printable ASCII without spaces.
pub const MAX_NAME: usize = 32;
/// The largest volume: 1 PiB, so that every byte offset fits in a u64 with room.
pub const MAX_VOLUME_MIB: u64 = 1 << 30;
/// Argon2id limits a table may ask for: the KEK is derived from a table read from
/// the disk, and the memory comes from the hypervisor's heap.
pub const MAX_KDF_MEMORY_KIB: u32 = 1 << 20;
pub const MAX_KDF_ITERATIONS: u32 = 64;
pub const MAX_KDF_LANES: u32 = 8;

pub const HEADER_LEN: usize = 144;
pub const ENTRY_LEN: usize = 144;
const MAC_LEN: usize = 32;
const CHECKSUM_LEN: usize = 32;
pub const TRAILER_LEN: usize = MAC_LEN + CHECKSUM_LEN;
/// The longest record: it fits a slot.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_VOLUMES * ENTRY_LEN + TRAILER_LEN;
const _: () = assert!(MAX_RECORD_LEN <= SLOT_SIZE);
const _: () = assert!(ENTRY_LEN.is_multiple_of(16), "entries are XTS data units");

/// Why a slot or an entry list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// The slot does not start with [`MAGIC`]: never written.
    NoMagic,
    /// A record of another format version (a newer Bulkhead wrote it).
    UnsupportedVersion(u32),
    /// The checksum does not match: a torn write or a damaged slot.
    BadChecksum,
    /// A field is out of its allowed range.
    BadField(&'static str),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::NoMagic => f.write_str("no volume table"),
            TableError::UnsupportedVersion(v) => write!(f, "volume table format {v} is not supported"),
            TableError::BadChecksum => f.write_str("volume table checksum mismatch"),
            TableError::BadField(what) => write!(f, "volume table field out of range: {what}"),
        }
    }
}

/// A volume's name: 1..=32 bytes, each printable ASCII other than space.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    len: u8,
    bytes: [u8; MAX_NAME],
}

impl Name {
    pub fn new(name: &str) -> Option<Name> {
        let raw = name.as_bytes();
        let ok = (1..=MAX_NAME).contains(&raw.len()) && raw.iter().all(|b| (0x21..=0x7e).contains(b));
        if !ok {
            return None;
        }
        let mut bytes = [0u8; MAX_NAME];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(Name { len: raw.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII gets in (`new`, `decode_entry`).
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// How a volume's sectors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// In clear: for benchmarks only, and only when asked for by name.
    None,
    /// AES-256-XTS under the volume's own key; the tweak is the 512-byte sector number
    /// within the volume.
    Aes256Xts,
}

/// One volume in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Name,
    pub cipher: Cipher,
    /// Size in MiB; the base extent (and the overlay, if any) are this long.
    pub size_mib: u64,
    /// First MiB of the base extent within the partition.
    pub base_mib: u64,
    /// First MiB of the reset-on-boot overlay extent, if the volume has one.
    pub overlay_mib: Option<u64>,
    /// The volume's XTS key wrapped under the master key (`None` for `Cipher::None`).
    pub wrapped_key: Option<WrappedKey>,
}

impl Entry {
    /// The extents the entry occupies, as (first MiB, MiB).
    pub fn extents(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        core::iter::once((self.base_mib, self.size_mib)).chain(self.overlay_mib.map(|o| (o, self.size_mib)))
    }
}

/// The part of a record readable without the passphrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sequence: u64,
    pub kdf: KdfParams,
    pub salt: [u8; 16],
    pub wrapped_master: WrappedKey,
    pub count: usize,
}

/// A slot whose magic, version, length and checksum are right.
#[derive(Debug)]
pub struct Record<'a> {
    pub header: Header,
    /// Header and encrypted entries: what the MAC covers.
    pub authenticated: &'a [u8],
    /// The encrypted entries.
    pub sealed_entries: &'a [u8],
    pub mac: [u8; 32],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Checks Argon2 parameters against the limits (for the table, and for `format`).
pub fn check_kdf(kdf: &KdfParams) -> Result<(), TableError> {
    if !(1..=MAX_KDF_LANES).contains(&kdf.lanes) {
        return Err(TableError::BadField("kdf lanes"));
    }
    if !(1..=MAX_KDF_ITERATIONS).contains(&kdf.iterations) {
        return Err(TableError::BadField("kdf iterations"));
    }
    if kdf.memory_kib < 8 * kdf.lanes || kdf.memory_kib > MAX_KDF_MEMORY_KIB {
        return Err(TableError::BadField("kdf memory"));
    }
    Ok(())
}

/// Reads a slot: magic, version, length and checksum, then the header fields.
pub fn open_slot(slot: &[u8]) -> Result<Record<'_>, TableError> {
    if slot.len() < HEADER_LEN + TRAILER_LEN || slot[..16] != MAGIC {
        return Err(TableError::NoMagic);
    }
    let version = u32_at(slot, 16);
    if version != FORMAT_VERSION {
        return Err(TableError::UnsupportedVersion(version));
    }
    let len = u32_at(slot, 20) as usize;
    let count = u32_at(slot, 44) as usize;
    if count > MAX_VOLUMES || len != HEADER_LEN + count * ENTRY_LEN + TRAILER_LEN || len > slot.len() {
        return Err(TableError::BadChecksum);
    }
    let (covered, sum) = slot[..len].split_at(len - CHECKSUM_LEN);
    if Sha256::digest(covered).as_slice() != sum {
        return Err(TableError::BadChecksum);
    }
    let kdf = KdfParams { memory_kib: u32_at(slot, 32), iterations: u32_at(slot, 36), lanes: u32_at(slot, 40) };
    check_kdf(&kdf)?;
    if slot[136..HEADER_LEN].iter().any(|&b| b != 0) {
        return Err(TableError::BadField("header reserved bytes"));
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&slot[48..64]);
    let mut wrapped = [0u8; WRAPPED_KEY_LEN];
    wrapped.copy_from_slice(&slot[64..136]);
    let header = Header { sequence: u64_at(slot, 24), kdf, salt, wrapped_master: WrappedKey(wrapped), count };
    let authenticated = &covered[..len - TRAILER_LEN];
    let mut mac = [0u8; 32];
    mac.copy_from_slice(&covered[len - TRAILER_LEN..]);
    Ok(Record { header, authenticated, sealed_entries: &authenticated[HEADER_LEN..], mac })
}

/// Encodes the header; the record is then `header | sealed entries | mac`, and
/// [`seal_record`] appends the checksum.
pub fn encode_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[..16].copy_from_slice(&MAGIC);
    b[16..20].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let len = (HEADER_LEN + h.count * ENTRY_LEN + TRAILER_LEN) as u32;
    b[20..24].copy_from_slice(&len.to_le_bytes());
    b[24..32].copy_from_slice(&h.sequence.to_le_bytes());
    b[32..36].copy_from_slice(&h.kdf.memory_kib.to_le_bytes());
    b[36..40].copy_from_slice(&h.kdf.iterations.to_le_bytes());
    b[40..44].copy_from_slice(&h.kdf.lanes.to_le_bytes());
    b[44..48].copy_from_slice(&(h.count as u32).to_le_bytes());
    b[48..64].copy_from_slice(&h.salt);
    b[64..136].copy_from_slice(&h.wrapped_master.0);
    b
}

/// Appends the checksum over `record` (header, entries and MAC).
pub fn seal_record(record: &mut Vec<u8>) {
    let sum = Sha256::digest(&record[..]);
    record.extend_from_slice(&sum);
}

/// Encodes one entry in clear (it is encrypted before it is stored).
pub fn encode_entry(e: &Entry) -> [u8; ENTRY_LEN] {
    let mut b = [0u8; ENTRY_LEN];
    b[0] = e.name.len;
    b[1] = match e.cipher {
        Cipher::None => 0,
        Cipher::Aes256Xts => 1,
    };
    b[2] = u8::from(e.overlay_mib.is_some());
    b[8..40].copy_from_slice(&e.name.bytes);
    b[40..48].copy_from_slice(&e.size_mib.to_le_bytes());
    b[48..56].copy_from_slice(&e.base_mib.to_le_bytes());
    b[56..64].copy_from_slice(&e.overlay_mib.unwrap_or(0).to_le_bytes());
    if let Some(k) = &e.wrapped_key {
        b[64..136].copy_from_slice(&k.0);
    }
    b
}

/// Decodes one entry, checking each field on its own.
pub fn decode_entry(b: &[u8; ENTRY_LEN]) -> Result<Entry, TableError> {
    let len = usize::from(b[0]);
    if !(1..=MAX_NAME).contains(&len) || b[8 + len..40].iter().any(|&x| x != 0) {
        return Err(TableError::BadField("volume name length"));
    }
    let name = core::str::from_utf8(&b[8..8 + len])
        .ok()
        .and_then(Name::new)
        .ok_or(TableError::BadField("volume name characters"))?;
    let cipher = match b[1] {
        0 => Cipher::None,
        1 => Cipher::Aes256Xts,
        _ => return Err(TableError::BadField("volume cipher")),
    };
    let has_overlay = match b[2] {
        0 => false,
        1 => true,
        _ => return Err(TableError::BadField("volume flags")),
    };
    if b[3..8].iter().chain(&b[136..]).any(|&x| x != 0) {
        return Err(TableError::BadField("entry reserved bytes"));
    }
    let size_mib = u64_at(b, 40);
    if !(1..=MAX_VOLUME_MIB).contains(&size_mib) {
        return Err(TableError::BadField("volume size"));
    }
    let base_mib = u64_at(b, 48);
    let overlay = u64_at(b, 56);
    let overlay_mib = match (has_overlay, overlay) {
        (true, o) => Some(o),
        (false, 0) => None,
        (false, _) => return Err(TableError::BadField("overlay without flag")),
    };
    let key = &b[64..136];
    let wrapped_key = match cipher {
        Cipher::None if key.iter().any(|&x| x != 0) => return Err(TableError::BadField("key for a clear volume")),
        Cipher::None => None,
        Cipher::Aes256Xts => {
            let mut k = [0u8; WRAPPED_KEY_LEN];
            k.copy_from_slice(key);
            Some(WrappedKey(k))
        }
    };
    Ok(Entry { name, cipher, size_mib, base_mib, overlay_mib, wrapped_key })
}

/// Decodes the (decrypted) entries and checks them together: unique names, every
/// extent after the header area and inside a partition of `partition_mib`, no two
/// extents overlapping.
pub fn decode_entries(plain: &[u8], partition_mib: u64) -> Result<Vec<Entry>, TableError> {
    if !plain.len().is_multiple_of(ENTRY_LEN) || plain.len() / ENTRY_LEN > MAX_VOLUMES {
        return Err(TableError::BadField("entry list length"));
    }
    let mut entries = Vec::new();
    for chunk in plain.chunks_exact(ENTRY_LEN) {
        let mut b = [0u8; ENTRY_LEN];
        b.copy_from_slice(chunk);
        entries.push(decode_entry(&b)?);
    }
    check_entries(&entries, partition_mib)?;
    Ok(entries)
}

/// The checks that span entries; also run before every commit.
pub fn check_entries(entries: &[Entry], partition_mib: u64) -> Result<(), TableError> {
    if entries.len() > MAX_VOLUMES {
        return Err(TableError::BadField("too many volumes"));
    }
    for (i, e) in entries.iter().enumerate() {
        if entries[..i].iter().any(|o| o.name == e.name) {
            return Err(TableError::BadField("duplicate volume name"));
        }
    }
    let mut extents: Vec<(u64, u64)> = entries.iter().flat_map(Entry::extents).collect();
    for &(start, len) in &extents {
        let inside = start >= HEADER_AREA_MIB && start.checked_add(len).is_some_and(|end| end <= partition_mib);
        if !inside {
            return Err(TableError::BadField("extent outside the partition"));
        }
    }
    extents.sort_unstable();
    if extents.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return Err(TableError::BadField("overlapping extents"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, base: u64, size: u64, overlay: Option<u64>) -> Entry {
        Entry {
            name: Name::new(name).unwrap(),
            cipher: Cipher::Aes256Xts,
            size_mib: size,
            base_mib: base,
            overlay_mib: overlay,
            wrapped_key: Some(WrappedKey([0x5a; WRAPPED_KEY_LEN])),
        }
    }

    fn record(count: usize) -> Vec<u8> {
        let h = Header {
            sequence: 7,
            kdf: KdfParams::INSECURE_TEST,
            salt: [3; 16],
            wrapped_master: WrappedKey([9; WRAPPED_KEY_LEN]),
            count,
        };
        let mut r = encode_header(&h).to_vec();
        r.resize(HEADER_LEN + count * ENTRY_LEN, 0x11);
        r.extend_from_slice(&[0x22; 32]);
        seal_record(&mut r);
        r
    }

    #[test]
    fn names_are_bounded_printable_ascii() {
        assert!(Name::new("corporate-1").is_some());
        assert!(Name::new(&"x".repeat(32)).is_some());
        assert!(Name::new(&"x".repeat(33)).is_none());
        assert!(Name::new("").is_none());
        assert!(Name::new("two words").is_none());
        assert!(Name::new("caf\u{e9}").is_none());
    }

    #[test]
    fn entries_round_trip() {
        let mut e = entry("personal", 1, 20, Some(21));
        assert_eq!(decode_entry(&encode_entry(&e)), Ok(e.clone()));
        e.cipher = Cipher::None;
        e.wrapped_key = None;
        e.overlay_mib = None;
        assert_eq!(decode_entry(&encode_entry(&e)), Ok(e));
    }

    #[test]
    fn a_record_opens_and_every_flipped_bit_is_refused() {
        let r = record(2);
        let rec = open_slot(&r).unwrap();
        assert_eq!(rec.header.sequence, 7);
        assert_eq!(rec.header.count, 2);
        assert_eq!(rec.sealed_entries, &[0x11; 2 * ENTRY_LEN][..]);
        assert_eq!(rec.mac, [0x22; 32]);
        for byte in 0..r.len() {
            let mut bad = r.clone();
            bad[byte] ^= 0x01;
            assert!(open_slot(&bad).is_err(), "byte {byte}");
        }
    }

    #[test]
    fn slot_classification() {
        assert_eq!(open_slot(&[0u8; SLOT_SIZE]).unwrap_err(), TableError::NoMagic);
        let mut r = record(0);
        r[16] = 2;
        assert_eq!(open_slot(&r).unwrap_err(), TableError::UnsupportedVersion(2));
        let r = record(1);
        assert_eq!(open_slot(&r[..r.len() - 1]).unwrap_err(), TableError::BadChecksum, "truncated");
        // A checksummed record asking Argon2 for more memory than allowed is refused
        // before anything derives a key with it.
        let mut r = record(0);
        r.truncate(r.len() - 32);
        r[32..36].copy_from_slice(&(MAX_KDF_MEMORY_KIB + 1).to_le_bytes());
        seal_record(&mut r);
        assert_eq!(open_slot(&r).unwrap_err(), TableError::BadField("kdf memory"));
    }

    #[test]
    fn extents_are_checked_against_the_partition_and_each_other() {
        let ok = [entry("a", 1, 10, Some(11)), entry("b", 21, 5, None)];
        assert_eq!(check_entries(&ok, 26), Ok(()));
        assert!(check_entries(&ok, 25).is_err(), "past the end");
        assert!(check_entries(&[entry("a", 0, 1, None)], 26).is_err(), "in the header area");
        assert!(check_entries(&[entry("a", 1, 10, Some(10))], 26).is_err(), "overlay overlaps base");
        assert!(check_entries(&[entry("a", 1, 10, None), entry("b", 5, 2, None)], 26).is_err());
        assert!(check_entries(&[entry("a", 1, 1, None), entry("a", 2, 1, None)], 26).is_err(), "same name");
        assert!(check_entries(&[entry("a", u64::MAX, 2, None)], u64::MAX).is_err(), "wraps around");
    }

    #[test]
    fn kdf_limits() {
        assert_eq!(check_kdf(&KdfParams::LAPTOP), Ok(()));
        assert_eq!(check_kdf(&KdfParams::INSECURE_TEST), Ok(()));
        assert!(check_kdf(&KdfParams { memory_kib: MAX_KDF_MEMORY_KIB + 1, ..KdfParams::LAPTOP }).is_err());
        assert!(check_kdf(&KdfParams { lanes: 0, ..KdfParams::LAPTOP }).is_err());
        assert!(check_kdf(&KdfParams { iterations: 0, ..KdfParams::LAPTOP }).is_err());
        assert!(check_kdf(&KdfParams { memory_kib: 8, lanes: 2, iterations: 1 }).is_err());
    }
}
