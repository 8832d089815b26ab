//! Bounds-checked little-endian reads over untrusted firmware bytes. Every table
//! parser goes through this, so a short or lying length field yields an error, never
//! a panic or an out-of-bounds read.
#![forbid(unsafe_code)]

use crate::host::acpi::TableError;

/// Reads a `u8` at `offset`.
pub fn u8_at(bytes: &[u8], offset: usize) -> Result<u8, TableError> {
    bytes.get(offset).copied().ok_or(TableError::Truncated { offset })
}

/// Reads a little-endian `u16` at `offset`.
pub fn u16_at(bytes: &[u8], offset: usize) -> Result<u16, TableError> {
    Ok(u16::from_le_bytes(array_at(bytes, offset)?))
}

/// Reads a little-endian `u32` at `offset`.
pub fn u32_at(bytes: &[u8], offset: usize) -> Result<u32, TableError> {
    Ok(u32::from_le_bytes(array_at(bytes, offset)?))
}

/// Reads a little-endian `u64` at `offset`.
pub fn u64_at(bytes: &[u8], offset: usize) -> Result<u64, TableError> {
    Ok(u64::from_le_bytes(array_at(bytes, offset)?))
}

/// Copies `N` bytes starting at `offset`.
pub fn array_at<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], TableError> {
    let end = offset.checked_add(N).ok_or(TableError::Truncated { offset })?;
    let src = bytes.get(offset..end).ok_or(TableError::Truncated { offset })?;
    let mut out = [0u8; N];
    out.copy_from_slice(src);
    Ok(out)
}

/// The sub-slice `[offset, offset + len)`.
pub fn slice_at(bytes: &[u8], offset: usize, len: usize) -> Result<&[u8], TableError> {
    let end = offset.checked_add(len).ok_or(TableError::Truncated { offset })?;
    bytes.get(offset..end).ok_or(TableError::Truncated { offset })
}

/// Length of a standard ACPI System Description Table header (ACPI 6.5 §5.2.6).
pub const SDT_HEADER_LEN: usize = 36;

/// Checks the 4-byte signature and the header's length field against the bytes we
/// hold, and returns the table trimmed to its declared length.
pub fn checked_table<'a>(bytes: &'a [u8], signature: &[u8; 4]) -> Result<&'a [u8], TableError> {
    let found: [u8; 4] = array_at(bytes, 0)?;
    if &found != signature {
        return Err(TableError::BadSignature { found });
    }
    let declared = u32_at(bytes, 4)? as usize;
    if declared < SDT_HEADER_LEN || declared > bytes.len() {
        return Err(TableError::BadLength { declared, available: bytes.len() });
    }
    bytes.get(..declared).ok_or(TableError::BadLength { declared, available: bytes.len() })
}

/// `offset + delta`, or `Truncated` if that does not fit in a `usize` (the field then
/// cannot be inside any table we hold).
pub fn offset_plus(offset: usize, delta: usize) -> Result<usize, TableError> {
    offset.checked_add(delta).ok_or(TableError::Truncated { offset })
}

/// Walks `[start, table.len())` as a list of `(type, length)`-headed structures and
/// calls `f(kind, body)` for each. `header` reads one structure header at an offset and
/// returns `(kind, length)`; structures shorter than `min_len` or running past the end
/// are an error (they would make the walk loop forever or read out of bounds).
pub fn walk_structures<'a>(
    table: &'a [u8],
    start: usize,
    min_len: usize,
    header: impl Fn(&[u8], usize) -> Result<(u16, usize), TableError>,
    mut f: impl FnMut(u16, &'a [u8], usize) -> Result<(), TableError>,
) -> Result<(), TableError> {
    let mut offset = start;
    while offset < table.len() {
        let (kind, len) = header(table, offset)?;
        if len < min_len {
            return Err(TableError::BadEntryLength { offset, len });
        }
        let body = slice_at(table, offset, len).map_err(|_| TableError::BadEntryLength { offset, len })?;
        f(kind, body, offset)?;
        // `body` is `len` bytes inside `table`, so this is at most `table.len()`.
        offset = offset.wrapping_add(len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let b = [1u8, 2, 3];
        assert_eq!(u16_at(&b, 1), Ok(0x0302));
        assert_eq!(u16_at(&b, 2), Err(TableError::Truncated { offset: 2 }));
        assert_eq!(u64_at(&b, usize::MAX), Err(TableError::Truncated { offset: usize::MAX }));
        assert!(slice_at(&b, usize::MAX, 2).is_err());
    }

    #[test]
    fn zero_length_structure_is_an_error_not_a_hang() {
        let t = [0u8, 0, 0, 0];
        let r = walk_structures(&t, 0, 2, |b, o| Ok((u8_at(b, o)?.into(), u8_at(b, o + 1)?.into())), |_, _, _| Ok(()));
        assert_eq!(r, Err(TableError::BadEntryLength { offset: 0, len: 0 }));
    }
}
