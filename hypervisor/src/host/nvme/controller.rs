//! The driver's logic over [`NvmeHw`]: controller reset and enable (NVMe Base 2.0
//! §3.5.1), the admin queue, Identify, one I/O queue pair, and Read/Write/Flush through
//! a bounce region, one command in flight at a time, polled. Every wait is bounded by
//! a deadline; a controller that stops answering or reports a fatal status is marked
//! failed and never sent another command. Runs on the host against `fake.rs`.
#![forbid(unsafe_code)]

use bulkhead_vdisk::device::check_range;
use bulkhead_vdisk::{BlockDevice, DeviceError};
use log::error;

use super::cmd::{self, CQE_BYTES, Cqe, Sqe};
use super::identify::{ControllerInfo, NamespaceInfo, NamespaceRefusal, first_active};
use super::prp::{self, PAGE};
use super::queue::QueuePair;
use super::regs::{self, Capabilities, cc, csts};

/// What the driver needs of the machine: the controller's registers, the DMA region
/// (addressed as the device sees it), and a clock.
pub trait NvmeHw {
    fn read32(&mut self, offset: u64) -> u32;
    fn write32(&mut self, offset: u64, value: u32);
    /// Copies out of the DMA region; false when the range is not inside it.
    fn dma_read(&mut self, at: u64, buf: &mut [u8]) -> bool;
    /// Copies into the DMA region; false when the range is not inside it.
    fn dma_write(&mut self, at: u64, data: &[u8]) -> bool;
    /// The DMA region's `len` bytes at `at` as memory the driver reads and writes in
    /// place (the bounce region, between two commands); `None` when not inside it.
    fn dma_bytes(&mut self, at: u64, len: usize) -> Option<&mut [u8]>;
    /// A monotonic clock in microseconds.
    fn now_us(&mut self) -> u64;
    /// The size of the register window (BAR0).
    fn register_bytes(&self) -> u64;
}

/// Entries per queue: one command is in flight at a time, so a few are plenty.
pub const QUEUE_ENTRIES: u16 = 16;
/// The bounce region: the largest transfer of one command (before MDTS).
pub const BOUNCE_BYTES: u64 = 128 * 1024;
const ADMIN_SQ: u64 = 0;
const ADMIN_CQ: u64 = PAGE;
const IO_SQ: u64 = 2 * PAGE;
const IO_CQ: u64 = 3 * PAGE;
const PRP_LIST: u64 = 4 * PAGE;
const BOUNCE: u64 = 5 * PAGE;
/// The whole DMA region: four queue pages, the PRP list page and the bounce pages.
pub const DMA_BYTES: u64 = BOUNCE + BOUNCE_BYTES;
const _: () = assert!(QUEUE_ENTRIES as u64 * 64 <= PAGE);
const _: () = assert!(BOUNCE_BYTES / PAGE <= prp::LIST_ENTRIES as u64 + 1);

/// How long the driver waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// For any one command to complete.
    pub command_us: u64,
    /// The cap on CAP.TO (ready/not-ready transitions): a drive claiming 127 s does not
    /// hold the boot that long.
    pub ready_cap_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { command_us: 5_000_000, ready_cap_ms: 30_000 }
    }
}

/// Why the controller could not be brought up, or a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmeError {
    /// CAP: no NVM command set, or no 4 KiB memory pages.
    Unsupported(&'static str),
    /// The register window is too small for the doorbells.
    SmallBar(u64),
    /// CSTS.RDY did not become `ready` within the timeout.
    NotReady { ready: bool, waited_ms: u64 },
    /// CSTS.CFS: the controller reported a fatal error (or reads all-ones: gone).
    Fatal,
    /// A command did not complete in time (opcode, admin or I/O queue).
    Timeout { admin: bool, opcode: u8 },
    /// A command completed with an error (status code type and code).
    Status { admin: bool, opcode: u8, status: u16 },
    /// The controller answered with another command's id.
    WrongCompletion { expected: u16, got: u16 },
    /// The driver's own DMA bookkeeping failed (should not happen).
    Dma,
    /// The drive was marked failed earlier; nothing more is sent.
    Failed,
    /// No usable namespace (the first active one, and why it is refused).
    Namespace { nsid: u32, why: NamespaceRefusal },
}

impl core::fmt::Display for NvmeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NvmeError::Unsupported(what) => write!(f, "the controller lacks {what}"),
            NvmeError::SmallBar(b) => write!(f, "the register window ({b} bytes) is too small"),
            NvmeError::NotReady { ready, waited_ms } => {
                write!(f, "CSTS.RDY did not become {} within {waited_ms} ms", u8::from(*ready))
            }
            NvmeError::Fatal => write!(f, "controller fatal status (CSTS.CFS)"),
            NvmeError::Timeout { admin, opcode } => {
                write!(f, "{} command {opcode:#04x} timed out", if *admin { "admin" } else { "I/O" })
            }
            NvmeError::Status { admin, opcode, status } => {
                write!(
                    f,
                    "{} command {opcode:#04x} failed with status {status:#05x}",
                    if *admin { "admin" } else { "I/O" }
                )
            }
            NvmeError::WrongCompletion { expected, got } => {
                write!(f, "completion for command {got} while waiting for {expected}")
            }
            NvmeError::Dma => write!(f, "DMA region bookkeeping error"),
            NvmeError::Failed => write!(f, "the drive was marked failed"),
            NvmeError::Namespace { nsid, why } => write!(f, "namespace {nsid}: {why}"),
        }
    }
}

impl From<NvmeError> for DeviceError {
    fn from(e: NvmeError) -> Self {
        match e {
            NvmeError::Status { status, .. } => DeviceError::Medium { status },
            // Everything else means the drive no longer answers as it should.
            _ => DeviceError::Timeout,
        }
    }
}

/// An enabled controller with its admin queue (and, once created, one I/O queue).
#[derive(Debug)]
pub struct Controller<H: NvmeHw> {
    hw: H,
    cap: Capabilities,
    /// The DMA region's device address.
    dma: u64,
    admin: QueuePair,
    io: Option<QueuePair>,
    next_cid: u16,
    timing: Timing,
    failed: Option<NvmeError>,
}

impl<H: NvmeHw> Controller<H> {
    fn write64(&mut self, offset: u64, value: u64) {
        self.hw.write32(offset, value as u32);
        self.hw.write32(offset.saturating_add(4), (value >> 32) as u32);
    }

    fn csts(&mut self) -> u32 {
        self.hw.read32(regs::CSTS)
    }

    /// Waits until CSTS.RDY is `ready` (or the controller reports a fatal error).
    fn wait_ready(&mut self, ready: bool) -> Result<(), NvmeError> {
        let limit_ms = self.cap.ready_timeout_ms.clamp(500, self.timing.ready_cap_ms.max(500));
        let start = self.hw.now_us();
        loop {
            let s = self.csts();
            if s == u32::MAX || (ready && s & csts::CFS != 0) {
                return Err(NvmeError::Fatal);
            }
            if (s & csts::RDY != 0) == ready {
                return Ok(());
            }
            if self.hw.now_us().saturating_sub(start) > limit_ms.saturating_mul(1000) {
                return Err(NvmeError::NotReady { ready, waited_ms: limit_ms });
            }
            core::hint::spin_loop();
        }
    }

    /// Resets the controller and enables it with an admin queue pair in the DMA
    /// region at device address `dma` (page aligned, [`DMA_BYTES`] long, zeroed).
    pub fn enable(mut hw: H, dma: u64, timing: Timing) -> Result<Self, NvmeError> {
        let cap = u64::from(hw.read32(regs::CAP)) | u64::from(hw.read32(regs::CAP.saturating_add(4))) << 32;
        if cap == u64::MAX {
            return Err(NvmeError::Fatal);
        }
        let cap = Capabilities::decode(cap);
        if !cap.nvm_command_set {
            return Err(NvmeError::Unsupported("the NVM command set"));
        }
        if !cap.takes_4k_pages() {
            return Err(NvmeError::Unsupported("4 KiB memory pages"));
        }
        let needed = cap.doorbell(1, true).saturating_add(4);
        if hw.register_bytes() < needed {
            return Err(NvmeError::SmallBar(hw.register_bytes()));
        }
        let entries = QUEUE_ENTRIES.min(u16::try_from(cap.max_queue_entries).unwrap_or(u16::MAX));
        let admin = QueuePair::new(0, entries, dma.saturating_add(ADMIN_SQ), dma.saturating_add(ADMIN_CQ));
        let mut c = Controller { hw, cap, dma, admin, io: None, next_cid: 1, timing, failed: None };

        // §3.5.2: a controller being enabled finishes that before it is disabled.
        let cc_now = c.hw.read32(regs::CC);
        if cc_now & cc::EN != 0 {
            if c.csts() & csts::RDY == 0 {
                let _ = c.wait_ready(true);
            }
            c.hw.write32(regs::CC, cc_now & !cc::EN);
        }
        c.wait_ready(false)?;
        c.hw.write32(regs::AQA, regs::aqa(entries));
        let (asq, acq) = (c.admin.sq_base, c.admin.cq_base);
        c.write64(regs::ASQ, asq);
        c.write64(regs::ACQ, acq);
        c.hw.write32(regs::CC, cc::ENABLED);
        c.wait_ready(true)?;
        Ok(c)
    }

    pub fn failure(&self) -> Option<NvmeError> {
        self.failed
    }

    fn fail(&mut self, e: NvmeError) -> NvmeError {
        if self.failed.is_none() {
            error!(target: "nvme", "drive marked failed: {e}; no further commands are sent");
            self.failed = Some(e);
        }
        e
    }

    /// Sends `sqe` on the admin (`io` false) or I/O queue and waits for its completion.
    pub fn run(&mut self, io: bool, sqe: Sqe) -> Result<Cqe, NvmeError> {
        if self.failed.is_some() {
            return Err(NvmeError::Failed);
        }
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        let sqe = sqe.with_cid(cid);
        let admin = !io;
        let mut queue = match (io, &self.io) {
            (false, _) => self.admin.clone(),
            (true, Some(q)) => q.clone(),
            (true, None) => return Err(NvmeError::Dma),
        };
        let (slot, tail) = queue.submit_slot().ok_or(NvmeError::Dma)?;
        if !self.hw.dma_write(slot, &sqe.to_bytes()) {
            return Err(NvmeError::Dma);
        }
        queue.submitted(tail);
        self.hw.write32(self.cap.doorbell(queue.qid, false), u32::from(tail));
        let result = self.wait(&mut queue, cid, sqe.opcode(), admin);
        if io {
            self.io = Some(queue);
        } else {
            self.admin = queue;
        }
        let cqe = result.map_err(|e| self.fail(e))?;
        match cqe.status_code() {
            0 => Ok(cqe),
            status => Err(NvmeError::Status { admin, opcode: sqe.opcode(), status }),
        }
    }

    fn wait(&mut self, queue: &mut QueuePair, cid: u16, opcode: u8, admin: bool) -> Result<Cqe, NvmeError> {
        let start = self.hw.now_us();
        loop {
            let mut raw = [0u8; CQE_BYTES];
            if !self.hw.dma_read(queue.completion_slot(), &mut raw) {
                return Err(NvmeError::Dma);
            }
            let cqe = Cqe::from_bytes(&raw);
            if let Some(head) = queue.take_completion(&cqe) {
                self.hw.write32(self.cap.doorbell(queue.qid, true), u32::from(head));
                if cqe.cid != cid {
                    return Err(NvmeError::WrongCompletion { expected: cid, got: cqe.cid });
                }
                return Ok(cqe);
            }
            let s = self.csts();
            if s == u32::MAX || s & csts::CFS != 0 {
                return Err(NvmeError::Fatal);
            }
            if self.hw.now_us().saturating_sub(start) > self.timing.command_us {
                return Err(NvmeError::Timeout { admin, opcode });
            }
            core::hint::spin_loop();
        }
    }

    /// Runs an admin command that returns a 4 KiB data page (Identify), and reads it.
    fn identify(&mut self, cns: u32, nsid: u32) -> Result<[u8; 4096], NvmeError> {
        let page = self.dma.saturating_add(BOUNCE);
        self.run(false, cmd::identify(cns, nsid, page))?;
        let mut out = [0u8; 4096];
        if !self.hw.dma_read(page, &mut out) {
            return Err(NvmeError::Dma);
        }
        Ok(out)
    }

    /// Identify Controller, one I/O queue pair, and the first active namespace.
    pub fn open(mut self) -> Result<NvmeNamespace<H>, NvmeError> {
        let info = ControllerInfo::parse(&self.identify(cmd::cns::CONTROLLER, 0)?);
        if !info.takes_standard_entries() {
            return Err(NvmeError::Unsupported("64-byte submission and 16-byte completion entries"));
        }
        // §5.27.1.5: asked for before any I/O queue exists. A controller that refuses
        // still has at least one queue pair (the minimum every controller supports).
        if let Err(e) = self.run(false, cmd::set_number_of_queues(1)) {
            if self.failed.is_some() {
                return Err(e);
            }
            log::warn!(target: "nvme", "Set Features (Number of Queues) refused: {e}");
        }
        let entries = self.admin.entries;
        let io = QueuePair::new(1, entries, self.dma.saturating_add(IO_SQ), self.dma.saturating_add(IO_CQ));
        self.run(false, cmd::create_io_cq(1, entries, io.cq_base))?;
        self.run(false, cmd::create_io_sq(1, entries, io.sq_base, 1))?;
        self.io = Some(io);

        // The active namespace list (CNS 02h) names the first one; controllers older
        // than NVMe 1.1 do not have it, and then NSID 1 is tried.
        let nsid = match self.identify(cmd::cns::ACTIVE_NAMESPACES, 0) {
            Ok(list) => first_active(&list).unwrap_or(1),
            Err(_) if self.failed.is_none() => 1,
            Err(e) => return Err(e),
        };
        let ns = NamespaceInfo::parse(&self.identify(cmd::cns::NAMESPACE, nsid)?)
            .map_err(|why| NvmeError::Namespace { nsid, why })?;
        let max_transfer = info.max_transfer().map_or(BOUNCE_BYTES, |m| m.min(BOUNCE_BYTES));
        let max_blocks = max_transfer.checked_div(u64::from(ns.block_size)).unwrap_or(1).max(1);
        Ok(NvmeNamespace { ctrl: self, info, nsid, ns, max_blocks })
    }

    pub fn hw(&self) -> &H {
        &self.hw
    }
}

/// One namespace of an enabled controller, as a block device.
#[derive(Debug)]
pub struct NvmeNamespace<H: NvmeHw> {
    ctrl: Controller<H>,
    pub info: ControllerInfo,
    pub nsid: u32,
    pub ns: NamespaceInfo,
    /// Blocks one command moves at most (bounce region and MDTS).
    max_blocks: u64,
}

impl<H: NvmeHw> NvmeNamespace<H> {
    pub fn controller(&self) -> &Controller<H> {
        &self.ctrl
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.ns.blocks.saturating_mul(u64::from(self.ns.block_size))
    }

    pub fn max_transfer_bytes(&self) -> u64 {
        self.max_blocks.saturating_mul(u64::from(self.ns.block_size))
    }

    /// Moves `blocks` blocks from `lba` between the device and the bounce region.
    fn transfer(&mut self, write: bool, lba: u64, bytes: usize) -> Result<(), NvmeError> {
        let bounce = self.ctrl.dma.saturating_add(BOUNCE);
        let list = self.ctrl.dma.saturating_add(PRP_LIST);
        let prps = prp::build(bounce, bytes as u64, list).map_err(|_| NvmeError::Dma)?;
        if !prps.list.is_empty() {
            // Only the entries the command uses; the controller reads no further.
            let mut page = [0u8; (BOUNCE_BYTES / PAGE * 8) as usize];
            let used = prps.list.len().saturating_mul(8);
            for (slot, entry) in page.chunks_exact_mut(8).zip(prps.list.iter()) {
                slot.copy_from_slice(&entry.to_le_bytes());
            }
            if !self.ctrl.hw.dma_write(list, page.get(..used).ok_or(NvmeError::Dma)?) {
                return Err(NvmeError::Dma);
            }
        }
        let blocks = (bytes as u64).checked_div(u64::from(self.ns.block_size)).unwrap_or(0) as u32;
        self.ctrl.run(true, cmd::read_write(write, self.nsid, lba, blocks, prps.prp1, prps.prp2))?;
        Ok(())
    }

    fn chunk_bytes(&self) -> usize {
        usize::try_from(self.max_transfer_bytes()).unwrap_or(BOUNCE_BYTES as usize)
    }
}

impl<H: NvmeHw> BlockDevice for NvmeNamespace<H> {
    fn block_size(&self) -> u32 {
        self.ns.block_size
    }

    fn blocks(&self) -> u64 {
        self.ns.blocks
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range(lba, buf.len(), self.ns.block_size, self.ns.blocks)?;
        let bs = u64::from(self.ns.block_size);
        let bounce = self.ctrl.dma.saturating_add(BOUNCE);
        let mut at = lba;
        for chunk in buf.chunks_mut(self.chunk_bytes()) {
            self.transfer(false, at, chunk.len())?;
            if !self.ctrl.hw.dma_read(bounce, chunk) {
                return Err(NvmeError::Dma.into());
            }
            at = at.saturating_add((chunk.len() as u64).checked_div(bs).unwrap_or(0));
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        check_range(lba, buf.len(), self.ns.block_size, self.ns.blocks)?;
        let bs = u64::from(self.ns.block_size);
        let bounce = self.ctrl.dma.saturating_add(BOUNCE);
        let mut at = lba;
        for chunk in buf.chunks(self.chunk_bytes()) {
            if !self.ctrl.hw.dma_write(bounce, chunk) {
                return Err(NvmeError::Dma.into());
            }
            self.transfer(true, at, chunk.len())?;
            at = at.saturating_add((chunk.len() as u64).checked_div(bs).unwrap_or(0));
        }
        Ok(())
    }

    /// Hands each chunk to `take` in the bounce region itself, right after the drive
    /// filled it: the caller's one pass replaces the driver's copy.
    fn read_with(
        &mut self,
        lba: u64,
        len: usize,
        take: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        check_range(lba, len, self.ns.block_size, self.ns.blocks)?;
        if self.ctrl.failed.is_some() {
            return Err(DeviceError::Timeout);
        }
        let bs = u64::from(self.ns.block_size);
        let bounce = self.ctrl.dma.saturating_add(BOUNCE);
        let chunk = self.chunk_bytes();
        let (mut done, mut at) = (0usize, lba);
        while done < len {
            let n = len.saturating_sub(done).min(chunk);
            self.transfer(false, at, n)?;
            let bytes = self.ctrl.hw.dma_bytes(bounce, n).ok_or(NvmeError::Dma)?;
            if !take(done, bytes) {
                return Err(DeviceError::Buffers);
            }
            done = done.saturating_add(n);
            at = at.saturating_add((n as u64).checked_div(bs).unwrap_or(0));
        }
        Ok(())
    }

    /// Lets `fill` write each chunk into the bounce region itself, then sends it.
    fn write_with(
        &mut self,
        lba: u64,
        len: usize,
        fill: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        check_range(lba, len, self.ns.block_size, self.ns.blocks)?;
        // A failed drive may still write into the bounce region: nothing touches it.
        if self.ctrl.failed.is_some() {
            return Err(DeviceError::Timeout);
        }
        let bs = u64::from(self.ns.block_size);
        let bounce = self.ctrl.dma.saturating_add(BOUNCE);
        let chunk = self.chunk_bytes();
        let (mut done, mut at) = (0usize, lba);
        while done < len {
            let n = len.saturating_sub(done).min(chunk);
            let bytes = self.ctrl.hw.dma_bytes(bounce, n).ok_or(NvmeError::Dma)?;
            if !fill(done, bytes) {
                return Err(DeviceError::Buffers);
            }
            self.transfer(true, at, n)?;
            done = done.saturating_add(n);
            at = at.saturating_add((n as u64).checked_div(bs).unwrap_or(0));
        }
        Ok(())
    }

    /// NVMe Flush when the drive has a volatile write cache; without one every
    /// completed write is already durable (Base §7.1).
    fn flush(&mut self) -> Result<(), DeviceError> {
        if self.ctrl.failed.is_some() {
            return Err(DeviceError::Timeout);
        }
        if self.info.volatile_write_cache {
            self.ctrl.run(true, cmd::flush(self.nsid))?;
        }
        Ok(())
    }
}
