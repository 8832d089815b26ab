//! PCI configuration space bookkeeping for virtual functions: a 256-byte or 4 KiB space
//! with per-byte write masks, read-only IDs, write-1-to-clear status bits, BAR sizing for
//! memory32, memory64 and I/O BARs, and a capability list builder. Device models (the
//! host bridge, virtio, passthrough shadows) keep one [`VConfigSpace`] and forward the
//! guest's configuration accesses to it.
//!
//! References: PCI Local Bus Specification 3.0 §6.1–6.2 (type 0 header), §6.2.5 (BARs),
//! §6.7 (capabilities).
#![forbid(unsafe_code)]

use crate::hw::Bdf;
use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::hw::AccessSize;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VBarKind {
    Io,
    Memory32 {
        prefetchable: bool,
    },
    /// Takes this BAR and the next one (the upper 32 bits).
    Memory64 {
        prefetchable: bool,
    },
}

/// A BAR as the device defines it: its kind and size (a power of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarDef {
    pub kind: VBarKind,
    pub size: u64,
}

/// A BAR as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRegion {
    pub index: u8,
    pub kind: VBarKind,
    pub address: u64,
    pub size: u64,
    /// The command register enables decoding of this BAR's space.
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpciError {
    /// Another function already sits at this address.
    Occupied(Bdf),
    /// BAR index out of range, or a 64-bit BAR in slot 5, or the slot is taken.
    BadBar(u8),
    /// BAR size is not a power of two, or too large for its kind.
    BadBarSize(u64),
    /// No room left for a capability.
    NoCapabilitySpace,
}

/// Size of a function's configuration space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSize {
    /// Conventional PCI: 256 bytes.
    Legacy = 256,
    /// PCI Express: 4 KiB.
    Extended = 4096,
}

/// A type-0 configuration space with write masks.
pub struct VConfigSpace {
    data: Box<[u8]>,
    /// Bits the guest may write.
    wmask: Box<[u8]>,
    /// Bits the guest clears by writing 1.
    w1c: Box<[u8]>,
    bars: [Option<BarDef>; 6],
    /// The `next` byte of the last capability, or `None` before the first.
    last_cap_next: Option<u16>,
    next_cap_offset: u16,
}

pub use crate::hw::pci::{
    BAR0, CACHE_LINE_SIZE, CAP_PTR, CLASS_CODE, CMD_BUS_MASTER, CMD_INTX_DISABLE, CMD_IO, CMD_MEMORY, CMD_PARITY,
    CMD_SERR, COMMAND, DEVICE_ID, FIRST_CAPABILITY, HEADER_TYPE, INTERRUPT_LINE, INTERRUPT_PIN, REVISION_ID, STATUS,
    STS_CAP_LIST, STS_ERRORS, SUBSYSTEM_ID, SUBSYSTEM_VENDOR_ID, VENDOR_ID,
};

/// The command bits a guest may change.
pub const CMD_WRITABLE: u16 = CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | CMD_PARITY | CMD_SERR | CMD_INTX_DISABLE;
// BAR low bits, §6.2.5.1.
const BAR_IO: u32 = 1 << 0;
const BAR_MEM64: u32 = 0b10 << 1;
const BAR_PREFETCH: u32 = 1 << 3;

impl core::fmt::Debug for VConfigSpace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VConfigSpace")
            .field("vendor", &self.u16_at(VENDOR_ID))
            .field("device", &self.u16_at(DEVICE_ID))
            .field("len", &self.data.len())
            .field("bars", &self.bars)
            .finish_non_exhaustive()
    }
}

impl VConfigSpace {
    /// A type-0 header with the given IDs; `class` is base class, subclass and
    /// programming interface (`0x06_00_00` for a host bridge).
    pub fn new(size: ConfigSize, vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let len = size as usize;
        let mut cs = VConfigSpace {
            data: alloc::vec![0; len].into_boxed_slice(),
            wmask: alloc::vec![0; len].into_boxed_slice(),
            w1c: alloc::vec![0; len].into_boxed_slice(),
            bars: [None; 6],
            last_cap_next: None,
            next_cap_offset: FIRST_CAPABILITY,
        };
        cs.set_u16(VENDOR_ID, vendor);
        cs.set_u16(DEVICE_ID, device);
        cs.set_u8(REVISION_ID, revision);
        for (i, b) in class.to_le_bytes().into_iter().take(3).enumerate() {
            cs.set_u8(CLASS_CODE.wrapping_add(i as u16), b);
        }
        cs.set_masks(COMMAND, &CMD_WRITABLE.to_le_bytes(), &[0, 0]);
        cs.set_masks(STATUS, &[0, 0], &STS_ERRORS.to_le_bytes());
        cs.set_masks(CACHE_LINE_SIZE, &[0xFF], &[0]);
        cs.set_masks(INTERRUPT_LINE, &[0xFF], &[0]);
        cs
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn set_masks(&mut self, offset: u16, wmask: &[u8], w1c: &[u8]) {
        let start = usize::from(offset);
        for (i, (&w, &c)) in wmask.iter().zip(w1c.iter()).enumerate() {
            let at = start.saturating_add(i);
            if let Some(slot) = self.wmask.get_mut(at) {
                *slot = w;
            }
            if let Some(slot) = self.w1c.get_mut(at) {
                *slot = c;
            }
        }
    }

    /// Device-side writes, ignoring the guest's write masks.
    pub fn set_u8(&mut self, offset: u16, value: u8) {
        if let Some(slot) = self.data.get_mut(usize::from(offset)) {
            *slot = value;
        }
    }
    pub fn set_u16(&mut self, offset: u16, value: u16) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_u8(offset.wrapping_add(i as u16), b);
        }
    }
    pub fn set_u32(&mut self, offset: u16, value: u32) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_u8(offset.wrapping_add(i as u16), b);
        }
    }
    pub fn u8_at(&self, offset: u16) -> u8 {
        self.data.get(usize::from(offset)).copied().unwrap_or(0)
    }
    pub fn u16_at(&self, offset: u16) -> u16 {
        u16::from_le_bytes([self.u8_at(offset), self.u8_at(offset.wrapping_add(1))])
    }
    pub fn u32_at(&self, offset: u16) -> u32 {
        u32::from(self.u16_at(offset)) | (u32::from(self.u16_at(offset.wrapping_add(2))) << 16)
    }

    /// Marks the function multi-function (header type bit 7).
    pub fn set_multifunction(&mut self, multi: bool) {
        let ht = self.u8_at(HEADER_TYPE);
        self.set_u8(HEADER_TYPE, if multi { ht | 0x80 } else { ht & 0x7F });
    }

    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.set_u16(SUBSYSTEM_VENDOR_ID, vendor);
        self.set_u16(SUBSYSTEM_ID, id);
    }

    /// INTA# = 1 .. INTD# = 4; 0 for none.
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set_u8(INTERRUPT_PIN, pin);
    }

    /// Sets status bits from the device side (for example an error the guest then clears).
    pub fn raise_status(&mut self, bits: u16) {
        let status = self.u16_at(STATUS);
        self.set_u16(STATUS, status | bits);
    }

    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    /// Defines BAR `index`. Memory BARs are at least 16 bytes, I/O BARs 4 bytes; I/O BARs
    /// decode 16-bit port addresses.
    pub fn add_bar(&mut self, index: u8, bar: BarDef) -> Result<(), VpciError> {
        let slot = usize::from(index);
        let is64 = matches!(bar.kind, VBarKind::Memory64 { .. });
        let upper = slot.checked_add(1);
        let taken = |s: Option<usize>| s.and_then(|s| self.bars.get(s)).is_none_or(|b| b.is_some());
        if taken(Some(slot)) || (is64 && taken(upper)) {
            return Err(VpciError::BadBar(index));
        }
        // A 64-bit BAR's upper half is recorded as taken through the lower one.
        if slot > 0
            && self
                .bars
                .get(slot.wrapping_sub(1))
                .copied()
                .flatten()
                .is_some_and(|b| matches!(b.kind, VBarKind::Memory64 { .. }))
        {
            return Err(VpciError::BadBar(index));
        }
        let min = if bar.kind == VBarKind::Io { 4 } else { 16 };
        let size = bar.size.max(min);
        let max = match bar.kind {
            VBarKind::Io => 1 << 16,
            VBarKind::Memory32 { .. } => 1 << 31,
            VBarKind::Memory64 { .. } => 1 << 63,
        };
        if !size.is_power_of_two() || size > max {
            return Err(VpciError::BadBarSize(bar.size));
        }
        let addr_mask = !size.wrapping_sub(1);
        let offset = BAR0.wrapping_add(u16::from(index).wrapping_mul(4));
        let (low_bits, low_mask) = match bar.kind {
            VBarKind::Io => (BAR_IO, (addr_mask as u32) & 0xFFFC),
            VBarKind::Memory32 { prefetchable } => {
                (if prefetchable { BAR_PREFETCH } else { 0 }, (addr_mask as u32) & 0xFFFF_FFF0)
            }
            VBarKind::Memory64 { prefetchable } => {
                (BAR_MEM64 | if prefetchable { BAR_PREFETCH } else { 0 }, (addr_mask as u32) & 0xFFFF_FFF0)
            }
        };
        self.set_u32(offset, low_bits);
        self.set_masks(offset, &low_mask.to_le_bytes(), &[0; 4]);
        if is64 {
            let high = offset.wrapping_add(4);
            self.set_u32(high, 0);
            self.set_masks(high, &((addr_mask >> 32) as u32).to_le_bytes(), &[0; 4]);
        }
        if let Some(b) = self.bars.get_mut(slot) {
            *b = Some(BarDef { kind: bar.kind, size });
        }
        Ok(())
    }

    /// Appends a capability with `id` and `body` (the bytes after ID and next pointer);
    /// `writable` gives the guest-writable bits of `body` (missing bytes: read-only).
    /// Returns the capability's offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> Result<u8, VpciError> {
        let offset = self.next_cap_offset;
        let len = u16::try_from(body.len()).ok().and_then(|l| l.checked_add(2)).ok_or(VpciError::NoCapabilitySpace)?;
        let end = offset.checked_add(len).ok_or(VpciError::NoCapabilitySpace)?;
        if end > 0x100 {
            return Err(VpciError::NoCapabilitySpace);
        }
        let cap = offset as u8;
        self.set_u8(offset, id);
        self.set_u8(offset.wrapping_add(1), 0);
        for (i, &b) in body.iter().enumerate() {
            let at = offset.wrapping_add(2).wrapping_add(i as u16);
            self.set_u8(at, b);
            self.set_masks(at, &[writable.get(i).copied().unwrap_or(0)], &[0]);
        }
        match self.last_cap_next {
            Some(next) => self.set_u8(next, cap),
            None => self.set_u8(CAP_PTR, cap),
        }
        self.last_cap_next = Some(offset.wrapping_add(1));
        self.raise_status(STS_CAP_LIST);
        // Keep capabilities dword-aligned (§6.7).
        self.next_cap_offset = end.wrapping_add(3) & !3;
        Ok(cap)
    }

    /// A guest read; beyond the space it reads 0.
    pub fn read(&self, offset: u16, size: AccessSize) -> u32 {
        let mut value = 0u32;
        for i in 0..size.bytes().min(4) {
            let byte = self.u8_at(offset.wrapping_add(u16::from(i)));
            value |= u32::from(byte) << (u32::from(i) * 8);
        }
        value
    }

    /// A guest write, through the write and write-1-to-clear masks.
    pub fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
        for (i, byte) in value.to_le_bytes().into_iter().take(usize::from(size.bytes())).enumerate() {
            let at = usize::from(offset).saturating_add(i);
            let (Some(&old), Some(&wmask), Some(&w1c)) = (self.data.get(at), self.wmask.get(at), self.w1c.get(at))
            else {
                continue;
            };
            let new = ((old & !wmask) | (byte & wmask)) & !(byte & w1c);
            if let Some(slot) = self.data.get_mut(at) {
                *slot = new;
            }
        }
    }

    /// The BARs with the addresses the guest programmed.
    pub fn bar_regions(&self) -> Vec<BarRegion> {
        let command = self.command();
        let mut out = Vec::new();
        for (index, bar) in self.bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            let offset = BAR0.wrapping_add((index as u16).wrapping_mul(4));
            let low = self.u32_at(offset);
            let (address, enabled) = match bar.kind {
                VBarKind::Io => (u64::from(low & !0x3), command & CMD_IO != 0),
                VBarKind::Memory32 { .. } => (u64::from(low & !0xF), command & CMD_MEMORY != 0),
                VBarKind::Memory64 { .. } => {
                    let high = self.u32_at(offset.wrapping_add(4));
                    ((u64::from(high) << 32) | u64::from(low & !0xF), command & CMD_MEMORY != 0)
                }
            };
            out.push(BarRegion { index: index as u8, kind: bar.kind, address, size: bar.size, enabled });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_list_walks() {
        let mut cs = VConfigSpace::new(ConfigSize::Legacy, 0x1AF4, 0x1041, 0x02_00_00, 1);
        assert_eq!(cs.u16_at(STATUS) & STS_CAP_LIST, 0);
        let msix = cs.add_capability(0x11, &[0x03, 0x00, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0], &[0x00, 0xC0]).unwrap();
        let vendor = cs.add_capability(0x09, &[0x05, 0xAA, 0xBB], &[]).unwrap();
        assert_eq!((msix, vendor), (0x40, 0x4C));
        assert_ne!(cs.u16_at(STATUS) & STS_CAP_LIST, 0);
        // Walk as Linux's pci_find_capability does.
        let mut found = Vec::new();
        let mut pos = cs.read(CAP_PTR, AccessSize::Byte) as u16;
        while pos != 0 && found.len() < 48 {
            found.push((pos, cs.read(pos, AccessSize::Byte) as u8));
            pos = cs.read(pos + 1, AccessSize::Byte) as u16 & !3;
        }
        assert_eq!(found, [(0x40, 0x11), (0x4C, 0x09)]);
        // Only the masked bits of the body are writable (MSI-X enable/mask).
        cs.write(0x42, AccessSize::Word, 0xFFFF);
        assert_eq!(cs.read(0x42, AccessSize::Word), 0xC003);
        cs.write(0x4E, AccessSize::Byte, 0);
        assert_eq!(cs.read(0x4E, AccessSize::Dword), 0x00BB_AA05);
        // Space runs out before 0x100.
        assert_eq!(cs.add_capability(0x09, &[0; 200], &[]), Err(VpciError::NoCapabilitySpace));
    }

    #[test]
    fn bar_definitions_are_checked() {
        let mut cs = VConfigSpace::new(ConfigSize::Legacy, 1, 2, 0, 0);
        let mem = |size| BarDef { kind: VBarKind::Memory32 { prefetchable: false }, size };
        assert_eq!(cs.add_bar(6, mem(0x1000)), Err(VpciError::BadBar(6)));
        assert_eq!(cs.add_bar(0, mem(0x1800)), Err(VpciError::BadBarSize(0x1800)));
        assert_eq!(cs.add_bar(0, BarDef { kind: VBarKind::Io, size: 1 << 17 }), Err(VpciError::BadBarSize(1 << 17)));
        assert_eq!(
            cs.add_bar(5, BarDef { kind: VBarKind::Memory64 { prefetchable: false }, size: 16 }),
            Err(VpciError::BadBar(5))
        );
        cs.add_bar(0, BarDef { kind: VBarKind::Memory64 { prefetchable: false }, size: 1 << 33 }).unwrap();
        assert_eq!(cs.add_bar(1, mem(16)), Err(VpciError::BadBar(1)), "upper half of BAR0");
        assert_eq!(cs.add_bar(0, mem(16)), Err(VpciError::BadBar(0)));
        cs.add_bar(2, mem(4)).unwrap(); // rounded up to 16
        cs.write(BAR0, AccessSize::Dword, 0xFFFF_FFFF);
        cs.write(BAR0 + 4, AccessSize::Dword, 0xFFFF_FFFF);
        cs.write(BAR0 + 8, AccessSize::Dword, 0xFFFF_FFFF);
        assert_eq!(cs.u32_at(BAR0), 0x0000_0004);
        assert_eq!(cs.u32_at(BAR0 + 4), 0xFFFF_FFFE, "8 GiB BAR");
        assert_eq!(cs.u32_at(BAR0 + 8), 0xFFFF_FFF0);
    }
}
