//! Byte-level AML decoding (ACPI 6.5 §20.2): a bounded cursor, PkgLength, NameString
//! and the data objects (integers, strings, buffers, packages).

use alloc::string::String;
use alloc::vec::Vec;

use super::{AmlError, Path, Seg, Value};

pub(crate) const ZERO_OP: u8 = 0x00;
pub(crate) const ONE_OP: u8 = 0x01;
pub(crate) const BYTE_PREFIX: u8 = 0x0a;
pub(crate) const WORD_PREFIX: u8 = 0x0b;
pub(crate) const DWORD_PREFIX: u8 = 0x0c;
pub(crate) const STRING_PREFIX: u8 = 0x0d;
pub(crate) const QWORD_PREFIX: u8 = 0x0e;
pub(crate) const BUFFER_OP: u8 = 0x11;
pub(crate) const PACKAGE_OP: u8 = 0x12;
pub(crate) const VAR_PACKAGE_OP: u8 = 0x13;
pub(crate) const ONES_OP: u8 = 0xff;
pub(crate) const EXT_OP: u8 = 0x5b;
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;
const ROOT_CHAR: u8 = b'\\';
const PARENT_PREFIX: u8 = b'^';

/// Packages nested deeper than this are refused (firmware uses two or three levels).
const MAX_DATA_DEPTH: u32 = 16;
/// Largest buffer the interpreter builds (a `Buffer (0xFFFFFFFF) {}` would otherwise
/// allocate 4 GiB of zeros).
const MAX_BUFFER: u64 = 0x1_0000;

/// A NameString (§20.2.2): root or `^` prefixes, then zero or more segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameString {
    pub root: bool,
    pub parents: u8,
    pub segs: Vec<Seg>,
}

impl NameString {
    /// A bare single segment: the only form looked up with the upward search (§5.3).
    pub(crate) fn is_single(&self) -> bool {
        !self.root && self.parents == 0 && self.segs.len() == 1
    }

    /// The absolute path this name denotes relative to `scope`, without any search;
    /// `None` when `^` climbs above the root.
    pub(crate) fn absolute(&self, scope: &[Seg]) -> Option<Path> {
        let mut path = if self.root { Vec::new() } else { scope.to_vec() };
        for _ in 0..self.parents {
            path.pop()?;
        }
        path.extend_from_slice(&self.segs);
        Some(path)
    }

    /// Parses the ASL text form (`\_SB.LNKA`, `^LNKB`, `LNKC`) a `_PRT` may give as a
    /// String Source; short segments are padded with `_`.
    pub(crate) fn from_text(text: &str) -> Option<NameString> {
        let bytes = text.as_bytes();
        let root = bytes.first() == Some(&ROOT_CHAR);
        let rest = if root { bytes.get(1..)? } else { bytes };
        let parents = rest.iter().take_while(|&&b| b == PARENT_PREFIX).count();
        let rest = rest.get(parents..)?;
        let mut segs = Vec::new();
        if !rest.is_empty() {
            for part in rest.split(|&b| b == b'.') {
                if part.is_empty() || part.len() > 4 || !part.iter().all(|&b| is_name_char(b)) {
                    return None;
                }
                let mut seg = [b'_'; 4];
                seg.iter_mut().zip(part).for_each(|(d, s)| *d = *s);
                segs.push(seg);
            }
        }
        Some(NameString { root, parents: u8::try_from(parents).ok()?, segs })
    }
}

pub(crate) fn is_lead_name_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    is_lead_name_char(b) || b.is_ascii_digit()
}

/// Whether `b` can start a NameString (and so, in a term position, a name or a call).
pub(crate) fn starts_name(b: u8) -> bool {
    is_lead_name_char(b) || matches!(b, ROOT_CHAR | PARENT_PREFIX | DUAL_NAME_PREFIX | MULTI_NAME_PREFIX)
}

/// A read position inside one table, never past `end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AmlCursor<'a> {
    pub data: &'a [u8],
    pub table: usize,
    pub pos: usize,
    pub end: usize,
}

impl<'a> AmlCursor<'a> {
    pub(crate) fn new(data: &'a [u8], table: usize, pos: usize, end: usize) -> Self {
        let end = end.min(data.len());
        AmlCursor { data, table, pos: pos.min(end), end }
    }

    /// The same bytes from the current position up to `end` (which must not lie past
    /// this cursor's end; `pkg_end` guarantees that).
    pub(crate) fn until(&self, end: usize) -> Self {
        AmlCursor::new(self.data, self.table, self.pos, end.min(self.end))
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.peek_at(0)
    }

    pub(crate) fn peek_at(&self, ahead: usize) -> Option<u8> {
        let at = self.pos.checked_add(ahead)?;
        if at < self.end { self.data.get(at).copied() } else { None }
    }

    pub(crate) fn truncated(&self) -> AmlError {
        AmlError::Truncated { table: self.table, offset: self.pos }
    }

    pub(crate) fn unsupported(&self, offset: usize, op: u8, ext: Option<u8>) -> AmlError {
        AmlError::Unsupported { table: self.table, offset, op, ext }
    }

    pub(crate) fn byte(&mut self) -> Result<u8, AmlError> {
        let b = self.peek().ok_or_else(|| self.truncated())?;
        self.pos = self.pos.saturating_add(1);
        Ok(b)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], AmlError> {
        let stop = self.pos.checked_add(n).filter(|&s| s <= self.end).ok_or_else(|| self.truncated())?;
        let bytes = self.data.get(self.pos..stop).ok_or_else(|| self.truncated())?;
        self.pos = stop;
        Ok(bytes)
    }

    /// A little-endian unsigned integer of `n` (at most 8) bytes.
    pub(crate) fn le(&mut self, n: usize) -> Result<u64, AmlError> {
        let bytes = self.take(n)?;
        Ok(bytes.iter().rev().fold(0u64, |acc, &b| acc.checked_shl(8).unwrap_or(0) | u64::from(b)))
    }

    /// Reads a PkgLength (§20.2.4) and returns the absolute end of the package it
    /// measures (the length counts from the PkgLength's own first byte).
    pub(crate) fn pkg_end(&mut self) -> Result<usize, AmlError> {
        let start = self.pos;
        let lead = self.byte()?;
        let follow = usize::from(lead >> 6);
        let length = if follow == 0 {
            u64::from(lead & 0x3f)
        } else {
            let rest = self.le(follow)?;
            u64::from(lead & 0x0f) | rest.checked_shl(4).unwrap_or(0)
        };
        usize::try_from(length)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&end| end >= self.pos && end <= self.end)
            .ok_or(AmlError::BadPkgLength { table: self.table, offset: start })
    }

    pub(crate) fn seg(&mut self) -> Result<Seg, AmlError> {
        let at = self.pos;
        let bytes = self.take(4)?;
        let mut seg = [0u8; 4];
        seg.copy_from_slice(bytes);
        let valid = seg.first().is_some_and(|&b| is_lead_name_char(b)) && seg.iter().all(|&b| is_name_char(b));
        if valid { Ok(seg) } else { Err(AmlError::BadName { table: self.table, offset: at }) }
    }

    /// Reads a NameString (§20.2.2), including the NullName (no segments).
    pub(crate) fn name_string(&mut self) -> Result<NameString, AmlError> {
        let mut name = NameString { root: false, parents: 0, segs: Vec::new() };
        if self.peek() == Some(ROOT_CHAR) {
            self.pos = self.pos.saturating_add(1);
            name.root = true;
        } else {
            while self.peek() == Some(PARENT_PREFIX) {
                self.pos = self.pos.saturating_add(1);
                name.parents =
                    name.parents.checked_add(1).ok_or(AmlError::BadName { table: self.table, offset: self.pos })?;
            }
        }
        let count = match self.peek() {
            Some(ZERO_OP) => {
                self.pos = self.pos.saturating_add(1);
                0
            }
            Some(DUAL_NAME_PREFIX) => {
                self.pos = self.pos.saturating_add(1);
                2
            }
            Some(MULTI_NAME_PREFIX) => {
                self.pos = self.pos.saturating_add(1);
                self.byte()?
            }
            _ => 1,
        };
        for _ in 0..count {
            name.segs.push(self.seg()?);
        }
        Ok(name)
    }
}

/// A ComputationalData integer constant (§20.2.3) at the cursor, if there is one.
pub(crate) fn const_integer(c: &mut AmlCursor<'_>, ones: u64) -> Result<Option<u64>, AmlError> {
    let value = match c.peek() {
        Some(ZERO_OP) => 0,
        Some(ONE_OP) => 1,
        Some(ONES_OP) => ones,
        Some(BYTE_PREFIX) => return prefixed(c, 1).map(Some),
        Some(WORD_PREFIX) => return prefixed(c, 2).map(Some),
        Some(DWORD_PREFIX) => return prefixed(c, 4).map(Some),
        Some(QWORD_PREFIX) => return prefixed(c, 8).map(Some),
        _ => return Ok(None),
    };
    c.pos = c.pos.saturating_add(1);
    Ok(Some(value))
}

fn prefixed(c: &mut AmlCursor<'_>, n: usize) -> Result<u64, AmlError> {
    c.byte()?;
    c.le(n)
}

/// Parses a data object (§20.2.3 DataRefObject: ComputationalData, DefPackage,
/// DefVarPackage) at the cursor. Buffer sizes and VarPackage counts must be
/// constants; `scope` is recorded with the name references found in packages.
pub(crate) fn data_object(c: &mut AmlCursor<'_>, scope: &[Seg], ones: u64) -> Result<Value, AmlError> {
    data_object_at(c, scope, ones, 0)
}

fn data_object_at(c: &mut AmlCursor<'_>, scope: &[Seg], ones: u64, depth: u32) -> Result<Value, AmlError> {
    if depth > MAX_DATA_DEPTH {
        return Err(AmlError::TooDeep);
    }
    if let Some(value) = const_integer(c, ones)? {
        return Ok(Value::Integer(value & ones));
    }
    let start = c.pos;
    let op = c.byte()?;
    match op {
        STRING_PREFIX => {
            let mut s = String::new();
            loop {
                match c.byte()? {
                    0 => break,
                    b => s.push(char::from(b)),
                }
            }
            Ok(Value::String(s))
        }
        BUFFER_OP => {
            let end = c.pkg_end()?;
            let mut inner = c.until(end);
            let size =
                const_integer(&mut inner, ones)?.ok_or(AmlError::NotConstant { table: c.table, offset: inner.pos })?;
            if size > MAX_BUFFER {
                return Err(AmlError::TooLarge { table: c.table, offset: start });
            }
            let init = inner.take(end.saturating_sub(inner.pos))?;
            let mut bytes = init.to_vec();
            // Unsigned, at most MAX_BUFFER: the conversion cannot fail.
            let size = usize::try_from(size).unwrap_or(0);
            if bytes.len() < size {
                bytes.resize(size, 0);
            }
            c.pos = end;
            Ok(Value::Buffer(bytes))
        }
        PACKAGE_OP | VAR_PACKAGE_OP => {
            let end = c.pkg_end()?;
            let mut inner = c.until(end);
            let count = if op == PACKAGE_OP {
                u64::from(inner.byte()?)
            } else {
                const_integer(&mut inner, ones)?.ok_or(AmlError::NotConstant { table: c.table, offset: inner.pos })?
            };
            let mut elements = Vec::new();
            while !inner.at_end() && (elements.len() as u64) < count {
                let element = match inner.peek() {
                    Some(b) if starts_name(b) => Value::Reference { name: inner.name_string()?, scope: scope.to_vec() },
                    _ => data_object_at(&mut inner, scope, ones, depth.saturating_add(1))?,
                };
                elements.push(element);
            }
            c.pos = end;
            Ok(Value::Package(elements))
        }
        EXT_OP => {
            let ext = c.byte()?;
            Err(c.unsupported(start, op, Some(ext)))
        }
        _ => Err(c.unsupported(start, op, None)),
    }
}
