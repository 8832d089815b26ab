//! The hypervisor heap: talc over a fixed region in .bss for small allocations; an
//! allocation of 1 MiB or more (Argon2id's 64 MiB when the disks are unlocked, I/O
//! buffers) takes whole pages from the frame allocator instead, so the small heap never
//! has to hold it. Guest memory and page tables come from the frame allocator directly.

#[cfg(target_os = "none")]
mod global {
    use core::alloc::{GlobalAlloc, Layout};

    use talc::{TalcLock, source::Claim};

    use crate::memory::addr::{HostPhysAddr, PAGE_SIZE};
    use crate::memory::{direct_map, phys};

    const HEAP_BYTES: usize = super::HEAP_BYTES;
    /// From this size on, allocations are whole pages from the frame allocator.
    const LARGE: usize = 1 << 20;

    static SMALL: TalcLock<spin::Mutex<()>, Claim> = TalcLock::new({
        static mut HEAP: [u8; HEAP_BYTES] = [0; HEAP_BYTES];
        // SAFETY: HEAP is only ever reached through this allocator.
        unsafe { Claim::array(&raw mut HEAP) }
    });

    /// The bytes a large allocation takes: whole pages.
    fn pages(layout: Layout) -> u64 {
        (layout.size() as u64).next_multiple_of(PAGE_SIZE)
    }

    struct Heap;

    // SAFETY: small layouts go to talc, which upholds GlobalAlloc; large ones get
    // exclusively owned, zeroed frames through the identity map, aligned to at least a
    // page, and the same size test routes each dealloc to where its alloc came from.
    unsafe impl GlobalAlloc for Heap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.size() < LARGE {
                // SAFETY: forwarded with the caller's layout.
                return unsafe { SMALL.alloc(layout) };
            }
            let align = (layout.align() as u64).max(PAGE_SIZE);
            match phys::alloc_contiguous(pages(layout), align) {
                Some(pa) => direct_map::ptr(pa),
                None => core::ptr::null_mut(),
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if layout.size() < LARGE {
                // SAFETY: `ptr` came from SMALL.alloc with this layout.
                unsafe { SMALL.dealloc(ptr, layout) };
                return;
            }
            // The identity map: the pointer is the physical address.
            phys::free_contiguous(HostPhysAddr::new(ptr as u64), pages(layout));
        }
    }

    #[global_allocator]
    static ALLOCATOR: Heap = Heap;
}

/// Bytes reserved for the small-allocation heap, for the boot report.
pub const HEAP_BYTES: usize = 8 * 1024 * 1024;
