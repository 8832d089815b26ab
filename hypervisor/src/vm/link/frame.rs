//! Moving one frame's bytes through two descriptor chains: the chains' buffers are
//! checked to lie in their VM's memory before a byte moves, then bytes go from the
//! sender's buffers straight into the receiver's (one copy), behind the header the
//! receiver gets, and a checksum the device must complete is summed from the sender's
//! bytes and stored in the receiver's.
#![forbid(unsafe_code)]

use super::Fault;
use crate::devices::virtio::net::NET_HDR_LEN;
use crate::devices::virtio::net_header::InternetSum;
use crate::devices::virtio::virtqueue::{DescChain, DescSegment, QueueError};
use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::{GuestMemory, GuestMemoryAccess, GuestMemoryError, HostMemory, copy_between};

/// Walks a chain's buffers in order from a byte offset.
struct Cursor<'a> {
    segments: &'a [DescSegment],
    index: usize,
    offset: u32,
}

impl<'a> Cursor<'a> {
    fn new(segments: &'a [DescSegment]) -> Self {
        Cursor { segments, index: 0, offset: 0 }
    }

    /// The current buffer's address and what is left of it (skipping empty buffers).
    fn current(&mut self) -> Option<(GuestPhysAddr, u32)> {
        loop {
            let seg = self.segments.get(self.index)?;
            let left = seg.len.saturating_sub(self.offset);
            if left > 0 {
                return Some((GuestPhysAddr::new(seg.addr.wrapping_add(u64::from(self.offset))), left));
            }
            self.index = self.index.saturating_add(1);
            self.offset = 0;
        }
    }

    fn advance(&mut self, n: u32) {
        self.offset = self.offset.saturating_add(n);
    }

    /// Skips `n` bytes; `false` if the chain is shorter.
    fn skip(&mut self, mut n: u64) -> bool {
        while n > 0 {
            let Some((_, left)) = self.current() else { return false };
            let step = u64::from(left).min(n) as u32;
            self.advance(step);
            n = n.saturating_sub(u64::from(step));
        }
        true
    }
}

/// Whether every buffer of the chain lies inside one region of the guest's memory.
pub(super) fn chain_mapped<H: HostMemory>(mem: &GuestMemory<'_, H>, chain: &DescChain) -> Result<(), QueueError> {
    for seg in &chain.segments {
        let gpa = GuestPhysAddr::new(seg.addr);
        let region = mem.map().region(gpa).ok_or(GuestMemoryError::NotMapped { gpa })?;
        let end = seg.addr.checked_add(u64::from(seg.len));
        if end.is_none_or(|end| end > region.end()) {
            return Err(QueueError::Memory(GuestMemoryError::CrossesRegion { gpa, len: seg.len as usize }));
        }
    }
    Ok(())
}

/// Reads `out.len()` bytes of the chain from byte `at`.
pub(super) fn read_chain<H: HostMemory>(
    mem: &GuestMemory<'_, H>,
    chain: &DescChain,
    at: u64,
    mut out: &mut [u8],
) -> Result<(), QueueError> {
    // Most often the bytes lie in the first buffer (the header does): one read.
    if let Some(first) = chain.segments.first()
        && at.checked_add(out.len() as u64).is_some_and(|end| end <= u64::from(first.len))
    {
        mem.read_bytes(GuestPhysAddr::new(first.addr.wrapping_add(at)), out)?;
        return Ok(());
    }
    let mut cursor = Cursor::new(&chain.segments);
    if !cursor.skip(at) {
        return Err(QueueError::ChainLength);
    }
    while !out.is_empty() {
        let (gpa, left) = cursor.current().ok_or(QueueError::ChainLength)?;
        let n = out.len().min(left as usize);
        let (now, rest) = out.split_at_mut(n);
        mem.read_bytes(gpa, now)?;
        cursor.advance(n as u32);
        out = rest;
    }
    Ok(())
}

/// Writes `bytes` into the chain from byte `at`.
fn write_chain<H: HostMemory>(
    mem: &mut GuestMemory<'_, H>,
    chain: &DescChain,
    at: u64,
    mut bytes: &[u8],
) -> Result<(), QueueError> {
    let mut cursor = Cursor::new(&chain.segments);
    if !cursor.skip(at) {
        return Err(QueueError::ChainLength);
    }
    while !bytes.is_empty() {
        let (gpa, left) = cursor.current().ok_or(QueueError::ChainLength)?;
        let n = bytes.len().min(left as usize);
        let (now, rest) = bytes.split_at(n);
        mem.write_bytes(gpa, now)?;
        cursor.advance(n as u32);
        bytes = rest;
    }
    Ok(())
}

/// Writes `header` into the receive buffers, then copies `frame_len` bytes after the
/// sender's header straight from its buffers into the receiver's. Both chains were
/// checked to lie in their VM's memory and to be long enough.
pub(super) fn copy_frame<H: HostMemory>(
    from_mem: &GuestMemory<'_, H>,
    tx: &DescChain,
    to_mem: &mut GuestMemory<'_, H>,
    rx: &DescChain,
    header: &[u8; NET_HDR_LEN],
    frame_len: u64,
) -> Result<(), Fault> {
    let hdr = NET_HDR_LEN as u64;
    // The usual shape (one buffer each side, header and frame together): one write of
    // the header and one copy, without walking the chains.
    if let ([src], [dst]) = (&tx.segments[..], &rx.segments[..])
        && hdr.saturating_add(frame_len) <= u64::from(src.len.min(dst.len))
    {
        to_mem.write_bytes(GuestPhysAddr::new(dst.addr), header).map_err(|e| Fault::Receiver(e.into()))?;
        let (from, to) =
            (GuestPhysAddr::new(src.addr.wrapping_add(hdr)), GuestPhysAddr::new(dst.addr.wrapping_add(hdr)));
        return copy_between(from_mem, from, to_mem, to, frame_len as usize).map_err(|e| Fault::Sender(e.into()));
    }
    write_chain(to_mem, rx, 0, header).map_err(Fault::Receiver)?;
    let mut src = Cursor::new(&tx.segments);
    let mut dst = Cursor::new(&rx.segments);
    if !src.skip(NET_HDR_LEN as u64) {
        return Err(Fault::Sender(QueueError::ChainLength));
    }
    if !dst.skip(NET_HDR_LEN as u64) {
        return Err(Fault::Receiver(QueueError::ChainLength));
    }
    let mut remaining = frame_len;
    while remaining > 0 {
        let (from, src_left) = src.current().ok_or(Fault::Sender(QueueError::ChainLength))?;
        let (to, dst_left) = dst.current().ok_or(Fault::Receiver(QueueError::ChainLength))?;
        let n = u64::from(src_left.min(dst_left)).min(remaining) as u32;
        copy_between(from_mem, from, to_mem, to, n as usize).map_err(|e| Fault::Sender(e.into()))?;
        src.advance(n);
        dst.advance(n);
        remaining = remaining.saturating_sub(u64::from(n));
    }
    Ok(())
}

/// Completes a checksum the sender asked for (§5.1.6.2.1): the Internet checksum of the
/// frame's bytes from `start` to its end (the field holds the pseudo-header sum), read
/// from the sender's buffers, stored big-endian at `start + offset` in the receiver's.
pub(super) fn complete_checksum<H: HostMemory>(
    from_mem: &GuestMemory<'_, H>,
    tx: &DescChain,
    to_mem: &mut GuestMemory<'_, H>,
    rx: &DescChain,
    (start, offset): (u16, u16),
    frame_len: u64,
) -> Result<(), Fault> {
    let hdr = NET_HDR_LEN as u64;
    let mut sum = InternetSum::default();
    let mut cursor = Cursor::new(&tx.segments);
    if !cursor.skip(hdr.saturating_add(u64::from(start))) {
        return Err(Fault::Sender(QueueError::ChainLength));
    }
    let mut remaining = frame_len.saturating_sub(u64::from(start));
    let mut chunk = [0u8; 256];
    while remaining > 0 {
        let (gpa, left) = cursor.current().ok_or(Fault::Sender(QueueError::ChainLength))?;
        let n = u64::from(left).min(remaining).min(chunk.len() as u64) as usize;
        let piece = chunk.get_mut(..n).ok_or(Fault::Sender(QueueError::ChainLength))?;
        from_mem.read_bytes(gpa, piece).map_err(|e| Fault::Sender(e.into()))?;
        sum.add(piece);
        cursor.advance(n as u32);
        remaining = remaining.saturating_sub(n as u64);
    }
    let field = hdr.saturating_add(u64::from(start)).saturating_add(u64::from(offset));
    write_chain(to_mem, rx, field, &sum.finish().to_be_bytes()).map_err(Fault::Receiver)
}
