//! A fixed-size string for `write!` without an allocator.

use core::fmt;

/// Up to `N` bytes of text; anything past that is cut at a character boundary.
#[derive(Debug, Clone)]
pub struct TextBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> TextBuf<N> {
    pub const fn new() -> Self {
        Self { bytes: [0; N], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever copied in, so this cannot fail.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> Default for TextBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for TextBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            let mut encoded = [0; 4];
            let encoded = ch.encode_utf8(&mut encoded).as_bytes();
            let Some(slot) = self.bytes.get_mut(self.len..self.len + encoded.len()) else {
                // Full: keep what fits rather than failing the whole `write!`.
                return Ok(());
            };
            slot.copy_from_slice(encoded);
            self.len += encoded.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn formats_and_truncates_on_character_boundaries() {
        let mut buf = TextBuf::<8>::new();
        write!(buf, "{:02}:{:02}", 9, 5).unwrap();
        assert_eq!(buf.as_str(), "09:05");
        write!(buf, "·é€").unwrap();
        // "·" takes 2 bytes; "é" would end past byte 8, so writing stops there.
        assert_eq!(buf.as_str(), "09:05·");
    }
}
