//! The VMX I/O and MSR bitmaps (Intel SDM Vol. 3 25.6.4, 25.6.9), under the same
//! policy as SVM's permission maps: every port is intercepted, and every MSR except
//! those whose guest value the processor switches itself.
//!
//! - I/O bitmaps A and B: 4 KiB each, one bit per port (A: 0-0x7FFF, B:
//!   0x8000-0xFFFF); a set bit exits. They are placed back to back, so the VMCS gets
//!   A's address and A + 4 KiB.
//! - MSR bitmap: 4 KiB in four 1 KiB parts: reads of 0-0x1FFF, reads of
//!   C000_0000-C000_1FFF, writes of the low range, writes of the high range. MSRs
//!   outside both ranges always exit.
//!
//! SVM's VMSAVE/VMLOAD switch STAR, LSTAR, CSTAR, SFMASK and KernelGsBase; VM entry does
//! not, so on VMX those stay intercepted and the vCPU loads the guest's values into the
//! CPU before each entry (`vcpu.rs`). FS/GS base and SYSENTER_* are VMCS guest state
//! and pass through, as on SVM; EFER and PAT are VMCS state too but stay intercepted,
//! because the common MSR policy checks every value written to them.
#![forbid(unsafe_code)]

pub const IO_BITMAPS_BYTES: usize = 2 * 4096;
pub const MSR_BITMAP_BYTES: usize = 4096;

/// Both I/O bitmaps with every port intercepted.
pub fn io_intercept_all() -> alloc::vec::Vec<u8> {
    alloc::vec![0xff; IO_BITMAPS_BYTES]
}

/// Whether `access` to `msr` is a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapAccess {
    Read,
    Write,
}

/// The bit for `msr`/`access` in the MSR bitmap, `None` outside both ranges.
pub fn msr_bit(msr: u32, access: BitmapAccess) -> Option<usize> {
    let (range_offset, n) = match msr {
        0..=0x1fff => (0usize, msr),
        0xc000_0000..=0xc000_1fff => (1024, msr & 0x1fff),
        _ => return None,
    };
    let part: usize = if access == BitmapAccess::Write { 2048 } else { 0 };
    // At most (2048 + 1024) * 8 + 0x1fff: no overflow.
    Some(part.wrapping_add(range_offset).wrapping_mul(8).wrapping_add(n as usize))
}

/// The standard MSR bitmap: FS_BASE, GS_BASE and SYSENTER_* pass through; every
/// other MSR exits.
pub fn msr_standard() -> alloc::vec::Vec<u8> {
    use crate::hw::msr::*;
    let mut map = alloc::vec![0xffu8; MSR_BITMAP_BYTES];
    for msr in [FS_BASE, GS_BASE, SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP] {
        for access in [BitmapAccess::Read, BitmapAccess::Write] {
            if let Some(bit) = msr_bit(msr, access)
                && let Some(byte) = map.get_mut(bit / 8)
            {
                *byte &= !(1u8 << (bit % 8));
            }
        }
    }
    map
}

/// Whether the bitmap intercepts `access` to `msr`.
pub fn msr_intercepted(map: &[u8], msr: u32, access: BitmapAccess) -> bool {
    msr_bit(msr, access).is_none_or(|bit| map.get(bit / 8).is_none_or(|b| b & (1u8 << (bit % 8)) != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::msr::*;

    #[test]
    fn msr_bit_positions() {
        // SDM 25.6.9: low reads at byte 0, high reads at 1024, low writes at 2048,
        // high writes at 3072.
        assert_eq!(msr_bit(0, BitmapAccess::Read), Some(0));
        assert_eq!(msr_bit(0x1fff, BitmapAccess::Write), Some(2048 * 8 + 0x1fff));
        assert_eq!(msr_bit(0xc000_0080, BitmapAccess::Read), Some(1024 * 8 + 0x80));
        assert_eq!(msr_bit(0xc000_0100, BitmapAccess::Write), Some(3072 * 8 + 0x100));
        assert_eq!(msr_bit(0x2000, BitmapAccess::Read), None);
        assert_eq!(msr_bit(0xc001_0000, BitmapAccess::Read), None);
    }

    #[test]
    fn standard_map_passes_only_vmcs_held_msrs() {
        let m = msr_standard();
        assert_eq!(m.len(), MSR_BITMAP_BYTES);
        for msr in [FS_BASE, GS_BASE, SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP] {
            assert!(!msr_intercepted(&m, msr, BitmapAccess::Read) && !msr_intercepted(&m, msr, BitmapAccess::Write));
        }
        for msr in [EFER, PAT, STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX, APIC_BASE, 0x10, 0x4000_0000] {
            assert!(msr_intercepted(&m, msr, BitmapAccess::Read), "{msr:#x}");
            assert!(msr_intercepted(&m, msr, BitmapAccess::Write), "{msr:#x}");
        }
        // Exactly 5 MSRs x 2 accesses are open.
        let open: u32 = m.iter().map(|b| b.count_zeros()).sum();
        assert_eq!(open, 10);
        assert!(io_intercept_all().iter().all(|b| *b == 0xff));
    }
}
