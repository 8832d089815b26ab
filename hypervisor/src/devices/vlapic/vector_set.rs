//! 256 vector bits, as the IRR, ISR and TMR hold them (SDM Vol. 3 §11.8.4).

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct VectorSet {
    lo: u128,
    hi: u128,
}

impl VectorSet {
    pub(super) fn contains(&self, v: u8) -> bool {
        let (word, bit) = self.locate(v);
        word & bit != 0
    }
    pub(super) fn set(&mut self, v: u8) {
        let bit = 1u128.wrapping_shl(u32::from(v));
        if v < 128 { self.lo |= bit } else { self.hi |= bit }
    }
    pub(super) fn clear(&mut self, v: u8) {
        let bit = 1u128.wrapping_shl(u32::from(v));
        if v < 128 { self.lo &= !bit } else { self.hi &= !bit }
    }
    pub(super) fn locate(&self, v: u8) -> (u128, u128) {
        let bit = 1u128.wrapping_shl(u32::from(v));
        if v < 128 { (self.lo, bit) } else { (self.hi, bit) }
    }
    pub(super) fn highest(&self) -> Option<u8> {
        let top = |w: u128, base: u8| 127u8.checked_sub(w.leading_zeros() as u8).and_then(|b| b.checked_add(base));
        if self.hi != 0 { top(self.hi, 128) } else { top(self.lo, 0) }
    }
    /// The `n`th 32-bit register (0..8) of the set.
    pub(super) fn word(&self, n: u32) -> u32 {
        let half = if n < 4 { self.lo } else { self.hi };
        half.wrapping_shr((n & 3).wrapping_mul(32)) as u32
    }
    pub(super) fn take_highest(&mut self) -> Option<u8> {
        let v = self.highest()?;
        self.clear(v);
        Some(v)
    }
}
