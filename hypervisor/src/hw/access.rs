//! Access widths of port, MMIO and operand accesses.

/// Width of a port, MMIO or operand access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessSize {
    Byte = 1,
    Word = 2,
    Dword = 4,
    Qword = 8,
}

impl AccessSize {
    pub const fn bytes(self) -> u8 {
        self as u8
    }
    /// All-ones value of this width.
    pub const fn mask(self) -> u64 {
        match self {
            AccessSize::Byte => 0xff,
            AccessSize::Word => 0xffff,
            AccessSize::Dword => 0xffff_ffff,
            AccessSize::Qword => u64::MAX,
        }
    }
    pub const fn from_bytes(n: u8) -> Option<AccessSize> {
        match n {
            1 => Some(AccessSize::Byte),
            2 => Some(AccessSize::Word),
            4 => Some(AccessSize::Dword),
            8 => Some(AccessSize::Qword),
            _ => None,
        }
    }
    pub const fn bits(self) -> u32 {
        match self {
            AccessSize::Byte => 8,
            AccessSize::Word => 16,
            AccessSize::Dword => 32,
            AccessSize::Qword => 64,
        }
    }
}
