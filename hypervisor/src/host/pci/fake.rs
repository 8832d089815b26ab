//! A HashMap-backed configuration space for host tests. It models what enumeration
//! relies on: absent functions read all-ones, BARs keep only their writable address
//! bits (so writing all-ones reads back the size mask), the status half of the command
//! dword is not writable, and it counts BAR probes made while decode was enabled.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use pci_types::{ConfigRegionAccess, PciAddress};

use crate::host::pci::access::HostConfigSpace;

#[derive(Debug, Clone)]
pub struct FakeFunction {
    pub regs: [u32; 1024],
    /// Writable bits of each BAR register; 0 = not implemented.
    pub bar_writable: [u32; 6],
    /// Writable address bits of the expansion ROM BAR; 0 = none.
    pub rom_writable: u32,
}

#[derive(Debug, Default)]
pub struct FakeConfigSpace {
    pub funcs: RefCell<HashMap<(u8, u8, u8), FakeFunction>>,
    /// All-ones BAR writes while memory or I/O decode was on.
    pub probes_with_decode_on: Cell<usize>,
}

impl FakeConfigSpace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a function with ids and class; returns a handle to customise it.
    pub fn add(&self, bdf: (u8, u8, u8), vendor: u16, device: u16, class: [u8; 3]) -> FunctionBuilder<'_> {
        let mut regs = [0u32; 1024];
        regs[0] = u32::from(device) << 16 | u32::from(vendor);
        regs[2] = u32::from(class[0]) << 24 | u32::from(class[1]) << 16 | u32::from(class[2]) << 8 | 1;
        regs[1] = 0x0007; // I/O, memory, bus master on
        self.funcs.borrow_mut().insert(bdf, FakeFunction { regs, bar_writable: [0; 6], rom_writable: 0 });
        FunctionBuilder { space: self, bdf }
    }

    /// Wrapped for the enumerator.
    pub fn config_space(&self, extended: bool) -> HostConfigSpace<&Self> {
        // SAFETY: the fake is plain memory; any access is sound.
        unsafe { HostConfigSpace::new(self, 0, extended) }
    }

    pub fn reg(&self, bdf: (u8, u8, u8), offset: usize) -> u32 {
        self.funcs.borrow()[&bdf].regs[offset / 4]
    }
}

/// Builder for one fake function.
#[derive(Debug)]
pub struct FunctionBuilder<'a> {
    space: &'a FakeConfigSpace,
    bdf: (u8, u8, u8),
}

impl FunctionBuilder<'_> {
    fn with(&self, f: impl FnOnce(&mut FakeFunction)) -> &Self {
        f(self.space.funcs.borrow_mut().get_mut(&self.bdf).unwrap());
        self
    }
    pub fn multifunction(&self) -> &Self {
        self.with(|f| f.regs[3] |= 0x80 << 16)
    }
    /// Makes it a PCI-PCI bridge with the given bus numbers.
    pub fn bridge(&self, primary: u8, secondary: u8, subordinate: u8) -> &Self {
        self.with(|f| {
            f.regs[3] = (f.regs[3] & !(0x7f << 16)) | 1 << 16;
            f.regs[6] = u32::from(subordinate) << 16 | u32::from(secondary) << 8 | u32::from(primary);
        })
    }
    pub fn bar32(&self, slot: usize, flags: u32, address: u32, size: u32) -> &Self {
        self.with(|f| {
            let low_bits = if flags & 1 == 1 { 0x3 } else { 0xf };
            f.bar_writable[slot] = !(size - 1) & !low_bits;
            f.regs[4 + slot] = address | flags;
        })
    }
    pub fn bar64(&self, slot: usize, prefetchable: bool, address: u64, size: u64) -> &Self {
        self.with(|f| {
            let mask = !(size - 1);
            f.bar_writable[slot] = mask as u32 & !0xf;
            f.bar_writable[slot + 1] = (mask >> 32) as u32;
            f.regs[4 + slot] = address as u32 | 0b100 | if prefetchable { 0b1000 } else { 0 };
            f.regs[5 + slot] = (address >> 32) as u32;
        })
    }
    /// An expansion ROM BAR of `size` bytes at `address` (decode off).
    pub fn rom(&self, address: u32, size: u32) -> &Self {
        self.with(|f| {
            f.rom_writable = !(size - 1) & 0xffff_f800;
            f.regs[12] = address;
        })
    }
    /// Raw BAR register value with no writable bits (e.g. a reserved type).
    pub fn bar_raw(&self, slot: usize, value: u32) -> &Self {
        self.with(|f| f.regs[4 + slot] = value)
    }
    /// Adds a standard capability at `offset` with its first dword's upper half
    /// `control` and following dwords; links it to the head of the list.
    pub fn cap(&self, offset: u8, id: u8, control: u16, rest: &[u32]) -> &Self {
        self.with(|f| {
            let head = (f.regs[0x34 / 4] & 0xff) as u8;
            f.regs[usize::from(offset) / 4] = u32::from(control) << 16 | u32::from(head) << 8 | u32::from(id);
            for (i, v) in rest.iter().enumerate() {
                f.regs[usize::from(offset) / 4 + 1 + i] = *v;
            }
            f.regs[0x34 / 4] = u32::from(offset);
            f.regs[1] |= 1 << 20; // status: capabilities list
        })
    }
    /// Adds an extended capability at `offset` pointing to `next`.
    pub fn ext_cap(&self, offset: u16, id: u16, next: u16) -> &Self {
        self.with(|f| f.regs[usize::from(offset) / 4] = u32::from(next) << 20 | 1 << 16 | u32::from(id))
    }
    pub fn set(&self, offset: usize, value: u32) -> &Self {
        self.with(|f| f.regs[offset / 4] = value)
    }
}

impl ConfigRegionAccess for FakeConfigSpace {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let key = (address.bus(), address.device(), address.function());
        match self.funcs.borrow().get(&key) {
            Some(f) if offset < 4096 => f.regs[usize::from(offset) / 4],
            _ => u32::MAX,
        }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        let key = (address.bus(), address.device(), address.function());
        let mut funcs = self.funcs.borrow_mut();
        let Some(f) = funcs.get_mut(&key) else { return };
        let index = usize::from(offset) / 4;
        let bar_slots = if (f.regs[3] >> 16) & 0x7f == 1 { 2 } else { 6 };
        match index {
            1 => f.regs[1] = (f.regs[1] & 0xffff_0000) | (value & 0xffff),
            4..=9 if index - 4 < bar_slots => {
                if value == u32::MAX && f.regs[1] & 0b11 != 0 {
                    self.probes_with_decode_on.set(self.probes_with_decode_on.get() + 1);
                }
                let w = f.bar_writable[index - 4];
                f.regs[index] = (value & w) | (f.regs[index] & !w);
            }
            12 if (f.regs[3] >> 16) & 0x7f == 0 => {
                let w = if f.rom_writable == 0 { 0 } else { f.rom_writable | 1 };
                f.regs[12] = (value & w) | (f.regs[12] & !w);
            }
            _ if index < 1024 => f.regs[index] = value,
            _ => {}
        }
    }
}
