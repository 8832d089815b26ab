//! MSI-X for an emulated function (PCI Local Bus Spec 3.0 §6.8.2): the table the guest
//! programs and the Pending Bit Array. A vector the device raises while masked (entry
//! or function mask) stays pending and is delivered once unmasked (§6.8.2.9); MSI-X
//! disabled leaves delivery to the caller's fallback (INTx).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::devices::vpci::msi::{MSIX_VECTOR_MASKED, MsixEntry};
use crate::hw::{AccessSize, MsiMessage};

/// Table entry size (§6.8.2, Figure 6-11).
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// At most this many vectors, so the pending bits fit one word.
pub const MAX_VECTORS: u16 = 64;

/// The table and pending bits of one function.
#[derive(Debug, Clone)]
pub struct MsixVectors {
    entries: Vec<MsixEntry>,
    pending: u64,
}

impl MsixVectors {
    /// `count` vectors (1..=64), all masked as after reset.
    pub fn new(count: u16) -> Self {
        let n = usize::from(count.clamp(1, MAX_VECTORS));
        MsixVectors { entries: alloc::vec![MsixEntry { address: 0, data: 0, masked: true }; n], pending: 0 }
    }

    pub fn count(&self) -> u16 {
        self.entries.len() as u16
    }

    /// The table's length in bytes.
    pub fn table_len(&self) -> u64 {
        (self.entries.len() as u64).wrapping_mul(MSIX_ENTRY_SIZE)
    }

    fn dword(&self, offset: u64) -> u32 {
        let Some(entry) = usize::try_from(offset / MSIX_ENTRY_SIZE).ok().and_then(|i| self.entries.get(i)) else {
            return 0;
        };
        match (offset % MSIX_ENTRY_SIZE) / 4 {
            0 => entry.address as u32,
            1 => (entry.address >> 32) as u32,
            2 => entry.data,
            _ => u32::from(entry.masked),
        }
    }

    /// A read inside the table (`offset` from its start); outside it reads 0.
    pub fn table_read(&self, offset: u64, size: AccessSize) -> u32 {
        let shift = (offset % 4).wrapping_mul(8) as u32;
        let value = self.dword(offset & !3).checked_shr(shift).unwrap_or(0);
        value & size.mask() as u32
    }

    /// A write inside the table: the bytes of one dword field (address, upper address,
    /// data, vector control whose bit 0 alone is writable).
    pub fn table_write(&mut self, offset: u64, size: AccessSize, value: u32) {
        let base = offset & !3;
        let shift = (offset % 4).wrapping_mul(8) as u32;
        let mask = (size.mask() as u32).checked_shl(shift).unwrap_or(0);
        let old = self.dword(base);
        let new = (old & !mask) | (value.checked_shl(shift).unwrap_or(0) & mask);
        let Some(entry) = usize::try_from(base / MSIX_ENTRY_SIZE).ok().and_then(|i| self.entries.get_mut(i)) else {
            return;
        };
        match (base % MSIX_ENTRY_SIZE) / 4 {
            0 => entry.address = (entry.address & !0xFFFF_FFFF) | u64::from(new & !3),
            1 => entry.address = (entry.address & 0xFFFF_FFFF) | (u64::from(new) << 32),
            2 => entry.data = new,
            _ => entry.masked = new & MSIX_VECTOR_MASKED != 0,
        }
    }

    /// A read of the Pending Bit Array (`offset` from its start).
    pub fn pba_read(&self, offset: u64, size: AccessSize) -> u64 {
        let shift = offset.wrapping_mul(8);
        let bits = if shift < 64 { self.pending >> shift } else { 0 };
        bits & size.mask()
    }

    /// The device signals `vector`; a vector beyond the table is ignored.
    pub fn raise(&mut self, vector: u16) {
        if vector < self.count() {
            self.pending |= 1u64 << vector;
        }
    }

    /// Clears every pending vector (a device reset).
    pub fn clear_pending(&mut self) {
        self.pending = 0;
    }

    /// Moves every pending vector that is not masked into `out` as its message, and
    /// clears its pending bit; masked ones stay pending.
    pub fn take_ready(&mut self, function_masked: bool, out: &mut Vec<MsiMessage>) {
        if function_masked {
            return;
        }
        for (i, entry) in self.entries.iter().enumerate() {
            let bit = 1u64 << i;
            if self.pending & bit != 0 && !entry.masked {
                self.pending &= !bit;
                out.push(MsiMessage { address: entry.address, data: entry.data });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_fields_by_width() {
        let mut v = MsixVectors::new(3);
        assert_eq!(v.table_len(), 48);
        assert_eq!(v.table_read(0x1c, AccessSize::Dword), 1, "masked after reset");
        v.table_write(0x10, AccessSize::Dword, 0xfee0_1003);
        v.table_write(0x14, AccessSize::Dword, 0);
        v.table_write(0x18, AccessSize::Word, 0x4041);
        v.table_write(0x1a, AccessSize::Byte, 0x01);
        v.table_write(0x1c, AccessSize::Dword, 0xffff_fffe);
        assert_eq!(v.table_read(0x10, AccessSize::Dword), 0xfee0_1000, "address bits 1:0 reserved");
        assert_eq!(v.table_read(0x18, AccessSize::Dword), 0x0001_4041);
        assert_eq!(v.table_read(0x19, AccessSize::Byte), 0x40);
        assert_eq!(v.table_read(0x1c, AccessSize::Dword), 0, "only the mask bit is kept");
        // Beyond the table: reads 0, writes vanish.
        v.table_write(0x30, AccessSize::Dword, 5);
        assert_eq!(v.table_read(0x30, AccessSize::Dword), 0);
        assert_eq!(MsixVectors::new(0).count(), 1);
        assert_eq!(MsixVectors::new(500).count(), 64);
    }

    #[test]
    fn masked_vectors_stay_pending_until_unmasked() {
        let mut v = MsixVectors::new(2);
        v.table_write(0x0, AccessSize::Dword, 0xfee0_0000);
        v.table_write(0x8, AccessSize::Dword, 0x31);
        v.table_write(0x10, AccessSize::Dword, 0xfee0_0000);
        v.table_write(0x18, AccessSize::Dword, 0x32);
        v.table_write(0x1c, AccessSize::Dword, 0);
        v.raise(0);
        v.raise(1);
        v.raise(7);
        let mut out = Vec::new();
        v.take_ready(false, &mut out);
        assert_eq!(out, [MsiMessage { address: 0xfee0_0000, data: 0x32 }], "vector 0 is still masked");
        assert_eq!(v.pba_read(0, AccessSize::Qword), 0b01);
        // The function mask holds everything back.
        v.table_write(0xc, AccessSize::Dword, 0);
        out.clear();
        v.take_ready(true, &mut out);
        assert!(out.is_empty());
        v.take_ready(false, &mut out);
        assert_eq!(out, [MsiMessage { address: 0xfee0_0000, data: 0x31 }]);
        assert_eq!(v.pba_read(0, AccessSize::Qword), 0);
        v.raise(1);
        v.clear_pending();
        out.clear();
        v.take_ready(false, &mut out);
        assert!(out.is_empty());
    }
}
