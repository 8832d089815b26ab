//! The one way the hypervisor touches memory-mapped device registers: every volatile
//! access goes through [`MmioRegion`]. The region is created once, `unsafe`, by the
//! code that knows the block is a device's registers and identity mapped (the
//! hypervisor maps all physical memory and MMIO at the same virtual address, see
//! `memory::direct_map`); after that each access is bounds- and alignment-checked.
#![allow(unsafe_code)]

/// A value one register access moves: 8, 16, 32 or 64 bits. Sealed: the volatile
/// read below is sound only for plain integers (every bit pattern valid, alignment =
/// size), so no other type may implement it.
pub trait Register: Copy + sealed::Integer {
    const ONES: Self;
}
mod sealed {
    pub trait Integer {}
    impl Integer for u8 {}
    impl Integer for u16 {}
    impl Integer for u32 {}
    impl Integer for u64 {}
}
impl Register for u8 {
    const ONES: Self = u8::MAX;
}
impl Register for u16 {
    const ONES: Self = u16::MAX;
}
impl Register for u32 {
    const ONES: Self = u32::MAX;
}
impl Register for u64 {
    const ONES: Self = u64::MAX;
}

/// A block of device registers at a fixed physical (= virtual) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioRegion {
    base: u64,
    len: u64,
}

impl MmioRegion {
    /// # Safety
    /// `base..base + len` must be a device's register block (or other memory whose
    /// every access has only the effects the owner intends), identity mapped with an
    /// uncacheable or write-combining type, and accessed by nothing but this region
    /// and its copies, which the caller keeps on one owner.
    pub const unsafe fn new(base: u64, len: u64) -> Self {
        Self { base, len }
    }

    pub const fn base(&self) -> u64 {
        self.base
    }

    pub const fn len(&self) -> u64 {
        self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of an access of `T` at `offset`, if it lies inside the region and
    /// is naturally aligned.
    pub fn address_of<T>(&self, offset: u64) -> Option<u64> {
        let size = core::mem::size_of::<T>() as u64;
        if !offset.is_multiple_of(size) || offset.checked_add(size)? > self.len {
            return None;
        }
        self.base.checked_add(offset)
    }

    fn pointer<T>(&self, offset: u64) -> Option<usize> {
        usize::try_from(self.address_of::<T>(offset)?).ok()
    }

    /// Reads the register at `offset`; all-ones when it lies outside the region, as
    /// a bus read of nothing would.
    pub fn read<T: Register>(&self, offset: u64) -> T {
        match self.pointer::<T>(offset) {
            // SAFETY: inside the register block (`new`'s contract) and naturally
            // aligned; `T` is an integer (sealed `Register`), so any value read is
            // valid; the owner decides which register reads have side effects.
            Some(p) => unsafe { (p as *const T).read_volatile() },
            None => T::ONES,
        }
    }

    /// Writes the register at `offset`; dropped when it lies outside the region.
    pub fn write<T: Register>(&self, offset: u64, value: T) {
        if let Some(p) = self.pointer::<T>(offset) {
            // SAFETY: as for `read`; the owner decides the effect of the write.
            unsafe { (p as *mut T).write_volatile(value) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_stay_inside_and_aligned() {
        let mut block = [0u64; 4];
        let base = block.as_mut_ptr() as u64;
        // SAFETY: a local array stands in for a register block.
        let r = unsafe { MmioRegion::new(base, 32) };
        r.write::<u32>(4, 0xdead_beef);
        assert_eq!(r.read::<u32>(4), 0xdead_beef);
        r.write::<u64>(24, 7);
        assert_eq!(r.read::<u64>(24), 7);
        assert_eq!(r.read::<u64>(28), u64::MAX, "misaligned");
        assert_eq!(r.read::<u32>(32), u32::MAX, "past the end");
        r.write::<u8>(32, 1);
        assert_eq!(r.read::<u16>(u64::MAX - 1), u16::MAX, "no overflow");
        assert_eq!(block[0], 0xdead_beef_0000_0000);
    }
}
