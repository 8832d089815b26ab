//! The wire between two virtio-net devices of two VMs: a frame one side transmits is
//! copied straight from its transmit buffers into the other side's next receive
//! buffer (one copy per byte; neither VM maps the other's memory), both used rings are
//! updated, and each side is interrupted as its EVENT_IDX settings ask.
//!
//! What the link guarantees (docs/virtio-net.md): a frame leaves only through the
//! other end of the link it was sent on; a receiver without a free buffer, with a
//! buffer too small, or not running loses the frame and the link counts it (nothing
//! is queued in the hypervisor); one poll carries at most [`FRAMES_PER_POLL`] frames
//! each way and reports whether more wait; a driver that breaks the ring rules puts
//! its own device in NEEDS_RESET with one log line and never disturbs the other side.
#![forbid(unsafe_code)]

use crate::devices::shared::Shared;
use crate::devices::virtio::net::{MAX_FRAME_LEN, NET_HDR_LEN, RX_QUEUE, TX_QUEUE, VirtioNet, net_feature};
use crate::devices::virtio::net_header::{ChecksumPlan, NetHeader, PathFeatures};
use crate::devices::virtio::virtqueue::{DescChain, QueueError};
use crate::log_limit::Source;
use crate::memory::guest::{GuestMemory, HostMemory};
use frame::{chain_mapped, complete_checksum, copy_frame, read_chain};

/// Frames one poll carries in each direction; the rest wait for the next poll.
pub const FRAMES_PER_POLL: u32 = 64;

/// What happened to the frames one side sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionCounters {
    pub frames: u64,
    pub bytes: u64,
    /// The receiver had no free receive buffer.
    pub dropped_no_buffer: u64,
    /// The receiver's next buffer was smaller than the frame.
    pub dropped_buffer_too_small: u64,
    /// The receiver's driver was not running or its link was down.
    pub dropped_receiver_down: u64,
    /// Shorter than the header, or longer than a frame may be.
    pub dropped_bad_length: u64,
    /// A header asking for what was not negotiated or is not offered (segmentation, a
    /// checksum outside the frame).
    pub dropped_bad_header: u64,
}

impl core::fmt::Display for DirectionCounters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "frames={} bytes={} dropped(no_buffer={} buffer_too_small={} receiver_down={} bad_length={} \
             bad_header={})",
            self.frames,
            self.bytes,
            self.dropped_no_buffer,
            self.dropped_buffer_too_small,
            self.dropped_receiver_down,
            self.dropped_bad_length,
            self.dropped_bad_header
        )
    }
}

/// One end: a VM's device and the VM's id (for its log lines).
#[derive(Debug, Clone)]
pub struct LinkEnd {
    pub device: Shared<VirtioNet>,
    pub vm_id: u32,
    /// The VM's DATA_VALID flag is passed on (the service VM, which only sets it on
    /// frames whose checksum its uplink NIC verified); from any other VM it is dropped.
    pub vouches_for_checksums: bool,
}

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkPoll {
    /// Frames taken from transmit queues (delivered or dropped).
    pub frames: u32,
    /// A transmit queue still holds frames: poll again.
    pub more: bool,
}

/// The wire between end `a` and end `b`.
#[derive(Debug)]
pub struct Link {
    a: LinkEnd,
    b: LinkEnd,
    /// `[a to b, b to a]`.
    counters: [DirectionCounters; 2],
    tx_chain: DescChain,
    rx_chain: DescChain,
}

/// Which side's driver broke a rule during one frame.
enum Fault {
    Sender(QueueError),
    Receiver(QueueError),
}

impl Link {
    pub fn new(a: LinkEnd, b: LinkEnd) -> Self {
        Link {
            a,
            b,
            counters: [DirectionCounters::default(); 2],
            tx_chain: DescChain::default(),
            rx_chain: DescChain::default(),
        }
    }

    /// `[a to b, b to a]`.
    pub fn counters(&self) -> [DirectionCounters; 2] {
        self.counters
    }

    /// Carries what both sides transmitted, up to [`FRAMES_PER_POLL`] frames each way.
    /// `mem_a` and `mem_b` are the two VMs' memories.
    pub fn poll<H: HostMemory>(&mut self, mem_a: &mut GuestMemory<'_, H>, mem_b: &mut GuestMemory<'_, H>) -> LinkPoll {
        let Link { a: end_a, b: end_b, counters: [ab, ba], tx_chain, rx_chain } = self;
        let mut a = end_a.device.lock();
        let mut b = end_b.device.lock();
        let (a_vouches, b_vouches) = (end_a.vouches_for_checksums, end_b.vouches_for_checksums);
        let one = carry((&mut a, a_vouches), mem_a, &mut b, mem_b, ab, (tx_chain, rx_chain));
        let two = carry((&mut b, b_vouches), mem_b, &mut a, mem_a, ba, (tx_chain, rx_chain));
        for (device, vm) in [(&mut *a, end_a.vm_id), (&mut *b, end_b.vm_id)] {
            if let Some(error) = device.take_error() {
                crate::limited!(
                    Source::Emulation,
                    vm,
                    log::warn!(target: "vnet", "vm {vm}: virtio-net needs reset: {error:?}")
                );
            }
        }
        LinkPoll { frames: one.frames.saturating_add(two.frames), more: one.more || two.more }
    }
}

/// What one direction did.
struct Carried {
    frames: u32,
    more: bool,
}

/// Moves up to [`FRAMES_PER_POLL`] frames from `from`'s transmit queue to `to`'s
/// receive queue.
fn carry<H: HostMemory>(
    (from, from_vouches): (&mut VirtioNet, bool),
    from_mem: &mut GuestMemory<'_, H>,
    to: &mut VirtioNet,
    to_mem: &mut GuestMemory<'_, H>,
    counters: &mut DirectionCounters,
    (tx, rx): (&mut DescChain, &mut DescChain),
) -> Carried {
    let mut frames = 0u32;
    if !from.transport().is_running() {
        return Carried { frames, more: false };
    }
    let mut path = PathState {
        receiving: from.link_up() && to.carries_frames(),
        features: PathFeatures {
            sender_csum: from.negotiated() & net_feature::CSUM != 0,
            sender_vouches: from_vouches,
            receiver_guest_csum: to.negotiated() & net_feature::GUEST_CSUM != 0,
        },
    };
    while frames < FRAMES_PER_POLL {
        let Some(txq) = from.tx_queue() else { break };
        match txq.pop(from_mem, tx) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                from.fail(e);
                break;
            }
        }
        frames = frames.saturating_add(1);
        match deliver(from_mem, tx, to, to_mem, rx, path, counters) {
            Ok(()) => {}
            Err(Fault::Sender(e)) => {
                from.fail(e);
                break;
            }
            Err(Fault::Receiver(e)) => {
                // The receiver's device is out until its driver resets it; the sender
                // goes on (its frames are counted as dropped).
                to.fail(e);
                path.receiving = false;
                counters.dropped_receiver_down = counters.dropped_receiver_down.saturating_add(1);
            }
        }
        let Some(txq) = from.tx_queue() else { break };
        if let Err(e) = txq.push_used_later(from_mem, tx.head, 0) {
            from.fail(e);
            break;
        }
    }
    // One used-index write per queue for the whole batch.
    publish_used(from, from_mem, TX_QUEUE);
    publish_used(to, to_mem, RX_QUEUE);
    interrupt_if_needed(from, from_mem, TX_QUEUE);
    interrupt_if_needed(to, to_mem, RX_QUEUE);
    let more =
        from.transport().is_running() && from.tx_queue().is_some_and(|q| q.pending(from_mem).is_ok_and(|n| n > 0));
    Carried { frames, more }
}

/// Lets the driver see the used elements written for `queue` in this batch.
fn publish_used<H: HostMemory>(device: &mut VirtioNet, mem: &mut GuestMemory<'_, H>, queue: u16) {
    let Some(q) = device.transport_mut().queue_mut(queue).filter(|q| q.is_live()) else { return };
    if let Err(e) = q.publish_used(mem) {
        device.fail(e);
    }
}

/// Raises the queue's interrupt if the driver asked for one (EVENT_IDX or flags).
fn interrupt_if_needed<H: HostMemory>(device: &mut VirtioNet, mem: &GuestMemory<'_, H>, queue: u16) {
    let Some(q) = device.transport_mut().queue_mut(queue).filter(|q| q.is_live()) else { return };
    match q.needs_interrupt(mem) {
        Ok(true) => device.transport_mut().signal_queue(queue),
        Ok(false) => {}
        Err(e) => {
            device.fail(e);
        }
    }
}

/// What holds for every frame of one direction in one poll.
#[derive(Debug, Clone, Copy)]
struct PathState {
    /// The sender's link is up and the receiver's driver is running with its link up.
    receiving: bool,
    features: PathFeatures,
}

/// Copies the frame in chain `tx` into `to`'s next receive buffer, or counts why not.
fn deliver<H: HostMemory>(
    from_mem: &GuestMemory<'_, H>,
    tx: &DescChain,
    to: &mut VirtioNet,
    to_mem: &mut GuestMemory<'_, H>,
    rx: &mut DescChain,
    path: PathState,
    counters: &mut DirectionCounters,
) -> Result<(), Fault> {
    if tx.segments.iter().any(|s| s.writable) {
        return Err(Fault::Sender(QueueError::Direction));
    }
    chain_mapped(from_mem, tx).map_err(Fault::Sender)?;
    let hdr = NET_HDR_LEN as u64;
    let Some(frame_len) = tx.total_len.checked_sub(hdr).filter(|&n| n > 0 && n <= MAX_FRAME_LEN) else {
        counters.dropped_bad_length = counters.dropped_bad_length.saturating_add(1);
        return Ok(());
    };
    let mut header = [0u8; NET_HDR_LEN];
    read_chain(from_mem, tx, 0, &mut header).map_err(Fault::Sender)?;
    let Ok(plan) = ChecksumPlan::decide(&NetHeader::parse(&header), frame_len, path.features) else {
        counters.dropped_bad_header = counters.dropped_bad_header.saturating_add(1);
        return Ok(());
    };
    if !path.receiving {
        counters.dropped_receiver_down = counters.dropped_receiver_down.saturating_add(1);
        return Ok(());
    }
    let Some(rxq) = to.rx_queue() else {
        counters.dropped_receiver_down = counters.dropped_receiver_down.saturating_add(1);
        return Ok(());
    };
    match rxq.pop(to_mem, rx) {
        Ok(true) => {}
        Ok(false) => {
            counters.dropped_no_buffer = counters.dropped_no_buffer.saturating_add(1);
            return Ok(());
        }
        Err(e) => return Err(Fault::Receiver(e)),
    }
    if rx.segments.iter().any(|s| !s.writable) {
        return Err(Fault::Receiver(QueueError::Direction));
    }
    chain_mapped(to_mem, rx).map_err(Fault::Receiver)?;
    let used = hdr.saturating_add(frame_len);
    if rx.total_len < used {
        // Leave the buffer for a frame that fits.
        rxq.unpop();
        counters.dropped_buffer_too_small = counters.dropped_buffer_too_small.saturating_add(1);
        return Ok(());
    }
    copy_frame(from_mem, tx, to_mem, rx, &plan.rx_header().to_bytes(), frame_len)?;
    if let ChecksumPlan::Complete { start, offset } = plan {
        complete_checksum(from_mem, tx, to_mem, rx, (start, offset), frame_len)?;
    }
    rxq.push_used_later(to_mem, rx.head, used as u32).map_err(Fault::Receiver)?;
    counters.frames = counters.frames.saturating_add(1);
    counters.bytes = counters.bytes.saturating_add(frame_len);
    Ok(())
}

mod frame;
#[cfg(test)]
mod tests;
