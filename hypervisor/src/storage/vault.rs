//! The passphrase screen's [`Vault`] over the disk store on the data partition: a
//! blank partition is formatted with the first passphrase, a locked store is unlocked
//! (Argon2id, then the key wrap's integrity check) and a passphrase change rewraps the
//! master key in one table commit. The unlocked store stays here for the volumes.
#![forbid(unsafe_code)]

use bulkhead_vdisk::{BlockDevice, KdfParams, LockedStore, Opened, Store, StoreError};
use log::{error, info, warn};

use crate::unlock::{Vault, Wrong};

/// Where the store is.
enum State {
    Blank,
    Locked(LockedStore),
    Open(Store),
    /// A device error while opening or formatting: nothing unlocks.
    Broken,
}

/// The store on `dev`, as the passphrase screen drives it.
pub struct StoreVault<'a, D: BlockDevice> {
    dev: &'a mut D,
    kdf: KdfParams,
    state: State,
}

impl<'a, D: BlockDevice> StoreVault<'a, D> {
    /// What `Store::open` found on `dev`; a blank store will be formatted with `kdf`.
    pub fn new(dev: &'a mut D, opened: Opened, kdf: KdfParams) -> Self {
        let state = match opened {
            Opened::Blank => State::Blank,
            Opened::Locked(locked) => State::Locked(locked),
        };
        StoreVault { dev, kdf, state }
    }

    /// The unlocked store, once the screen has ended with the disks unlocked.
    pub fn into_store(self) -> Option<Store> {
        match self.state {
            State::Open(store) => Some(store),
            _ => None,
        }
    }

    fn unlock_locked(&mut self, passphrase: &[u8]) -> Result<(), Wrong> {
        let state = core::mem::replace(&mut self.state, State::Broken);
        let (next, result) = match state {
            State::Locked(locked) => match locked.unlock(passphrase) {
                Ok(store) => (State::Open(store), Ok(())),
                Err(refused) => {
                    if !matches!(refused.error, StoreError::WrongPassphrase) {
                        warn!(target: "storage", "unlock refused: {}", refused.error);
                    }
                    (State::Locked(refused.store), Err(Wrong))
                }
            },
            // An open store checks the passphrase by unlocking a fresh copy.
            other => (other, Err(Wrong)),
        };
        self.state = next;
        result
    }
}

impl<D: BlockDevice> Vault for StoreVault<'_, D> {
    fn is_new(&self) -> bool {
        matches!(self.state, State::Blank)
    }

    fn unlock(&mut self, passphrase: &[u8]) -> Result<(), Wrong> {
        self.unlock_locked(passphrase)
    }

    fn set_new(&mut self, passphrase: &[u8]) {
        if !matches!(self.state, State::Blank) {
            return;
        }
        let mut rng = super::random::fill;
        match Store::format(&mut *self.dev, passphrase, self.kdf, &mut rng) {
            Ok(store) => {
                info!(target: "storage", "disk store created on the data partition");
                self.state = State::Open(store);
            }
            Err(e) => {
                error!(target: "storage", "cannot create the disk store: {e}");
                self.state = State::Broken;
            }
        }
    }

    fn change(&mut self, old: &[u8], new: &[u8]) -> Result<(), Wrong> {
        if matches!(self.state, State::Locked(_)) {
            self.unlock_locked(old)?;
        }
        let State::Open(store) = &mut self.state else { return Err(Wrong) };
        let mut rng = super::random::fill;
        match store.change_passphrase(&mut *self.dev, old, new, self.kdf, &mut rng) {
            Ok(()) => {
                info!(target: "storage", "disk passphrase changed");
                Ok(())
            }
            Err(StoreError::WrongPassphrase) => Err(Wrong),
            Err(e) => {
                error!(target: "storage", "cannot change the passphrase: {e}");
                Err(Wrong)
            }
        }
    }
}
