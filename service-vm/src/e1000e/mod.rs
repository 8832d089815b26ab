//! Driver for the uplink NIC: the Intel 82574L (PCI 8086:10d3, QEMU's `-device e1000e`),
//! the model of the e1000e family whose PCH-integrated members (I217, I218, I219) are the
//! Ethernet of most business laptops. docs/networking.md ("The uplink NIC driver") says
//! what a real I219 needs beyond this.
//!
//! The NIC is passed through to the service VM behind the IOMMU, so its DMA reaches only
//! the service VM's memory. The driver still treats the device as untrusted input: every
//! value it reads back (descriptor lengths and status, head registers) is checked before
//! use, and a misbehaving NIC costs dropped frames and counters, never a panic or an
//! access outside a buffer. Received frames are copied out of the DMA buffer before the
//! router sees them, so the device cannot change a frame while it is being parsed.
//!
//! The driver is generic over [`NicRegisters`] (BAR0) and [`DmaMemory`], so it runs on
//! the host against a fake 82574 in the tests; the kernel implements both with its
//! identity-mapped memory and the BAR's MMIO mapping.
//!
//! One receive and one transmit ring of [`RING_SIZE`] legacy descriptors, each with its
//! own [`BUFFER_SIZE`]-byte buffer; one frame per descriptor both ways. Interrupts are
//! masked and the kernel polls ([`E1000e::receive`], [`E1000e::link`]). Adding MSI-X
//! later means programming IVAR and IMS in bring-up and calling the same `receive` and
//! `reclaim` from the interrupt; the data path does not change.

mod bring_up;
mod counters;
mod descriptors;
mod driver;
pub mod regs;
mod rings;
#[cfg(test)]
mod tests;

pub use bring_up::InitError;
pub use counters::NicCounters;
pub use descriptors::RxChecksum;
pub use driver::{E1000e, LinkState, RingHeads, TransmitError};
pub use rings::{BUFFER_SIZE, MAX_FRAME, MIN_FRAME, RING_SIZE};

/// Access to the NIC's registers in BAR0 (32-bit, at byte offsets from [`regs`]).
///
/// The kernel implements it with volatile accesses to the BAR's uncached mapping. A
/// write must reach the device after every earlier [`DmaMemory::write`]: the tail
/// register writes hand descriptors to the NIC. On x86, stores to write-back memory
/// are not reordered with a later store to uncached MMIO, so a compiler fence suffices.
pub trait NicRegisters {
    fn read32(&mut self, offset: u32) -> u32;
    fn write32(&mut self, offset: u32, value: u32);
    /// Waits at least `micros` microseconds. Bring-up's waits are counted in these
    /// steps, so each wait has a bound in time, not only in reads.
    fn delay_us(&mut self, micros: u32);
}

/// Memory the NIC reaches by DMA.
///
/// Regions are zeroed, physically contiguous, aligned as asked, and live as long as the
/// driver (the driver never frees them: it lives as long as the service VM). The driver
/// only reads and writes inside a region's length. Reads and writes must be volatile in
/// the kernel: the device changes the memory behind the compiler's back.
pub trait DmaMemory {
    /// Handle of one allocation.
    type Region;
    /// A zeroed, physically contiguous region of `len` bytes aligned to `align` (a power
    /// of two), or `None` when memory is short.
    fn allocate(&mut self, len: usize, align: usize) -> Option<Self::Region>;
    /// The address the NIC uses for the region's first byte.
    fn device_address(&self, region: &Self::Region) -> u64;
    fn read(&self, region: &Self::Region, offset: usize, out: &mut [u8]);
    fn write(&mut self, region: &Self::Region, offset: usize, data: &[u8]);
}
