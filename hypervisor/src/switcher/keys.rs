//! Scan code set 1 (what the i8042 delivers with translation on, and what guests expect)
//! decoded into key events that keep their raw bytes, so the router can forward the
//! exact bytes a guest would have seen and synthesise the matching release.

use heapless::Vec;
use pc_keyboard::{KeyCode, KeyState, ScancodeSet, ScancodeSet1};

/// One key press or release with the bytes that encode it (at most `E1 1D 45` + prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawKey {
    pub code: KeyCode,
    pub down: bool,
    pub bytes: Vec<u8, 6>,
}

impl RawKey {
    /// The set-1 release of this key: the same sequence with bit 7 set on the last byte.
    pub fn release_bytes(&self) -> Vec<u8, 6> {
        let mut bytes = self.bytes.clone();
        if let Some(last) = bytes.last_mut() {
            *last |= 0x80;
        }
        bytes
    }
}

/// Turns a byte stream from the keyboard into [`RawKey`]s.
pub struct Set1Decoder {
    decoder: ScancodeSet1,
    pending: Vec<u8, 6>,
}

impl core::fmt::Debug for Set1Decoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Set1Decoder").field("pending", &self.pending).finish_non_exhaustive()
    }
}

impl Default for Set1Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Set1Decoder {
    pub const fn new() -> Self {
        Set1Decoder { decoder: ScancodeSet1::new(), pending: Vec::new() }
    }

    /// Feeds one byte; returns a key once its sequence is complete. Garbage resets the
    /// decoder rather than wedging it.
    pub fn feed(&mut self, byte: u8) -> Option<RawKey> {
        if self.pending.push(byte).is_err() {
            self.pending.clear();
            self.decoder = ScancodeSet1::new();
            return None;
        }
        match self.decoder.advance_state(byte) {
            Ok(Some(event)) => {
                let bytes = core::mem::take(&mut self.pending);
                let down = match event.state {
                    KeyState::Down | KeyState::SingleShot => true,
                    KeyState::Up => false,
                };
                Some(RawKey { code: event.code, down, bytes })
            }
            Ok(None) => None,
            Err(_) => {
                self.pending.clear();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(d: &mut Set1Decoder, bytes: &[u8]) -> std::vec::Vec<RawKey> {
        bytes.iter().filter_map(|&b| d.feed(b)).collect()
    }

    #[test]
    fn plain_and_extended_keys_keep_their_bytes() {
        let mut d = Set1Decoder::new();
        let keys = feed_all(&mut d, &[0x1D, 0xE0, 0x1D, 0x02, 0x82, 0xE0, 0x9D]);
        let summary: std::vec::Vec<_> = keys.iter().map(|k| (k.code, k.down, k.bytes.to_vec())).collect();
        assert_eq!(
            summary,
            vec![
                (KeyCode::LControl, true, vec![0x1D]),
                (KeyCode::RControl, true, vec![0xE0, 0x1D]),
                (KeyCode::Key1, true, vec![0x02]),
                (KeyCode::Key1, false, vec![0x82]),
                (KeyCode::RControl, false, vec![0xE0, 0x9D]),
            ]
        );
        assert_eq!(keys[1].release_bytes().to_vec(), vec![0xE0, 0x9D]);
    }
}
