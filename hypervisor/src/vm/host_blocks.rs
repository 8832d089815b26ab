//! The host memory blocks one VM holds (RAM, permission maps, framebuffer), kept in
//! one list so that a VM whose creation fails half-way, and a VM torn down, give every
//! one of them back, and what a guest can see is scrubbed before its restart.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::instance::VmError;
use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::HostMemory;

/// Where the blocks come from: the frame allocator, or a fake in tests.
pub trait BlockSource {
    fn alloc(&mut self, bytes: u64, align: u64) -> Option<HostPhysAddr>;
    fn free(&mut self, pa: HostPhysAddr, bytes: u64);
}

/// The hypervisor's physical memory allocator (it zeroes what it hands out).
#[derive(Debug, Clone, Copy, Default)]
pub struct PhysBlocks;

impl BlockSource for PhysBlocks {
    fn alloc(&mut self, bytes: u64, align: u64) -> Option<HostPhysAddr> {
        crate::memory::phys::alloc_contiguous(bytes, align)
    }
    fn free(&mut self, pa: HostPhysAddr, bytes: u64) {
        crate::memory::phys::free_contiguous(pa, bytes);
    }
}

/// The blocks a VM holds.
#[derive(Debug, Default)]
pub struct HostBlocks {
    held: Vec<(HostPhysAddr, u64)>,
}

impl HostBlocks {
    /// Allocates a block for the VM (`what` names it in the error).
    pub fn take<E>(
        &mut self,
        source: &mut impl BlockSource,
        bytes: u64,
        align: u64,
        what: &'static str,
    ) -> Result<HostPhysAddr, VmError<E>> {
        let pa = source.alloc(bytes, align).ok_or(VmError::OutOfMemory(what))?;
        self.held.push((pa, bytes));
        Ok(pa)
    }

    /// Gives every block back; a second call finds none.
    pub fn release(&mut self, source: &mut impl BlockSource) {
        for (pa, bytes) in self.held.drain(..) {
            source.free(pa, bytes);
        }
    }

    /// How many bytes the VM holds.
    pub fn bytes(&self) -> u64 {
        self.held.iter().fold(0u64, |sum, (_, b)| sum.saturating_add(*b))
    }
}

/// Zeroes each `(address, length)` range, 64 KiB at a time (a restarted VM must find
/// neither its old RAM nor its old screen).
pub fn zero_ranges(memory: &mut impl HostMemory, ranges: &[(HostPhysAddr, u64)]) {
    const CHUNK: u64 = 64 * 1024;
    let zeros = alloc::vec![0u8; CHUNK as usize];
    for &(pa, len) in ranges {
        let mut offset = 0u64;
        while offset < len {
            let n = (len.saturating_sub(offset)).min(CHUNK);
            let chunk = zeros.get(..usize::try_from(n).unwrap_or(0)).unwrap_or(&[]);
            memory.write(HostPhysAddr::new(pa.raw().saturating_add(offset)), chunk);
            offset = offset.saturating_add(CHUNK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::guest::VecHostMemory;

    #[derive(Default)]
    struct Fake {
        next: u64,
        limit: u64,
        freed: Vec<(u64, u64)>,
    }

    impl BlockSource for Fake {
        fn alloc(&mut self, bytes: u64, _align: u64) -> Option<HostPhysAddr> {
            (self.next + bytes <= self.limit).then(|| {
                self.next += bytes;
                HostPhysAddr::new(self.next - bytes)
            })
        }
        fn free(&mut self, pa: HostPhysAddr, bytes: u64) {
            self.freed.push((pa.raw(), bytes));
        }
    }

    /// The allocation order of `Vm::create`: RAM, I/O map, MSR map, framebuffer.
    fn create(blocks: &mut HostBlocks, src: &mut Fake) -> Result<(), VmError<()>> {
        blocks.take(src, 0x10_0000, 0x20_0000, "guest RAM")?;
        blocks.take(src, 0x3000, 0x1000, "I/O map")?;
        blocks.take(src, 0x2000, 0x1000, "MSR map")?;
        blocks.take(src, 0x20_0000, 0x20_0000, "framebuffer")?;
        // A later step (device assignment, image load) fails.
        Err(VmError::Image(crate::vm::start_error::ImageError::ScratchRange))
    }

    #[test]
    fn a_failed_creation_frees_every_block_including_the_framebuffer() {
        let mut src = Fake { limit: 1 << 30, ..Default::default() };
        let mut blocks = HostBlocks::default();
        assert!(create(&mut blocks, &mut src).is_err());
        blocks.release(&mut src);
        assert_eq!(src.freed.iter().map(|f| f.1).sum::<u64>(), src.next, "every byte given back");
        assert!(src.freed.contains(&(0x10_5000, 0x20_0000)), "the framebuffer is freed");
        blocks.release(&mut src);
        assert_eq!(src.freed.len(), 4, "nothing is freed twice");
        // Out of memory half-way: what was taken is still given back.
        let mut src = Fake { limit: 0x10_4000, ..Default::default() };
        let mut blocks = HostBlocks::default();
        assert!(matches!(create(&mut blocks, &mut src), Err(VmError::OutOfMemory("MSR map"))));
        assert_eq!(blocks.bytes(), 0x10_3000);
        blocks.release(&mut src);
        assert_eq!(src.freed.len(), 2);
    }

    #[test]
    fn zeroing_covers_ram_and_framebuffer_completely() {
        let mut mem = VecHostMemory::new(HostPhysAddr::new(0x1000), 0x30000);
        mem.bytes.fill(0xAA);
        // RAM of 0x18000 bytes (not a multiple of the chunk) and a "framebuffer" after it.
        zero_ranges(&mut mem, &[(HostPhysAddr::new(0x1000), 0x18000), (HostPhysAddr::new(0x20000), 0x11000)]);
        assert!(mem.bytes[..0x18000].iter().all(|&b| b == 0));
        assert!(mem.bytes[0x18000..0x1F000].iter().all(|&b| b == 0xAA), "between the ranges untouched");
        assert!(mem.bytes[0x1F000..].iter().all(|&b| b == 0));
    }
}
