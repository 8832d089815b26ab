//! A passphrase being typed: a fixed buffer (no allocation, so no copy is left behind
//! in freed heap memory) that is overwritten with zeros whenever it is emptied and
//! when it is dropped.

use zeroize::Zeroize;

/// The longest passphrase accepted; longer input is refused key by key.
pub const MAX_PASSPHRASE: usize = 128;

/// Up to [`MAX_PASSPHRASE`] bytes of typed passphrase.
pub struct Secret {
    bytes: [u8; MAX_PASSPHRASE],
    len: usize,
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The length only: the content never reaches a log.
        f.debug_struct("Secret").field("len", &self.len).finish_non_exhaustive()
    }
}

impl Default for Secret {
    fn default() -> Self {
        Self::new()
    }
}

impl Secret {
    pub const fn new() -> Secret {
        Secret { bytes: [0; MAX_PASSPHRASE], len: 0 }
    }

    /// A secret holding `bytes` (cut at [`MAX_PASSPHRASE`]).
    pub fn from_bytes(bytes: &[u8]) -> Secret {
        let mut secret = Secret::new();
        for &b in bytes {
            if !secret.push(b) {
                break;
            }
        }
        secret
    }

    /// Appends `byte`; false (and nothing kept) when the buffer is full.
    pub fn push(&mut self, byte: u8) -> bool {
        let Some(slot) = self.bytes.get_mut(self.len) else { return false };
        *slot = byte;
        self.len = self.len.saturating_add(1);
        true
    }

    /// Removes the last byte and zeroes its place.
    pub fn pop(&mut self) {
        let Some(last) = self.len.checked_sub(1) else { return };
        if let Some(slot) = self.bytes.get_mut(last) {
            slot.zeroize();
        }
        self.len = last;
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= MAX_PASSPHRASE
    }

    /// Zeroes the whole buffer (not only the used part) and empties it.
    pub fn wipe(&mut self) {
        self.bytes.zeroize();
        self.len = 0;
    }

    /// Moves `other`'s content here (this one wiped first) and wipes `other`.
    pub fn take_from(&mut self, other: &mut Secret) {
        self.wipe();
        self.bytes.copy_from_slice(&other.bytes);
        self.len = other.len;
        other.wipe();
    }

    /// Equal content, compared without stopping at the first difference (the time
    /// depends on the lengths only).
    pub fn same_as(&self, other: &[u8]) -> bool {
        if self.len != other.len() {
            return false;
        }
        self.as_bytes().iter().zip(other).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }

    /// The whole buffer, used part or not, for tests that check the wiping.
    #[cfg(test)]
    pub fn raw(&self) -> &[u8; MAX_PASSPHRASE] {
        &self.bytes
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.wipe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_the_maximum_and_zeroes_what_it_drops() {
        let mut s = Secret::new();
        for _ in 0..MAX_PASSPHRASE {
            assert!(s.push(b'x'));
        }
        assert!(s.is_full());
        assert!(!s.push(b'y'));
        assert_eq!(s.len(), MAX_PASSPHRASE);
        s.pop();
        assert_eq!(s.raw()[MAX_PASSPHRASE - 1], 0);
        assert_eq!(s.len(), MAX_PASSPHRASE - 1);
        s.wipe();
        assert!(s.is_empty());
        assert!(s.raw().iter().all(|&b| b == 0));
        s.pop();
        assert!(s.is_empty());
    }

    #[test]
    fn take_from_moves_and_wipes_the_source() {
        let mut a = Secret::from_bytes(b"correct horse");
        let mut b = Secret::from_bytes(b"longer old content");
        b.take_from(&mut a);
        assert_eq!(b.as_bytes(), b"correct horse");
        assert!(b.raw()[13..].iter().all(|&x| x == 0), "the old tail is wiped");
        assert!(a.is_empty());
        assert!(a.raw().iter().all(|&x| x == 0));
    }

    #[test]
    fn compares_content_and_length() {
        let s = Secret::from_bytes(b"battery");
        assert!(s.same_as(b"battery"));
        assert!(!s.same_as(b"batterz"));
        assert!(!s.same_as(b"batter"));
        assert!(!s.same_as(b"battery staple"));
        assert!(Secret::new().same_as(b""));
        assert_eq!(format!("{s:?}"), "Secret { len: 7, .. }");
    }
}
