//! The uplink NIC passed through to the service VM: found on its PCI bus, driven by
//! [`service_vm::e1000e`] over its BAR0 (volatile MMIO) and DMA buffers from the heap
//! (identity-mapped, so a buffer's address is the one the NIC uses; the IOMMU limits
//! the NIC to this VM's memory).

use alloc::alloc::{Layout, alloc_zeroed};
use core::sync::atomic::{Ordering, compiler_fence};

use service_vm::e1000e::{DmaMemory, E1000e, NicRegisters};
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction, PciRoot};

use super::pci::PortConfigAccess;

/// PCI IDs this driver takes: the 82574L (QEMU's `e1000e`).
const SUPPORTED: &[(u16, u16)] = &[(0x8086, 0x10d3)];
/// Size of the 82574's register BAR (datasheet §10.1: 128 KiB memory BAR).
const BAR0_SIZE: u64 = 128 * 1024;

/// BAR0 of the NIC, mapped uncached by the hypervisor (the first 4 GiB are identity
/// mapped in the payload boot protocol; an assigned BAR is placed below 4 GiB).
pub struct Bar0 {
    base: u64,
    tsc_khz: u64,
}

impl NicRegisters for Bar0 {
    fn read32(&mut self, offset: u32) -> u32 {
        if u64::from(offset) + 4 > BAR0_SIZE {
            return u32::MAX;
        }
        let at = (self.base + u64::from(offset)) as *const u32;
        // SAFETY: the address lies inside the NIC's BAR0 (checked above), which this
        // VM owns; register reads have no memory side effects on this VM's memory.
        unsafe { at.read_volatile() }
    }

    fn write32(&mut self, offset: u32, value: u32) {
        if u64::from(offset) + 4 > BAR0_SIZE {
            return;
        }
        // Descriptors written before this (tail) write must reach memory first.
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        let at = (self.base + u64::from(offset)) as *mut u32;
        // SAFETY: as in `read32`; the driver writes only the registers it programs.
        unsafe { at.write_volatile(value) }
    }

    fn delay_us(&mut self, micros: u32) {
        let until = super::run::rdtsc().saturating_add(u64::from(micros).saturating_mul(self.tsc_khz) / 1000);
        while super::run::rdtsc() < until {
            core::hint::spin_loop();
        }
    }
}

/// One DMA buffer: heap memory that is never freed while the NIC may use it.
pub struct Region {
    ptr: *mut u8,
    len: usize,
}

/// DMA buffers from the kernel heap.
pub struct HeapDma;

/// Accesses longer than a descriptor (16 bytes) are frame buffers, copied in bulk;
/// descriptors are read and written 8 bytes at a time and their status bytes on their
/// own, volatile.
const BULK_FROM: usize = 16;

impl DmaMemory for HeapDma {
    type Region = Region;

    fn allocate(&mut self, len: usize, align: usize) -> Option<Region> {
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size. The memory is leaked on purpose: the
        // NIC may write to it until the VM stops.
        let ptr = unsafe { alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Region { ptr, len })
    }

    fn device_address(&self, region: &Region) -> u64 {
        region.ptr as u64
    }

    fn read(&self, region: &Region, offset: usize, out: &mut [u8]) {
        if offset.checked_add(out.len()).is_none_or(|end| end > region.len) {
            return;
        }
        if out.len() > BULK_FROM {
            // A frame buffer: the driver reads it only after the descriptor's DD bit
            // (a volatile read) showed the NIC is done with it, and the fence keeps the
            // copy after that read. One memcpy instead of a volatile load per byte.
            compiler_fence(Ordering::SeqCst);
            // SAFETY: offset + out.len() <= region.len (checked above), inside the
            // allocation; `out` is the caller's own memory, so the two do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(region.ptr.add(offset), out.as_mut_ptr(), out.len()) };
            compiler_fence(Ordering::SeqCst);
            return;
        }
        let at = region.ptr.wrapping_add(offset);
        if out.len().is_multiple_of(8) && (at as usize).is_multiple_of(8) {
            // A descriptor: 8 bytes per volatile load rather than one.
            for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
                // SAFETY: offset + 8 * (i + 1) <= region.len (checked above), inside the
                // allocation, and 8-byte aligned; volatile because the NIC writes this
                // memory behind the compiler's back.
                let word = unsafe { at.add(8 * i).cast::<u64>().read_volatile() };
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            return;
        }
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: offset + i < region.len (checked above), inside the allocation;
            // volatile because the NIC writes this memory behind the compiler's back.
            *byte = unsafe { region.ptr.add(offset + i).read_volatile() };
        }
    }

    fn write(&mut self, region: &Region, offset: usize, data: &[u8]) {
        if offset.checked_add(data.len()).is_none_or(|end| end > region.len) {
            return;
        }
        if data.len() > BULK_FROM {
            // A frame into a transmit buffer the NIC does not own until the tail moves
            // (a volatile MMIO write after a compiler fence, see `Bar0::write32`).
            compiler_fence(Ordering::SeqCst);
            // SAFETY: as in `read`.
            unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), region.ptr.add(offset), data.len()) };
            compiler_fence(Ordering::SeqCst);
            return;
        }
        let at = region.ptr.wrapping_add(offset);
        if data.len().is_multiple_of(8) && (at as usize).is_multiple_of(8) {
            for (i, chunk) in data.chunks_exact(8).enumerate() {
                let word = u64::from_ne_bytes([
                    chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
                ]);
                // SAFETY: as in `read`'s aligned case.
                unsafe { at.add(8 * i).cast::<u64>().write_volatile(word) };
            }
            return;
        }
        for (i, byte) in data.iter().enumerate() {
            // SAFETY: as in `read`.
            unsafe { region.ptr.add(offset + i).write_volatile(*byte) };
        }
    }
}

pub type Uplink = E1000e<Bar0, HeapDma>;

/// The first supported NIC on bus 0, brought up; `None` when there is none or it fails.
pub fn find(root: &mut PciRoot<PortConfigAccess>, tsc_khz: u64) -> Option<Uplink> {
    let found: alloc::vec::Vec<_> = root.enumerate_bus(0).collect();
    let (function, _) = found.into_iter().find(|(_, info)| SUPPORTED.contains(&(info.vendor_id, info.device_id)))?;
    let base = bar0(function)?;
    root.set_command(function, Command::MEMORY_SPACE | Command::BUS_MASTER);
    match E1000e::new(Bar0 { base, tsc_khz }, HeapDma) {
        Ok(mut nic) => {
            let msi = program_msi(function, UPLINK_VECTOR);
            if msi {
                nic.enable_interrupts();
            }
            log::info!(
                target: "uplink",
                "uplink NIC at {function}: BAR0 {base:#x}, MAC {:02x?}, {}",
                nic.mac(),
                if msi { "MSI" } else { "polled (no MSI capability)" }
            );
            Some(nic)
        }
        Err(e) => {
            log::warn!(target: "uplink", "uplink NIC at {function}: {e:?}; no uplink");
            None
        }
    }
}

/// The vector the NIC's MSI raises: it wakes the kernel from `SLEEP` (the kernel runs
/// with interrupts off and polls after each wake).
const UPLINK_VECTOR: u8 = 0x50;
/// PCI capability id of MSI.
const CAP_MSI: u8 = 0x05;

/// Points the function's MSI at this VM's one CPU (APIC id 0, fixed, `vector`) and
/// enables it; `false` when it has no MSI capability.
fn program_msi(function: DeviceFunction, vector: u8) -> bool {
    let mut access = PortConfigAccess;
    if access.read_word(function, 0x04) & (1 << 20) == 0 {
        return false;
    }
    let mut at = access.read_word(function, 0x34) as u8;
    for _ in 0..48 {
        if at < 0x40 {
            return false;
        }
        let header = access.read_word(function, at);
        if header as u8 == CAP_MSI {
            let control = header >> 16;
            let data_at = if control & (1 << 7) != 0 { at + 12 } else { at + 8 };
            access.write_word(function, at + 4, 0xfee0_0000);
            if data_at == at + 12 {
                access.write_word(function, at + 8, 0);
            }
            access.write_word(function, data_at, u32::from(vector));
            access.write_word(function, at, (control | 1) << 16 | (header & 0xffff));
            return true;
        }
        at = (header >> 8) as u8;
    }
    false
}

/// BAR0's address (a 32- or 64-bit memory BAR below 4 GiB), as the hypervisor placed it.
fn bar0(function: DeviceFunction) -> Option<u64> {
    let access = PortConfigAccess;
    let low = access.read_word(function, 0x10);
    if low & 1 != 0 {
        return None;
    }
    let high = if low & 0b110 == 0b100 { access.read_word(function, 0x14) } else { 0 };
    let base = u64::from(high) << 32 | u64::from(low & !0xF);
    (base != 0 && base + BAR0_SIZE <= 1 << 32).then_some(base)
}
