//! One namespace of an enabled controller, as a block device. Data goes through two
//! bounce buffers in the controller's DMA region, each with its own PRP list page: a
//! transfer larger than one buffer keeps two commands outstanding, so the caller fills
//! (encrypts into) or drains (decrypts from) one buffer while the drive works on the
//! other. A direct transfer (`read_direct`/`write_direct`) points the PRPs at the
//! caller's memory instead, given to the device only for that transfer.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use bulkhead_vdisk::device::{check_range, segments_len};
use bulkhead_vdisk::{BlockDevice, DeviceError, DmaSegment};

use super::cmd;
use super::controller::{BOUNCE_BYTES, Controller, IN_FLIGHT, NvmeError, NvmeHw, bounce, prp_list};
use super::identify::{ControllerInfo, NamespaceInfo};
use super::prp::{self, LIST_ENTRIES, PAGE, SegmentCursor};

/// The most one command moves straight to or from a caller's memory: what one PRP
/// list page describes (with PRP1 starting inside a page), before MDTS.
const DIRECT_MAX_BYTES: u64 = LIST_ENTRIES as u64 * PAGE;

/// One namespace of an enabled controller, as a block device.
#[derive(Debug)]
pub struct NvmeNamespace<H: NvmeHw> {
    ctrl: Controller<H>,
    pub info: ControllerInfo,
    pub nsid: u32,
    pub ns: NamespaceInfo,
    /// Blocks one command moves at most (bounce buffer and MDTS).
    max_blocks: u64,
    /// A direct transfer as the controller addresses it.
    device: Vec<DmaSegment>,
    /// The first direct transfer was logged.
    direct_seen: bool,
}

/// A command outstanding on one bounce buffer: its id, opcode, and which buffer.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    cid: u16,
    opcode: u8,
    buffer: usize,
}

impl<H: NvmeHw> NvmeNamespace<H> {
    pub(super) fn new(
        ctrl: Controller<H>,
        info: ControllerInfo,
        nsid: u32,
        ns: NamespaceInfo,
        max_blocks: u64,
    ) -> Self {
        NvmeNamespace { ctrl, info, nsid, ns, max_blocks, device: Vec::new(), direct_seen: false }
    }

    pub fn controller(&self) -> &Controller<H> {
        &self.ctrl
    }

    #[cfg(test)]
    pub(super) fn controller_hw_mut(&mut self) -> &mut H {
        self.ctrl.hw_mut()
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.ns.blocks.saturating_mul(u64::from(self.ns.block_size))
    }

    pub fn max_transfer_bytes(&self) -> u64 {
        self.max_blocks.saturating_mul(u64::from(self.ns.block_size))
    }

    fn chunk_bytes(&self) -> usize {
        usize::try_from(self.max_transfer_bytes()).unwrap_or(BOUNCE_BYTES as usize)
    }

    fn bounce_at(&self, buffer: usize) -> u64 {
        self.ctrl.dma().saturating_add(bounce(buffer))
    }

    /// Sends a read or write of `bytes` at `lba` from bounce buffer `buffer`, without
    /// waiting for it.
    fn start(&mut self, write: bool, lba: u64, bytes: usize, buffer: usize) -> Result<InFlight, NvmeError> {
        let list = self.ctrl.dma().saturating_add(prp_list(buffer));
        let data = self.bounce_at(buffer);
        let page = self.ctrl.hw_mut().dma_bytes(list, PAGE as usize).ok_or(NvmeError::Dma)?;
        let prps = prp::build(data, bytes as u64, list, page).map_err(|_| NvmeError::Dma)?;
        self.send(write, lba, bytes, prps, buffer)
    }

    /// Submits a read or write whose PRPs (and list page) are ready.
    fn send(
        &mut self,
        write: bool,
        lba: u64,
        bytes: usize,
        prps: prp::Prps,
        buffer: usize,
    ) -> Result<InFlight, NvmeError> {
        let blocks = (bytes as u64).checked_div(u64::from(self.ns.block_size)).unwrap_or(0) as u32;
        let sqe = cmd::read_write(write, self.nsid, lba, blocks, prps.prp1, prps.prp2);
        let cid = self.ctrl.submit(true, sqe)?;
        Ok(InFlight { cid, opcode: sqe.opcode(), buffer })
    }

    fn finish(&mut self, p: InFlight) -> Result<(), NvmeError> {
        self.ctrl.wait_for(true, p.cid, p.opcode).map(|_| ())
    }

    /// Blocks one command moves at most straight to or from a caller's memory.
    fn direct_max_blocks(&self) -> u64 {
        let bytes = self.info.max_transfer().map_or(DIRECT_MAX_BYTES, |m| m.min(DIRECT_MAX_BYTES));
        bytes.checked_div(u64::from(self.ns.block_size)).unwrap_or(0)
    }

    /// Moves whole blocks from `lba` on between the drive and `segments` (host memory
    /// the caller's buffers are), the commands' PRPs pointing at them: the controller
    /// is given exactly their pages (`NvmeHw::map_direct`) for the transfer, and they
    /// are taken back once every command completed or the drive failed, before this
    /// returns. `None` when the segments cannot be described by PRPs, touch the DMA
    /// region, or cannot be given to the controller: nothing was sent.
    fn direct(&mut self, write: bool, lba: u64, segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        let len = segments_len(segments);
        if let Err(e) = check_range(lba, len, self.ns.block_size, self.ns.blocks) {
            return Some(Err(e));
        }
        if self.ctrl.failed.is_some() {
            return Some(Err(DeviceError::Timeout));
        }
        let max_blocks = self.direct_max_blocks();
        let region = (self.ctrl.dma(), self.ctrl.dma().saturating_add(super::controller::DMA_BYTES));
        if len == 0 || max_blocks == 0 || !prp::segments_fit_outside(segments, region) {
            return None;
        }
        let mut device = core::mem::take(&mut self.device);
        device.clear();
        if !self.ctrl.hw_mut().map_direct(segments, !write, &mut device) {
            self.device = device;
            return None;
        }
        if !self.direct_seen {
            self.direct_seen = true;
            log::info!(
                target: "nvme",
                "first transfer straight {} a VM's buffers: {} segment(s), {} bytes, PRPs at {:#x}",
                if write { "from" } else { "into" },
                segments.len(),
                len,
                device.first().map_or(0, |d| d.addr)
            );
        }
        let result = if segments_len(&device) == len {
            self.direct_commands(write, lba, len, &device, max_blocks)
        } else {
            Err(DeviceError::Buffers)
        };
        self.ctrl.hw_mut().unmap_direct();
        self.device = device;
        Some(result)
    }

    /// The commands of a direct transfer, [`IN_FLIGHT`] outstanding, each with its own
    /// PRP list page; every command sent has completed (or the drive failed) on return.
    fn direct_commands(
        &mut self,
        write: bool,
        lba: u64,
        len: usize,
        segments: &[DmaSegment],
        max_blocks: u64,
    ) -> Result<(), DeviceError> {
        let bs = u64::from(self.ns.block_size);
        let chunk = max_blocks.saturating_mul(bs) as usize;
        let mut cursor = SegmentCursor::default();
        let mut outstanding: [Option<InFlight>; IN_FLIGHT] = [None; IN_FLIGHT];
        let mut result = Ok(());
        let mut at = 0usize;
        let mut k = 0usize;
        while at < len {
            let slot = k % IN_FLIGHT;
            // The list page of this slot is free once its last command completed.
            if let Some(p) = outstanding.get_mut(slot).and_then(Option::take)
                && let Err(e) = self.finish(p)
            {
                result = Err(e.into());
                break;
            }
            let n = len.saturating_sub(at).min(chunk);
            let block = lba.saturating_add((at as u64).checked_div(bs).unwrap_or(0));
            match self.start_direct(write, block, n, segments, &mut cursor, slot) {
                Ok(p) => {
                    if let Some(o) = outstanding.get_mut(slot) {
                        *o = Some(p);
                    }
                }
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
            at = at.saturating_add(n);
            k = k.saturating_add(1);
        }
        // Oldest first; after a failure only waited for, so nothing still runs.
        for i in 0..IN_FLIGHT {
            let slot = k.saturating_add(i) % IN_FLIGHT;
            if let Some(p) = outstanding.get_mut(slot).and_then(Option::take) {
                let done = self.finish(p);
                if result.is_ok() {
                    result = done.map_err(DeviceError::from);
                }
            }
        }
        result
    }

    /// Sends a read or write of `bytes` at `lba` over the next `bytes` of `segments`,
    /// its PRP list (if any) in list page `slot`, without waiting for it.
    fn start_direct(
        &mut self,
        write: bool,
        lba: u64,
        bytes: usize,
        segments: &[DmaSegment],
        cursor: &mut SegmentCursor,
        slot: usize,
    ) -> Result<InFlight, NvmeError> {
        let list = self.ctrl.dma().saturating_add(prp_list(slot));
        let page = self.ctrl.hw_mut().dma_bytes(list, PAGE as usize).ok_or(NvmeError::Dma)?;
        let prps = prp::build_segments(segments, cursor, bytes, list, page).map_err(|_| NvmeError::Dma)?;
        self.send(write, lba, bytes, prps, slot)
    }

    /// After a failure: waits for a command still outstanding, so that its bounce
    /// buffer is quiet before anything reuses it (its own result no longer matters; a
    /// timeout marks the drive failed, and a failed drive's buffers are never used).
    fn drain(&mut self, p: Option<InFlight>) {
        if let Some(p) = p {
            let _ = self.finish(p);
        }
    }

    /// Moves `len` bytes from `lba` between the drive and the caller, chunk by chunk,
    /// two commands outstanding: `write` fills each chunk with `each` before it is
    /// sent; a read hands each to `each` once the drive filled it.
    fn pipeline(
        &mut self,
        write: bool,
        lba: u64,
        len: usize,
        each: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        check_range(lba, len, self.ns.block_size, self.ns.blocks)?;
        // A failed drive may still write into a bounce buffer: nothing touches them.
        if self.ctrl.failed.is_some() {
            return Err(DeviceError::Timeout);
        }
        let bs = u64::from(self.ns.block_size);
        let chunk = self.chunk_bytes().max(1);
        let count = len.div_ceil(chunk);
        let piece = |k: usize| {
            let at = k.saturating_mul(chunk);
            let n = len.saturating_sub(at).min(chunk);
            (at, n, lba.saturating_add((at as u64).checked_div(bs).unwrap_or(0)))
        };
        // The command outstanding on the previous chunk.
        let mut previous: Option<InFlight> = None;
        if !write && count > 0 {
            let (_, n, block) = piece(0);
            previous = Some(self.start(false, block, n, 0)?);
        }
        for k in 0..count {
            let buffer = k % IN_FLIGHT;
            let (at, n, block) = piece(k);
            if write {
                // Fill this buffer while the drive writes the other one.
                let at_buffer = self.bounce_at(buffer);
                let filled = match self.ctrl.hw_mut().dma_bytes(at_buffer, n) {
                    Some(bytes) => each(at, bytes),
                    None => false,
                };
                if !filled {
                    self.drain(previous);
                    return Err(DeviceError::Buffers);
                }
                if let Some(p) = previous.take() {
                    self.finish(p)?;
                }
                previous = Some(self.start(true, block, n, buffer)?);
            } else {
                let Some(current) = previous.take() else { return Err(NvmeError::Dma.into()) };
                // The next chunk goes into the other buffer while this one is drained.
                let k_next = k.saturating_add(1);
                let next = if k_next < count {
                    let (_, n_next, block_next) = piece(k_next);
                    match self.start(false, block_next, n_next, k_next % IN_FLIGHT) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            self.drain(Some(current));
                            return Err(e.into());
                        }
                    }
                } else {
                    None
                };
                if let Err(e) = self.finish(current) {
                    self.drain(next);
                    return Err(e.into());
                }
                let at_buffer = self.bounce_at(current.buffer);
                let taken = match self.ctrl.hw_mut().dma_bytes(at_buffer, n) {
                    Some(bytes) => each(at, bytes),
                    None => false,
                };
                if !taken {
                    self.drain(next);
                    return Err(DeviceError::Buffers);
                }
                previous = next;
            }
        }
        if let Some(p) = previous {
            self.finish(p)?;
        }
        Ok(())
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
        self.pipeline(false, lba, buf.len(), &mut |at, chunk| {
            buf.get_mut(at..at.saturating_add(chunk.len())).map(|out| out.copy_from_slice(chunk)).is_some()
        })
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.pipeline(true, lba, buf.len(), &mut |at, chunk| {
            buf.get(at..at.saturating_add(chunk.len())).map(|src| chunk.copy_from_slice(src)).is_some()
        })
    }

    /// Hands each chunk to `take` in its bounce buffer, right after the drive filled
    /// it, while the drive reads the next one: the caller's one pass replaces the
    /// driver's copy.
    fn read_with(
        &mut self,
        lba: u64,
        len: usize,
        take: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        self.pipeline(false, lba, len, take)
    }

    /// Lets `fill` write each chunk into a bounce buffer while the drive writes the
    /// previous one, then sends it.
    fn write_with(
        &mut self,
        lba: u64,
        len: usize,
        fill: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        self.pipeline(true, lba, len, fill)
    }

    /// The drive's DMA straight into the caller's memory: no bounce buffer, no copy.
    fn read_direct(&mut self, lba: u64, segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        self.direct(false, lba, segments)
    }

    /// The drive's DMA straight from the caller's memory.
    fn write_direct(&mut self, lba: u64, segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        self.direct(true, lba, segments)
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
