//! A fake NVMe controller for host tests: registers, queues in a fake DMA region,
//! PRP walking, a namespace in RAM with a volatile write cache, and knobs for the
//! failures the driver must survive (a command that never completes, an error status,
//! controller fatal status, a slow ready transition).

use std::collections::BTreeMap;

use super::cmd::{self, Cqe, Sqe};
use super::controller::NvmeHw;
use super::identify::tests::{controller_page, namespace_page};
use super::prp::PAGE;
use super::regs;
use bulkhead_vdisk::DmaSegment;

#[derive(Debug, Clone, Copy)]
struct Sq {
    base: u64,
    entries: u16,
    head: u16,
    cqid: u16,
}

#[derive(Debug, Clone, Copy)]
struct Cq {
    base: u64,
    entries: u16,
    tail: u16,
    phase: bool,
}

#[derive(Debug)]
pub struct FakeNvme {
    pub mem_base: u64,
    pub mem: Vec<u8>,
    pub cap: u64,
    pub cc: u32,
    pub csts: u32,
    pub aqa: u32,
    pub asq: u64,
    pub acq: u64,
    sqs: BTreeMap<u16, Sq>,
    cqs: BTreeMap<u16, Cq>,
    /// The medium as written (what reads return) and as flushed (what survives).
    pub disk: Vec<u8>,
    pub durable: Vec<u8>,
    pub lbads: u8,
    pub mdts: u8,
    pub vwc: bool,
    /// Every command the controller took, with its transfer length.
    pub seen: Vec<(u16, Sqe)>,
    pub now: u64,
    /// I/O commands with this opcode are taken but never completed.
    pub stall_io_opcode: Option<u8>,
    /// The next I/O command completes with this status (SCT/SC).
    pub fail_next_io: Option<u16>,
    /// The next I/O command sets CSTS.CFS instead of completing.
    pub fatal_on_io: bool,
    /// CSTS reads before RDY follows CC.EN.
    pub ready_delay: u32,
    pending_ready: u32,
    /// Admin commands with this opcode complete with "invalid opcode".
    pub refuse_admin: Option<u8>,
    /// Identify CNS 02h (active namespace list, NVMe 1.1 and later) is refused.
    pub no_active_list: bool,
    /// I/O completions come out of order: each is held until the next I/O command
    /// completes (then posted after it) or the driver polls.
    pub reorder_io: bool,
    /// The held completion: (cq, sq head, sq, cid, status).
    held: Option<(u16, u16, u16, u16, u16)>,
    /// The most I/O commands that were outstanding at once.
    pub most_in_flight: usize,
    /// Memory beyond the first `region_bytes` (the driver's DMA region) is reached
    /// only through what `map_direct` mapped, as behind an IOMMU: `None` refuses
    /// `map_direct` (no direct transfers), `Some` lists what is mapped now.
    pub mapped: Option<Vec<(u64, u64)>>,
    pub region_bytes: u64,
    /// Data transfers refused because they reached memory not mapped.
    pub faults: u32,
    /// `map_direct` calls, and unmaps with nothing mapped or maps over a mapping.
    pub maps: u32,
    pub bad_unmaps: u32,
}

impl FakeNvme {
    pub fn new(mem_base: u64, mem_bytes: usize, disk_bytes: usize, lbads: u8) -> Self {
        FakeNvme {
            mem_base,
            mem: vec![0; mem_bytes],
            // MQES 2047, TO 1 (500 ms), CSS NVM, MPSMIN 0, MPSMAX 4.
            cap: 0x7ff | 1 << 24 | 1 << 37 | 4 << 52,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            disk: vec![0; disk_bytes],
            durable: vec![0; disk_bytes],
            lbads,
            mdts: 5,
            vwc: true,
            seen: Vec::new(),
            now: 0,
            stall_io_opcode: None,
            fail_next_io: None,
            fatal_on_io: false,
            ready_delay: 2,
            pending_ready: 0,
            refuse_admin: None,
            no_active_list: false,
            reorder_io: false,
            held: None,
            most_in_flight: 0,
            mapped: None,
            region_bytes: mem_bytes as u64,
            faults: 0,
            maps: 0,
            bad_unmaps: 0,
        }
    }

    fn block_size(&self) -> u64 {
        1 << self.lbads
    }

    fn local(&self, at: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let off = usize::try_from(at.checked_sub(self.mem_base)?).ok()?;
        let end = off.checked_add(len)?;
        (end <= self.mem.len()).then_some(off..end)
    }

    fn mem_read(&self, at: u64, len: usize) -> Option<Vec<u8>> {
        Some(self.mem[self.local(at, len)?].to_vec())
    }

    fn mem_write(&mut self, at: u64, data: &[u8]) -> bool {
        match self.local(at, data.len()) {
            Some(r) => {
                self.mem[r].copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    /// The memory pieces a command's PRPs describe for `len` bytes (§4.1.1: PRP1 may
    /// start inside a page, on a dword; every later entry is a page), or `None` when
    /// they are malformed or outside memory, or reach memory outside the DMA region
    /// that is not mapped for the device (an IOMMU fault, counted).
    fn prp_pages(&mut self, sqe: &Sqe, len: u64) -> Option<Vec<(u64, usize)>> {
        if !sqe.prp1.is_multiple_of(4) {
            return None;
        }
        let first = (PAGE - sqe.prp1 % PAGE).min(len);
        let pages = 1 + (len - first).div_ceil(PAGE);
        let mut addrs = vec![sqe.prp1];
        if pages == 2 {
            addrs.push(sqe.prp2);
        } else if pages > 2 {
            let list = self.mem_read(sqe.prp2, (pages as usize - 1) * 8)?;
            addrs.extend(list.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())));
        }
        let mut out = Vec::new();
        let mut left = len;
        for (i, &a) in addrs.iter().enumerate() {
            let n = if i == 0 { first } else { left.min(PAGE) };
            if (i > 0 && !a.is_multiple_of(PAGE)) || self.local(a, n as usize).is_none() {
                return None;
            }
            out.push((a, n as usize));
            left -= n;
        }
        if let Some(mapped) = &self.mapped {
            let region = self.mem_base..self.mem_base + self.region_bytes;
            let reachable = |&(a, n): &(u64, usize)| {
                (region.contains(&a) && a + n as u64 <= region.end)
                    || mapped.iter().any(|&(m, len)| a >= m && a + n as u64 <= m + len)
            };
            if !out.iter().all(reachable) {
                self.faults += 1;
                return None;
            }
        }
        Some(out)
    }

    fn post(&mut self, cqid: u16, sq_head: u16, sqid: u16, cid: u16, status: u16) {
        let cq = *self.cqs.get(&cqid).expect("completion queue exists");
        let cqe = Cqe { dw0: 0, dw1: 0, sq_head, sq_id: sqid, cid, status: status << 1 | u16::from(cq.phase) };
        let at = cq.base + u64::from(cq.tail) * 16;
        assert!(self.mem_write(at, &cqe.to_bytes()), "completion queue inside memory");
        let mut cq = cq;
        cq.tail += 1;
        if cq.tail == cq.entries {
            cq.tail = 0;
            cq.phase = !cq.phase;
        }
        self.cqs.insert(cqid, cq);
    }

    fn ring(&mut self, qid: u16, tail: u16) {
        let Some(mut sq) = self.sqs.get(&qid).copied() else { return };
        while sq.head != tail {
            let raw = self.mem_read(sq.base + u64::from(sq.head) * 64, 64).expect("SQ in memory");
            let sqe = Sqe::from_bytes(&raw);
            sq.head = (sq.head + 1) % sq.entries;
            self.sqs.insert(qid, sq);
            self.seen.push((qid, sqe));
            let status = if qid == 0 {
                self.admin(&sqe)
            } else {
                if self.stall_io_opcode == Some(sqe.opcode()) {
                    continue;
                }
                if self.fatal_on_io {
                    self.csts |= regs::csts::CFS;
                    continue;
                }
                if let Some(s) = self.fail_next_io.take() { s } else { self.io(&sqe) }
            };
            if qid != 0 {
                let outstanding = 1 + usize::from(self.held.is_some());
                self.most_in_flight = self.most_in_flight.max(outstanding);
            }
            if qid != 0 && self.reorder_io {
                let earlier = self.held.take();
                if earlier.is_none() {
                    self.held = Some((sq.cqid, sq.head, qid, sqe.cid(), status));
                    continue;
                }
                self.post(sq.cqid, sq.head, qid, sqe.cid(), status);
                if let Some((cq, head, sqid, cid, st)) = earlier {
                    self.post(cq, head, sqid, cid, st);
                }
                continue;
            }
            self.post(sq.cqid, sq.head, qid, sqe.cid(), status);
        }
    }

    fn admin(&mut self, sqe: &Sqe) -> u16 {
        if self.refuse_admin == Some(sqe.opcode()) {
            return 0x01; // invalid command opcode
        }
        match sqe.opcode() {
            cmd::admin::IDENTIFY => {
                let page = match sqe.cdw10 {
                    1 => controller_page("Fake NVMe", "FAKE0001", self.mdts, self.vwc),
                    0 if sqe.nsid == 1 => namespace_page(self.disk.len() as u64 / self.block_size(), self.lbads, 0),
                    2 if self.no_active_list => return 0x02,
                    2 => {
                        let mut p = [0u8; 4096];
                        p[0] = 1;
                        p
                    }
                    _ => [0u8; 4096],
                };
                if !sqe.prp1.is_multiple_of(PAGE) || !self.mem_write(sqe.prp1, &page) {
                    return 0x02;
                }
                0
            }
            cmd::admin::SET_FEATURES => 0,
            cmd::admin::CREATE_IO_CQ => {
                let qid = sqe.cdw10 as u16;
                let entries = (sqe.cdw10 >> 16) as u16 + 1;
                self.cqs.insert(qid, Cq { base: sqe.prp1, entries, tail: 0, phase: true });
                0
            }
            cmd::admin::CREATE_IO_SQ => {
                let qid = sqe.cdw10 as u16;
                let cqid = (sqe.cdw11 >> 16) as u16;
                if !self.cqs.contains_key(&cqid) {
                    return 0x100; // completion queue invalid
                }
                let entries = (sqe.cdw10 >> 16) as u16 + 1;
                self.sqs.insert(qid, Sq { base: sqe.prp1, entries, head: 0, cqid });
                0
            }
            _ => 0x01,
        }
    }

    fn io(&mut self, sqe: &Sqe) -> u16 {
        if sqe.nsid != 1 {
            return 0x0b; // invalid namespace
        }
        match sqe.opcode() {
            cmd::nvm::FLUSH => {
                self.durable.copy_from_slice(&self.disk);
                0
            }
            op @ (cmd::nvm::READ | cmd::nvm::WRITE) => {
                let lba = u64::from(sqe.cdw10) | u64::from(sqe.cdw11) << 32;
                let blocks = u64::from(sqe.cdw12 & 0xffff) + 1;
                let bs = self.block_size();
                if (lba + blocks) * bs > self.disk.len() as u64 {
                    return 0x80; // LBA out of range
                }
                let len = blocks * bs;
                if self.mdts != 0 && len > (1u64 << self.mdts) * PAGE {
                    return 0x02; // invalid field: over MDTS
                }
                let Some(pages) = self.prp_pages(sqe, len) else { return 0x13 }; // invalid PRP offset
                let mut at = (lba * bs) as usize;
                for (page, n) in pages {
                    if op == cmd::nvm::READ {
                        let data = self.disk[at..at + n].to_vec();
                        self.mem_write(page, &data);
                    } else {
                        let data = self.mem_read(page, n).unwrap();
                        self.disk[at..at + n].copy_from_slice(&data);
                    }
                    at += n;
                }
                0
            }
            _ => 0x01,
        }
    }

    /// The I/O commands taken, as (opcode, blocks).
    pub fn io_commands(&self) -> Vec<(u8, u64)> {
        self.seen.iter().filter(|(q, _)| *q != 0).map(|(_, s)| (s.opcode(), u64::from(s.cdw12 & 0xffff) + 1)).collect()
    }
}

impl NvmeHw for FakeNvme {
    fn read32(&mut self, offset: u64) -> u32 {
        match offset {
            regs::CAP => self.cap as u32,
            o if o == regs::CAP + 4 => (self.cap >> 32) as u32,
            regs::CC => self.cc,
            regs::CSTS => {
                let want = self.cc & regs::cc::EN != 0;
                if (self.csts & regs::csts::RDY != 0) != want {
                    if self.pending_ready == 0 {
                        self.csts = (self.csts & !regs::csts::RDY) | u32::from(want);
                        if !want {
                            self.csts &= !regs::csts::CFS;
                        }
                    } else {
                        self.pending_ready -= 1;
                    }
                }
                self.csts
            }
            _ => 0,
        }
    }

    fn write32(&mut self, offset: u64, value: u32) {
        let hi = |old: u64| (old & 0xffff_ffff) | u64::from(value) << 32;
        let lo = |old: u64| (old & !0xffff_ffff) | u64::from(value);
        match offset {
            regs::CC => {
                let enabling = value & regs::cc::EN != 0 && self.cc & regs::cc::EN == 0;
                let disabling = value & regs::cc::EN == 0 && self.cc & regs::cc::EN != 0;
                self.cc = value;
                self.pending_ready = self.ready_delay;
                if enabling {
                    assert_eq!(value, regs::cc::ENABLED, "the driver enables with 4 KiB pages, 64/16-byte entries");
                    let n = (self.aqa & 0xfff) as u16 + 1;
                    self.sqs = BTreeMap::from([(0, Sq { base: self.asq, entries: n, head: 0, cqid: 0 })]);
                    self.cqs = BTreeMap::from([(0, Cq { base: self.acq, entries: n, tail: 0, phase: true })]);
                }
                if disabling {
                    self.sqs.clear();
                    self.cqs.clear();
                }
            }
            regs::AQA => self.aqa = value,
            regs::ASQ => self.asq = lo(self.asq),
            o if o == regs::ASQ + 4 => self.asq = hi(self.asq),
            regs::ACQ => self.acq = lo(self.acq),
            o if o == regs::ACQ + 4 => self.acq = hi(self.acq),
            o if o >= regs::DOORBELL_BASE => {
                let index = (o - regs::DOORBELL_BASE) / 4;
                if index.is_multiple_of(2) && self.cc & regs::cc::EN != 0 {
                    self.ring((index / 2) as u16, value as u16);
                }
            }
            _ => {}
        }
    }

    fn dma_read(&mut self, at: u64, buf: &mut [u8]) -> bool {
        match self.mem_read(at, buf.len()) {
            Some(d) => {
                buf.copy_from_slice(&d);
                true
            }
            None => false,
        }
    }

    fn dma_write(&mut self, at: u64, data: &[u8]) -> bool {
        self.mem_write(at, data)
    }

    fn dma_bytes(&mut self, at: u64, len: usize) -> Option<&mut [u8]> {
        let r = self.local(at, len)?;
        self.mem.get_mut(r)
    }

    fn now_us(&mut self) -> u64 {
        // A held completion is posted once the driver waits for it.
        if let Some((cq, head, sqid, cid, st)) = self.held.take() {
            self.post(cq, head, sqid, cid, st);
        }
        self.now += 10;
        self.now
    }

    fn register_bytes(&self) -> u64 {
        0x4000
    }

    /// As without translation (the device addresses the segments as they are), but
    /// recording each segment's pages as mapped until `unmap_direct`.
    fn map_direct(&mut self, segments: &[DmaSegment], _device_writes: bool, device: &mut Vec<DmaSegment>) -> bool {
        let Some(mapped) = self.mapped.as_mut() else { return false };
        if !mapped.is_empty() {
            self.bad_unmaps += 1;
        }
        for s in segments {
            let start = s.addr - s.addr % PAGE;
            let end = (s.addr + s.len as u64).next_multiple_of(PAGE);
            mapped.push((start, end - start));
        }
        device.extend_from_slice(segments);
        self.maps += 1;
        true
    }

    fn unmap_direct(&mut self) {
        match self.mapped.as_mut() {
            Some(mapped) if !mapped.is_empty() => mapped.clear(),
            _ => self.bad_unmaps += 1,
        }
    }
}
