//! Carrying out virtio-blk requests: take chains from the request queue, check each
//! (`blk_request`), check that every buffer lies in the guest's RAM, then move the data
//! between the guest's buffers and the backend (straight, when the backend takes the
//! guest's buffers, else through a 64 KiB bounce buffer), and complete the chain with
//! its status.
//!
//! A request the parser or the memory check refuses completes with IOERR (UNSUPP for
//! an unknown type) and never reaches the backend. A chain the queue code cannot walk
//! (a loop, an index past the table, an indirect descriptor) has no status byte to
//! write: the device goes to NEEDS_RESET as virtio-net does (§2.1.2). One call takes at
//! most [`REQUESTS_PER_POLL`] requests and stops taking more once
//! [`BYTES_PER_POLL`] bytes moved; `more` says whether requests wait.
#![forbid(unsafe_code)]

use super::blk::{REQUEST_QUEUE, VirtioBlk};
use super::blk_backend::{BlockBackend, Buffers, DmaSegment, SECTOR_SIZE};
use super::blk_request::{
    BlkOp, DiskShape, HEADER_LEN, Reject, ReqHeader, blk_status, decide, frame, id_len, status_byte,
};
use super::virtqueue::{DescChain, DescSegment};
use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::{GuestMemory, GuestMemoryAccess, GuestMemoryMap, GuestRegion, HostMemory, write_obj};

/// Requests one call takes at most.
pub const REQUESTS_PER_POLL: u32 = 64;
/// Once this many data bytes moved, a call takes no further request.
/// (A full queue of size_max buffers holds less than 8 MiB.)
pub const BYTES_PER_POLL: u64 = 4 * 1024 * 1024;

/// What one call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Requests taken (completed, successfully or not).
    pub requests: u32,
    /// Data bytes moved between guest memory and the backend.
    pub bytes: u64,
    /// Requests still wait in the queue: call again.
    pub more: bool,
}

/// The region of `map` that holds all of `seg`, trying `last` (the previous
/// segment's) before a lookup: a request's buffers mostly share one region.
fn region_holding<'m>(
    map: &'m GuestMemoryMap,
    last: &mut Option<&'m GuestRegion>,
    seg: &DescSegment,
) -> Option<&'m GuestRegion> {
    let end = seg.addr.checked_add(u64::from(seg.len))?;
    let holds = |r: &GuestRegion| seg.addr >= r.gpa().raw() && end <= r.end();
    if let Some(r) = *last
        && holds(r)
    {
        return Some(r);
    }
    let r = map.region(GuestPhysAddr::new(seg.addr)).filter(|r| holds(r))?;
    *last = Some(r);
    Some(r)
}

/// A request's data buffers as host memory: found while checking that every buffer of
/// the chain lies in the guest's RAM, so handing them to a device costs no second
/// lookup.
#[derive(Debug, Default)]
pub struct HostSegments {
    /// In order, buffers that follow each other in host memory merged.
    list: alloc::vec::Vec<DmaSegment>,
    /// Every data buffer's region lets the guest read it (a device may read it: a
    /// write to the disk) and write it (a device may write it: a read).
    readable: bool,
    writable: bool,
}

impl HostSegments {
    /// Checks that every buffer of `chain` lies inside one region of the guest's RAM,
    /// and notes where the data buffers (`data`, a range of `chain`) are in host memory.
    fn resolve(&mut self, map: &GuestMemoryMap, chain: &[DescSegment], data: (usize, usize)) -> bool {
        self.list.clear();
        (self.readable, self.writable) = (true, true);
        let mut last = None;
        for (i, seg) in chain.iter().enumerate() {
            let Some(region) = region_holding(map, &mut last, seg) else { return false };
            if i < data.0 || i >= data.1 || seg.len == 0 {
                continue;
            }
            let perms = region.perms();
            self.readable &= perms.read;
            self.writable &= perms.write;
            let Some(hpa) = region.hpa().raw().checked_add(seg.addr.wrapping_sub(region.gpa().raw())) else {
                return false;
            };
            let len = seg.len as usize;
            match self.list.last_mut() {
                Some(prev) if prev.addr.checked_add(prev.len as u64) == Some(hpa) => {
                    prev.len = prev.len.saturating_add(len);
                }
                _ => self.list.push(DmaSegment { addr: hpa, len }),
            }
        }
        true
    }
}

/// A position in a list of buffers.
#[derive(Debug, Default)]
struct ChainCursor {
    index: usize,
    offset: u32,
}

impl ChainCursor {
    /// The next piece of at most `want` bytes: its address and length (skipping
    /// finished buffers); `None` past the last buffer.
    fn next(&mut self, segments: &[DescSegment], want: usize) -> Option<(GuestPhysAddr, usize)> {
        loop {
            let seg = segments.get(self.index)?;
            let left = seg.len.saturating_sub(self.offset);
            if left > 0 {
                let n = (left as usize).min(want);
                let at = GuestPhysAddr::new(seg.addr.wrapping_add(u64::from(self.offset)));
                self.offset = self.offset.saturating_add(n as u32);
                return Some((at, n));
            }
            self.index = self.index.saturating_add(1);
            self.offset = 0;
        }
    }
}

/// Writes `bytes` into the buffers from the cursor on.
fn scatter<H: HostMemory>(
    mem: &mut GuestMemory<'_, H>,
    segments: &[DescSegment],
    cursor: &mut ChainCursor,
    mut bytes: &[u8],
) -> Result<(), Reject> {
    while !bytes.is_empty() {
        let (at, n) = cursor.next(segments, bytes.len()).ok_or(Reject::Length)?;
        let (now, rest) = bytes.split_at(n.min(bytes.len()));
        mem.write_bytes(at, now).map_err(|_| Reject::Memory)?;
        bytes = rest;
    }
    Ok(())
}

/// Fills `out` from the buffers from the cursor on.
fn gather<H: HostMemory>(
    mem: &GuestMemory<'_, H>,
    segments: &[DescSegment],
    cursor: &mut ChainCursor,
    mut out: &mut [u8],
) -> Result<(), Reject> {
    while !out.is_empty() {
        let (at, n) = cursor.next(segments, out.len()).ok_or(Reject::Length)?;
        let (now, rest) = out.split_at_mut(n.min(out.len()));
        mem.read_bytes(at, now).map_err(|_| Reject::Memory)?;
        out = rest;
    }
    Ok(())
}

/// A request's data buffers as the backend's [`Buffers`]: each piece is guest memory
/// itself, checked against the VM's memory map like every other access.
struct GuestBuffers<'m, 'a, H: HostMemory> {
    mem: &'m mut GuestMemory<'a, H>,
    segments: &'m [DescSegment],
    /// The same buffers in host memory.
    host: &'m HostSegments,
    total: usize,
    /// The segment the last piece came from, and its first byte's offset in the
    /// transfer (pieces are asked for in order).
    seg: usize,
    seg_start: usize,
}

impl<H: HostMemory> Buffers for GuestBuffers<'_, '_, H> {
    fn total(&self) -> usize {
        self.total
    }

    fn piece(&mut self, at: usize, max: usize) -> Option<&mut [u8]> {
        if at >= self.total {
            return None;
        }
        if at < self.seg_start {
            (self.seg, self.seg_start) = (0, 0);
        }
        loop {
            let len = self.segments.get(self.seg)?.len as usize;
            if at < self.seg_start.saturating_add(len) {
                break;
            }
            self.seg_start = self.seg_start.saturating_add(len);
            self.seg = self.seg.saturating_add(1);
        }
        let seg = self.segments.get(self.seg)?;
        let offset = at.saturating_sub(self.seg_start);
        let n = (seg.len as usize).saturating_sub(offset).min(max).min(self.total.saturating_sub(at));
        let gpa = GuestPhysAddr::new(seg.addr.checked_add(offset as u64)?);
        self.mem.bytes_mut(gpa, n).ok()
    }

    /// The host physical address of every buffer: each lies inside one region of the
    /// VM's memory map (checked, and translated through that region, before the
    /// request got here: `HostSegments::resolve`), and that region grants the guest the
    /// access the device will make (write for a read). So a device given these
    /// addresses reaches the VM's own RAM, exactly the bytes of its buffers, and
    /// nothing else.
    fn dma_segments(&mut self, device_writes: bool, out: &mut alloc::vec::Vec<DmaSegment>) -> bool {
        out.clear();
        let allowed = if device_writes { self.host.writable } else { self.host.readable };
        if !allowed {
            return false;
        }
        out.extend_from_slice(&self.host.list);
        out.iter().fold(0usize, |n, s| n.saturating_add(s.len)) == self.total
    }
}

/// Moves `len` bytes from `sector` between the backend and the buffers: straight
/// between the backend and guest memory when both can, else a bounce buffer at a time;
/// `to_guest` for a read.
fn transfer<H: HostMemory>(
    mem: &mut GuestMemory<'_, H>,
    backend: &mut dyn BlockBackend,
    chunk: &mut [u8],
    (data, host): (&[DescSegment], &HostSegments),
    (sector, len): (u64, u64),
    to_guest: bool,
) -> Result<(), Reject> {
    // A zero-length probe: whether this guest memory hands out slices at all.
    if let Ok(total) = usize::try_from(len)
        && mem.bytes_mut(GuestPhysAddr::new(data.first().map_or(0, |d| d.addr)), 0).is_ok()
    {
        let mut bufs = GuestBuffers { mem: &mut *mem, segments: data, host, total, seg: 0, seg_start: 0 };
        let direct = if to_guest { backend.read_to(sector, &mut bufs) } else { backend.write_from(sector, &mut bufs) };
        if let Some(result) = direct {
            return result.map_err(|_| Reject::Backend);
        }
    }
    let mut cursor = ChainCursor::default();
    let mut done = 0u64;
    while done < len {
        let n = (len.saturating_sub(done)).min(chunk.len() as u64) as usize;
        let buf = chunk.get_mut(..n).ok_or(Reject::Length)?;
        // `done` is a multiple of the chunk, itself whole sectors.
        let at = sector.saturating_add(done / SECTOR_SIZE);
        if to_guest {
            backend.read(at, buf).map_err(|_| Reject::Backend)?;
            scatter(mem, data, &mut cursor, buf)?;
        } else {
            gather(mem, data, &mut cursor, buf)?;
            backend.write(at, buf).map_err(|_| Reject::Backend)?;
        }
        done = done.saturating_add(n as u64);
    }
    Ok(())
}

impl VirtioBlk {
    /// Carries out what waits in the request queue, within the per-call bounds, and
    /// interrupts the driver if it asked for it.
    pub fn serve<H: HostMemory>(&mut self, mem: &mut GuestMemory<'_, H>) -> Served {
        let mut served = Served::default();
        if !self.is_running() {
            return served;
        }
        let mut chain = core::mem::take(&mut self.chain);
        while served.requests < REQUESTS_PER_POLL && served.bytes < BYTES_PER_POLL {
            let Some(queue) = self.request_queue() else { break };
            match queue.pop(mem, &mut chain) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.fail(e);
                    break;
                }
            }
            let (used, moved) = self.complete(mem, &chain);
            served.requests = served.requests.saturating_add(1);
            served.bytes = served.bytes.saturating_add(moved);
            let Some(queue) = self.request_queue() else { break };
            if let Err(e) = queue.push_used(mem, chain.head, used) {
                self.fail(e);
                break;
            }
        }
        self.chain = chain;
        if let Some(queue) = self.request_queue() {
            match queue.needs_interrupt(mem) {
                Ok(true) => self.transport.signal_queue(REQUEST_QUEUE),
                Ok(false) => {}
                Err(e) => {
                    self.fail(e);
                }
            }
        }
        served.more = self.is_running() && self.request_queue().is_some_and(|q| q.pending(mem).is_ok_and(|n| n > 0));
        self.leftover = served.more;
        served
    }

    /// Carries out one request and writes its status; returns the used length (bytes
    /// written into the chain) and the data bytes moved.
    fn complete<H: HostMemory>(&mut self, mem: &mut GuestMemory<'_, H>, chain: &DescChain) -> (u32, u64) {
        match self.execute(mem, chain) {
            Ok((status_addr, written, moved)) => {
                if write_obj(mem, GuestPhysAddr::new(status_addr), blk_status::OK).is_err() {
                    // Checked to lie in RAM before anything moved: not reached.
                    self.counters.no_status = self.counters.no_status.saturating_add(1);
                    return (0, moved);
                }
                (written.saturating_add(1), moved)
            }
            Err(reject) => {
                let c = &mut self.counters;
                c.last_reject = Some(reject);
                if reject == Reject::Unsupported {
                    c.unsupported = c.unsupported.saturating_add(1);
                } else {
                    c.io_errors = c.io_errors.saturating_add(1);
                }
                let at = status_byte(&chain.segments);
                match at.map(|at| write_obj(mem, GuestPhysAddr::new(at), reject.status())) {
                    Some(Ok(())) => (1, 0),
                    _ => {
                        c.no_status = c.no_status.saturating_add(1);
                        (0, 0)
                    }
                }
            }
        }
    }

    /// Checks and carries out one request; returns where its status goes, the data
    /// bytes written into the chain, and the data bytes moved.
    fn execute<H: HostMemory>(
        &mut self,
        mem: &mut GuestMemory<'_, H>,
        chain: &DescChain,
    ) -> Result<(u64, u32, u64), Reject> {
        let framed = frame(&chain.segments)?;
        if !self.host.resolve(mem.map(), &chain.segments, framed.data) {
            return Err(Reject::Memory);
        }
        let mut header = [0u8; HEADER_LEN];
        mem.read_bytes(GuestPhysAddr::new(framed.header_addr), &mut header).map_err(|_| Reject::Memory)?;
        let disk = DiskShape { capacity_sectors: self.backend.capacity_sectors(), read_only: self.backend.read_only() };
        let op = decide(&ReqHeader::parse(&header), &framed, disk)?;
        let data = chain.segments.get(framed.data.0..framed.data.1).unwrap_or(&[]);
        let len = framed.data_len;
        let VirtioBlk { backend, chunk, host, counters: c, .. } = self;
        let status = framed.status_addr;
        match op {
            BlkOp::Read { sector } => {
                transfer(mem, &mut **backend, chunk, (data, host), (sector, len), true)?;
                c.reads = c.reads.saturating_add(1);
                c.bytes_read = c.bytes_read.saturating_add(len);
                // At most MAX_REQUEST_BYTES: fits a u32.
                Ok((status, len as u32, len))
            }
            BlkOp::Write { sector } => {
                transfer(mem, &mut **backend, chunk, (data, host), (sector, len), false)?;
                c.writes = c.writes.saturating_add(1);
                c.bytes_written = c.bytes_written.saturating_add(len);
                Ok((status, 0, len))
            }
            BlkOp::Flush => {
                backend.flush().map_err(|_| Reject::Backend)?;
                c.flushes = c.flushes.saturating_add(1);
                Ok((status, 0, 0))
            }
            BlkOp::GetId => {
                let id = backend.id();
                let n = id_len(len);
                scatter(mem, data, &mut ChainCursor::default(), id.get(..n).unwrap_or(&[]))?;
                c.get_ids = c.get_ids.saturating_add(1);
                Ok((status, n as u32, 0))
            }
        }
    }
}
