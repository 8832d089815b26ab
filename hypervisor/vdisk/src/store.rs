//! The volume store on the data partition: opening and unlocking the table, changing
//! the passphrase, and finding or allocating each VM's volume.
//!
//! Every change is a commit: the whole table, with the sequence number plus one, is
//! written to the slot that is not the current one, then the drive is flushed. A
//! power cut before the flush completes leaves the current slot as it was (the other
//! one is torn or stale, and loses on its checksum or its sequence number); after,
//! the new slot wins. Data is never written before the table that owns its extent
//! is durable, and an extent is freed only by a commit.

use crate::device::{BlockDevice, DeviceError};
use crate::io::{read_at, write_at};
use crate::keys::{MasterKey, Rng, mac_eq, random_xts_key};
use crate::table::{
    self, Cipher, ENTRY_LEN, Entry, HEADER_AREA_MIB, Header, MAX_VOLUME_MIB, MAX_VOLUMES, MIB, Name, SECTOR, SLOT_SIZE,
    TableError,
};
use crate::volume::{Mode, Volume, VolumeError};
use alloc::vec;
use alloc::vec::Vec;
use bulkhead_diskcrypt::{KdfError, KdfParams, Xts, derive_kek};
use core::fmt;
use zeroize::{Zeroize, Zeroizing};

/// Why the store refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    Device(DeviceError),
    /// The block size is not a power of two from 512 to 16384, or the partition is
    /// smaller than 2 MiB.
    Geometry,
    /// A slot holds a table, but neither slot verifies (or, after unlocking, the
    /// table's contents are invalid).
    Corrupt(TableError),
    /// A slot holds a table of a newer format; this code neither reads nor overwrites it.
    UnsupportedVersion(u32),
    /// `format` on a partition that already holds a table.
    NotBlank,
    /// Argon2 parameters outside the limits of `table::check_kdf`.
    KdfParams,
    Kdf(KdfError),
    WrongPassphrase,
    /// The table's MAC or a volume key's integrity check failed: the table was altered.
    Tampered,
    /// The random generator returned the same bytes again and again.
    Rng,
    /// Not 1..=32 bytes of printable ASCII without spaces.
    InvalidName,
    /// Not a whole, non-zero number of MiB up to 1 PiB.
    InvalidSize,
    /// The configured size differs from the volume's; resizing is refused so that no
    /// data is lost.
    SizeMismatch {
        on_disk_mib: u64,
        configured_mib: u64,
    },
    /// The configured cipher differs from the volume's.
    CipherMismatch {
        on_disk: Cipher,
        configured: Cipher,
    },
    /// A read-only volume that does not exist (there is nothing to read).
    NoSuchVolume,
    TooManyVolumes,
    /// No free run of the partition is large enough.
    NoSpace,
    /// No memory for the volume's overlay bitmap.
    Volume(VolumeError),
}

impl From<DeviceError> for StoreError {
    fn from(e: DeviceError) -> Self {
        StoreError::Device(e)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Device(e) => write!(f, "device: {e}"),
            StoreError::Geometry => f.write_str("unsupported block size, or the partition is under 2 MiB"),
            StoreError::Corrupt(e) => write!(f, "the volume table is damaged: {e}"),
            StoreError::UnsupportedVersion(v) => write!(f, "the volume table has format {v}, newer than this Bulkhead"),
            StoreError::NotBlank => f.write_str("the partition already holds a volume table"),
            StoreError::KdfParams => f.write_str("Argon2 parameters out of range"),
            StoreError::Kdf(e) => write!(f, "{e}"),
            StoreError::WrongPassphrase => f.write_str("wrong passphrase"),
            StoreError::Tampered => f.write_str("the volume table was altered"),
            StoreError::Rng => f.write_str("the random generator keeps returning the same bytes"),
            StoreError::InvalidName => f.write_str("volume names are 1 to 32 printable ASCII characters, no spaces"),
            StoreError::InvalidSize => f.write_str("volume sizes are a whole number of MiB, at most 1 PiB"),
            StoreError::SizeMismatch { on_disk_mib, configured_mib } => write!(
                f,
                "the volume has {on_disk_mib} MiB but the configuration says {configured_mib} MiB; \
                 resizing is not supported (no data was changed)"
            ),
            StoreError::CipherMismatch { on_disk, configured } => {
                write!(f, "the volume is stored as {on_disk:?} but the configuration says {configured:?}")
            }
            StoreError::NoSuchVolume => f.write_str("a read-only volume that does not exist"),
            StoreError::TooManyVolumes => write!(f, "at most {MAX_VOLUMES} volumes"),
            StoreError::NoSpace => f.write_str("no free space large enough on the data partition"),
            StoreError::Volume(e) => write!(f, "{e}"),
        }
    }
}

/// Why an unlock failed; the locked store comes back for another try.
#[derive(Debug)]
pub struct Refused {
    pub store: LockedStore,
    pub error: StoreError,
}

/// What `Store::open` found.
#[derive(Debug)]
pub enum Opened {
    /// No table in either slot: `Store::format` may create one.
    Blank,
    Locked(LockedStore),
}

/// The partition's block size and size in whole MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    block_size: u32,
    partition_mib: u64,
}

impl Geometry {
    fn of(dev: &dyn BlockDevice) -> Result<Geometry, StoreError> {
        let bs = dev.block_size();
        if !bs.is_power_of_two() || !(512..=SLOT_SIZE as u32).contains(&bs) {
            return Err(StoreError::Geometry);
        }
        let bytes = dev.blocks().checked_mul(u64::from(bs)).ok_or(StoreError::Geometry)?;
        let partition_mib = bytes / MIB;
        if partition_mib <= HEADER_AREA_MIB {
            return Err(StoreError::Geometry);
        }
        Ok(Geometry { block_size: bs, partition_mib })
    }
}

/// Reads both slots; slot A is index 0.
fn read_slots(dev: &mut dyn BlockDevice) -> Result<[Vec<u8>; 2], StoreError> {
    let mut slots = [vec![0u8; SLOT_SIZE], vec![0u8; SLOT_SIZE]];
    for (i, s) in slots.iter_mut().enumerate() {
        read_at(dev, (i * SLOT_SIZE) as u64, s)?;
    }
    Ok(slots)
}

/// The XTS tweak of entry `index` in the table with sequence number `sequence`: each
/// table version enciphers its entries under tweaks of its own.
fn entry_tweak(sequence: u64, index: usize) -> u128 {
    (u128::from(sequence) << 64) | index as u128
}

/// A table found on the partition, before the passphrase.
pub struct LockedStore {
    geometry: Geometry,
    active: usize,
    header: Header,
    /// The header and the encrypted entries, as the MAC covers them.
    authenticated: Vec<u8>,
    mac: [u8; 32],
}

impl fmt::Debug for LockedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedStore")
            .field("slot", &self.active)
            .field("sequence", &self.header.sequence)
            .field("kdf", &self.header.kdf)
            .finish_non_exhaustive()
    }
}

impl LockedStore {
    /// The Argon2 cost the unlock will pay (memory comes from the global allocator).
    pub fn kdf_params(&self) -> KdfParams {
        self.header.kdf
    }

    /// Derives the KEK from the passphrase, unwraps the master key, checks the table's
    /// MAC and decrypts its entries.
    // Called once per boot; handing the store back by value keeps a retry simple.
    #[allow(clippy::result_large_err)]
    pub fn unlock(self, passphrase: &[u8]) -> Result<Store, Refused> {
        match self.try_unlock(passphrase) {
            Ok(store) => Ok(store),
            Err(error) => Err(Refused { store: self, error }),
        }
    }

    fn try_unlock(&self, passphrase: &[u8]) -> Result<Store, StoreError> {
        let h = &self.header;
        let kek = derive_kek(passphrase, &h.salt, &h.kdf).map_err(StoreError::Kdf)?;
        let master = MasterKey::unwrap(&h.wrapped_master, &kek).map_err(|_| StoreError::WrongPassphrase)?;
        if !mac_eq(&master.table_mac(&self.authenticated), &self.mac) {
            return Err(StoreError::Tampered);
        }
        let xts = master.table_xts().map_err(|_| StoreError::Tampered)?;
        let mut plain = Zeroizing::new(self.authenticated[table::HEADER_LEN..].to_vec());
        for (i, unit) in plain.chunks_exact_mut(ENTRY_LEN).enumerate() {
            xts.decrypt_sector(entry_tweak(h.sequence, i), unit).map_err(|_| StoreError::Tampered)?;
        }
        let entries = table::decode_entries(&plain, self.geometry.partition_mib).map_err(StoreError::Corrupt)?;
        Ok(Store { geometry: self.geometry, active: self.active, header: h.clone(), master, entries })
    }
}

/// A volume as the table lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeInfo<'a> {
    pub name: &'a str,
    pub size_bytes: u64,
    pub cipher: Cipher,
    /// Whether it has a reset-on-boot overlay extent.
    pub overlay: bool,
}

/// What a VM's configuration says about its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSpec<'a> {
    pub name: &'a str,
    /// A whole number of MiB.
    pub size_bytes: u64,
    pub mode: Mode,
    /// `Cipher::None` only for benchmarks; it must be asked for explicitly.
    pub cipher: Cipher,
}

/// An unlocked store: the master key is in RAM (wiped on drop).
pub struct Store {
    geometry: Geometry,
    /// The slot holding the current table (0 = A, 1 = B).
    active: usize,
    header: Header,
    master: MasterKey,
    entries: Vec<Entry>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("slot", &self.active)
            .field("sequence", &self.header.sequence)
            .field("volumes", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Reads the table. The newest slot whose checksum verifies wins.
    pub fn open(dev: &mut dyn BlockDevice) -> Result<Opened, StoreError> {
        let geometry = Geometry::of(dev)?;
        let slots = read_slots(dev)?;
        let mut best: Option<(usize, table::Record<'_>)> = None;
        let mut damaged = None;
        for (i, slot) in slots.iter().enumerate() {
            match table::open_slot(slot) {
                Ok(rec) => {
                    if best.as_ref().is_none_or(|(_, b)| rec.header.sequence > b.header.sequence) {
                        best = Some((i, rec));
                    }
                }
                // Never fall back past a newer format: its data may be anywhere.
                Err(TableError::UnsupportedVersion(v)) => return Err(StoreError::UnsupportedVersion(v)),
                Err(TableError::NoMagic) => {}
                Err(e) => damaged = Some(e),
            }
        }
        match (best, damaged) {
            (Some((active, rec)), _) => Ok(Opened::Locked(LockedStore {
                geometry,
                active,
                header: rec.header,
                authenticated: rec.authenticated.to_vec(),
                mac: rec.mac,
            })),
            (None, Some(e)) => Err(StoreError::Corrupt(e)),
            (None, None) => Ok(Opened::Blank),
        }
    }

    /// Creates an empty table on a blank partition, under a new random master key
    /// wrapped by the passphrase's KEK.
    pub fn format(
        dev: &mut dyn BlockDevice,
        passphrase: &[u8],
        kdf: KdfParams,
        rng: Rng<'_>,
    ) -> Result<Store, StoreError> {
        let geometry = Geometry::of(dev)?;
        table::check_kdf(&kdf).map_err(|_| StoreError::KdfParams)?;
        if read_slots(dev)?.iter().any(|s| s[..16] == table::MAGIC) {
            return Err(StoreError::NotBlank);
        }
        let master = MasterKey::from_bytes(random_xts_key(&mut *rng).ok_or(StoreError::Rng)?);
        let mut salt = [0u8; 16];
        rng(&mut salt);
        let kek = derive_kek(passphrase, &salt, &kdf).map_err(StoreError::Kdf)?;
        let header = Header { sequence: 0, kdf, salt, wrapped_master: master.wrap(&kek), count: 0 };
        // Pretend slot B is current, so that the first commit writes slot A.
        let mut store = Store { geometry, active: 1, header: header.clone(), master, entries: Vec::new() };
        store.commit(dev, header, Vec::new())?;
        Ok(store)
    }

    /// Destroys both table slots: every volume becomes unreadable (the keys are gone),
    /// and the partition is blank again.
    pub fn erase(dev: &mut dyn BlockDevice) -> Result<(), StoreError> {
        Geometry::of(dev)?;
        write_at(dev, 0, &vec![0u8; 2 * SLOT_SIZE])?;
        Ok(dev.flush()?)
    }

    /// The volumes in the table.
    pub fn volumes(&self) -> impl Iterator<Item = VolumeInfo<'_>> {
        self.entries.iter().map(|e| VolumeInfo {
            name: e.name.as_str(),
            size_bytes: e.size_mib * MIB,
            cipher: e.cipher,
            overlay: e.overlay_mib.is_some(),
        })
    }

    /// MiB not used by any extent or the header area.
    pub fn free_mib(&self) -> u64 {
        let used: u64 = self.entries.iter().flat_map(Entry::extents).map(|(_, len)| len).sum();
        self.geometry.partition_mib - HEADER_AREA_MIB - used
    }

    /// Writes a new table version into the other slot and flushes. The in-RAM state
    /// changes only once the flush has completed.
    fn commit(&mut self, dev: &mut dyn BlockDevice, mut header: Header, entries: Vec<Entry>) -> Result<(), StoreError> {
        table::check_entries(&entries, self.geometry.partition_mib).map_err(StoreError::Corrupt)?;
        if Geometry::of(dev)? != self.geometry {
            return Err(StoreError::Geometry);
        }
        header.sequence =
            self.header.sequence.checked_add(1).ok_or(StoreError::Corrupt(TableError::BadField("sequence")))?;
        header.count = entries.len();
        let xts = self.master.table_xts().map_err(|_| StoreError::Rng)?;
        let mut record = table::encode_header(&header).to_vec();
        for (i, e) in entries.iter().enumerate() {
            let mut unit = table::encode_entry(e);
            xts.encrypt_sector(entry_tweak(header.sequence, i), &mut unit).map_err(|_| StoreError::Rng)?;
            record.extend_from_slice(&unit);
            unit.zeroize();
        }
        let mac = self.master.table_mac(&record);
        record.extend_from_slice(&mac);
        table::seal_record(&mut record);
        let bs = self.geometry.block_size as usize;
        record.resize(record.len().div_ceil(bs) * bs, 0);
        // One block per write: a drive may tear a multi-block write anywhere.
        let target = 1 - self.active;
        let first = (target * SLOT_SIZE / bs) as u64;
        for (i, block) in record.chunks_exact(bs).enumerate() {
            dev.write(first + i as u64, block)?;
        }
        dev.flush()?;
        self.active = target;
        self.header = header;
        self.entries = entries;
        Ok(())
    }

    /// Re-wraps the master key under a KEK from the new passphrase (new salt, and
    /// `kdf` as the new cost). The volumes' keys and data are unchanged.
    pub fn change_passphrase(
        &mut self,
        dev: &mut dyn BlockDevice,
        old: &[u8],
        new: &[u8],
        kdf: KdfParams,
        rng: Rng<'_>,
    ) -> Result<(), StoreError> {
        table::check_kdf(&kdf).map_err(|_| StoreError::KdfParams)?;
        let h = &self.header;
        let old_kek = derive_kek(old, &h.salt, &h.kdf).map_err(StoreError::Kdf)?;
        let current = MasterKey::unwrap(&h.wrapped_master, &old_kek).map_err(|_| StoreError::WrongPassphrase)?;
        if !current.same_as(&self.master) {
            return Err(StoreError::WrongPassphrase);
        }
        let mut salt = [0u8; 16];
        rng(&mut salt);
        let kek = derive_kek(new, &salt, &kdf).map_err(StoreError::Kdf)?;
        let header = Header { kdf, salt, wrapped_master: self.master.wrap(&kek), ..self.header.clone() };
        self.commit(dev, header, self.entries.clone())
    }

    /// Deletes a volume from the table; its extents become free and, its key being
    /// gone, its data unreadable. The caller must have dropped any `Volume` for it.
    pub fn remove(&mut self, dev: &mut dyn BlockDevice, name: &str) -> Result<(), StoreError> {
        let name = Name::new(name).ok_or(StoreError::InvalidName)?;
        let mut entries = self.entries.clone();
        let before = entries.len();
        entries.retain(|e| e.name != name);
        if entries.len() == before {
            return Err(StoreError::NoSuchVolume);
        }
        self.commit(dev, self.header.clone(), entries)
    }

    /// The VM's volume: found in the table, or allocated and committed first. A
    /// reset-on-boot volume gets an overlay extent (committed) and a fresh overlay
    /// key; opening it in another mode frees the overlay. At most one `Volume` per
    /// name may be in use at a time.
    pub fn volume(
        &mut self,
        dev: &mut dyn BlockDevice,
        spec: &VolumeSpec<'_>,
        rng: Rng<'_>,
    ) -> Result<Volume, StoreError> {
        let name = Name::new(spec.name).ok_or(StoreError::InvalidName)?;
        let size_ok = spec.size_bytes.is_multiple_of(MIB) && (1..=MAX_VOLUME_MIB).contains(&(spec.size_bytes / MIB));
        if !size_ok {
            return Err(StoreError::InvalidSize);
        }
        let size_mib = spec.size_bytes / MIB;
        let wants_overlay = spec.mode == Mode::ResetOnBoot;
        let mut entries = self.entries.clone();
        let index = match entries.iter().position(|e| e.name == name) {
            Some(i) => {
                let e = &entries[i];
                if e.size_mib != size_mib {
                    return Err(StoreError::SizeMismatch { on_disk_mib: e.size_mib, configured_mib: size_mib });
                }
                if e.cipher != spec.cipher {
                    return Err(StoreError::CipherMismatch { on_disk: e.cipher, configured: spec.cipher });
                }
                i
            }
            None if spec.mode == Mode::ReadOnly => return Err(StoreError::NoSuchVolume),
            None if entries.len() >= MAX_VOLUMES => return Err(StoreError::TooManyVolumes),
            None => {
                let base_mib = allocate(&entries, self.geometry.partition_mib, size_mib).ok_or(StoreError::NoSpace)?;
                let wrapped_key = match spec.cipher {
                    Cipher::None => None,
                    Cipher::Aes256Xts => {
                        let key = random_xts_key(&mut *rng).ok_or(StoreError::Rng)?;
                        Some(self.master.wrap_volume_key(&key))
                    }
                };
                entries.push(Entry { name, cipher: spec.cipher, size_mib, base_mib, overlay_mib: None, wrapped_key });
                entries.len() - 1
            }
        };
        if wants_overlay && entries[index].overlay_mib.is_none() {
            let start = allocate(&entries, self.geometry.partition_mib, size_mib).ok_or(StoreError::NoSpace)?;
            entries[index].overlay_mib = Some(start);
        } else if !wants_overlay {
            entries[index].overlay_mib = None;
        }
        if entries != self.entries {
            self.commit(dev, self.header.clone(), entries)?;
        }
        let e = &self.entries[index];
        let xts = match &e.wrapped_key {
            None => None,
            Some(w) => {
                let key = self.master.unwrap_volume_key(w).map_err(|_| StoreError::Tampered)?;
                Some(Xts::new(&key).map_err(|_| StoreError::Tampered)?)
            }
        };
        let sectors = e.size_mib * MIB / SECTOR;
        let base = (e.base_mib * MIB, xts);
        let overlay = e.overlay_mib.map(|o| o * MIB);
        Volume::new(e.name, spec.mode, sectors, self.geometry.block_size, base, overlay, rng)
            .map_err(StoreError::Volume)
    }
}

/// First fit: the lowest free run of `len` MiB after the header area.
fn allocate(entries: &[Entry], partition_mib: u64, len: u64) -> Option<u64> {
    let mut used: Vec<(u64, u64)> = entries.iter().flat_map(Entry::extents).collect();
    used.sort_unstable();
    let mut cursor = HEADER_AREA_MIB;
    for (start, l) in used {
        if start >= cursor && start - cursor >= len {
            return Some(cursor);
        }
        cursor = cursor.max(start + l);
    }
    (partition_mib.checked_sub(cursor)? >= len).then_some(cursor)
}

#[cfg(test)]
mod buffer_tests;
#[cfg(test)]
mod tests;
