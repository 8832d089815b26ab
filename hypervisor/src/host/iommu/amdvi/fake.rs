//! A simulated AMD-Vi unit for host tests: control/status, the command buffer
//! (COMPLETION_WAIT stores; every command is recorded), the event log, and DMA and
//! MSI requests resolved through the device table, I/O page tables and interrupt
//! tables in memory as the spec describes. QEMU 7.2's quirks are noted in
//! `docs/iommu.md`; this model follows the spec.

use alloc::vec::Vec;

use super::cmd::{AmdViCommand, opcode};
use super::event::code;
use super::regs::{self, control, status};
use crate::host::iommu::IommuHw;
use crate::host::iommu::fake_mem::Regs;
use crate::memory::addr::HostPhysAddr;
use crate::memory::fake_frames::FakeFrames;
use crate::memory::frames::{FrameSource, Table};

/// QEMU 7.2's EFR (`AMDVI_EXT_FEATURES`): PREFETCH, PPR, GT, IA, GA, HE, HATS = GATS
/// = 10b.
pub const QEMU_EFR: u64 = 1 | 1 << 1 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 8 | 2 << 10 | 2 << 12;

#[derive(Debug)]
pub struct FakeAmdViUnit {
    pub regs: Regs,
    pub commands: Vec<AmdViCommand>,
    pub stuck: bool,
}

#[derive(Debug)]
pub struct FakeAmdVi {
    pub mem: FakeFrames,
    /// Ranges passed to `flush_cache`.
    pub flushed: usize,
    pub units: Vec<FakeAmdViUnit>,
}

impl FakeAmdVi {
    pub fn new(units: usize, efr: u64) -> Self {
        let units = (0..units)
            .map(|_| {
                let mut regs = Regs::new(0x4000);
                regs.w64(regs::EXTENDED_FEATURES, efr);
                FakeAmdViUnit { regs, commands: Vec::new(), stuck: false }
            })
            .collect();
        Self { mem: FakeFrames::new(), flushed: 0, units }
    }

    fn ctl(&self, u: usize) -> u64 {
        self.units[u].regs.r64(regs::CONTROL)
    }

    fn run_commands(&mut self, u: usize) {
        let ctl = self.ctl(u);
        if ctl & control::IOMMU_EN == 0 || ctl & control::CMD_BUF_EN == 0 || self.units[u].stuck {
            return;
        }
        let base = self.units[u].regs.r64(regs::COMMAND_BUFFER_BASE) & 0x000f_ffff_ffff_f000;
        let mut head = self.units[u].regs.r64(regs::COMMAND_HEAD) % 4096;
        let tail = self.units[u].regs.r64(regs::COMMAND_TAIL) % 4096;
        while head != tail {
            let c = AmdViCommand([self.mem.read_u64(base + head), self.mem.read_u64(base + head + 8)]);
            if c.opcode() == opcode::COMPLETION_WAIT && c.0[0] & 1 != 0 {
                self.mem.write_u64(c.0[0] & 0x000f_ffff_ffff_fff8, c.0[1]);
            }
            self.units[u].commands.push(c);
            head = (head + 16) % 4096;
        }
        self.units[u].regs.w64(regs::COMMAND_HEAD, head);
    }

    fn log_event(&mut self, u: usize, devid: u16, event: u8, flags: u64, address: u64) {
        let ctl = self.ctl(u);
        if ctl & control::EVENT_LOG_EN == 0 {
            return;
        }
        let base = self.units[u].regs.r64(regs::EVENT_LOG_BASE) & 0x000f_ffff_ffff_f000;
        let tail = self.units[u].regs.r64(regs::EVENT_TAIL) % 4096;
        let head = self.units[u].regs.r64(regs::EVENT_HEAD) % 4096;
        let next = (tail + 16) % 4096;
        if next == head {
            let st = self.units[u].regs.r64(regs::STATUS);
            self.units[u].regs.w64(regs::STATUS, st | status::EVENT_OVERFLOW);
            return;
        }
        self.mem.write_u64(base + tail, u64::from(devid) | flags << 48 | u64::from(event) << 60);
        self.mem.write_u64(base + tail + 8, address);
        self.units[u].regs.w64(regs::EVENT_TAIL, next);
    }

    fn dte(&self, u: usize, devid: u16) -> [u64; 4] {
        let base = self.units[u].regs.r64(regs::DEVICE_TABLE_BASE) & 0x000f_ffff_ffff_f000;
        let at = base + u64::from(devid) * 32;
        [self.mem.read_u64(at), self.mem.read_u64(at + 8), self.mem.read_u64(at + 16), self.mem.read_u64(at + 24)]
    }

    /// A DMA from `devid`: the translated address, or `Err(())` (target abort, with an
    /// IO_PAGE_FAULT event when the walk found a missing or insufficient entry).
    pub fn dma(&mut self, u: usize, devid: u16, addr: u64, write: bool) -> Result<u64, ()> {
        if self.ctl(u) & control::IOMMU_EN == 0 {
            return Ok(addr);
        }
        let dte = self.dte(u, devid);
        if dte[0] & 1 == 0 {
            return Ok(addr);
        }
        let perm = if write { 1u64 << 62 } else { 1u64 << 61 };
        let flags = if write { 1 << 5 } else { 0 };
        let mode = (dte[0] >> 9) & 7;
        if dte[0] & 2 == 0 || mode == 0 {
            return if dte[0] & perm != 0 { Ok(addr) } else { Err(()) };
        }
        if dte[0] & perm == 0 {
            self.log_event(u, devid, code::IO_PAGE_FAULT, flags | 1 << 4, addr);
            return Err(());
        }
        let mut table = dte[0] & 0x000f_ffff_ffff_f000;
        let mut level = mode;
        loop {
            let e = self.mem.read_u64(table + ((addr >> (12 + 9 * (level - 1))) & 0x1ff) * 8);
            if e & 1 == 0 {
                self.log_event(u, devid, code::IO_PAGE_FAULT, flags, addr);
                return Err(());
            }
            if e & perm == 0 {
                self.log_event(u, devid, code::IO_PAGE_FAULT, flags | 1 << 4, addr);
                return Err(());
            }
            let next = (e >> 9) & 7;
            if next == 0 || level == 1 {
                let size = 1u64 << (12 + 9 * (level - 1));
                return Ok((e & 0x000f_ffff_ffff_f000 & !(size - 1)) | (addr & (size - 1)));
            }
            table = e & 0x000f_ffff_ffff_f000;
            level = next;
        }
    }

    /// An MSI from `devid`: Ok((vector, destination)) or Err(()) for a target abort.
    pub fn msi(&mut self, u: usize, devid: u16, address: u64, data: u32) -> Result<(u8, u8), ()> {
        let compat = Ok(((data & 0xff) as u8, ((address >> 12) & 0xff) as u8));
        if self.ctl(u) & control::IOMMU_EN == 0 {
            return compat;
        }
        let dte = self.dte(u, devid);
        if dte[0] & 1 == 0 || dte[2] & 1 == 0 {
            return compat;
        }
        match (dte[2] >> 60) & 3 {
            0b01 => return compat,
            0b10 => {}
            _ => return Err(()),
        }
        let index = u64::from(data & 0x7ff);
        if index >= 1 << ((dte[2] >> 1) & 0xf) {
            return Err(());
        }
        let irte = self.mem.read_u32((dte[2] & 0x000f_ffff_ffff_ffc0) + index * 4);
        if irte & 1 == 0 {
            self.log_event(u, devid, code::IO_PAGE_FAULT, 1 << 3, address);
            return Err(());
        }
        Ok(((irte >> 16) as u8, (irte >> 8) as u8))
    }
}

impl FrameSource for FakeAmdVi {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        self.mem.alloc_zeroed()
    }
    fn free(&mut self, frame: HostPhysAddr) {
        self.mem.free(frame)
    }
    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table {
        self.mem.table_mut(frame)
    }
}

impl IommuHw for FakeAmdVi {
    fn alloc_contiguous(&mut self, npages: usize) -> Option<HostPhysAddr> {
        self.mem.alloc_pages(npages)
    }
    fn read32(&mut self, unit: usize, offset: usize) -> u32 {
        self.units.get(unit).map_or(u32::MAX, |u| u.regs.r32(offset))
    }
    fn read64(&mut self, unit: usize, offset: usize) -> u64 {
        self.units.get(unit).map_or(u64::MAX, |u| u.regs.r64(offset))
    }
    fn write32(&mut self, unit: usize, offset: usize, value: u32) {
        if let Some(u) = self.units.get_mut(unit) {
            u.regs.w32(offset, value);
        }
    }
    fn write64(&mut self, u: usize, offset: usize, value: u64) {
        if u >= self.units.len() {
            return;
        }
        match offset {
            regs::EXTENDED_FEATURES => {}
            regs::STATUS => {
                let st = self.units[u].regs.r64(regs::STATUS);
                self.units[u].regs.w64(regs::STATUS, st & !(value & status::W1C));
            }
            regs::CONTROL => {
                self.units[u].regs.w64(offset, value);
                let mut st = self.units[u].regs.r64(regs::STATUS) & !(status::CMD_BUF_RUN | status::EVENT_LOG_RUN);
                if value & control::IOMMU_EN != 0 && value & control::CMD_BUF_EN != 0 {
                    st |= status::CMD_BUF_RUN;
                }
                if value & control::IOMMU_EN != 0 && value & control::EVENT_LOG_EN != 0 {
                    st |= status::EVENT_LOG_RUN;
                }
                self.units[u].regs.w64(regs::STATUS, st);
                self.run_commands(u);
            }
            regs::COMMAND_TAIL => {
                self.units[u].regs.w64(offset, value);
                self.run_commands(u);
            }
            _ => self.units[u].regs.w64(offset, value),
        }
    }
    fn flush_cache(&mut self, _hpa: HostPhysAddr, _len_bytes: u64) {
        self.flushed += 1;
    }
    fn relax(&mut self) {}
}
