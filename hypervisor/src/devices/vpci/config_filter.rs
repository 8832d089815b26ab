//! A table-driven filter over the 256-byte configuration header of an assigned
//! device: each byte has a [`Rule`] saying whether the guest sees the device's value
//! or a virtual one, and which of its bits the guest may change on the device.
//! Registers that need logic (command, BARs, MSI, MSI-X, power state) are
//! [`Rule::Virtual`] bytes whose changes the owner reacts to.
//!
//! Device-side writes are read-modify-write of whole dwords. Bytes the guest did
//! not write are written back as read, except write-1-to-clear bits, which are
//! written as 0 so that no status bit is cleared by accident.
#![forbid(unsafe_code)]

use crate::host::pci::ConfigAccess;
use crate::hw::Bdf;

/// The access policy for one configuration byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The device's value; guest writes are dropped.
    Real,
    /// The device's value; guest writes to the `mask` bits reach the device.
    RealWrite(u8),
    /// The device's value; a guest 1 in a `mask` bit clears it on the device.
    RealW1c(u8),
    /// A virtual value; the guest may change the `mask` bits.
    Virtual(u8),
    /// Reads as 0; writes are dropped.
    Zero,
}

/// Which bytes of the header the guest reaches, and the virtual values.
#[derive(Debug, Clone)]
pub struct ConfigFilter {
    rules: [Rule; 256],
    shadow: [u8; 256],
}

impl Default for ConfigFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigFilter {
    /// Everything reads as zero until rules are set.
    pub fn new() -> Self {
        Self { rules: [Rule::Zero; 256], shadow: [0; 256] }
    }

    /// Sets `len` bytes from `offset` to `rule` (clipped at 256).
    pub fn set(&mut self, offset: u16, len: u16, rule: Rule) {
        for i in 0..len {
            if let Some(r) = self.rules.get_mut(usize::from(offset.saturating_add(i))) {
                *r = rule;
            }
        }
    }

    /// Sets consecutive bytes from `offset` to `rules`.
    pub fn set_each(&mut self, offset: u16, rules: &[Rule]) {
        for (i, rule) in rules.iter().enumerate() {
            if let Some(r) = self.rules.get_mut(usize::from(offset).saturating_add(i)) {
                *r = *rule;
            }
        }
    }

    /// Virtual bytes with value `value` (little-endian) and write mask `wmask`.
    pub fn set_virtual(&mut self, offset: u16, len: u16, value: u32, wmask: u32) {
        for i in 0..len.min(4) {
            let shift = u32::from(i).saturating_mul(8);
            let at = offset.saturating_add(i);
            self.set(at, 1, Rule::Virtual((wmask >> shift) as u8));
            self.set_shadow_u8(at, (value >> shift) as u8);
        }
    }

    pub fn rule(&self, offset: u16) -> Rule {
        self.rules.get(usize::from(offset)).copied().unwrap_or(Rule::Zero)
    }

    pub fn shadow_u8(&self, offset: u16) -> u8 {
        self.shadow.get(usize::from(offset)).copied().unwrap_or(0)
    }

    pub fn shadow_u16(&self, offset: u16) -> u16 {
        u16::from_le_bytes([self.shadow_u8(offset), self.shadow_u8(offset.saturating_add(1))])
    }

    pub fn shadow_u32(&self, offset: u16) -> u32 {
        u32::from(self.shadow_u16(offset)) | u32::from(self.shadow_u16(offset.saturating_add(2))) << 16
    }

    pub fn set_shadow_u8(&mut self, offset: u16, value: u8) {
        if let Some(s) = self.shadow.get_mut(usize::from(offset)) {
            *s = value;
        }
    }

    pub fn set_shadow_u16(&mut self, offset: u16, value: u16) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_shadow_u8(offset.saturating_add(i as u16), b);
        }
    }

    pub fn set_shadow_u32(&mut self, offset: u16, value: u32) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_shadow_u8(offset.saturating_add(i as u16), b);
        }
    }

    /// A guest read of `size` (1, 2 or 4) bytes at `offset` below 256.
    pub fn read(&self, access: &impl ConfigAccess, bdf: Bdf, offset: u16, size: u8) -> u32 {
        let mut real: Option<(u16, u32)> = None;
        let mut value = 0u32;
        for i in 0..u16::from(size.min(4)) {
            let at = offset.saturating_add(i);
            let byte = match self.rule(at) {
                Rule::Real | Rule::RealWrite(_) | Rule::RealW1c(_) => {
                    let dword_at = at & !3;
                    let dword = match real {
                        Some((o, v)) if o == dword_at => v,
                        _ => {
                            let v = access.read32(bdf, dword_at);
                            real = Some((dword_at, v));
                            v
                        }
                    };
                    (dword >> (u32::from(at & 3).saturating_mul(8))) as u8
                }
                Rule::Virtual(_) => self.shadow_u8(at),
                Rule::Zero => 0,
            };
            value |= u32::from(byte) << u32::from(i).saturating_mul(8);
        }
        value
    }

    /// A guest write of `size` bytes at `offset` below 256. Virtual bytes take the
    /// writable bits; device bytes are written through their masks. Returns whether
    /// any virtual byte changed.
    pub fn write(&mut self, access: &impl ConfigAccess, bdf: Bdf, offset: u16, size: u8, value: u32) -> bool {
        let mut changed = false;
        // Per byte of the touched dword: the guest's byte, if written.
        let dword_at = offset & !3;
        let mut written = [None::<u8>; 4];
        for i in 0..u16::from(size.min(4)) {
            let at = offset.saturating_add(i);
            if at & !3 != dword_at {
                break;
            }
            let byte = (value >> u32::from(i).saturating_mul(8)) as u8;
            if let Some(w) = written.get_mut(usize::from(at & 3)) {
                *w = Some(byte);
            }
        }
        let mut device_write = false;
        for (i, w) in written.iter().enumerate() {
            let Some(byte) = *w else { continue };
            let at = dword_at.saturating_add(i as u16);
            match self.rule(at) {
                Rule::Virtual(mask) => {
                    let old = self.shadow_u8(at);
                    let new = (old & !mask) | (byte & mask);
                    if new != old {
                        self.set_shadow_u8(at, new);
                        changed = true;
                    }
                }
                Rule::RealWrite(mask) if mask != 0 => device_write = true,
                Rule::RealW1c(mask) if byte & mask != 0 => device_write = true,
                _ => {}
            }
        }
        if device_write {
            let real = access.read32(bdf, dword_at);
            let mut out = 0u32;
            for (i, w) in written.iter().enumerate() {
                let at = dword_at.saturating_add(i as u16);
                let shift = (i as u32).saturating_mul(8);
                let real_byte = (real >> shift) as u8;
                let byte = match (self.rule(at), *w) {
                    (Rule::RealWrite(mask), Some(g)) => (real_byte & !mask) | (g & mask),
                    (Rule::RealW1c(mask), Some(g)) => g & mask,
                    (Rule::RealW1c(_), None) => 0,
                    _ => real_byte,
                };
                out |= u32::from(byte) << shift;
            }
            access.write32(bdf, dword_at, out);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::pci::fake_cfg::{FakeCfg, bdf};

    #[test]
    fn rules_select_real_virtual_or_zero() {
        let cfg = FakeCfg::default();
        let b = bdf(0, 4, 0);
        cfg.add(b, 0x8086, 0x10d3, 0x02_00_00);
        let mut f = ConfigFilter::new();
        f.set(0, 4, Rule::Real);
        f.set_virtual(0x3c, 1, 0x0b, 0xff);
        assert_eq!(f.read(&cfg, b, 0, 4), 0x10d3_8086);
        assert_eq!(f.read(&cfg, b, 2, 2), 0x10d3);
        assert_eq!(f.read(&cfg, b, 0x3c, 4), 0x0b, "pin byte is Zero here");
        assert_eq!(f.read(&cfg, b, 0x80, 4), 0);
        assert!(f.write(&cfg, b, 0x3c, 1, 0x05));
        assert!(!f.write(&cfg, b, 0x3c, 1, 0x05), "no change");
        assert_eq!(f.read(&cfg, b, 0x3c, 1), 0x05);
        // Real bytes ignore writes: nothing reaches the device.
        f.write(&cfg, b, 0, 4, 0xffff_ffff);
        assert!(cfg.writes.borrow().is_empty());
    }

    #[test]
    fn device_writes_are_masked_and_spare_w1c_bits() {
        let cfg = FakeCfg::default();
        let b = bdf(0, 4, 0);
        cfg.add(b, 0x8086, 0x10d3, 0x02_00_00);
        // A control word (bits 3:0 writable) next to a status word with W1C bits 3:0.
        cfg.set(b, 0x48, 0x000f_00a0);
        let mut f = ConfigFilter::new();
        f.set_each(0x48, &[Rule::RealWrite(0x0f), Rule::Real, Rule::RealW1c(0x0f), Rule::Real]);
        f.write(&cfg, b, 0x48, 2, 0xffff);
        assert_eq!(cfg.writes_to(b, 0x48), [0x0000_00af], "status written as 0, reserved bits kept");
        f.write(&cfg, b, 0x4a, 2, 0x0001);
        assert_eq!(cfg.writes_to(b, 0x48)[1], 0x0001_00af);
    }
}
