//! Configuration-space access to host functions as the passthrough code uses it
//! (dword-based, with write-1-to-clear care), and its errors.
#![forbid(unsafe_code)]

use core::fmt;

use pci_types::ConfigRegionAccess;

use crate::host::pci::access::HostConfigSpace;
use crate::hw::Bdf;

/// Configuration-space access to host functions, in dwords (offset & !3).
pub trait ConfigAccess {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32;
    fn write32(&self, bdf: Bdf, offset: u16, value: u32);

    fn read16(&self, bdf: Bdf, offset: u16) -> u16 {
        (self.read32(bdf, offset & !3) >> byte_shift(offset & 2)) as u16
    }

    fn read8(&self, bdf: Bdf, offset: u16) -> u8 {
        (self.read32(bdf, offset & !3) >> byte_shift(offset & 3)) as u8
    }

    /// Writes a 16-bit register. The other half of the dword is written back as read,
    /// except for the bits in `other_w1c`, which are written as 0 so that a
    /// write-1-to-clear status sharing the dword is left alone.
    fn write16(&self, bdf: Bdf, offset: u16, value: u16, other_w1c: u16) {
        let shift = byte_shift(offset & 2);
        let other_shift = 16u32.saturating_sub(shift);
        let dword = self.read32(bdf, offset & !3);
        let other = ((dword >> other_shift) as u16) & !other_w1c;
        self.write32(bdf, offset & !3, u32::from(value) << shift | u32::from(other) << other_shift);
    }
}

/// Bit shift of byte `byte_in_dword` (0..=3, the caller masks it) within a dword.
fn byte_shift(byte_in_dword: u16) -> u32 {
    // At most 3 * 8: cannot overflow.
    u32::from(byte_in_dword).wrapping_mul(8)
}

impl<A: ConfigRegionAccess> ConfigAccess for HostConfigSpace<A> {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        if bdf.segment != self.segment() {
            return u32::MAX;
        }
        self.read(bdf.address(), offset & !3)
    }
    fn write32(&self, bdf: Bdf, offset: u16, value: u32) {
        if bdf.segment == self.segment() {
            self.write(bdf.address(), offset & !3, value);
        }
    }
}

impl<T: ConfigAccess + ?Sized> ConfigAccess for &T {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        (**self).read32(bdf, offset)
    }
    fn write32(&self, bdf: Bdf, offset: u16, value: u32) {
        (**self).write32(bdf, offset, value)
    }
}

/// What went wrong on the PCI passthrough side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciError {
    /// The function does not answer (reads all-ones).
    Absent(Bdf),
    /// Not a type-0 (endpoint) header; bridges are not assigned.
    NotAnEndpoint(Bdf),
    /// No reset method is available.
    NoReset(Bdf),
    /// The function still had transactions pending after the wait before reset.
    TransactionsPending(Bdf),
    /// The function did not come back (vendor id all-ones) after reset.
    NotReady(Bdf),
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent(b) => write!(f, "{b}: no such function"),
            Self::NotAnEndpoint(b) => write!(f, "{b}: not an endpoint"),
            Self::NoReset(b) => write!(f, "{b}: no usable reset method"),
            Self::TransactionsPending(b) => write!(f, "{b}: transactions still pending before reset"),
            Self::NotReady(b) => write!(f, "{b}: not ready after reset"),
        }
    }
}
