//! The driver's logic over [`NvmeHw`]: controller reset and enable (NVMe Base 2.0
//! §3.5.1), the admin queue, Identify, one I/O queue pair with up to [`IN_FLIGHT`]
//! commands outstanding (`namespace.rs` moves the data), polled. Every wait is bounded by
//! a deadline; a controller that stops answering or reports a fatal status is marked
//! failed and never sent another command. Runs on the host against `fake.rs`.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use bulkhead_vdisk::{DeviceError, DmaSegment};
use log::error;

use super::cmd::{self, CQE_BYTES, Cqe, Sqe};
use super::identify::{ControllerInfo, NamespaceInfo, NamespaceRefusal, first_active};
pub use super::namespace::NvmeNamespace;
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
    /// Gives the controller the memory of `segments` (host physical, in order, fitting
    /// the PRP rules, outside the DMA region) for one transfer, which writes it when
    /// `device_writes`, and puts in `device` the same transfer as the controller
    /// addresses it. False: it cannot, nothing was given, and the transfer goes
    /// through the bounce buffers (the default).
    fn map_direct(&mut self, _segments: &[DmaSegment], _device_writes: bool, _device: &mut Vec<DmaSegment>) -> bool {
        false
    }
    /// Takes back what [`NvmeHw::map_direct`] gave, once no command uses it.
    fn unmap_direct(&mut self) {}
}

/// Entries per queue: at most [`IN_FLIGHT`] commands are outstanding, so a few are
/// plenty.
pub const QUEUE_ENTRIES: u16 = 16;
/// I/O commands outstanding at once: one per bounce buffer, so the driver fills or
/// drains one while the drive works on the other.
pub const IN_FLIGHT: usize = 2;
/// One bounce buffer: the largest transfer of one command (before MDTS).
pub const BOUNCE_BYTES: u64 = 128 * 1024;
const ADMIN_SQ: u64 = 0;
const ADMIN_CQ: u64 = PAGE;
const IO_SQ: u64 = 2 * PAGE;
const IO_CQ: u64 = 3 * PAGE;
const PRP_LISTS: [u64; IN_FLIGHT] = [4 * PAGE, 5 * PAGE];
const BOUNCES: [u64; IN_FLIGHT] = [6 * PAGE, 6 * PAGE + BOUNCE_BYTES];
/// The whole DMA region: four queue pages, a PRP list page and a bounce buffer per
/// command in flight.
pub const DMA_BYTES: u64 = 6 * PAGE + IN_FLIGHT as u64 * BOUNCE_BYTES;
/// PRP list page of bounce buffer `i` (of [`IN_FLIGHT`]).
pub(super) fn prp_list(i: usize) -> u64 {
    PRP_LISTS.get(i % IN_FLIGHT).copied().unwrap_or(PRP_LISTS[0])
}
/// Bounce buffer `i` (of [`IN_FLIGHT`]).
pub(super) fn bounce(i: usize) -> u64 {
    BOUNCES.get(i % IN_FLIGHT).copied().unwrap_or(BOUNCES[0])
}
const _: () = assert!(QUEUE_ENTRIES as u64 * 64 <= PAGE);
const _: () = assert!(QUEUE_ENTRIES as usize > IN_FLIGHT);
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
    pub(super) failed: Option<NvmeError>,
    /// Ids of the I/O commands outstanding (0: free slot).
    in_flight: [u16; IN_FLIGHT],
    /// A completion that arrived while the driver waited for another command.
    early: Option<Cqe>,
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
        let mut c = Controller {
            hw,
            cap,
            dma,
            admin,
            io: None,
            next_cid: 1,
            timing,
            failed: None,
            in_flight: [0; IN_FLIGHT],
            early: None,
        };

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
        let cid = self.submit(io, sqe)?;
        self.wait_for(io, cid, sqe.opcode())
    }

    /// Writes `sqe` into the admin (`io` false) or I/O submission queue and rings the
    /// doorbell; returns its command id for [`Self::wait_for`]. At most [`IN_FLIGHT`]
    /// I/O commands may be outstanding.
    pub(super) fn submit(&mut self, io: bool, sqe: Sqe) -> Result<u16, NvmeError> {
        if self.failed.is_some() {
            return Err(NvmeError::Failed);
        }
        let free = if io { Some(self.in_flight.iter().position(|&c| c == 0).ok_or(NvmeError::Dma)?) } else { None };
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        let sqe = sqe.with_cid(cid);
        let queue = if io { self.io.as_mut().ok_or(NvmeError::Dma)? } else { &mut self.admin };
        let (slot, tail) = queue.submit_slot().ok_or(NvmeError::Dma)?;
        if !self.hw.dma_write(slot, &sqe.to_bytes()) {
            return Err(NvmeError::Dma);
        }
        queue.submitted(tail);
        let qid = queue.qid;
        if let Some(i) = free
            && let Some(entry) = self.in_flight.get_mut(i)
        {
            *entry = cid;
        }
        self.hw.write32(self.cap.doorbell(qid, false), u32::from(tail));
        Ok(cid)
    }

    /// Waits for the completion of command `cid` (sent by [`Self::submit`]); a
    /// completion of another outstanding I/O command that comes first is kept for its
    /// own wait. A timeout, a fatal status or an unknown completion fails the drive.
    pub(super) fn wait_for(&mut self, io: bool, cid: u16, opcode: u8) -> Result<Cqe, NvmeError> {
        let admin = !io;
        let cqe = match self.early.take_if(|c| c.cid == cid) {
            Some(cqe) => cqe,
            None => self.poll(io, cid, opcode).map_err(|e| self.fail(e))?,
        };
        if let Some(entry) = self.in_flight.iter_mut().find(|c| **c == cid) {
            *entry = 0;
        }
        match cqe.status_code() {
            0 => Ok(cqe),
            status => Err(NvmeError::Status { admin, opcode, status }),
        }
    }

    fn poll(&mut self, io: bool, cid: u16, opcode: u8) -> Result<Cqe, NvmeError> {
        let admin = !io;
        let start = self.hw.now_us();
        loop {
            let queue = if io { self.io.as_mut().ok_or(NvmeError::Dma)? } else { &mut self.admin };
            let slot = queue.completion_slot();
            // The status field's phase tag first (as drivers poll): the entry is read
            // whole only once it is new.
            let mut status = [0u8; 2];
            if !self.hw.dma_read(slot.saturating_add(Cqe::STATUS_OFFSET), &mut status) {
                return Err(NvmeError::Dma);
            }
            let taken = if queue.completion_ready(u16::from_le_bytes(status)) {
                let mut raw = [0u8; CQE_BYTES];
                if !self.hw.dma_read(slot, &mut raw) {
                    return Err(NvmeError::Dma);
                }
                let cqe = Cqe::from_bytes(&raw);
                queue.take_completion(&cqe).map(|head| (head, cqe))
            } else {
                None
            };
            if let Some((head, cqe)) = taken {
                let qid = queue.qid;
                self.hw.write32(self.cap.doorbell(qid, true), u32::from(head));
                if cqe.cid == cid {
                    return Ok(cqe);
                }
                let other = io && cqe.cid != 0 && self.in_flight.contains(&cqe.cid);
                if !other || self.early.is_some() {
                    return Err(NvmeError::WrongCompletion { expected: cid, got: cqe.cid });
                }
                self.early = Some(cqe);
                continue;
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
        let page = self.dma.saturating_add(bounce(0));
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
        Ok(NvmeNamespace::new(self, info, nsid, ns, max_blocks))
    }

    pub fn hw(&self) -> &H {
        &self.hw
    }

    pub(super) fn hw_mut(&mut self) -> &mut H {
        &mut self.hw
    }

    /// The DMA region's device address.
    pub(super) fn dma(&self) -> u64 {
        self.dma
    }
}
