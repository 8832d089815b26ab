//! GUIDs in their on-disk byte order (UEFI 2.10 Appendix A: the first three fields are
//! little-endian, the last eight bytes are stored as written).

pub type Guid = [u8; 16];

pub const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]]
}

/// A random (version 4, RFC 4122 variant) GUID from 16 bytes of entropy.
pub fn from_entropy(mut bytes: [u8; 16]) -> Guid {
    // Byte 7 holds the high byte of the little-endian third field: the version nibble.
    bytes[7] = (bytes[7] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_esp_type_guid_has_the_bytes_gpt_tools_write() {
        // C12A7328-F81F-11D2-BA4B-00A0C93EC93B as it appears in a partition entry.
        let esp = guid(0xC12A_7328, 0xF81F, 0x11D2, [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
        assert_eq!(esp[..4], [0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(esp[4..8], [0x1F, 0xF8, 0xD2, 0x11]);
        assert_eq!(esp[8..], [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
    }

    #[test]
    fn random_guids_carry_version_4() {
        let g = from_entropy([0xff; 16]);
        assert_eq!(g[7] >> 4, 4);
        assert_eq!(g[8] >> 6, 0b10);
    }
}
