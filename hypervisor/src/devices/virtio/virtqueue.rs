//! The device side of a split virtqueue (VIRTIO 1.2 §2.7): the driver's descriptor
//! table and available ring, the device's used ring, and notification suppression with
//! VIRTIO_F_EVENT_IDX (§2.7.7, §2.7.10).
//!
//! Everything the guest wrote is untrusted: ring indexes, head and next indexes,
//! lengths and chain lengths are checked before use, and a chain is at most the queue
//! size long (§2.7.5.3.1), so a loop in the table ends the walk. A violation is a
//! [`QueueError`]; the device then sets NEEDS_RESET (§2.1.2) and stops using the queue.
//! Indirect descriptors are not offered, so an indirect descriptor is a violation too.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::{GuestMemoryAccess, GuestMemoryError, read_obj, write_obj};

/// The largest queue a device offers unless it says otherwise (queue_size reads this
/// before the driver writes a smaller power of two).
pub const MAX_QUEUE_SIZE: u16 = 256;
/// The most any device may offer: what a walk, a chain and the per-queue state are
/// bounded by.
pub const LARGEST_QUEUE_SIZE: u16 = 1024;

/// Descriptor table entry (§2.7.5): addr le64, len le32, flags le16, next le16.
const DESC_SIZE: u64 = 16;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
/// Available ring (§2.7.6): flags le16, idx le16, ring[size] le16, used_event le16.
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used ring flags: the driver need not ring the doorbell (§2.7.10, without EVENT_IDX).
const USED_F_NO_NOTIFY: u16 = 1;
/// Used ring (§2.7.8): flags le16, idx le16, ring[size] {id le32, len le32}, avail_event le16.
const USED_ELEM_SIZE: u64 = 8;
const RING_HEADER: u64 = 4;

/// What a guest did wrong with a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// A ring or descriptor lies outside the guest's memory.
    Memory(GuestMemoryError),
    /// The available index ran more than a queue's worth ahead of the device.
    AvailOverrun { avail_idx: u16, next_avail: u16 },
    /// A head or next index is not below the queue size.
    BadIndex(u16),
    /// A chain longer than the queue (a loop in the descriptor table).
    ChainTooLong,
    /// An indirect descriptor (the feature is not offered).
    Indirect,
    /// A chain whose total length overflows.
    ChainLength,
    /// The chain's buffers have the wrong direction for this queue.
    Direction,
    /// The chain holds more bytes than a frame may have.
    Oversized,
    /// The queue was enabled with a size or ring address the spec forbids.
    BadLayout,
}

impl From<GuestMemoryError> for QueueError {
    fn from(e: GuestMemoryError) -> Self {
        QueueError::Memory(e)
    }
}

/// One buffer of a chain: guest-physical address, length, and whether the device
/// writes it (device-writable) or reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescSegment {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// A chain taken from the available ring: its head (the id the used ring reports) and
/// its buffers, in order. The segment list is reused between chains.
#[derive(Debug, Default)]
pub struct DescChain {
    pub head: u16,
    pub segments: Vec<DescSegment>,
    /// Sum of the segments' lengths.
    pub total_len: u64,
}

/// One split virtqueue: what the driver configured through the common configuration
/// (§4.1.4.3) and where the device is in the rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitQueue {
    pub size: u16,
    pub enabled: bool,
    pub msix_vector: u16,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    /// Negotiated VIRTIO_F_EVENT_IDX (set when the driver finishes negotiation).
    pub event_idx: bool,
    /// Whether the device wants the driver's doorbell for new chains; a queue the
    /// device only takes from when something else happens (a receive queue) says no.
    pub wants_notifications: bool,
    /// The next available-ring slot the device will read.
    next_avail: u16,
    /// The next used-ring slot the device will write.
    next_used: u16,
    /// The used index the driver can see (the last one written).
    published_used: u16,
    /// The used index when the device last decided about an interrupt.
    signalled_used: u16,
    /// The available index as last read (and checked): chains up to it are taken
    /// without reading the index again.
    seen_avail: u16,
    /// VIRTQ_USED_F_NO_NOTIFY is in the used ring's flags (written once, not per chain).
    no_notify_written: bool,
    /// The largest size the device offers for this queue.
    max_size: u16,
}

impl Default for SplitQueue {
    fn default() -> Self {
        SplitQueue::offering(MAX_QUEUE_SIZE)
    }
}

impl SplitQueue {
    /// A queue (not yet enabled) offering at most `max_size` entries, a power of two
    /// up to [`LARGEST_QUEUE_SIZE`] (anything else gets [`MAX_QUEUE_SIZE`]).
    pub fn offering(max_size: u16) -> Self {
        let max_size =
            if max_size.is_power_of_two() && max_size <= LARGEST_QUEUE_SIZE { max_size } else { MAX_QUEUE_SIZE };
        SplitQueue {
            size: max_size,
            enabled: false,
            msix_vector: super::NO_VECTOR,
            desc: 0,
            driver: 0,
            device: 0,
            event_idx: false,
            wants_notifications: true,
            next_avail: 0,
            next_used: 0,
            published_used: 0,
            signalled_used: 0,
            seen_avail: 0,
            no_notify_written: false,
            max_size,
        }
    }
}

/// §2.7.10: whether moving the used index from `old` to `new` passes `event`.
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Descriptors read from the table at once: drivers mostly chain neighbouring
/// entries, so a long chain costs one guest memory read per batch, not per entry.
const DESC_BATCH: u16 = 8;

/// One descriptor table entry.
struct Descriptor {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl Descriptor {
    /// addr le64, then len le32, flags le16 and next le16 (§2.7.5): two 8-byte loads.
    fn parse(d: &[u8; DESC_SIZE as usize]) -> Descriptor {
        let low = u64::from_le_bytes(d.first_chunk::<8>().copied().unwrap_or_default());
        let high = u64::from_le_bytes(d.last_chunk::<8>().copied().unwrap_or_default());
        Descriptor { addr: low, len: high as u32, flags: (high >> 32) as u16, next: (high >> 48) as u16 }
    }
}

/// A copy of up to [`DESC_BATCH`] consecutive descriptor table entries. Each entry is
/// parsed once from this copy, so a driver changing the table meanwhile changes nothing.
struct DescBatch {
    bytes: [u8; (DESC_SIZE * DESC_BATCH as u64) as usize],
}

impl Default for DescBatch {
    fn default() -> Self {
        DescBatch { bytes: [0; (DESC_SIZE * DESC_BATCH as u64) as usize] }
    }
}

impl DescBatch {
    /// Entries from `index` (below `size`) of the table at `desc` on, up to
    /// [`DESC_BATCH`] of them and the table's end.
    fn load(
        &mut self,
        mem: &(impl GuestMemoryAccess + ?Sized),
        desc: u64,
        index: u16,
        size: u16,
    ) -> Result<&[u8], QueueError> {
        let entry_at = at(desc, u64::from(index).wrapping_mul(DESC_SIZE))?;
        let count = DESC_BATCH.min(size.saturating_sub(index)).max(1);
        let mut len = usize::from(count).saturating_mul(DESC_SIZE as usize);
        if mem.read_bytes(entry_at, self.bytes.get_mut(..len).ok_or(QueueError::BadLayout)?).is_err() {
            // A table split over two memory regions: this entry alone.
            len = DESC_SIZE as usize;
            mem.read_bytes(entry_at, self.bytes.get_mut(..len).ok_or(QueueError::BadLayout)?)?;
        }
        self.bytes.get(..len).ok_or(QueueError::BadLayout)
    }
}

fn at(base: u64, offset: u64) -> Result<GuestPhysAddr, QueueError> {
    base.checked_add(offset).map(GuestPhysAddr::new).ok_or(QueueError::BadLayout)
}

impl SplitQueue {
    /// Checks what the driver configured before the queue goes live (§2.7: size a
    /// power of two, descriptor table 16-byte, available ring 2-byte and used ring
    /// 4-byte aligned).
    pub fn check_layout(&self) -> Result<(), QueueError> {
        let ok = self.size.is_power_of_two()
            && self.size <= self.max_size
            && self.desc.is_multiple_of(16)
            && self.driver.is_multiple_of(2)
            && self.device.is_multiple_of(4);
        if ok { Ok(()) } else { Err(QueueError::BadLayout) }
    }

    /// Whether the driver enabled the queue.
    pub fn is_live(&self) -> bool {
        self.enabled && self.size != 0
    }

    fn slot(&self, index: u16) -> u64 {
        // `size` is a non-zero power of two once the queue is live.
        u64::from(index & self.size.wrapping_sub(1))
    }

    fn avail_idx(&self, mem: &(impl GuestMemoryAccess + ?Sized)) -> Result<u16, QueueError> {
        Ok(read_obj::<u16>(mem, at(self.driver, 2)?)?)
    }

    /// How many chains the driver has made available and the device not yet taken.
    pub fn pending(&self, mem: &(impl GuestMemoryAccess + ?Sized)) -> Result<u16, QueueError> {
        if !self.is_live() {
            return Ok(0);
        }
        let avail_idx = self.avail_idx(mem)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending > self.size {
            return Err(QueueError::AvailOverrun { avail_idx, next_avail: self.next_avail });
        }
        Ok(pending)
    }

    /// Takes the next available chain into `chain` (reusing its segment list); `false`
    /// when none is available. With EVENT_IDX the device then asks to be notified of
    /// the next one (avail_event = the next slot it will read).
    pub fn pop(
        &mut self,
        mem: &mut (impl GuestMemoryAccess + ?Sized),
        chain: &mut DescChain,
    ) -> Result<bool, QueueError> {
        if !self.is_live() {
            return Ok(false);
        }
        // The available index is read (and checked) only once the chains it showed
        // last time are all taken: one guest read per batch, not per chain.
        if self.seen_avail == self.next_avail {
            let pending = self.pending(mem)?;
            if pending == 0 {
                return Ok(false);
            }
            self.seen_avail = self.next_avail.wrapping_add(pending);
        }
        let head_at = at(self.driver, RING_HEADER.wrapping_add(self.slot(self.next_avail).wrapping_mul(2)))?;
        let head = read_obj::<u16>(mem, head_at)?;
        self.walk(mem, head, chain)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        self.publish_avail_event(mem)?;
        Ok(true)
    }

    /// Gives back the chain [`Self::pop`] took last, unused (a frame that did not fit):
    /// the driver sees no change and the device takes it again next time.
    pub fn unpop(&mut self) {
        self.next_avail = self.next_avail.wrapping_sub(1);
    }

    fn walk(
        &self,
        mem: &(impl GuestMemoryAccess + ?Sized),
        head: u16,
        chain: &mut DescChain,
    ) -> Result<(), QueueError> {
        chain.head = head;
        chain.segments.clear();
        chain.total_len = 0;
        let mut batch = DescBatch::default();
        let mut index = head;
        let size = usize::from(self.size);
        'chain: loop {
            if index >= self.size {
                return Err(QueueError::BadIndex(index));
            }
            // A chain through neighbouring entries is parsed straight from one batch.
            for entry in batch.load(mem, self.desc, index, self.size)?.chunks_exact(DESC_SIZE as usize) {
                if chain.segments.len() >= size {
                    return Err(QueueError::ChainTooLong);
                }
                let entry = <&[u8; DESC_SIZE as usize]>::try_from(entry).map_err(|_| QueueError::BadLayout)?;
                let Descriptor { addr, len, flags, next } = Descriptor::parse(entry);
                if flags & DESC_F_INDIRECT != 0 {
                    return Err(QueueError::Indirect);
                }
                chain.total_len = chain.total_len.checked_add(u64::from(len)).ok_or(QueueError::ChainLength)?;
                chain.segments.push(DescSegment { addr, len, writable: flags & DESC_F_WRITE != 0 });
                if flags & DESC_F_NEXT == 0 {
                    return Ok(());
                }
                let neighbour = index.wrapping_add(1);
                index = next;
                if next != neighbour {
                    continue 'chain;
                }
            }
        }
    }

    /// Returns chain `head` to the driver with `len` bytes written (§2.7.8): the element
    /// first, then the index ([`Self::push_used_later`] and [`Self::publish_used`]).
    pub fn push_used(
        &mut self,
        mem: &mut (impl GuestMemoryAccess + ?Sized),
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        self.push_used_later(mem, head, len)?;
        self.publish_used(mem)
    }

    /// Writes the used element for chain `head`; the driver sees it at the next
    /// [`Self::publish_used`], so a batch of chains costs one index write.
    pub fn push_used_later(
        &mut self,
        mem: &mut (impl GuestMemoryAccess + ?Sized),
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let elem = at(self.device, RING_HEADER.wrapping_add(self.slot(self.next_used).wrapping_mul(USED_ELEM_SIZE)))?;
        // id le32 and len le32 (§2.7.8) in one write.
        write_obj(mem, elem, u64::from(head) | u64::from(len) << 32)?;
        self.next_used = self.next_used.wrapping_add(1);
        Ok(())
    }

    /// Moves the used index past every element written so far (after them, §2.7.8).
    /// Without EVENT_IDX the used ring's flags say whether the device wants doorbells
    /// (written once).
    pub fn publish_used(&mut self, mem: &mut (impl GuestMemoryAccess + ?Sized)) -> Result<(), QueueError> {
        if !self.event_idx && !self.wants_notifications && !self.no_notify_written {
            write_obj(mem, at(self.device, 0)?, USED_F_NO_NOTIFY)?;
            self.no_notify_written = true;
        }
        if self.published_used != self.next_used {
            write_obj(mem, at(self.device, 2)?, self.next_used)?;
            self.published_used = self.next_used;
        }
        Ok(())
    }

    /// With EVENT_IDX: avail_event = the next slot the device reads, so the driver rings
    /// once when it adds that chain. A queue that wants no doorbells leaves avail_event
    /// where it is (0 from the driver's zeroed ring): the driver then rings only when
    /// its index passes that value again, once per 65536 chains.
    fn publish_avail_event(&self, mem: &mut (impl GuestMemoryAccess + ?Sized)) -> Result<(), QueueError> {
        if !self.event_idx || !self.wants_notifications {
            return Ok(());
        }
        let offset = RING_HEADER.wrapping_add(u64::from(self.size).wrapping_mul(USED_ELEM_SIZE));
        write_obj(mem, at(self.device, offset)?, self.next_avail)?;
        // The driver may run on another CPU: this write must be visible before the
        // next read of its available index, or a chain it adds meanwhile (having read
        // the old avail_event) rings no doorbell and is never seen (§2.7.10).
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Whether the driver wants an interrupt for what was published since the last call
    /// (§2.7.7.2 and §2.7.10): with EVENT_IDX when the used index passed used_event,
    /// otherwise unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT.
    pub fn needs_interrupt(&mut self, mem: &(impl GuestMemoryAccess + ?Sized)) -> Result<bool, QueueError> {
        let new = self.published_used;
        let old = core::mem::replace(&mut self.signalled_used, new);
        if old == new {
            return Ok(false);
        }
        // The used index just written must be visible before used_event (or the flags)
        // is read: a driver on another CPU writes used_event and then reads the used
        // index, and one of the two sides must see the other's write (§2.7.7.2).
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        if self.event_idx {
            let offset = RING_HEADER.wrapping_add(u64::from(self.size).wrapping_mul(2));
            let used_event = read_obj::<u16>(mem, at(self.driver, offset)?)?;
            Ok(need_event(used_event, new, old))
        } else {
            let flags = read_obj::<u16>(mem, at(self.driver, 0)?)?;
            Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
        }
    }
}

#[cfg(test)]
mod tests;
