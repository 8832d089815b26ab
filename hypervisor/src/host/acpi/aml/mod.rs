//! A small, bounded AML interpreter: just enough of ACPI 6.5 §20 (the AML grammar) and
//! §19/§5.3 (evaluation and name lookup) to evaluate the firmware's `_PRT` objects,
//! which are the only description of how legacy PCI INTx pins reach the I/O APICs.
//!
//! There is no AML interpreter for stable Rust (the `aml` crate and `acpi` 6.x need
//! nightly), so this one is hand-written and deliberately partial:
//!
//! * [`namespace`] loads DSDT and SSDTs into one namespace of scopes, devices, named
//!   data objects and methods (whose bodies are only recorded); everything else
//!   (operation regions, fields, mutexes, ...) is skipped over and kept as an opaque
//!   name ([`skip`] steps over the operands it does not need);
//! * [`eval`] runs methods with a step budget and depth limits, supporting the
//!   control flow, integer arithmetic and data objects `_PIC`, `_PRT`, `_CRS` and
//!   friends use; anything else fails that one evaluation with a described problem;
//! * [`prt`] finds the PCI host bridges and bridges with `_PRT` and answers routing
//!   questions through [`PciInterruptRouting`].
//!
//! All of it operates on firmware bytes and is panic-free: every index and every
//! length is checked, every loop and recursion is bounded.
#![forbid(unsafe_code)]

mod eval;
mod namespace;
mod parse;
mod prt;
mod skip;
#[cfg(test)]
mod tests;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub use prt::{IntxRoute, PciInterruptRouting};

/// One 4-character name segment (§20.2.2 NameSeg), padded with `_`.
pub(crate) type Seg = [u8; 4];

/// An absolute namespace path, root first; the empty path is the root `\`.
pub(crate) type Path = Vec<Seg>;

/// Renders an absolute path the way ASL writes it (`\_SB.PCI0._PRT`), trailing `_`
/// padding removed from each segment.
pub(crate) fn path_str(path: &[Seg]) -> String {
    let mut s = String::from("\\");
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        let keep = seg.iter().rposition(|&b| b != b'_').map_or(1, |p| p.saturating_add(1));
        s.extend(seg.iter().take(keep).map(|&b| char::from(b)));
    }
    s
}

/// An AML data object as the interpreter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Integer(u64),
    String(String),
    Buffer(Vec<u8>),
    Package(Vec<Value>),
    /// A NameString inside a package (§19.6.102: kept as a reference, not evaluated),
    /// with the scope it appeared in for the later lookup.
    Reference {
        name: parse::NameString,
        scope: Path,
    },
}

impl Value {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Integer(_) => "an integer",
            Value::String(_) => "a string",
            Value::Buffer(_) => "a buffer",
            Value::Package(_) => "a package",
            Value::Reference { .. } => "a name reference",
        }
    }
}

/// Why a parse or an evaluation failed. `table` indexes the loaded tables and
/// `offset` is a byte offset in that table (header included), as `iasl -d` and a hex
/// dump count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AmlError {
    Truncated {
        table: usize,
        offset: usize,
    },
    BadPkgLength {
        table: usize,
        offset: usize,
    },
    BadName {
        table: usize,
        offset: usize,
    },
    Unsupported {
        table: usize,
        offset: usize,
        op: u8,
        ext: Option<u8>,
    },
    NotConstant {
        table: usize,
        offset: usize,
    },
    TooLarge {
        table: usize,
        offset: usize,
    },
    TooDeep,
    StepBudget,
    Undefined(String),
    /// An object that exists but cannot be read or written here (path, what it is).
    NoAccess(String, &'static str),
    /// An operand of the wrong type (what was expected, what was found).
    Type(&'static str, &'static str),
    DivideByZero,
    Uninitialized(&'static str, u8),
}

impl AmlError {
    /// A log line, with table names from `labels` ("DSDT", "SSDT2", ...).
    pub(crate) fn describe(&self, labels: &[String]) -> String {
        let at = |table: &usize, offset: &usize| {
            let label = labels.get(*table).map_or("table?", String::as_str);
            format!("{label} offset {offset:#x}")
        };
        match self {
            AmlError::Truncated { table, offset } => format!("truncated AML at {}", at(table, offset)),
            AmlError::BadPkgLength { table, offset } => format!("bad PkgLength at {}", at(table, offset)),
            AmlError::BadName { table, offset } => format!("bad NameString at {}", at(table, offset)),
            AmlError::Unsupported { table, offset, op, ext: None } => {
                format!("unsupported opcode {op:#04X} at {}", at(table, offset))
            }
            AmlError::Unsupported { table, offset, op, ext: Some(ext) } => {
                format!("unsupported opcode {op:#04X} {ext:#04X} at {}", at(table, offset))
            }
            AmlError::NotConstant { table, offset } => format!("operand is not a constant at {}", at(table, offset)),
            AmlError::TooLarge { table, offset } => format!("object too large at {}", at(table, offset)),
            AmlError::TooDeep => String::from("nesting or call depth limit reached"),
            AmlError::StepBudget => String::from("step budget exhausted (endless loop?)"),
            AmlError::Undefined(path) => format!("undefined name {path}"),
            AmlError::NoAccess(path, what) => format!("{path} is {what}, which cannot be evaluated here"),
            AmlError::Type(expected, found) => format!("expected {expected}, found {found}"),
            AmlError::DivideByZero => String::from("division by zero"),
            AmlError::Uninitialized(kind, n) => format!("{kind}{n} read before it was set"),
        }
    }
}
