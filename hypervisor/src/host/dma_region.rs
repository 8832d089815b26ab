//! A host driver's DMA region: RAM the hypervisor allocated for one controller alone,
//! which the device addresses at its host physical address (the controller's DMA
//! domain maps it there). Reads and writes are bounds-checked against the region and
//! fenced, because the device writes it behind the compiler's back.
#![forbid(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use crate::memory::addr::HostPhysAddr;
use crate::memory::direct_map::DirectMap;
use crate::memory::guest::HostMemory;

#[derive(Debug, Clone, Copy)]
pub struct DmaRegion {
    base: HostPhysAddr,
    bytes: u64,
}

impl DmaRegion {
    pub const fn new(base: HostPhysAddr, bytes: u64) -> Self {
        DmaRegion { base, bytes }
    }

    /// The host address of `len` bytes at device address `at`, if inside the region.
    pub fn inside(&self, at: u64, len: usize) -> Option<HostPhysAddr> {
        let off = at.checked_sub(self.base.raw())?;
        (off.checked_add(len as u64)? <= self.bytes).then_some(HostPhysAddr::new(at))
    }

    /// Reads what the device wrote at `at` (every poll reads it again).
    pub fn read(&self, at: u64, buf: &mut [u8]) -> bool {
        let Some(pa) = self.inside(at, buf.len()) else { return false };
        fence(Ordering::SeqCst);
        DirectMap.read(pa, buf)
    }

    /// Writes what the device will read at `at`, ordered before any later doorbell.
    pub fn write(&self, at: u64, data: &[u8]) -> bool {
        let Some(pa) = self.inside(at, data.len()) else { return false };
        let ok = DirectMap.write(pa, data);
        fence(Ordering::SeqCst);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ranges_inside_the_region_are_reached() {
        let r = DmaRegion::new(HostPhysAddr::new(0x10_0000), 0x2000);
        assert_eq!(r.inside(0x10_0000, 0x2000), Some(HostPhysAddr::new(0x10_0000)));
        assert_eq!(r.inside(0x10_1ff0, 16), Some(HostPhysAddr::new(0x10_1ff0)));
        assert_eq!(r.inside(0x10_1ff0, 17), None);
        assert_eq!(r.inside(0xF_FFFF, 1), None);
        assert_eq!(r.inside(u64::MAX, 2), None);
    }
}
