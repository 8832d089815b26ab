//! A simulated VT-d unit for host tests: the global command/status handshake, the
//! invalidation queue (descriptors are read from memory and wait descriptors write
//! their status), register-based invalidation, primary fault recording, and DMA and
//! MSI requests translated through the tables in memory the way the spec says.
//! Defaults mirror QEMU 7.2's `intel-iommu` (3-level only, one fault record, not
//! coherent).

use alloc::vec::Vec;

use super::qi::{InvDesc, QUEUE_ENTRIES, WAIT_SW};
use super::regs::{self, gcmd};
use crate::host::iommu::IommuHw;
use crate::host::iommu::fake_mem::Regs;
use crate::memory::addr::HostPhysAddr;
use crate::memory::fake_frames::FakeFrames;
use crate::memory::frames::{FrameSource, Table};

/// QEMU 7.2 `intel-iommu` CAP: ND = 6 (64K ids), SAGAW 39-bit only, MGAW 39,
/// FRO 0x220, SLLPS 2M+1G, one fault record.
pub const QEMU_CAP: u64 = 6 | (0b0010 << 8) | (38 << 16) | ((0x220 / 16) << 24) | (0b11 << 34);
/// QEMU 7.2 ECAP with `intremap=on`: QI, IR, EIM, PT; IOTLB registers at 0x200; C = 0.
pub const QEMU_ECAP: u64 = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 6) | ((0x200 / 16) << 8);

#[derive(Debug)]
pub struct FakeVtdUnit {
    pub regs: Regs,
    /// Root table address latched by SRTP.
    pub root: u64,
    /// Every queued descriptor processed, in order.
    pub descriptors: Vec<InvDesc>,
    /// Register-based invalidations (CCMD, IOTLB).
    pub register_invalidations: usize,
    /// Never complete anything (for timeout tests).
    pub stuck: bool,
}

#[derive(Debug)]
pub struct FakeVtd {
    pub mem: FakeFrames,
    /// Ranges passed to `flush_cache`.
    pub flushed: usize,
    pub units: Vec<FakeVtdUnit>,
}

/// A DMA or interrupt request's outcome: Ok(translated) or Err(fault reason).
pub type Outcome<T> = Result<T, u8>;

impl FakeVtd {
    pub fn new(units: usize, cap: u64, ecap: u64) -> Self {
        let units = (0..units)
            .map(|_| {
                let mut regs = Regs::new(regs::REGISTER_WINDOW);
                regs.w32(regs::VER, 0x10);
                regs.w64(regs::CAP, cap);
                regs.w64(regs::ECAP, ecap);
                FakeVtdUnit { regs, root: 0, descriptors: Vec::new(), register_invalidations: 0, stuck: false }
            })
            .collect();
        Self { mem: FakeFrames::new(), flushed: 0, units }
    }

    pub fn qemu(units: usize) -> Self {
        Self::new(units, QEMU_CAP, QEMU_ECAP)
    }

    fn cap(&self, u: usize) -> u64 {
        self.units[u].regs.r64(regs::CAP)
    }

    fn gsts(&self, u: usize) -> u32 {
        self.units[u].regs.r32(regs::GSTS)
    }

    fn process_queue(&mut self, u: usize) {
        if self.gsts(u) & gcmd::QIE == 0 || self.units[u].stuck {
            return;
        }
        let base = self.units[u].regs.r64(regs::IQA) & !0xfff;
        let mut head = ((self.units[u].regs.r64(regs::IQH) >> 4) as usize) % QUEUE_ENTRIES;
        let tail = ((self.units[u].regs.r64(regs::IQT) >> 4) as usize) % QUEUE_ENTRIES;
        while head != tail {
            let at = base + head as u64 * 16;
            let d = InvDesc { lo: self.mem.read_u64(at), hi: self.mem.read_u64(at + 8) };
            if d.kind() == crate::host::iommu::vtd::qi::kind::WAIT && d.lo & WAIT_SW != 0 {
                self.mem.write_u32(d.hi & !3, (d.lo >> 32) as u32);
            }
            self.units[u].descriptors.push(d);
            head = (head + 1) % QUEUE_ENTRIES;
        }
        self.units[u].regs.w64(regs::IQH, (head as u64) << 4);
    }

    /// Records a primary fault in record 0 (the only one QEMU has) and sets PPF, or
    /// PFO when the record is still full.
    fn record_fault(&mut self, u: usize, sid: u16, lo: u64, reason: u8, read: bool) {
        let fro = ((self.cap(u) >> 24) & 0x3ff) as usize * 16;
        let regs = &mut self.units[u].regs;
        if regs.r64(fro + 8) & (1 << 63) != 0 {
            let f = regs.r32(regs::FSTS);
            regs.w32(regs::FSTS, f | 1);
            return;
        }
        regs.w64(fro, lo);
        regs.w64(fro + 8, 1 << 63 | u64::from(read) << 62 | u64::from(reason) << 32 | u64::from(sid));
        let f = regs.r32(regs::FSTS);
        regs.w32(regs::FSTS, f | 1 << 1);
    }

    /// A DMA request from `sid` to `addr`: the translated address, or the fault
    /// reason (which is also recorded, as the hardware would).
    pub fn dma(&mut self, u: usize, sid: u16, addr: u64, write: bool) -> Outcome<u64> {
        let r = self.translate(u, sid, addr, write);
        if let Err(reason) = r {
            self.record_fault(u, sid, addr & !0xfff, reason, !write);
        }
        r
    }

    fn translate(&mut self, u: usize, sid: u16, addr: u64, write: bool) -> Outcome<u64> {
        if self.gsts(u) & gcmd::TE == 0 {
            return Ok(addr);
        }
        let root = self.units[u].root;
        let re = self.mem.read_u64(root + u64::from(sid >> 8) * 16);
        if re & 1 == 0 || re == u64::MAX {
            return Err(0x01);
        }
        let ce_at = (re & !0xfff) + u64::from(sid & 0xff) * 16;
        let (lo, hi) = (self.mem.read_u64(ce_at), self.mem.read_u64(ce_at + 8));
        if lo & 1 == 0 {
            return Err(0x02);
        }
        if (lo >> 2) & 3 != 0 {
            return Err(0x03);
        }
        let aw = hi & 7;
        let sagaw = (self.cap(u) >> 8) & 0x1f;
        if aw == 0 || sagaw & (1 << aw) == 0 {
            return Err(0x03);
        }
        let levels = aw as u32 + 2;
        if addr >> (12 + 9 * levels) != 0 {
            return Err(0x04);
        }
        let mut table = lo & !0xfff;
        for level in (1..=levels).rev() {
            let e = self.mem.read_u64(table + ((addr >> (12 + 9 * (level - 1))) & 0x1ff) * 8);
            let (r, w) = (e & 1 != 0, e & 2 != 0);
            if write && !w {
                return Err(0x05);
            }
            if !write && !r {
                return Err(0x06);
            }
            if level == 1 || e & (1 << 7) != 0 {
                let size = 1u64 << (12 + 9 * (level - 1));
                return Ok((e & 0x000f_ffff_ffff_f000 & !(size - 1)) | (addr & (size - 1)));
            }
            table = e & 0x000f_ffff_ffff_f000;
        }
        Err(0x07)
    }

    /// Remapping table entry `handle` of unit `u` as the driver wrote it.
    pub fn irte(&self, u: usize, handle: u16) -> crate::host::iommu::vtd::irte::VtdIrte {
        let at = (self.units[u].regs.r64(regs::IRTA) & !0xfff) + u64::from(handle) * 16;
        crate::host::iommu::vtd::irte::VtdIrte::from_words([self.mem.read_u64(at), self.mem.read_u64(at + 8)])
    }

    /// An MSI write from `sid`: Ok((vector, destination APIC id)) or the fault reason.
    pub fn msi(&mut self, u: usize, sid: u16, address: u64, data: u32) -> Outcome<(u8, u32)> {
        let gsts = self.gsts(u);
        let compat = Ok(((data & 0xff) as u8, ((address >> 12) & 0xff) as u32));
        if gsts & gcmd::IRE == 0 {
            return compat;
        }
        let irta = self.units[u].regs.r64(regs::IRTA);
        let eime = irta & (1 << 11) != 0;
        let Some(handle) = crate::host::iommu::vtd::irte::decode_remappable(address, data) else {
            // Compatibility format: blocked unless CFI is set, and always in x2APIC
            // mode (EIME).
            if gsts & gcmd::CFI != 0 && !eime {
                return compat;
            }
            self.record_fault(u, sid, 0, 0x25, false);
            return Err(0x25);
        };
        let entries = 1u64 << ((irta & 0xf) + 1);
        let fail = |s: &mut Self, reason| {
            s.record_fault(u, sid, u64::from(handle) << 48, reason, false);
            Err(reason)
        };
        if u64::from(handle) >= entries {
            return fail(self, 0x21);
        }
        let [lo, hi] = self.irte(u, handle).words();
        if lo & 1 == 0 {
            return fail(self, 0x22);
        }
        if (hi >> 18) & 3 == 1 && hi as u16 != sid {
            return fail(self, 0x26);
        }
        let dest = if eime { (lo >> 32) as u32 } else { u32::from((lo >> 40) as u8) };
        Ok(((lo >> 16) as u8, dest))
    }
}

impl FrameSource for FakeVtd {
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

impl IommuHw for FakeVtd {
    fn alloc_contiguous(&mut self, npages: usize) -> Option<HostPhysAddr> {
        self.mem.alloc_pages(npages)
    }
    fn read32(&mut self, unit: usize, offset: usize) -> u32 {
        self.units.get(unit).map_or(u32::MAX, |u| u.regs.r32(offset))
    }
    fn read64(&mut self, unit: usize, offset: usize) -> u64 {
        self.units.get(unit).map_or(u64::MAX, |u| u.regs.r64(offset))
    }
    fn write32(&mut self, u: usize, offset: usize, value: u32) {
        if u >= self.units.len() {
            return;
        }
        let fro = ((self.cap(u) >> 24) & 0x3ff) as usize * 16;
        let unit = &mut self.units[u];
        match offset {
            regs::GCMD if !unit.stuck => {
                let mut status = value & gcmd::PERSISTENT;
                if value & gcmd::SRTP != 0 {
                    unit.root = unit.regs.r64(regs::RTADDR) & !0xfff;
                    status |= gcmd::SRTP;
                }
                if value & gcmd::SIRTP != 0 {
                    status |= gcmd::SIRTP;
                }
                unit.regs.w32(regs::GSTS, status);
            }
            regs::GCMD => {}
            regs::FSTS => {
                let f = unit.regs.r32(regs::FSTS);
                unit.regs.w32(regs::FSTS, f & !(value & crate::host::iommu::vtd::regs::fsts::W1C));
            }
            o if o == fro + 12 => {
                if value & (1 << 31) != 0 {
                    let hi = unit.regs.r64(fro + 8);
                    unit.regs.w64(fro + 8, hi & !(1 << 63));
                    let f = unit.regs.r32(regs::FSTS);
                    unit.regs.w32(regs::FSTS, f & !(1 << 1));
                }
            }
            _ => unit.regs.w32(offset, value),
        }
    }
    fn write64(&mut self, u: usize, offset: usize, value: u64) {
        if u >= self.units.len() {
            return;
        }
        let iotlb = ((self.units[u].regs.r64(regs::ECAP) >> 8) & 0x3ff) as usize * 16 + 8;
        let stuck = self.units[u].stuck;
        let unit = &mut self.units[u];
        match offset {
            regs::IQT => {
                unit.regs.w64(offset, value);
                self.process_queue(u);
            }
            regs::CCMD if !stuck => {
                unit.regs.w64(offset, value & !regs::ccmd::ICC);
                unit.register_invalidations += 1;
            }
            o if o == iotlb && !stuck => {
                unit.regs.w64(offset, value & !regs::iotlb::IVT);
                unit.register_invalidations += 1;
            }
            _ => unit.regs.w64(offset, value),
        }
    }
    fn flush_cache(&mut self, _hpa: HostPhysAddr, _len_bytes: u64) {
        self.flushed += 1;
    }
    fn relax(&mut self) {}
}
