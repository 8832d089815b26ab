//! PCI function addresses: segment, bus, device, function (PCI Express Base 4.0 §2.2.6.2).

use core::fmt;

use pci_types::PciAddress;

/// Segment, bus, device, function of a PCI function: a host function, or one on a
/// VM's own PCI bus (segment 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    pub const fn new(segment: u16, bus: u8, device: u8, function: u8) -> Self {
        Self { segment, bus, device, function }
    }

    /// A function on segment 0; `None` unless `device < 32` and `function < 8`.
    pub const fn checked(bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device < 32 && function < 8 { Some(Bdf::new(0, bus, device, function)) } else { None }
    }

    /// A function on segment 0, device and function taken modulo 32 and 8 (for decoded
    /// address fields).
    pub const fn masked(bus: u8, device: u8, function: u8) -> Bdf {
        Bdf::new(0, bus, device & 0x1f, function & 7)
    }

    pub fn address(self) -> PciAddress {
        PciAddress::new(self.segment, self.bus, self.device, self.function)
    }

    /// The 16-bit requester id (bus << 8 | dev << 3 | fn) IOMMU tables and config
    /// address decoding use.
    pub const fn requester_id(self) -> u16 {
        (self.bus as u16) << 8 | ((self.device & 0x1f) as u16) << 3 | (self.function & 7) as u16
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segment != 0 {
            write!(f, "{:04x}:", self.segment)?;
        }
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requester_id_and_display() {
        let b = Bdf::new(0, 0x01, 0x1f, 7);
        assert_eq!(b.requester_id(), 0x01ff);
        assert_eq!(b.to_string(), "01:1f.7");
        assert_eq!(Bdf::new(2, 0, 3, 0).to_string(), "0002:00:03.0");
        assert_eq!(Bdf::checked(0, 32, 0), None);
        assert_eq!(Bdf::checked(0, 3, 8), None);
        assert_eq!(Bdf::masked(0, 35, 9), Bdf::new(0, 0, 3, 1));
    }
}
