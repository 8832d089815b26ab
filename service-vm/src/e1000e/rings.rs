//! The descriptor rings and their buffers, and the index arithmetic over them.
//!
//! The NIC owns the descriptors from its head (RDH/TDH) up to, not including, the tail
//! (RDT/TDT) the driver writes (82574 datasheet §7.1 receive, §7.2 transmit; head equal to tail means
//! the NIC owns none). The driver's indices live here; the head registers are never
//! needed to find work, which is found by the DD bit of descriptors the driver handed
//! over.

use super::DmaMemory;
use super::descriptors::DESCRIPTOR_SIZE;

/// Descriptors per ring, both ways. RDLEN/TDLEN must be a multiple of 128 bytes.
pub const RING_SIZE: u16 = 256;
/// Bytes per buffer: RCTL.BSIZE = 00 with BSEX = 0 is 2048, so a frame of up to 1522
/// bytes (1518 without the CRC) fits one buffer.
pub const BUFFER_SIZE: usize = 2048;
/// The longest frame either way: 1500 bytes of MTU and the 14-byte Ethernet header, no
/// VLAN tag, no CRC (the NIC strips it on receive and appends it on transmit).
pub const MAX_FRAME: usize = 1514;
/// The shortest frame the driver sends: an Ethernet header. The NIC pads anything under
/// 60 bytes (TCTL.PSP).
pub const MIN_FRAME: usize = 14;

/// Bytes of one ring's descriptors: the value of RDLEN/TDLEN.
pub const RING_BYTES: usize = RING_SIZE as usize * DESCRIPTOR_SIZE;
const _: () = assert!(RING_BYTES.is_multiple_of(128));
const _: () = assert!(MAX_FRAME <= BUFFER_SIZE);

/// Descriptor rings are 16-byte aligned at least; 4 KiB keeps one ring in one page.
const RING_ALIGN: usize = 4096;

/// The index after `i`, wrapping at the end of the ring.
pub fn next_index(i: u16) -> u16 {
    if i + 1 == RING_SIZE { 0 } else { i + 1 }
}

/// The index before `i`, wrapping at the start of the ring.
pub fn previous_index(i: u16) -> u16 {
    if i == 0 { RING_SIZE - 1 } else { i - 1 }
}

/// One ring's DMA memory: the descriptors and a buffer per descriptor.
#[derive(Debug)]
pub struct RingMemory<Region> {
    pub descriptors: Region,
    pub buffers: Region,
    pub descriptors_address: u64,
    pub buffers_address: u64,
}

impl<Region> RingMemory<Region> {
    pub fn allocate<D: DmaMemory<Region = Region>>(dma: &mut D) -> Option<Self> {
        let descriptors = dma.allocate(RING_BYTES, RING_ALIGN)?;
        let buffers = dma.allocate(RING_SIZE as usize * BUFFER_SIZE, RING_ALIGN)?;
        let descriptors_address = dma.device_address(&descriptors);
        let buffers_address = dma.device_address(&buffers);
        Some(RingMemory { descriptors, buffers, descriptors_address, buffers_address })
    }

    /// Offset of descriptor `i` in `descriptors`.
    pub fn descriptor_offset(i: u16) -> usize {
        usize::from(i) * DESCRIPTOR_SIZE
    }

    /// Offset of descriptor `i`'s buffer in `buffers`.
    pub fn buffer_offset(i: u16) -> usize {
        usize::from(i) * BUFFER_SIZE
    }

    /// Device address of descriptor `i`'s buffer, from the driver's own record (never
    /// from the descriptor in memory, which the NIC can write).
    pub fn buffer_address(&self, i: u16) -> u64 {
        self.buffers_address + Self::buffer_offset(i) as u64
    }
}

/// The receive ring's state. Every descriptor but the one before `next` is the NIC's:
/// the tail written is always `previous_index(next)`, so head never catches the tail
/// while the driver holds nothing back, and full is told from empty.
#[derive(Debug)]
pub struct RxRing<Region> {
    pub memory: RingMemory<Region>,
    /// The next descriptor the NIC completes.
    pub next: u16,
    /// Inside a frame that spans descriptors (no EOP yet): its remaining descriptors are
    /// dropped with it.
    pub discarding: bool,
}

/// The transmit ring's state. Descriptors `clean..used` are the NIC's (in flight); the
/// tail written is `used`. At most `RING_SIZE - 1` are in flight, so `clean == used`
/// always means empty.
#[derive(Debug)]
pub struct TxRing<Region> {
    pub memory: RingMemory<Region>,
    /// The next descriptor to fill.
    pub used: u16,
    /// The oldest descriptor in flight.
    pub clean: u16,
    /// The value last written to TDT: descriptors from here to `used` are queued but
    /// not yet handed to the NIC.
    pub tail: u16,
    /// Length of the frame in each descriptor, for the byte counter at completion.
    pub lengths: alloc::vec::Vec<u16>,
}

impl<Region> TxRing<Region> {
    pub fn in_flight(&self) -> u16 {
        (self.used + RING_SIZE - self.clean) % RING_SIZE
    }

    pub fn is_full(&self) -> bool {
        self.in_flight() == RING_SIZE - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_wrap_both_ways() {
        assert_eq!(next_index(0), 1);
        assert_eq!(next_index(RING_SIZE - 1), 0);
        assert_eq!(previous_index(0), RING_SIZE - 1);
        assert_eq!(previous_index(5), 4);
    }

    #[test]
    fn in_flight_counts_across_the_wrap() {
        let memory = RingMemory { descriptors: (), buffers: (), descriptors_address: 0, buffers_address: 0 };
        let mut ring =
            TxRing { memory, used: 3, clean: RING_SIZE - 2, tail: 3, lengths: alloc::vec![0; RING_SIZE as usize] };
        assert_eq!(ring.in_flight(), 5);
        ring.used = RING_SIZE - 3;
        assert!(ring.is_full());
        ring.clean = ring.used;
        assert_eq!(ring.in_flight(), 0);
    }
}
