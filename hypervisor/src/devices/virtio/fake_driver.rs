//! A fake virtio driver for tests: guest memory with a split virtqueue laid out the way
//! Linux lays it out (descriptor table, available ring, used ring), chains added as a
//! driver adds them, and the used ring read back.

use alloc::vec::Vec;

use super::virtqueue::SplitQueue;
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr};
use crate::memory::guest::{
    GuestMemory, GuestMemoryAccess, GuestMemoryMap, GuestRegion, Perms, VecHostMemory, read_obj, write_obj,
};

/// A guest of `bytes` bytes of RAM at GPA 0.
pub fn guest_map(bytes: u64) -> GuestMemoryMap {
    GuestMemoryMap::new(alloc::vec![
        GuestRegion::new(GuestPhysAddr::new(0), HostPhysAddr::new(0x100_0000), bytes, Perms::RW).unwrap()
    ])
    .unwrap()
}

/// The accessor over a map from [`guest_map`].
pub fn guest_memory(map: &GuestMemoryMap) -> GuestMemory<'_, VecHostMemory> {
    GuestMemory::new(map, VecHostMemory::new(HostPhysAddr::new(0x100_0000), map.total_bytes() as usize))
}

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// The driver's view of one queue.
#[derive(Debug, Clone)]
pub struct DriverRings {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    last_used: u16,
}

impl DriverRings {
    /// Rings for a queue of `size` at `base` (descriptor table, then the available
    /// ring, then the used ring on the next 4 KiB page).
    pub fn new(base: u64, size: u16) -> Self {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(4096);
        DriverRings { size, desc, avail, used, next_desc: 0, avail_idx: 0, last_used: 0 }
    }

    /// The queue as the driver configures it through the common configuration.
    pub fn queue(&self, event_idx: bool) -> SplitQueue {
        let mut q = SplitQueue::default();
        (q.size, q.enabled, q.desc, q.driver, q.device, q.event_idx) =
            (self.size, true, self.desc, self.avail, self.used, event_idx);
        q
    }

    /// Writes descriptor `index` as given.
    pub fn write_desc(&self, mem: &mut impl GuestMemoryAccess, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc + 16 * u64::from(index);
        write_obj(mem, GuestPhysAddr::new(at), addr).unwrap();
        write_obj(mem, GuestPhysAddr::new(at + 8), len).unwrap();
        write_obj(mem, GuestPhysAddr::new(at + 12), flags).unwrap();
        write_obj(mem, GuestPhysAddr::new(at + 14), next).unwrap();
    }

    /// Puts `head` in the next available slot and publishes it.
    pub fn publish(&mut self, mem: &mut impl GuestMemoryAccess, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        write_obj(mem, GuestPhysAddr::new(self.avail + 4 + 2 * slot), head).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        write_obj(mem, GuestPhysAddr::new(self.avail + 2), self.avail_idx).unwrap();
    }

    /// Adds a chain of `(addr, len, device-writable)` buffers; returns its head.
    pub fn add_chain(&mut self, mem: &mut impl GuestMemoryAccess, buffers: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let last = i + 1 == buffers.len();
            let flags = if writable { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(mem, index, addr, len, flags, (index + 1) % self.size);
        }
        self.next_desc = (head + buffers.len() as u16) % self.size;
        self.publish(mem, head);
        head
    }

    /// The used elements `(id, len)` the device returned since the last call.
    pub fn take_used(&mut self, mem: &impl GuestMemoryAccess) -> Vec<(u32, u32)> {
        let idx: u16 = read_obj(mem, GuestPhysAddr::new(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.last_used != idx {
            let at = self.used + 4 + 8 * u64::from(self.last_used % self.size);
            out.push((
                read_obj(mem, GuestPhysAddr::new(at)).unwrap(),
                read_obj(mem, GuestPhysAddr::new(at + 4)).unwrap(),
            ));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }

    /// used_event: the driver wants an interrupt once the used index passes `event`.
    pub fn set_used_event(&self, mem: &mut impl GuestMemoryAccess, event: u16) {
        write_obj(mem, GuestPhysAddr::new(self.avail + 4 + 2 * u64::from(self.size)), event).unwrap();
    }

    /// The available ring's flags (bit 0: no interrupt).
    pub fn set_avail_flags(&self, mem: &mut impl GuestMemoryAccess, flags: u16) {
        write_obj(mem, GuestPhysAddr::new(self.avail), flags).unwrap();
    }

    /// avail_event: the device wants a notification once the available index passes it.
    pub fn avail_event(&self, mem: &impl GuestMemoryAccess) -> u16 {
        read_obj(mem, GuestPhysAddr::new(self.used + 4 + 8 * u64::from(self.size))).unwrap()
    }
}

/// Brings `device` up as Linux's virtio_pci_modern and virtio_net do: reset,
/// ACKNOWLEDGE and DRIVER, the device's features, FEATURES_OK, bus mastering, MSI-X
/// off (interrupts through the ISR), one ring per queue, DRIVER_OK.
pub fn bring_up<D>(device: &mut D, rings: &[&DriverRings])
where
    D: crate::devices::bus::MmioDevice + crate::devices::vpci::host_bridge::VirtualPciFunction,
{
    use crate::hw::AccessSize::{Byte, Dword, Qword, Word};
    device.config_write(crate::hw::pci::COMMAND, Word, 0x6);
    device.write(0x14, Byte, 0);
    device.write(0x14, Byte, 3);
    for select in 0..2 {
        device.write(0x00, Dword, select);
        let offered = device.read(0x04, Dword);
        device.write(0x08, Dword, select);
        device.write(0x0C, Dword, offered);
    }
    device.write(0x14, Byte, 3 | 8);
    assert_eq!(device.read(0x14, Byte), 11, "features accepted");
    for (index, r) in rings.iter().enumerate() {
        device.write(0x16, Word, index as u64);
        device.write(0x18, Word, u64::from(r.size));
        device.write(0x20, Qword, r.desc);
        device.write(0x28, Qword, r.avail);
        device.write(0x30, Qword, r.used);
        device.write(0x1C, Word, 1);
    }
    device.write(0x14, Byte, 15);
}
