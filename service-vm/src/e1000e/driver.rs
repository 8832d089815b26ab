//! The data path: transmit, receive, completion, link state.

use alloc::vec::Vec;

use super::counters::NicCounters;
use super::descriptors::{
    DESCRIPTOR_SIZE, RX_ERRORS_FATAL, RxChecksum, RxDescriptor, STATUS_OFFSET, TxDescriptor, rx_status, tx_status,
};
use super::regs::{self, status};
use super::rings::{
    BUFFER_SIZE, MAX_FRAME, MIN_FRAME, RING_SIZE, RingMemory, RxRing, TxRing, next_index, previous_index,
};
use super::{DmaMemory, NicRegisters};

/// An 82574 brought up by [`E1000e::new`].
pub struct E1000e<R, D: DmaMemory> {
    pub(super) regs: R,
    pub(super) dma: D,
    pub(super) mac: [u8; 6],
    pub(super) rx: RxRing<D::Region>,
    pub(super) tx: TxRing<D::Region>,
    pub(super) counters: NicCounters,
    /// A received frame is copied here before the caller sees it.
    pub(super) scratch: Vec<u8>,
}

impl<R, D: DmaMemory> core::fmt::Debug for E1000e<R, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("E1000e")
            .field("mac", &self.mac)
            .field("rx_next", &self.rx.next)
            .field("tx_in_flight", &self.tx.in_flight())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Why [`E1000e::transmit`] refused a frame. Either way it is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransmitError {
    /// Every descriptor is in flight: try again after the NIC catches up.
    Full,
    /// Shorter than an Ethernet header or longer than [`MAX_FRAME`].
    BadLength(usize),
}

/// The link as STATUS reports it (§10.2.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    /// 10, 100 or 1000 (0 when the NIC is gone); meaningful only when `up`.
    pub speed_mbps: u16,
    pub full_duplex: bool,
}

/// The NIC's head registers, checked to lie inside the rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingHeads {
    pub rx: u16,
    pub tx: u16,
}

impl<R: NicRegisters, D: DmaMemory> E1000e<R, D> {
    /// The station address read at bring-up.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn counters(&self) -> &NicCounters {
        &self.counters
    }

    /// The link from STATUS. A read of all ones (the NIC fell off the bus) is a link
    /// down, not a gigabit link.
    pub fn link(&mut self) -> LinkState {
        let s = self.regs.read32(regs::STATUS);
        if s == u32::MAX {
            return LinkState { up: false, speed_mbps: 0, full_duplex: false };
        }
        let speed_mbps = match (s >> status::SPEED_SHIFT) & status::SPEED_MASK {
            0 => 10,
            1 => 100,
            _ => 1000,
        };
        LinkState { up: s & status::LU != 0, speed_mbps, full_duplex: s & status::FD != 0 }
    }

    /// Reads RDH and TDH, for diagnostics. A value outside the ring is counted and
    /// returned as `None`: the NIC is misbehaving (or gone: reads of all ones).
    pub fn ring_heads(&mut self) -> Option<RingHeads> {
        let rx = self.regs.read32(regs::RDH);
        let tx = self.regs.read32(regs::TDH);
        match (u16::try_from(rx), u16::try_from(tx)) {
            (Ok(rx), Ok(tx)) if rx < RING_SIZE && tx < RING_SIZE => Some(RingHeads { rx, tx }),
            _ => {
                self.counters.bad_head += 1;
                None
            }
        }
    }

    /// Sends one frame at once: [`queue_transmit`](Self::queue_transmit) and
    /// [`flush_transmit`](Self::flush_transmit).
    pub fn transmit(&mut self, frame: &[u8]) -> Result<(), TransmitError> {
        self.queue_transmit(frame)?;
        self.flush_transmit();
        Ok(())
    }

    /// Puts one frame (Ethernet header to payload, no CRC: the NIC appends it and pads
    /// a frame under 60 bytes) in the next descriptor; the NIC sees it at the next
    /// [`flush_transmit`](Self::flush_transmit). The bytes are copied into the
    /// descriptor's own buffer, so `frame` may be reused at once.
    pub fn queue_transmit(&mut self, frame: &[u8]) -> Result<(), TransmitError> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            self.counters.tx_bad_length += 1;
            return Err(TransmitError::BadLength(frame.len()));
        }
        self.reclaim();
        if self.tx.is_full() {
            self.counters.tx_full += 1;
            return Err(TransmitError::Full);
        }
        let i = self.tx.used;
        let memory = &self.tx.memory;
        self.dma.write(&memory.buffers, RingMemory::<D::Region>::buffer_offset(i), frame);
        let length = frame.len() as u16; // ≤ MAX_FRAME
        let d = TxDescriptor::frame(memory.buffer_address(i), length);
        self.dma.write(&memory.descriptors, RingMemory::<D::Region>::descriptor_offset(i), &d.to_bytes());
        self.tx.lengths[usize::from(i)] = length;
        self.tx.used = next_index(i);
        Ok(())
    }

    /// Moves the transmit tail past every queued descriptor: one register write (one
    /// doorbell) for all frames queued since the last flush. Returns whether it wrote.
    pub fn flush_transmit(&mut self) -> bool {
        if self.tx.tail == self.tx.used {
            return false;
        }
        self.tx.tail = self.tx.used;
        // The descriptors are written before the tail moves past them (see NicRegisters).
        self.regs.write32(regs::TDT, u32::from(self.tx.used));
        true
    }

    /// Takes back the transmit descriptors the NIC has finished (DD), oldest first, and
    /// counts their frames as sent. Returns how many. Only descriptors in flight are
    /// looked at, so at most `RING_SIZE - 1`.
    pub fn reclaim(&mut self) -> usize {
        let mut done = 0;
        while self.tx.clean != self.tx.used {
            let i = self.tx.clean;
            if self.descriptor_status(&self.tx.memory, i) & tx_status::DD == 0 {
                break;
            }
            self.counters.tx_frames += 1;
            self.counters.tx_bytes += u64::from(self.tx.lengths[usize::from(i)]);
            self.tx.clean = next_index(i);
            done += 1;
        }
        done
    }

    /// Lets the NIC interrupt for a frame received, a receive overrun or shortage, and
    /// a link change (with MSI programmed by the kernel, a message per new cause).
    pub fn enable_interrupts(&mut self) {
        let causes = regs::cause::RXT0 | regs::cause::RXO | regs::cause::RXDMT0 | regs::cause::LSC;
        self.regs.write32(regs::IMS, causes);
    }

    /// Reads and so clears the interrupt causes, re-arming the NIC's interrupt.
    pub fn take_interrupt_causes(&mut self) -> u32 {
        self.regs.read32(regs::ICR)
    }

    /// Hands each frame the NIC has received to `deliver`, oldest first, looking at no
    /// more than `budget` descriptors (and never more than `RING_SIZE - 1`). Frames the
    /// NIC flagged, that span descriptors, or whose length is out of bounds are dropped
    /// and counted. Every descriptor looked at is armed again and returned to the NIC.
    /// Returns how many frames were delivered.
    pub fn receive(&mut self, budget: usize, mut deliver: impl FnMut(&[u8], RxChecksum)) -> usize {
        let budget = budget.min(usize::from(RING_SIZE) - 1);
        let mut seen = 0;
        let mut delivered = 0;
        while seen < budget {
            let i = self.rx.next;
            if self.descriptor_status(&self.rx.memory, i) & rx_status::DD == 0 {
                break;
            }
            // Read the whole descriptor only after DD was seen, so its length is the
            // one written back with DD (loads are not reordered with older loads).
            let mut bytes = [0; DESCRIPTOR_SIZE];
            let offset = RingMemory::<D::Region>::descriptor_offset(i);
            self.dma.read(&self.rx.memory.descriptors, offset, &mut bytes);
            let descriptor = RxDescriptor::from_bytes(&bytes);
            if let Some(length) = self.accept(&descriptor) {
                let buffer = &mut self.scratch[..length];
                self.dma.read(&self.rx.memory.buffers, RingMemory::<D::Region>::buffer_offset(i), buffer);
                self.counters.rx_frames += 1;
                self.counters.rx_bytes += length as u64;
                let checksum = RxChecksum::of(&descriptor);
                match checksum {
                    RxChecksum::Good => self.counters.rx_checksum_good += 1,
                    RxChecksum::Bad => self.counters.rx_checksum_bad += 1,
                    RxChecksum::Unknown => {}
                }
                deliver(buffer, checksum);
                delivered += 1;
            }
            // Re-armed from the driver's own buffer address, whatever the NIC wrote.
            let armed = RxDescriptor::armed(self.rx.memory.buffer_address(i));
            self.dma.write(&self.rx.memory.descriptors, offset, &armed.to_bytes());
            self.rx.next = next_index(i);
            seen += 1;
        }
        if seen > 0 {
            self.regs.write32(regs::RDT, u32::from(previous_index(self.rx.next)));
        }
        delivered
    }

    /// Whether the next receive descriptor is done (a frame, or a part of one, waits).
    pub fn has_received(&self) -> bool {
        self.descriptor_status(&self.rx.memory, self.rx.next) & rx_status::DD != 0
    }

    /// Decides what a completed receive descriptor holds: `Some(length)` for a whole,
    /// good frame inside the buffer; otherwise counts why not.
    fn accept(&mut self, d: &RxDescriptor) -> Option<usize> {
        let end_of_packet = d.status & rx_status::EOP != 0;
        if self.rx.discarding {
            // The rest of a frame already counted as spanning.
            self.rx.discarding = !end_of_packet;
            return None;
        }
        if !end_of_packet {
            self.counters.rx_spanning += 1;
            self.rx.discarding = true;
            return None;
        }
        let length = usize::from(d.length);
        if d.errors & RX_ERRORS_FATAL != 0 {
            self.counters.rx_errors += 1;
            None
        } else if length == 0 || length > BUFFER_SIZE {
            self.counters.rx_bad_length += 1;
            None
        } else if length > MAX_FRAME {
            self.counters.rx_oversized += 1;
            None
        } else {
            Some(length)
        }
    }

    /// The status byte of descriptor `i`, read on its own: the poll of DD.
    fn descriptor_status(&self, memory: &RingMemory<D::Region>, i: u16) -> u8 {
        let mut status = [0];
        let offset = RingMemory::<D::Region>::descriptor_offset(i) + STATUS_OFFSET;
        self.dma.read(&memory.descriptors, offset, &mut status);
        status[0]
    }
}
