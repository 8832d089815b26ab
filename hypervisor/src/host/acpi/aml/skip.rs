//! Stepping over code the loader does not run: the TermArg operands of named objects
//! (an OperationRegion's offset and length, a CreateField's buffer and index) and
//! top-level statements, with the operand shapes of ACPI 6.5 §20.2.5.

use super::{AmlError, Seg};
use crate::host::acpi::aml::namespace::Namespace;
use crate::host::acpi::aml::parse::{self, AmlCursor, EXT_OP};

/// Expressions skipped over nested deeper than this are refused.
const MAX_SKIP_DEPTH: u32 = 32;

impl Namespace<'_> {
    /// Skips one TermArg (or SuperName/Target, which share the encoding) without
    /// running it: data objects, locals and args, names and method calls (arguments
    /// counted from the methods loaded so far) and the common expression opcodes.
    pub(crate) fn skip_term(&self, c: &mut AmlCursor<'_>, scope: &[Seg], depth: u32) -> Result<(), AmlError> {
        if depth > MAX_SKIP_DEPTH {
            return Err(AmlError::TooDeep);
        }
        let start = c.pos;
        let op = c.peek().ok_or_else(|| c.truncated())?;
        if parse::starts_name(op) {
            let name = c.name_string()?;
            for _ in 0..self.arg_count(&name, scope) {
                self.skip_term(c, scope, depth.saturating_add(1))?;
            }
            return Ok(());
        }
        if parse::const_integer(c, self.ones)?.is_some() {
            return Ok(());
        }
        if matches!(op, parse::STRING_PREFIX | parse::BUFFER_OP | parse::PACKAGE_OP | parse::VAR_PACKAGE_OP) {
            return parse::data_object(c, scope, self.ones).map(drop);
        }
        c.byte()?;
        let operands: u8 = match op {
            0x60..=0x6e => 0, // Local0-7, Arg0-6
            0x71 | 0x75 | 0x76 | 0x83 | 0x87 | 0x8e | 0x92 => 1,
            0x70 | 0x80..=0x82 | 0x96..=0x99 => 2,
            0x72..=0x74 | 0x77 | 0x79..=0x7f | 0x84 | 0x85 | 0x88 | 0x9c => 3,
            0x90 | 0x91 | 0x93..=0x95 => 2,
            0x78 | 0x9e => 4,
            EXT_OP => match c.byte()? {
                0x30 | 0x31 => 0, // Revision, Debug
                0x12 | 0x28 | 0x29 => 2,
                ext => return Err(c.unsupported(start, op, Some(ext))),
            },
            _ => return Err(c.unsupported(start, op, None)),
        };
        for _ in 0..operands {
            self.skip_term(c, scope, depth.saturating_add(1))?;
        }
        Ok(())
    }
}

impl AmlCursor<'_> {
    /// A NamedField's width (§20.2.5.2): encoded like a PkgLength but counting bits,
    /// so it is not checked against the cursor's end.
    pub(crate) fn pkg_end_bits(&mut self) -> Result<(), AmlError> {
        let lead = self.byte()?;
        self.take(usize::from(lead >> 6)).map(drop)
    }
}
