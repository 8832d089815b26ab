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

/// Physical memory as a byte slice.
///
/// # Safety
/// The range must be RAM the caller owns and is mapped writable, and no other
/// reference to it may be live while the returned one is used.
pub unsafe fn bytes_mut<'a>(pa: HostPhysAddr, len: usize) -> &'a mut [u8] {
    // SAFETY: per the contract, the range is exclusively owned, mapped RAM.
    unsafe { core::slice::from_raw_parts_mut(ptr(pa), len) }
}

/// A 32-bit word of physical memory that another CPU (or a CPU still without paging)
/// writes, read as an atomic.
///
/// # Safety
/// `pa` must be 4-byte aligned RAM the caller owns and is mapped, accessed only as an
/// atomic (or by code outside Rust) while the returned reference lives.
pub unsafe fn atomic_u32<'a>(pa: HostPhysAddr) -> &'a core::sync::atomic::AtomicU32 {
    // SAFETY: per the contract, the word is aligned, mapped and only accessed atomically.
    unsafe { &*ptr(pa).cast::<core::sync::atomic::AtomicU32>() }
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

/// Host memory as the guest-memory accessor sees it: physical RAM through the direct
/// map. Only frames the VM owns are ever reached, because `GuestMemoryMap` translates
/// every access through the VM's own regions first.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectMap;

impl super::guest::HostMemory for DirectMap {
    fn read(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> bool {
        let from = ptr(hpa).cast_const();
        // Ring indexes, used elements and descriptors (2, 8 and 16 bytes) are moved
        // with plain loads: `memcpy` would move them a byte per `rep movsb` step.
        // SAFETY: `hpa..hpa+len` lies inside one region of a VM's memory map (checked by
        // the caller, `GuestMemory`), which is RAM the hypervisor allocated for that VM
        // and keeps mapped; guest RAM is never aliased by a Rust reference; the loads
        // allow any alignment.
        unsafe {
            match buf.len() {
                2 => buf.copy_from_slice(&from.cast::<[u8; 2]>().read_unaligned()),
                4 => buf.copy_from_slice(&from.cast::<[u8; 4]>().read_unaligned()),
                8 => buf.copy_from_slice(&from.cast::<[u8; 8]>().read_unaligned()),
                16 => buf.copy_from_slice(&from.cast::<[u8; 16]>().read_unaligned()),
                len => core::ptr::copy_nonoverlapping(from, buf.as_mut_ptr(), len),
            }
        }
        true
    }

    fn write(&mut self, hpa: HostPhysAddr, data: &[u8]) -> bool {
        let to = ptr(hpa);
        // SAFETY: as in `read`; the stores allow any alignment.
        unsafe {
            match *data {
                [a, b] => to.cast::<[u8; 2]>().write_unaligned([a, b]),
                [a, b, c, d] => to.cast::<[u8; 4]>().write_unaligned([a, b, c, d]),
                [a, b, c, d, e, f, g, h] => to.cast::<[u8; 8]>().write_unaligned([a, b, c, d, e, f, g, h]),
                _ => core::ptr::copy_nonoverlapping(data.as_ptr(), to, data.len()),
            }
        }
        true
    }

    fn copy_from(&mut self, dst_hpa: HostPhysAddr, _src: &Self, src_hpa: HostPhysAddr, len: usize) -> bool {
        // SAFETY: both ranges lie inside one region of a VM's memory map each (checked by
        // `copy_between`), RAM the hypervisor allocated for VMs and keeps mapped; `copy`
        // allows the two to overlap (a VM copying within its own memory).
        unsafe { core::ptr::copy(ptr(src_hpa), ptr(dst_hpa), len) };
        true
    }

    fn bytes_mut(&mut self, hpa: HostPhysAddr, len: usize) -> Option<&mut [u8]> {
        // SAFETY: `hpa..hpa+len` lies inside one region of a VM's memory map (checked by
        // the caller, `GuestMemory::bytes_mut`), RAM the hypervisor allocated for that VM
        // and keeps mapped. The slice lives only as long as the `&mut` borrow of this
        // accessor, during which the hypervisor makes no other access to that memory on
        // this CPU. The VM may write the same bytes from another CPU meanwhile, as it may
        // during a copy: it only changes the data of its own request.
        Some(unsafe { bytes_mut(hpa, len) })
    }

    fn read_u64(&self, hpa: HostPhysAddr) -> Option<u64> {
        // SAFETY: as in `read` (the 8 bytes lie inside one region); any alignment.
        Some(u64::from_le(unsafe { core::ptr::read_unaligned(ptr(hpa).cast::<u64>()) }))
    }
}

/// FNV-1a over physical memory, for integrity checks of VM memory and the hypervisor.
pub fn checksum(pa: HostPhysAddr, len: u64) -> u64 {
    // SAFETY: callers pass ranges of RAM the hypervisor owns (a VM's memory, its own
    // image); reading them races with nothing because the owning VM is not running.
    let bytes = unsafe { core::slice::from_raw_parts(ptr(pa), len as usize) };
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}
