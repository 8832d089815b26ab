//! Results and status flags of the ALU instructions that may have an MMIO operand
//! (APM Vol. 3, instruction reference: ADD, ADC, SUB, SBB, CMP, AND, OR, XOR, TEST).
//! AF is computed as hardware does for arithmetic and cleared for logic ops (where it
//! is architecturally undefined).
#![forbid(unsafe_code)]

use super::Op;
use crate::arch::regs::rflags;
use crate::hw::AccessSize;

/// The outcome of one ALU operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AluResult {
    /// The value to write to the destination, `None` for CMP and TEST.
    pub value: Option<u64>,
    /// RFLAGS with the status flags replaced.
    pub rflags: u64,
}

fn parity_even(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

/// Computes `dst op src` at `size`; `None` for ops that are not ALU ops.
pub fn alu(op: Op, dst: u64, src: u64, size: AccessSize, flags_in: u64) -> Option<AluResult> {
    let mask = size.mask();
    let sign = 1u64 << size.bits().wrapping_sub(1);
    let (d, s) = (dst & mask, src & mask);
    let carry_in = u128::from(flags_in & rflags::CF != 0);
    let (result, cf, of, af) = match op {
        Op::Add | Op::Adc => {
            let c = if op == Op::Adc { carry_in } else { 0 };
            let wide = u128::from(d).wrapping_add(u128::from(s)).wrapping_add(c);
            let r = (wide as u64) & mask;
            let of = (d ^ r) & (s ^ r) & sign != 0;
            (r, wide > u128::from(mask), of, (d ^ s ^ r) & 0x10 != 0)
        }
        Op::Sub | Op::Sbb | Op::Cmp => {
            let b = if op == Op::Sbb { carry_in } else { 0 };
            let subtrahend = u128::from(s).wrapping_add(b);
            let r = (u128::from(d).wrapping_sub(subtrahend) as u64) & mask;
            let of = (d ^ s) & (d ^ r) & sign != 0;
            (r, u128::from(d) < subtrahend, of, (d ^ s ^ r) & 0x10 != 0)
        }
        Op::And | Op::Test => (d & s, false, false, false),
        Op::Or => (d | s, false, false, false),
        Op::Xor => (d ^ s, false, false, false),
        _ => return None,
    };
    let mut f = flags_in & !rflags::STATUS;
    for (set, bit) in [
        (cf, rflags::CF),
        (parity_even(result), rflags::PF),
        (af, rflags::AF),
        (result == 0, rflags::ZF),
        (result & sign != 0, rflags::SF),
        (of, rflags::OF),
    ] {
        if set {
            f |= bit;
        }
    }
    let value = (!matches!(op, Op::Cmp | Op::Test)).then_some(result);
    Some(AluResult { value, rflags: f })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::regs::rflags::*;

    fn flags(op: Op, d: u64, s: u64, size: AccessSize, fin: u64) -> (Option<u64>, u64) {
        let r = alu(op, d, s, size, fin).unwrap_or(AluResult { value: None, rflags: u64::MAX });
        (r.value, r.rflags & STATUS)
    }

    #[test]
    fn add_sets_carry_overflow_and_zero() {
        assert_eq!(flags(Op::Add, 0xff, 1, AccessSize::Byte, 0), (Some(0), CF | ZF | PF | AF));
        assert_eq!(flags(Op::Add, 0x7fff_ffff, 1, AccessSize::Dword, 0), (Some(0x8000_0000), OF | SF | PF | AF));
        assert_eq!(flags(Op::Adc, 1, 1, AccessSize::Word, CF), (Some(3), PF));
    }

    #[test]
    fn sub_and_cmp_borrow() {
        assert_eq!(flags(Op::Sub, 0, 1, AccessSize::Qword, 0), (Some(u64::MAX), CF | SF | PF | AF));
        assert_eq!(flags(Op::Cmp, 5, 5, AccessSize::Dword, 0), (None, ZF | PF));
        assert_eq!(flags(Op::Cmp, 0x80, 1, AccessSize::Byte, 0), (None, OF | AF));
        assert_eq!(flags(Op::Sbb, 5, 4, AccessSize::Byte, CF), (Some(0), ZF | PF));
    }

    #[test]
    fn logic_ops_clear_cf_of() {
        assert_eq!(flags(Op::And, 0xf0, 0x0f, AccessSize::Byte, CF | OF), (Some(0), ZF | PF));
        assert_eq!(flags(Op::Or, 0x80, 1, AccessSize::Byte, 0), (Some(0x81), SF | PF));
        assert_eq!(flags(Op::Xor, 3, 1, AccessSize::Word, 0), (Some(2), 0));
        assert_eq!(flags(Op::Test, 0x8000, 0x8000, AccessSize::Word, 0), (None, SF | PF));
        assert!(alu(Op::Mov, 0, 0, AccessSize::Byte, 0).is_none());
    }

    #[test]
    fn non_status_flags_are_kept() {
        let r = alu(Op::Add, 1, 1, AccessSize::Byte, IF | DF | 2).unwrap_or(AluResult { value: None, rflags: 0 });
        assert_eq!(r.rflags, IF | DF | 2);
    }
}
