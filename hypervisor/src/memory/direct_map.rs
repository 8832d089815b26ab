//! The hypervisor reaches physical memory through an identity map (virtual ==
//! physical), set up by `paging`. This module is the only place that turns a physical
//! address into a pointer.

use super::addr::HostPhysAddr;
use super::frames::Table;

/// A pointer to physical memory through the direct map.
pub fn ptr(pa: HostPhysAddr) -> *mut u8 {
    pa.raw() as *mut u8
}

/// Zeroes `bytes` bytes of physical memory.
///
/// # Safety
/// The range must be RAM owned by the caller (freshly allocated frames) and mapped.
pub unsafe fn zero(pa: HostPhysAddr, bytes: usize) {
    // SAFETY: the caller owns the range and it is mapped writable.
    unsafe { core::ptr::write_bytes(ptr(pa), 0, bytes) }
}

/// A page table stored in a frame.
///
/// # Safety
/// The frame must be owned by the caller, hold a page table (or be zeroed), and no
/// other reference to it may be live while the returned one is used.
pub unsafe fn table_mut<'a>(pa: HostPhysAddr) -> &'a mut Table {
    // SAFETY: per the contract, the frame is an exclusively owned, aligned 4 KiB table.
    unsafe { &mut *ptr(pa).cast::<Table>() }
}
