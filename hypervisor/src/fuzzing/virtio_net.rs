//! Two virtio-net devices joined by a link, driven the way two hostile drivers could:
//! any access to either device's BAR and configuration space, any bytes anywhere in
//! either guest's memory (rings, descriptors, headers, frames), chains added as a driver
//! adds them (to devices the input may first bring up properly), and polls of the wire.
//! Each poll must stay within its frame bound, reads fit their width, each device
//! raises at most one message per vector per poll, and every frame the wire counts as
//! delivered fit the frame bound.

use alloc::vec::Vec;

use super::{Input, MAX_ACCESSES, assert_fits};
use crate::devices::bus::MmioDevice;
use crate::devices::shared::Shared;
use crate::devices::virtio::net::{MAX_FRAME_LEN, VirtioNet};
use crate::devices::virtio::pci_transport::BAR_SIZE;
use crate::devices::vpci::host_bridge::VirtualPciFunction;
use crate::hw::{AccessSize, MsiMessage};
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr};
use crate::memory::guest::{GuestMemory, GuestMemoryAccess, GuestMemoryMap, GuestRegion, Perms, VecHostMemory};
use crate::vm::link::{FRAMES_PER_POLL, Link, LinkEnd};

/// Each guest's RAM: small, so random addresses often land in it.
const GUEST_BYTES: u64 = 0x1_0000;
/// Where the driver's rings sit when the input brings a device up: receive queue,
/// transmit queue (size 16: descriptors, then the available ring, the used ring a
/// page on).
const RING_BASES: [u64; 2] = [0x1000, 0x3000];
const RING_SIZE: u16 = 16;

/// A driver's bookkeeping for one queue.
#[derive(Debug, Default, Clone, Copy)]
struct DriverQueue {
    next_desc: u16,
    avail_idx: u16,
}

/// Brings `device` up as Linux does, with its rings at [`RING_BASES`].
fn bring_up(device: &mut VirtioNet) {
    use AccessSize::{Byte, Dword, Qword, Word};
    device.config_write(crate::hw::pci::COMMAND, Word, 0x6);
    device.write(0x14, Byte, 3);
    for select in 0..2 {
        device.write(0x00, Dword, select);
        let offered = device.read(0x04, Dword);
        device.write(0x08, Dword, select);
        device.write(0x0C, Dword, offered);
    }
    device.write(0x14, Byte, 11);
    for (index, base) in RING_BASES.into_iter().enumerate() {
        device.write(0x16, Word, index as u64);
        device.write(0x18, Word, u64::from(RING_SIZE));
        device.write(0x20, Qword, base);
        device.write(0x28, Qword, base + 16 * u64::from(RING_SIZE));
        device.write(0x30, Qword, base + 0x1000);
        device.write(0x1C, Word, 1);
    }
    device.write(0x14, Byte, 15);
}

/// Adds a chain of up to three buffers the input describes to queue `queue`.
fn add_chain(input: &mut Input<'_>, mem: &mut GuestMemory<'_, VecHostMemory>, queue: usize, q: &mut DriverQueue) {
    let base = RING_BASES[queue];
    let count = 1 + input.u8().unwrap_or(0) % 3;
    let head = q.next_desc;
    for i in 0..count {
        let index = (head + u16::from(i)) % RING_SIZE;
        let addr = u64::from(input.u16()) % GUEST_BYTES;
        let len = u32::from(input.u16()) % 2048;
        // The right direction for the queue (receive: device-writable), usually.
        let flip = input.u8().unwrap_or(0) == 0xff;
        let write = (queue == 0) != flip;
        let next = (index + 1) % RING_SIZE;
        let flags = u16::from(write) * 2 + u16::from(i + 1 < count);
        let at = GuestPhysAddr::new(base + 16 * u64::from(index));
        let mut desc = [0u8; 16];
        desc[..8].copy_from_slice(&addr.to_le_bytes());
        desc[8..12].copy_from_slice(&len.to_le_bytes());
        desc[12..14].copy_from_slice(&flags.to_le_bytes());
        desc[14..].copy_from_slice(&next.to_le_bytes());
        let _ = mem.write_bytes(at, &desc);
    }
    q.next_desc = (head + u16::from(count)) % RING_SIZE;
    let avail = base + 16 * u64::from(RING_SIZE);
    let slot = GuestPhysAddr::new(avail + 4 + 2 * u64::from(q.avail_idx % RING_SIZE));
    let _ = mem.write_bytes(slot, &head.to_le_bytes());
    q.avail_idx = q.avail_idx.wrapping_add(1);
    let _ = mem.write_bytes(GuestPhysAddr::new(avail + 2), &q.avail_idx.to_le_bytes());
}

fn guest_map() -> GuestMemoryMap {
    let region = GuestRegion::new(GuestPhysAddr::new(0), HostPhysAddr::new(0x10_0000), GUEST_BYTES, Perms::RW);
    GuestMemoryMap::new(region.into_iter().collect()).unwrap()
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (map_a, map_b) = (guest_map(), guest_map());
    let host = || VecHostMemory::new(HostPhysAddr::new(0x10_0000), GUEST_BYTES as usize);
    let mut mems = [GuestMemory::new(&map_a, host()), GuestMemory::new(&map_b, host())];
    let devices = [
        Shared::new(VirtioNet::new([2, 0, 0, 0, 0, 1], 1500).unwrap()),
        Shared::new(VirtioNet::new([2, 0, 0, 0, 0, 2], 1500).unwrap()),
    ];
    let mut link = Link::new(
        LinkEnd { device: devices[0].clone(), vm_id: 0, vouches_for_checksums: false },
        LinkEnd { device: devices[1].clone(), vm_id: 1, vouches_for_checksums: true },
    );
    let mut messages: Vec<MsiMessage> = Vec::new();
    let mut queues = [[DriverQueue::default(); 2]; 2];
    // The first byte may bring either device (or both) up first, so that chains the
    // input adds reach the wire.
    let start = input.u8().unwrap_or(0);
    for (i, device) in devices.iter().enumerate() {
        if start & (1 << i) != 0 {
            bring_up(&mut device.lock());
        }
    }
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        let side = usize::from(op & 1);
        let Some(device) = devices.get(side) else { break };
        match (op >> 1) % 8 {
            0 => {
                let offset = u64::from(input.u16()) % BAR_SIZE;
                let size = input.size(true);
                assert_fits(device.lock().read(offset, size), size);
            }
            // Writes, twice as often: most of what a driver does.
            1 | 2 => {
                let offset = u64::from(input.u16()) % BAR_SIZE;
                let size = input.size(true);
                let value = input.value(size);
                device.lock().write(offset, size, value);
            }
            3 => {
                let offset = input.u8().unwrap_or(0).into();
                let size = input.size(false);
                let value = input.value(size) as u32;
                device.lock().config_write(offset, size, value);
            }
            4 | 5 => {
                let queue = usize::from(op >> 7);
                if let (Some(mem), Some(q)) = (mems.get_mut(side), queues.get_mut(side).and_then(|q| q.get_mut(queue)))
                {
                    add_chain(&mut input, mem, queue, q);
                }
            }
            6 => {
                let at = u64::from(input.u16()) % GUEST_BYTES;
                let bytes = input.bytes(64);
                if let Some(mem) = mems.get_mut(side) {
                    let _ = mem.write_bytes(GuestPhysAddr::new(at), bytes);
                }
            }
            _ => {
                let [a, b] = &mut mems;
                let poll = link.poll(a, b);
                assert!(poll.frames <= 2 * FRAMES_PER_POLL, "{poll:?}");
                for d in &devices {
                    messages.clear();
                    d.lock().take_messages(&mut messages);
                    assert!(messages.len() <= 3, "more messages than vectors: {messages:?}");
                }
            }
        }
        for c in link.counters() {
            assert!(c.bytes <= c.frames.saturating_mul(MAX_FRAME_LEN), "{c:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_accesses() {
        super::super::Prng::new(0x1af4).drive(2000, 512, super::run);
    }
}
