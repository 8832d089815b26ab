//! The hypervisor heap: talc over a fixed region in .bss. Big allocations (guest memory,
//! page tables) come from the frame allocator, not from here.

#[cfg(target_os = "none")]
mod global {
    use talc::{TalcLock, source::Claim};

    const HEAP_BYTES: usize = 8 * 1024 * 1024;

    #[global_allocator]
    static ALLOCATOR: TalcLock<spin::Mutex<()>, Claim> = TalcLock::new({
        static mut HEAP: [u8; HEAP_BYTES] = [0; HEAP_BYTES];
        // SAFETY: HEAP is only ever reached through this allocator.
        unsafe { Claim::array(&raw mut HEAP) }
    });
}

/// Bytes reserved for the heap, for the boot report.
pub const HEAP_BYTES: usize = 8 * 1024 * 1024;
