//! The VMs' disks on the data partition. At boot, before any VM, [`prepare`] opens the
//! disk store (creating it on a fresh partition), asks for the passphrase on the
//! hypervisor's own screen, and opens every configured VM's volume; the store and its
//! master key are dropped (wiped) as soon as the volumes hold their own keys. A VM's
//! virtio-blk device then takes its volume with [`take`].
//!
//! Without a data partition the disks live in host RAM (lost at power-off), as the
//! log and docs/vm-disks.md say. A disk whose store cannot be unlocked or opened is
//! [`Unavailable`], and its VM does not start.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_vdisk::{Cipher, KdfParams, Mode, Store, Volume, VolumeError, VolumeSpec};
use log::{error, info, warn};

use super::DataPartition;
use super::vault::StoreVault;
use crate::devices::virtio::blk_backend::{BlockBackend, Buffers, ID_BYTES, IoError};

/// Bytes of zeros written at both ends of a new volume, so that the guest sees a disk
/// without partition table or filesystem (the rest reads as the previous contents of
/// the extent, decrypted with a key they were not written with: noise).
const WIPE_BYTES: u64 = 1 << 20;

/// One VM's disk as the configuration gives it.
#[derive(Debug, Clone, Copy)]
pub struct DiskRequest<'a> {
    pub vm: &'a str,
    /// The VM's label, named on the passphrase screen.
    pub label: &'a str,
    pub size_bytes: u64,
    pub mode: Mode,
}

/// Why a VM's disk cannot be given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The passphrase screen was skipped: the disk stays locked.
    Locked,
    /// The store or the volume could not be opened (the log says why).
    Failed,
}

/// What a VM's virtio-blk device is backed by.
#[derive(Debug)]
pub enum DiskChoice {
    Volume(alloc::boxed::Box<VolumeBackend>),
    /// No data partition: host RAM.
    Ram,
    Unavailable(Unavailable),
}

/// The data partition, once the volumes are open: every volume's I/O goes through it.
static DEVICE: spin::Mutex<Option<DataPartition>> = spin::Mutex::new(None);
/// The opened volumes by VM name, until each VM's device takes its own.
static PREPARED: spin::Mutex<Vec<(String, Result<Volume, Unavailable>)>> = spin::Mutex::new(Vec::new());

/// Opens (or creates) the store on the data partition and the volumes of `disks`.
/// Shows the passphrase screen when any disk needs it.
/// New volumes are made with `cipher` (`Cipher::None` only when a benchmark asks);
/// `preset` is a passphrase given by a benchmark's command line instead of the screen.
pub fn prepare(disks: &[DiskRequest<'_>], kdf: KdfParams, cipher: Cipher, preset: Option<&[u8]>) {
    if disks.is_empty() {
        return;
    }
    let Some(mut dev) = super::take_data_partition() else {
        warn!(target: "storage", "no data partition: the VMs' disks live in RAM and are lost at power-off");
        return;
    };
    let outcomes = open_all(&mut dev, disks, kdf, cipher, preset);
    *PREPARED.lock() = disks.iter().map(|d| String::from(d.vm)).zip(outcomes).collect();
    *DEVICE.lock() = Some(dev);
}

fn open_all(
    dev: &mut DataPartition,
    disks: &[DiskRequest<'_>],
    kdf: KdfParams,
    cipher: Cipher,
    preset: Option<&[u8]>,
) -> Vec<Result<Volume, Unavailable>> {
    let all = |why| disks.iter().map(|_| Err(why)).collect();
    if !super::random::available() {
        error!(target: "storage", "the CPU has no RDRAND: no disk keys can be made; VMs with disks do not start");
        return all(Unavailable::Failed);
    }
    let opened = match Store::open(dev) {
        Ok(opened) => opened,
        Err(e) => {
            error!(target: "storage", "cannot read the disk store: {e}; the data partition is left untouched");
            return all(Unavailable::Failed);
        }
    };
    let labels: Vec<&str> = disks.iter().map(|d| d.label).collect();
    let mut vault = StoreVault::new(&mut *dev, opened, kdf);
    let preset_worked = preset.is_some_and(|p| {
        use crate::unlock::Vault;
        if vault.is_new() {
            vault.set_new(p);
            true
        } else {
            vault.unlock(p).is_ok()
        }
    });
    let outcome =
        if preset_worked { crate::unlock::UnlockOutcome::Unlocked } else { crate::unlock::ask(&mut vault, &labels) };
    let Some(mut store) = vault.into_store() else {
        warn!(target: "storage", "disks stay locked ({outcome:?}): VMs with disks do not start");
        return all(Unavailable::Locked);
    };
    info!(target: "storage", "disks unlocked; {} MiB free on the data partition", store.free_mib());
    let volumes = disks.iter().map(|d| open_volume(&mut store, dev, d, cipher)).collect();
    // `store` drops here: the master key is wiped; each volume keeps only its own key.
    volumes
}

fn open_volume(
    store: &mut Store,
    dev: &mut DataPartition,
    disk: &DiskRequest<'_>,
    new_cipher: Cipher,
) -> Result<Volume, Unavailable> {
    let on_disk = store.volumes().find(|v| v.name == disk.vm).map(|v| v.cipher);
    let existed = on_disk.is_some();
    // An existing volume keeps the cipher it was made with.
    let cipher = on_disk.unwrap_or(new_cipher);
    let mut rng = super::random::fill;
    let spec = |mode| VolumeSpec { name: disk.vm, size_bytes: disk.size_bytes, mode, cipher };
    let failed = |e: &dyn core::fmt::Display| {
        error!(target: "storage", "vm {}: cannot open its disk: {e}", disk.vm);
        Unavailable::Failed
    };
    if !existed && disk.mode != Mode::ReadOnly {
        // A new volume is made persistent first, so its base can be wiped.
        let mut fresh = store.volume(dev, &spec(Mode::Persistent), &mut rng).map_err(|e| failed(&e))?;
        wipe_ends(&mut fresh, dev).map_err(|e| failed(&e))?;
        let what = if cipher == Cipher::None { "UNENCRYPTED" } else { "encrypted" };
        info!(target: "storage", "vm {}: new {what} disk of {} MiB", disk.vm, disk.size_bytes >> 20);
    }
    let volume = store.volume(dev, &spec(disk.mode), &mut rng).map_err(|e| failed(&e))?;
    info!(
        target: "storage",
        "vm {}: disk of {} MiB, {:?}, {}",
        disk.vm,
        volume.capacity_sectors() >> 11,
        volume.mode(),
        if cipher == Cipher::None { "not encrypted" } else { "AES-256-XTS" }
    );
    Ok(volume)
}

/// Zeros at both ends of a new volume (a whole number of MiB, so at least 1 MiB),
/// flushed.
fn wipe_ends(volume: &mut Volume, dev: &mut DataPartition) -> Result<(), VolumeError> {
    const WIPE_SECTORS: u64 = WIPE_BYTES / 512;
    let zeros = alloc::vec![0u8; WIPE_BYTES as usize];
    let last = volume.capacity_sectors().saturating_sub(WIPE_SECTORS);
    volume.write(dev, 0, &zeros)?;
    volume.write(dev, last, &zeros)?;
    volume.flush(dev)
}

/// VM `vm`'s disk: its volume (taken once), RAM when there is no data partition, or
/// why it is unavailable.
pub fn take(vm: &str, serial: [u8; ID_BYTES]) -> DiskChoice {
    let mut prepared = PREPARED.lock();
    let Some(i) = prepared.iter().position(|(name, _)| name == vm) else {
        // Not prepared: without a data partition every disk is in RAM. With one, a
        // disk nobody prepared (a VM added later) is unavailable rather than in RAM.
        return if DEVICE.lock().is_some() { DiskChoice::Unavailable(Unavailable::Failed) } else { DiskChoice::Ram };
    };
    match prepared.swap_remove(i).1 {
        Ok(volume) => DiskChoice::Volume(alloc::boxed::Box::new(VolumeBackend { volume, serial })),
        Err(why) => DiskChoice::Unavailable(why),
    }
}

/// A VM's volume as its virtio-blk device's backend; every request goes through the
/// data partition's lock.
pub struct VolumeBackend {
    volume: Volume,
    serial: [u8; ID_BYTES],
}

impl core::fmt::Debug for VolumeBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VolumeBackend").field("volume", &self.volume.name()).finish_non_exhaustive()
    }
}

fn io_error(vm: &str, e: VolumeError) -> IoError {
    match e {
        VolumeError::OutOfRange => IoError::OutOfRange,
        VolumeError::Misaligned => IoError::Misaligned,
        VolumeError::ReadOnly => IoError::ReadOnly,
        other => {
            crate::limited!(
                crate::log_limit::Source::Emulation,
                0,
                error!(target: "storage", "vm {vm}: disk I/O failed: {other}")
            );
            IoError::Medium
        }
    }
}

impl VolumeBackend {
    fn with_device<T>(
        &mut self,
        op: impl FnOnce(&mut Volume, &mut DataPartition) -> Result<T, VolumeError>,
    ) -> Result<T, IoError> {
        let mut device = DEVICE.lock();
        let Some(dev) = device.as_mut() else { return Err(IoError::Medium) };
        op(&mut self.volume, dev).map_err(|e| io_error(self.volume.name(), e))
    }
}

impl BlockBackend for VolumeBackend {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.with_device(|v, dev| v.read(dev, sector, buf))
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        self.with_device(|v, dev| v.write(dev, sector, buf))
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.with_device(|v, dev| v.flush(dev))
    }

    /// Straight from the NVMe bounce region into the VM's buffers, deciphered on the
    /// way: one pass over each byte.
    fn read_to(&mut self, sector: u64, bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        Some(self.with_device(|v, dev| v.read_to(dev, sector, bufs)))
    }

    /// Enciphered straight from the VM's buffers into the NVMe bounce region.
    fn write_from(&mut self, sector: u64, bufs: &mut dyn Buffers) -> Option<Result<(), IoError>> {
        Some(self.with_device(|v, dev| v.write_from(dev, sector, bufs)))
    }

    fn capacity_sectors(&self) -> u64 {
        self.volume.capacity_sectors()
    }

    fn read_only(&self) -> bool {
        self.volume.read_only()
    }

    fn id(&self) -> [u8; ID_BYTES] {
        self.serial
    }

    fn vm_started(&mut self) {
        let mut rng = super::random::fill;
        if let Err(e) = self.volume.reset(&mut rng) {
            error!(target: "storage", "vm {}: cannot discard the disk's overlay: {e}", self.volume.name());
        } else if self.volume.mode() == Mode::ResetOnBoot {
            info!(target: "storage", "vm {}: disk reset to its base (overlay and its key discarded)", self.volume.name());
        }
    }
}
