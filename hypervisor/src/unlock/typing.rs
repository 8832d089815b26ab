//! Keys for the passphrase screen: the keyboard's scan code set 1 bytes, decoded by the
//! switcher's [`Set1Decoder`] and mapped through the US layout (shift and caps lock
//! included) to printable ASCII and the few keys the screen uses.

use pc_keyboard::{DecodedKey, EventDecoder, HandleControl, KeyCode, KeyEvent, KeyState, layouts::Us104Key};
use zeroize::Zeroize;

use crate::switcher::keys::Set1Decoder;

/// A key the passphrase screen acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKey {
    /// A printable ASCII character (space to tilde).
    Char(u8),
    Backspace,
    Enter,
    Escape,
    /// F2: change the passphrase.
    Change,
}

/// Bytes in, [`PassKey`]s out.
pub struct Typing {
    keys: Set1Decoder,
    layout: EventDecoder<Us104Key>,
}

impl core::fmt::Debug for Typing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Typing").finish_non_exhaustive()
    }
}

impl Default for Typing {
    fn default() -> Self {
        Self::new()
    }
}

impl Typing {
    pub const fn new() -> Typing {
        // Ctrl with a letter gives a control character, which the screen ignores,
        // rather than the letter itself.
        Typing { keys: Set1Decoder::new(), layout: EventDecoder::new(Us104Key, HandleControl::MapLettersToUnicode) }
    }

    /// Feeds one byte from the keyboard; returns a key once one is pressed.
    pub fn feed(&mut self, byte: u8) -> Option<PassKey> {
        let mut key = self.keys.feed(byte)?;
        // The raw bytes name the key typed: gone as soon as they are decoded.
        key.bytes.as_mut_slice().zeroize();
        let state = if key.down { KeyState::Down } else { KeyState::Up };
        match self.layout.process_keyevent(KeyEvent::new(key.code, state))? {
            DecodedKey::Unicode('\u{8}') => Some(PassKey::Backspace),
            DecodedKey::Unicode('\n' | '\r') => Some(PassKey::Enter),
            DecodedKey::Unicode('\u{1b}') => Some(PassKey::Escape),
            DecodedKey::Unicode(c @ ' '..='~') => Some(PassKey::Char(c as u8)),
            DecodedKey::RawKey(KeyCode::F2) => Some(PassKey::Change),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(bytes: &[u8]) -> Vec<PassKey> {
        let mut t = Typing::new();
        bytes.iter().filter_map(|&b| t.feed(b)).collect()
    }

    #[test]
    fn letters_digits_and_punctuation_with_shift() {
        // a, shift+a, 1, shift+1, shift released, -, space.
        let keys = typed(&[0x1E, 0x9E, 0x2A, 0x1E, 0x9E, 0x02, 0x82, 0xAA, 0x02, 0x82, 0x0C, 0x8C, 0x39, 0xB9]);
        assert_eq!(keys, [b'a', b'A', b'!', b'1', b'-', b' '].map(PassKey::Char));
        // Right shift with ; and '.
        let keys = typed(&[0x36, 0x27, 0xA7, 0x28, 0xA8, 0xB6, 0x27]);
        assert_eq!(keys, [b':', b'"', b';'].map(PassKey::Char));
    }

    #[test]
    fn editing_and_command_keys() {
        // Backspace, Enter, keypad Enter (E0 1C), Esc, F2.
        let keys = typed(&[0x0E, 0x8E, 0x1C, 0x9C, 0xE0, 0x1C, 0xE0, 0x9C, 0x01, 0x81, 0x3C, 0xBC]);
        assert_eq!(keys, [PassKey::Backspace, PassKey::Enter, PassKey::Enter, PassKey::Escape, PassKey::Change]);
    }

    #[test]
    fn caps_lock_and_ctrl() {
        // Caps lock, a (A), caps lock again, a (a); ctrl+a gives nothing.
        let keys = typed(&[0x3A, 0xBA, 0x1E, 0x9E, 0x3A, 0xBA, 0x1E, 0x9E, 0x1D, 0x1E, 0x9E, 0x9D, 0x1E]);
        assert_eq!(keys, [b'A', b'a', b'a'].map(PassKey::Char));
    }

    #[test]
    fn keys_the_screen_does_not_use_give_nothing() {
        // Tab, F1, arrows (E0 48), shift alone, garbage.
        assert!(typed(&[0x0F, 0x8F, 0x3B, 0xBB, 0xE0, 0x48, 0xE0, 0xC8, 0x2A, 0xAA, 0xFF]).is_empty());
    }
}
