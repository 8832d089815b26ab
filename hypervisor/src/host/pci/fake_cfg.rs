//! A configuration space for passthrough tests: registers per function, status and
//! PCIe device-status bits that clear on write-1, BARs that keep only their address
//! bits, FLR that clears the header, and a log of every write.

use alloc::collections::BTreeMap;
use core::cell::RefCell;

use alloc::vec::Vec;

use super::{Bdf, ConfigAccess};

#[derive(Debug, Clone)]
pub struct FakeCfgFunction {
    pub regs: [u32; 1024],
    pub bar_mask: [u32; 6],
    /// PCIe capability offset, for the FLR bit and device status.
    pub pcie: Option<u16>,
}

#[derive(Debug, Default)]
pub struct FakeCfg {
    pub funcs: RefCell<BTreeMap<Bdf, FakeCfgFunction>>,
    pub writes: RefCell<Vec<(Bdf, u16, u32)>>,
    pub flrs: RefCell<usize>,
}

pub fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(0, bus, dev, func)
}

impl FakeCfg {
    pub fn add(&self, b: Bdf, vendor: u16, device: u16, class: u32) {
        let mut regs = [0u32; 1024];
        regs[0] = u32::from(device) << 16 | u32::from(vendor);
        regs[2] = class << 8 | 1;
        regs[1] = 0x0000_0007;
        regs[0x3c / 4] = 0x0000_010b;
        self.funcs.borrow_mut().insert(b, FakeCfgFunction { regs, bar_mask: [0; 6], pcie: None });
    }
    pub fn set(&self, b: Bdf, offset: u16, value: u32) {
        self.funcs.borrow_mut().get_mut(&b).unwrap().regs[usize::from(offset) / 4] = value;
    }
    pub fn get(&self, b: Bdf, offset: u16) -> u32 {
        self.funcs.borrow()[&b].regs[usize::from(offset) / 4]
    }
    pub fn bar(&self, b: Bdf, slot: usize, value: u32, mask: u32) {
        let mut f = self.funcs.borrow_mut();
        let f = f.get_mut(&b).unwrap();
        f.regs[4 + slot] = value;
        f.bar_mask[slot] = mask;
    }
    /// Adds a capability at `offset` to the head of the list.
    pub fn cap(&self, b: Bdf, offset: u8, id: u8, control: u16, rest: &[u32]) {
        let mut f = self.funcs.borrow_mut();
        let f = f.get_mut(&b).unwrap();
        let head = f.regs[0x34 / 4] & 0xff;
        let o = usize::from(offset) / 4;
        f.regs[o] = u32::from(control) << 16 | head << 8 | u32::from(id);
        for (i, v) in rest.iter().enumerate() {
            f.regs[o + 1 + i] = *v;
        }
        f.regs[0x34 / 4] = u32::from(offset);
        f.regs[1] |= 1 << 20;
        if id == 0x10 {
            f.pcie = Some(u16::from(offset));
        }
    }
    #[cfg(test)]
    pub fn writes_to(&self, b: Bdf, offset: u16) -> Vec<u32> {
        self.writes.borrow().iter().filter(|w| w.0 == b && w.1 == offset).map(|w| w.2).collect()
    }
}

impl ConfigAccess for FakeCfg {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        self.funcs.borrow().get(&bdf).map_or(u32::MAX, |f| f.regs.get(usize::from(offset) / 4).copied().unwrap_or(0))
    }
    fn write32(&self, bdf: Bdf, offset: u16, value: u32) {
        self.writes.borrow_mut().push((bdf, offset & !3, value));
        let mut funcs = self.funcs.borrow_mut();
        let Some(f) = funcs.get_mut(&bdf) else { return };
        let i = usize::from(offset) / 4;
        match i {
            1 => f.regs[1] = (f.regs[1] & 0xffff_0000 & !(value & 0xf900_0000)) | (value & 0xffff),
            4..=9 => {
                let m = f.bar_mask[i - 4];
                f.regs[i] = (value & m) | (f.regs[i] & !m);
            }
            _ if f.pcie.is_some_and(|p| usize::from(p) / 4 + 2 == i) => {
                // Device Control | Device Status (RW1C bits 3:0).
                let sts = (f.regs[i] >> 16) & !(value >> 16 & 0xf);
                f.regs[i] = sts << 16 | (value & 0x7fff);
                if value & 0x8000 != 0 {
                    *self.flrs.borrow_mut() += 1;
                    f.regs[1] &= 0xffff_0000;
                    for s in 0..6 {
                        f.regs[4 + s] &= !f.bar_mask[s];
                    }
                }
            }
            _ if i < 1024 => f.regs[i] = value,
            _ => {}
        }
    }
}
