//! The kernel heap: talc over a fixed region in .bss (frames, router tables, the
//! virtio rings and buffers).

use talc::{TalcLock, source::Claim};

const HEAP_BYTES: usize = 8 * 1024 * 1024;

#[global_allocator]
static ALLOCATOR: TalcLock<spin::Mutex<()>, Claim> = TalcLock::new({
    static mut HEAP: [u8; HEAP_BYTES] = [0; HEAP_BYTES];
    // SAFETY: HEAP is only ever reached through this allocator.
    unsafe { Claim::array(&raw mut HEAP) }
});
