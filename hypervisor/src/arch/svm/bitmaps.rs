//! The I/O and MSR permission maps referenced by the VMCB.
//!
//! - IOPM (APM Vol. 2 15.10.1): 12 KiB, one bit per port 0–0xFFFF; a set bit
//!   intercepts. A multi-byte access is intercepted if any of its ports' bits is set,
//!   so the bits past 0xFFFF (in the third page) cover accesses that wrap.
//! - MSRPM (APM Vol. 2 15.11, Table 15-7): 8 KiB, two bits per MSR (even bit = read,
//!   odd bit = write) for three MSR ranges of 8K MSRs each:
//!   0000_0000–0000_1FFF at byte 0x000, C000_0000–C000_1FFF at 0x800,
//!   C001_0000–C001_1FFF at 0x1000; 0x1800–0x1FFF is reserved. MSRs outside the ranges
//!   are always intercepted.
//!
//! Both start with every bit set (everything intercepted); callers open holes. The
//! maps must be physically contiguous and 4 KiB-aligned; where they live is up to the
//! caller (the VMCB takes their physical address).
#![forbid(unsafe_code)]

pub const IOPM_BYTES: usize = 3 * 4096;
pub const MSRPM_BYTES: usize = 2 * 4096;

/// The I/O permission map.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct IoPermissionMap {
    bits: [u8; IOPM_BYTES],
}

impl core::fmt::Debug for IoPermissionMap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let open = (0..=u16::MAX).filter(|p| !self.is_intercepted(*p)).count();
        write!(f, "IoPermissionMap({open} ports passed through)")
    }
}

impl Default for IoPermissionMap {
    fn default() -> Self {
        Self::intercept_all()
    }
}

impl IoPermissionMap {
    pub const fn intercept_all() -> Self {
        IoPermissionMap { bits: [0xff; IOPM_BYTES] }
    }

    fn set(&mut self, bit: usize, value: bool) {
        if let Some(byte) = self.bits.get_mut(bit / 8) {
            let mask = 1u8 << (bit % 8);
            if value {
                *byte |= mask;
            } else {
                *byte &= !mask;
            }
        }
    }

    fn get(&self, bit: usize) -> bool {
        self.bits.get(bit / 8).is_some_and(|b| b & (1u8 << (bit % 8)) != 0)
    }

    /// Intercepts ports `[first, first + count)` (clamped at 0xFFFF).
    pub fn intercept(&mut self, first: u16, count: u16) {
        for p in u32::from(first)..u32::from(first).saturating_add(u32::from(count)).min(0x1_0000) {
            self.set(p as usize, true);
        }
    }

    /// Lets the guest access ports `[first, first + count)` directly.
    pub fn allow(&mut self, first: u16, count: u16) {
        for p in u32::from(first)..u32::from(first).saturating_add(u32::from(count)).min(0x1_0000) {
            self.set(p as usize, false);
        }
    }

    pub fn is_intercepted(&self, port: u16) -> bool {
        self.get(usize::from(port))
    }

    pub fn as_bytes(&self) -> &[u8; IOPM_BYTES] {
        &self.bits
    }
}

/// Which accesses to an MSR are intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrAccess {
    Read,
    Write,
}

/// The MSR permission map.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct MsrPermissionMap {
    bits: [u8; MSRPM_BYTES],
}

impl core::fmt::Debug for MsrPermissionMap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let open = self.bits.iter().map(|b| b.count_zeros()).sum::<u32>();
        write!(f, "MsrPermissionMap({open} accesses passed through)")
    }
}

impl Default for MsrPermissionMap {
    fn default() -> Self {
        Self::intercept_all()
    }
}

/// The MSR ranges the map covers: (first MSR, byte offset of its vector).
const MSR_RANGES: [(u32, usize); 3] = [(0, 0), (0xc000_0000, 0x800), (0xc001_0000, 0x1000)];
const MSRS_PER_RANGE: u32 = 0x2000;

impl MsrPermissionMap {
    pub const fn intercept_all() -> Self {
        MsrPermissionMap { bits: [0xff; MSRPM_BYTES] }
    }

    /// The bit index for `msr`/`access`, or `None` if the MSR is outside every range.
    pub fn bit_index(msr: u32, access: MsrAccess) -> Option<usize> {
        MSR_RANGES.iter().find_map(|&(base, offset)| {
            let n = msr.checked_sub(base).filter(|n| *n < MSRS_PER_RANGE)?;
            let write = usize::from(access == MsrAccess::Write);
            Some(offset.wrapping_mul(8).wrapping_add((n as usize).wrapping_mul(2)).wrapping_add(write))
        })
    }

    fn set(&mut self, msr: u32, access: MsrAccess, value: bool) -> bool {
        let Some(bit) = Self::bit_index(msr, access) else {
            return false;
        };
        match self.bits.get_mut(bit / 8) {
            Some(byte) => {
                let mask = 1u8 << (bit % 8);
                if value {
                    *byte |= mask;
                } else {
                    *byte &= !mask;
                }
                true
            }
            None => false,
        }
    }

    /// Intercepts `access` to `msr`. Always true in effect; returns false if the MSR
    /// is outside the map (and therefore always intercepted anyway).
    pub fn intercept(&mut self, msr: u32, access: MsrAccess) -> bool {
        self.set(msr, access, true)
    }

    /// Passes `access` to `msr` through. Returns false (and changes nothing) if the MSR
    /// is outside the map: such MSRs are always intercepted.
    pub fn allow(&mut self, msr: u32, access: MsrAccess) -> bool {
        self.set(msr, access, false)
    }

    /// Passes reads and writes of `msr` through.
    pub fn allow_rw(&mut self, msr: u32) -> bool {
        self.allow(msr, MsrAccess::Read) && self.allow(msr, MsrAccess::Write)
    }

    pub fn is_intercepted(&self, msr: u32, access: MsrAccess) -> bool {
        Self::bit_index(msr, access)
            .is_none_or(|bit| self.bits.get(bit / 8).is_none_or(|b| b & (1u8 << (bit % 8)) != 0))
    }

    pub fn as_bytes(&self) -> &[u8; MSRPM_BYTES] {
        &self.bits
    }

    /// The standard map: MSRs switched by VMRUN/VMLOAD/VMSAVE through the VMCB pass
    /// through (FS/GS/KernelGS base, STAR, LSTAR, CSTAR, SFMASK, SYSENTER_*); all
    /// others, EFER and PAT included, are intercepted.
    pub fn standard() -> Self {
        use crate::hw::msr::*;
        let mut m = Self::intercept_all();
        for msr in
            [FS_BASE, GS_BASE, KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK, SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP]
        {
            m.allow_rw(msr);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_alignment() {
        assert_eq!(core::mem::size_of::<IoPermissionMap>(), 12288);
        assert_eq!(core::mem::align_of::<IoPermissionMap>(), 4096);
        assert_eq!(core::mem::size_of::<MsrPermissionMap>(), 8192);
        assert_eq!(core::mem::align_of::<MsrPermissionMap>(), 4096);
    }

    #[test]
    fn iopm_bit_per_port() {
        let mut m = Box::new(IoPermissionMap::intercept_all());
        m.allow(0, 0xffff);
        m.allow(0xffff, 1);
        assert!(m.as_bytes()[..8192].iter().all(|b| *b == 0));
        // The bits beyond 0xFFFF stay set.
        assert!(m.as_bytes()[8192..].iter().all(|b| *b == 0xff));
        m.intercept(0x3f8, 8);
        assert_eq!(m.as_bytes()[0x3f8 / 8], 0xff);
        assert_eq!(m.as_bytes()[0x3f8 / 8 - 1], 0);
        m.intercept(0x71, 1);
        assert_eq!(m.as_bytes()[0x0e], 0b0000_0010);
        assert!(m.is_intercepted(0x71) && !m.is_intercepted(0x70));
        m.intercept(0xfffe, 10);
        assert!(m.is_intercepted(0xffff));
    }

    #[test]
    fn msrpm_exact_positions() {
        // MSR 0: bits 0 (read) and 1 (write) of byte 0.
        assert_eq!(MsrPermissionMap::bit_index(0, MsrAccess::Read), Some(0));
        assert_eq!(MsrPermissionMap::bit_index(0, MsrAccess::Write), Some(1));
        // MSR 0x1FFF: last two bits of byte 0x7FF.
        assert_eq!(MsrPermissionMap::bit_index(0x1fff, MsrAccess::Write), Some(0x7ff * 8 + 7));
        // EFER (C000_0080): byte 0x800 + 0x80*2/8 = 0x820, bits 0/1.
        assert_eq!(MsrPermissionMap::bit_index(0xc000_0080, MsrAccess::Read), Some(0x820 * 8));
        // C000_1FFF: byte 0xFFF bit 7 for write.
        assert_eq!(MsrPermissionMap::bit_index(0xc000_1fff, MsrAccess::Write), Some(0xfff * 8 + 7));
        // VM_HSAVE_PA (C001_0117): byte 0x1000 + 0x117*2/8 = 0x1045, bits 6/7.
        assert_eq!(MsrPermissionMap::bit_index(0xc001_0117, MsrAccess::Read), Some(0x1045 * 8 + 6));
        assert_eq!(MsrPermissionMap::bit_index(0xc001_1fff, MsrAccess::Write), Some(0x17ff * 8 + 7));
        // Outside the ranges.
        for msr in [0x2000, 0xbfff_ffff, 0xc000_2000, 0xc001_2000, 0xffff_ffff] {
            assert_eq!(MsrPermissionMap::bit_index(msr, MsrAccess::Read), None, "{msr:#x}");
        }
    }

    #[test]
    fn msrpm_allow_and_intercept() {
        let mut m = Box::new(MsrPermissionMap::intercept_all());
        assert!(m.allow(0x10, MsrAccess::Read));
        assert_eq!(m.as_bytes()[4], 0b1111_1110);
        assert!(!m.is_intercepted(0x10, MsrAccess::Read));
        assert!(m.is_intercepted(0x10, MsrAccess::Write));
        assert!(!m.allow(0x4000_0000, MsrAccess::Read));
        assert!(m.is_intercepted(0x4000_0000, MsrAccess::Read));
        assert!(m.allow_rw(0xc000_0082));
        assert_eq!(m.as_bytes()[0x820], 0b1100_1111);
        m.intercept(0xc000_0082, MsrAccess::Write);
        assert_eq!(m.as_bytes()[0x820], 0b1110_1111);
        // Reserved vector stays all-ones.
        assert!(m.as_bytes()[0x1800..].iter().all(|b| *b == 0xff));
    }

    #[test]
    fn standard_map() {
        let m = Box::new(MsrPermissionMap::standard());
        assert!(!m.is_intercepted(0xc000_0100, MsrAccess::Write));
        assert!(!m.is_intercepted(0x174, MsrAccess::Read));
        assert!(m.is_intercepted(0xc000_0080, MsrAccess::Write));
        assert!(m.is_intercepted(0x277, MsrAccess::Read));
        assert!(m.is_intercepted(0x10, MsrAccess::Read));
        assert!(m.is_intercepted(0xc001_0117, MsrAccess::Write));
    }
}
