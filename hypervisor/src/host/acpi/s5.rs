//! Finding the `\_S5_` (soft-off) sleep type values without an AML interpreter.
//!
//! On stable Rust there is no AML interpreter (see the dependency notes), so Bulkhead
//! uses the classic scan: look for the `_S5_` name in the DSDT's AML byte stream,
//! check that it is a `Name(_S5_, Package(){...})` (ACPI 6.5 §20.2.5.1 NameOp 0x08,
//! §20.2.5.4 PackageOp 0x12), and decode the first integers of the package. ACPI 6.5
//! §7.4.2 says those are the SLP_TYPa and SLP_TYPb values for PM1a/PM1b control.
#![forbid(unsafe_code)]

/// AML opcodes and prefixes (ACPI 6.5 §20.2).
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const QWORD_PREFIX: u8 = 0x0e;
const PACKAGE_OP: u8 = 0x12;
const ONES_OP: u8 = 0xff;
const ROOT_CHAR: u8 = b'\\';

/// SLP_TYP values for the S5 state, as written to bits 12:10 of PM1a/PM1b_CNT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepType {
    pub slp_typ_a: u8,
    pub slp_typ_b: u8,
}

/// Scans an AML byte stream (a DSDT or SSDT body, the header may be included) for
/// `Name(_S5_, Package(){...})` and returns its sleep type values.
pub fn find_s5(aml: &[u8]) -> Option<SleepType> {
    let mut from = 0;
    while let Some(pos) = find(aml.get(from..)?, b"_S5_") {
        let at = from.checked_add(pos)?;
        if let Some(s5) = decode_at(aml, at) {
            return Some(s5);
        }
        from = at.checked_add(1)?;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `at` is the index of `_S5_`; checks the NameOp before it (optionally with a root
/// prefix) and decodes the package after it.
fn decode_at(aml: &[u8], at: usize) -> Option<SleepType> {
    let name_op = match at.checked_sub(1).and_then(|i| aml.get(i))? {
        &ROOT_CHAR => at.checked_sub(2).and_then(|i| aml.get(i))?,
        other => other,
    };
    if *name_op != NAME_OP {
        return None;
    }
    let mut i = at.checked_add(4)?;
    if *aml.get(i)? != PACKAGE_OP {
        return None;
    }
    i = i.checked_add(1)?;
    // PkgLength (§20.2.4): bits 7:6 of the lead byte count the bytes that follow.
    let lead = *aml.get(i)?;
    i = i.checked_add(1)?.checked_add(usize::from(lead >> 6))?;
    let num_elements = *aml.get(i)?;
    i = i.checked_add(1)?;
    let (a, next) = decode_integer(aml, i)?;
    if num_elements >= 2 {
        let (b, _) = decode_integer(aml, next)?;
        Some(SleepType { slp_typ_a: a as u8, slp_typ_b: b as u8 })
    } else {
        // A one-element package packs both values into one integer (ACPICA does this).
        Some(SleepType { slp_typ_a: a as u8, slp_typ_b: (a >> 8) as u8 })
    }
}

/// Decodes a ComputationalData integer at `i`; returns the value and the next index.
fn decode_integer(aml: &[u8], i: usize) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<(u64, usize)> {
        let start = i.checked_add(1)?;
        let end = start.checked_add(n)?;
        let bytes = aml.get(start..end)?;
        let v = bytes.iter().rev().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        Some((v, end))
    };
    let next = i.checked_add(1)?;
    match *aml.get(i)? {
        ZERO_OP => Some((0, next)),
        ONE_OP => Some((1, next)),
        ONES_OP => Some((u64::MAX, next)),
        BYTE_PREFIX => le(1),
        WORD_PREFIX => le(2),
        DWORD_PREFIX => le(4),
        QWORD_PREFIX => le(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_q35_dsdt() {
        // QEMU: Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero })
        let dsdt = include_bytes!("../../../tests/fixtures/acpi/qemu-q35/DSDT.bin");
        assert_eq!(find_s5(dsdt), Some(SleepType { slp_typ_a: 0, slp_typ_b: 0 }));
    }

    #[test]
    fn byte_prefixed_values_with_root_prefix() {
        // Typical laptop firmware: Name (\_S5, Package () { 0x07, 0x07, Zero, Zero })
        let aml = [0x10, 0x08, 0x5c, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x07, 0x0a, 0x07, 0x00, 0x00];
        assert_eq!(find_s5(&aml), Some(SleepType { slp_typ_a: 7, slp_typ_b: 7 }));
    }

    #[test]
    fn word_dword_and_one_ops() {
        let aml = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x0a, 0x02, 0x0b, 0x05, 0x00, 0x0c, 0x06, 0, 0, 0];
        assert_eq!(find_s5(&aml), Some(SleepType { slp_typ_a: 5, slp_typ_b: 6 }));
        let aml = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x01, 0x01];
        assert_eq!(find_s5(&aml), Some(SleepType { slp_typ_a: 1, slp_typ_b: 1 }));
    }

    #[test]
    fn single_element_package_packs_a_and_b() {
        let aml = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x01, 0x0b, 0x05, 0x07];
        assert_eq!(find_s5(&aml), Some(SleepType { slp_typ_a: 5, slp_typ_b: 7 }));
    }

    #[test]
    fn multi_byte_pkg_length() {
        // Lead byte 0x40: one extra PkgLength byte follows.
        let aml = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x40, 0x00, 0x02, 0x0a, 0x03, 0x0a, 0x04];
        assert_eq!(find_s5(&aml), Some(SleepType { slp_typ_a: 3, slp_typ_b: 4 }));
    }

    #[test]
    fn references_and_truncation_are_skipped() {
        // A method that mentions _S5_ (not a NameOp) and then a truncated definition.
        let aml = [0x70, b'_', b'S', b'5', b'_', 0x60, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x0a, 0x04, 0x0a];
        assert_eq!(find_s5(&aml), None);
        assert_eq!(find_s5(b"_S5_"), None);
        assert_eq!(find_s5(&[]), None);
        // The second, valid occurrence wins.
        let aml = [0x70, b'_', b'S', b'5', b'_', 0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x0a, 0x05, 0x00];
        assert_eq!(find_s5(&aml), Some(SleepType { slp_typ_a: 5, slp_typ_b: 0 }));
    }
}
