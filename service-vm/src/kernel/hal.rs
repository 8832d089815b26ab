//! virtio-drivers' view of memory: the VM's memory is identity-mapped and the hypervisor
//! reads the rings by guest-physical address, so a virtual address is its physical one.

use core::alloc::Layout;
use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

#[derive(Debug)]
pub struct IdentityHal;

// SAFETY: dma_alloc returns zeroed, page-aligned memory that stays allocated until
// dma_dealloc, and addresses are identity-mapped, so the physical address given to the
// device is the same memory the driver uses; share/unshare need no bounce buffers.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages.saturating_mul(PAGE_SIZE).max(PAGE_SIZE), PAGE_SIZE)
            .unwrap_or(Layout::new::<u8>());
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else { alloc::alloc::handle_alloc_error(layout) };
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = Layout::from_size_align(pages.saturating_mul(PAGE_SIZE).max(PAGE_SIZE), PAGE_SIZE)
            .unwrap_or(Layout::new::<u8>());
        // SAFETY: the caller passes back what dma_alloc returned for `pages`.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
