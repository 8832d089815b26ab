//! Typed addresses. Guest-physical, host-physical and host-virtual addresses are distinct
//! types so that one can never be passed where another is meant.

use core::fmt;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }
            pub const fn raw(self) -> u64 {
                self.0
            }
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// `align` is a power of two (0 wraps to an all-ones mask, as it always did).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !align.wrapping_sub(1))
            }
            /// `align` is a power of two.
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & align.wrapping_sub(1) == 0
            }
            pub const fn page_offset(self) -> u64 {
                self.0 & 0xfff
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, ":{:#x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

address_type!(
    /// An address in a guest's physical address space (translated by nested paging).
    GuestPhysAddr, "GPA"
);
address_type!(
    /// A machine physical address.
    HostPhysAddr, "HPA"
);
address_type!(
    /// An address in the hypervisor's own virtual address space.
    HostVirtAddr, "HVA"
);

pub const PAGE_SIZE: u64 = 4096;
pub const LARGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_address_space() {
        assert_eq!(GuestPhysAddr::new(0x1000).to_string(), "GPA:0x1000");
        assert_eq!(HostPhysAddr::new(0xfee0_0000).to_string(), "HPA:0xfee00000");
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(GuestPhysAddr::new(u64::MAX).checked_add(1), None);
        assert_eq!(HostPhysAddr::new(0x1234).align_down(PAGE_SIZE), HostPhysAddr::new(0x1000));
        assert!(HostPhysAddr::new(0x20_0000).is_aligned(LARGE_PAGE_SIZE));
    }
}
