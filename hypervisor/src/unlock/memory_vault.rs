//! A vault that keeps the passphrase in memory and unlocks nothing: it stands in for
//! the disk store in tests and behind the `unlock-demo=` test option.

use super::secret::Secret;
use super::{Vault, Wrong};

#[derive(Debug, Default)]
pub struct MemoryVault {
    passphrase: Option<Secret>,
    /// Times the passphrase was checked (unlock and change), for tests.
    pub checks: u32,
}

impl MemoryVault {
    /// A vault whose passphrase is `passphrase`; an empty one is a fresh machine.
    pub fn holding(passphrase: &[u8]) -> MemoryVault {
        let passphrase = (!passphrase.is_empty()).then(|| Secret::from_bytes(passphrase));
        MemoryVault { passphrase, checks: 0 }
    }

    fn matches(&mut self, passphrase: &[u8]) -> bool {
        self.checks = self.checks.saturating_add(1);
        self.passphrase.as_ref().is_some_and(|p| p.same_as(passphrase))
    }
}

impl Vault for MemoryVault {
    fn is_new(&self) -> bool {
        self.passphrase.is_none()
    }

    fn unlock(&mut self, passphrase: &[u8]) -> Result<(), Wrong> {
        if self.matches(passphrase) { Ok(()) } else { Err(Wrong) }
    }

    fn set_new(&mut self, passphrase: &[u8]) {
        self.passphrase = Some(Secret::from_bytes(passphrase));
    }

    fn change(&mut self, old: &[u8], new: &[u8]) -> Result<(), Wrong> {
        if !self.matches(old) {
            return Err(Wrong);
        }
        self.passphrase = Some(Secret::from_bytes(new));
        Ok(())
    }
}
