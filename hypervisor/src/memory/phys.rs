//! The hypervisor's physical frame allocator: the free ranges of the memory map behind a
//! lock. Every frame handed out is zeroed, so memory freed by a destroyed VM never leaks
//! into the next user.

use bulkhead_abi::{MemoryKind, MemoryRegion};
use spin::Mutex;
use x86_64::PhysAddr;
use x86_64::structures::paging::{FrameAllocator, PhysFrame, Size4KiB};

use super::addr::{HostPhysAddr, PAGE_SIZE};
use super::direct_map;
use super::frames::{FrameSource, Table};
use super::ranges::FreeRanges;

static FREE: Mutex<FreeRanges> = Mutex::new(FreeRanges::new());

/// Memory below 1 MiB stays reserved: legacy BIOS areas and the AP trampoline.
const LOW_MEMORY_END: u64 = 0x10_0000;

/// Pages below 1 MiB set aside at [`init`] for starting application processors (a
/// startup IPI can only point below 1 MiB), or `None` when the map has no such RAM.
static AP_START_PAGES: spin::Once<Option<HostPhysAddr>> = spin::Once::new();

/// How many pages [`ap_start_pages`] holds: the trampoline's code, its data, and a
/// page table root below 4 GiB.
pub const AP_START_PAGE_COUNT: u64 = 3;

/// The first address a startup IPI cannot reach usefully: 0xA0000 up is video memory
/// and ROM on PCs, and the vector must be a page number below 0xA0.
const SIPI_REACH_END: u64 = 0xA_0000;

/// Where `bytes` of usable RAM below [`SIPI_REACH_END`] (and above page 0, which the
/// hypervisor leaves unmapped) can be taken for the AP trampoline: the highest
/// page-aligned fit in the map's usable regions.
pub fn low_window(map: &[MemoryRegion], bytes: u64) -> Option<HostPhysAddr> {
    let mut low = FreeRanges::new();
    for region in map.iter().filter(|r| r.kind == MemoryKind::Usable) {
        low.add(region.start.max(PAGE_SIZE), region.end().min(SIPI_REACH_END));
    }
    low.take(bytes, PAGE_SIZE)
}

/// The pages reserved for starting application processors (see [`AP_START_PAGE_COUNT`]).
pub fn ap_start_pages() -> Option<HostPhysAddr> {
    AP_START_PAGES.get().copied().flatten()
}

/// Seeds the allocator with the usable RAM of the memory map, minus `reserved` ranges
/// (the framebuffer, anything the firmware left that we still read). Boot-services
/// memory is added later by [`reclaim_boot_services`], once nothing lives there.
pub fn init(map: &[MemoryRegion], reserved: &[(u64, u64)]) {
    // Before anything can use low memory: the allocator never hands it out, and the
    // firmware is gone, so usable RAM there is ours.
    AP_START_PAGES.call_once(|| low_window(map, AP_START_PAGE_COUNT.saturating_mul(PAGE_SIZE)));
    let mut free = FREE.lock();
    for region in map.iter().filter(|r| r.kind == MemoryKind::Usable) {
        free.add(region.start, region.end());
    }
    free.remove(0, LOW_MEMORY_END);
    for &(start, end) in reserved {
        free.remove(start, end);
    }
}

/// Adds UEFI boot-services memory (the loader's stack, pool and page tables) once the
/// hypervisor runs on its own page tables and stack.
pub fn reclaim_boot_services(map: &[MemoryRegion], reserved: &[(u64, u64)]) -> u64 {
    let mut free = FREE.lock();
    let before = free.free_bytes();
    for region in map.iter().filter(|r| r.kind == MemoryKind::BootServices) {
        free.add(region.start, region.end());
    }
    free.remove(0, LOW_MEMORY_END);
    for &(start, end) in reserved {
        free.remove(start, end);
    }
    // Cutting reserved ranges out of a full table can drop bytes: never report less than 0.
    free.free_bytes().saturating_sub(before)
}

pub fn free_bytes() -> u64 {
    FREE.lock().free_bytes()
}

/// Zeroed, physically contiguous memory (for guest RAM, framebuffers, big tables).
pub fn alloc_contiguous(bytes: u64, align: u64) -> Option<HostPhysAddr> {
    let pa = FREE.lock().take(bytes, align)?;
    // SAFETY: the range was just taken from the free set, so we own it, and all RAM
    // is mapped writable in the direct map.
    unsafe { direct_map::zero(pa, bytes as usize) };
    Some(pa)
}

/// Returns memory from [`alloc_contiguous`]. It is zeroed again before reuse.
pub fn free_contiguous(pa: HostPhysAddr, bytes: u64) {
    // Ranges from `alloc_contiguous` end below 2^64: one that would wrap was never
    // handed out, so there is nothing to give back.
    let Some(end) = pa.checked_add(bytes) else {
        return;
    };
    FREE.lock().add(pa.raw(), end.raw());
}

/// The global allocator as a [`FrameSource`] for page-table builders.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalFrames;

impl FrameSource for GlobalFrames {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        alloc_contiguous(PAGE_SIZE, PAGE_SIZE)
    }

    fn free(&mut self, frame: HostPhysAddr) {
        free_contiguous(frame, PAGE_SIZE);
    }

    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table {
        // SAFETY: `frame` came from this allocator and is owned by the table builder
        // that holds `&mut self`.
        unsafe { direct_map::table_mut(frame) }
    }
}

// SAFETY: every frame returned is unused, page-aligned RAM taken out of the free set.
unsafe impl FrameAllocator<Size4KiB> for GlobalFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let pa = self.alloc_zeroed()?;
        PhysFrame::from_start_address(PhysAddr::new(pa.raw())).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { start, len, kind, _reserved: 0 }
    }

    #[test]
    fn the_trampoline_window_is_usable_ram_below_640_kib_and_never_page_0() {
        let map = [
            region(0, 0x9f000, MemoryKind::Usable),
            region(0x9f000, 0x1000, MemoryKind::BootServices),
            region(0x100000, 0x100000, MemoryKind::Usable),
        ];
        assert_eq!(low_window(&map, 3 * PAGE_SIZE), Some(HostPhysAddr::new(0x9c000)));
        // Only page 0 and two pages free below 640 KiB: no room for three pages.
        let tight = [region(0, 0x3000, MemoryKind::Usable), region(0x100000, 0x100000, MemoryKind::Usable)];
        assert_eq!(low_window(&tight, 3 * PAGE_SIZE), None);
        assert_eq!(low_window(&tight, 2 * PAGE_SIZE), Some(HostPhysAddr::new(0x1000)));
        // Usable RAM straddling 640 KiB counts only below it.
        let straddle = [region(0x98000, 0x10000, MemoryKind::Usable)];
        assert_eq!(low_window(&straddle, 3 * PAGE_SIZE), Some(HostPhysAddr::new(0x9d000)));
        let not_usable = [region(0x1000, 0x9e000, MemoryKind::RuntimeServices)];
        assert_eq!(low_window(&not_usable, PAGE_SIZE), None);
    }
}
