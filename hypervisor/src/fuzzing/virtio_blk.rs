//! A virtio-blk device over a small memory disk, driven the way a hostile driver could:
//! any access to the device's BAR and configuration space, any bytes anywhere in guest
//! memory (rings, descriptors, headers, data), chains of buffers whose lengths are
//! often what a real request has (a 16-byte header, whole sectors, a 1-byte status)
//! and often not, request headers of every type, and calls that serve the queue.
//!
//! Invariants: each call stays within its request and byte bounds; reads fit their
//! width; at most one message per vector per call; the backend is never asked for a
//! range outside the disk nor (read-only disk) to write, because the parser refused
//! first; a read-only disk's bytes never change; and the counters add up (no request
//! moves more than the per-request bound).

use alloc::vec::Vec;

use super::{Input, MAX_ACCESSES, assert_fits};
use crate::devices::bus::MmioDevice;
use crate::devices::shared::Shared;
use crate::devices::virtio::blk::{BlkCounters, VirtioBlk};
use crate::devices::virtio::blk_backend::{ID_BYTES, MemoryBackend};
use crate::devices::virtio::blk_request::{MAX_REQUEST_BYTES, Reject};
use crate::devices::virtio::blk_serve::{BYTES_PER_POLL, REQUESTS_PER_POLL};
use crate::devices::virtio::pci_transport::BAR_SIZE;
use crate::devices::vpci::host_bridge::VirtualPciFunction;
use crate::hw::{AccessSize, MsiMessage};
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr};
use crate::memory::guest::{GuestMemory, GuestMemoryAccess, GuestMemoryMap, GuestRegion, Perms, VecHostMemory};

/// The guest's RAM: small, so random addresses often land in it.
const GUEST_BYTES: u64 = 0x1_0000;
/// The disk: 64 sectors, so random sector numbers often fit.
const DISK_SECTORS: u64 = 64;
/// Where the request queue's rings sit when the input brings the device up.
const RING_BASE: u64 = 0x1000;
const RING_SIZE: u16 = 16;

/// Brings the device up as Linux does, with its ring at [`RING_BASE`].
fn bring_up(device: &mut VirtioBlk) {
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
    device.write(0x16, Word, 0);
    device.write(0x18, Word, u64::from(RING_SIZE));
    device.write(0x20, Qword, RING_BASE);
    device.write(0x28, Qword, RING_BASE + 16 * u64::from(RING_SIZE));
    device.write(0x30, Qword, RING_BASE + 0x1000);
    device.write(0x1C, Word, 1);
    device.write(0x14, Byte, 15);
}

/// A buffer length the input picks: usually one a request has, sometimes anything.
fn length(input: &mut Input<'_>) -> u32 {
    let pick = input.u8().unwrap_or(0);
    match pick % 5 {
        0 => 16,
        1 => 1,
        2 | 3 => 512 * (1 + u32::from(pick >> 3) % 8),
        _ => u32::from(input.u16()),
    }
}

/// A driver's bookkeeping for the queue.
#[derive(Debug, Default, Clone, Copy)]
struct BlkDriverQueue {
    next_desc: u16,
    avail_idx: u16,
}

/// Adds a chain of up to eight buffers the input describes: the first usually
/// device-readable, the last usually device-writable, the rest as the input says.
fn add_chain(input: &mut Input<'_>, mem: &mut GuestMemory<'_, VecHostMemory>, q: &mut BlkDriverQueue) {
    let count = 1 + input.u8().unwrap_or(0) % 8;
    let data_writable = input.u8().unwrap_or(0) & 1 == 1;
    let head = q.next_desc;
    for i in 0..count {
        let index = (head + u16::from(i)) % RING_SIZE;
        let addr = u64::from(input.u16()) % GUEST_BYTES;
        let len = length(input);
        let flip = input.u8().unwrap_or(0) == 0xff;
        let natural = if i == 0 {
            false
        } else if i + 1 == count {
            true
        } else {
            data_writable
        };
        let write = natural != flip;
        let next = (index + 1) % RING_SIZE;
        let flags = u16::from(write) * 2 + u16::from(i + 1 < count);
        let at = GuestPhysAddr::new(RING_BASE + 16 * u64::from(index));
        let mut desc = [0u8; 16];
        desc[..8].copy_from_slice(&addr.to_le_bytes());
        desc[8..12].copy_from_slice(&len.to_le_bytes());
        desc[12..14].copy_from_slice(&flags.to_le_bytes());
        desc[14..].copy_from_slice(&next.to_le_bytes());
        let _ = mem.write_bytes(at, &desc);
    }
    q.next_desc = (head + u16::from(count)) % RING_SIZE;
    let avail = RING_BASE + 16 * u64::from(RING_SIZE);
    let slot = GuestPhysAddr::new(avail + 4 + 2 * u64::from(q.avail_idx % RING_SIZE));
    let _ = mem.write_bytes(slot, &head.to_le_bytes());
    q.avail_idx = q.avail_idx.wrapping_add(1);
    let _ = mem.write_bytes(GuestPhysAddr::new(avail + 2), &q.avail_idx.to_le_bytes());
}

/// Writes a request header the input picks at an address it picks: a known type
/// (IN, OUT, FLUSH, GET_ID) or anything, a sector near the disk's end or anything.
fn write_header(input: &mut Input<'_>, mem: &mut GuestMemory<'_, VecHostMemory>) {
    let at = u64::from(input.u16()) % GUEST_BYTES;
    let pick = input.u8().unwrap_or(0);
    let req_type = match pick % 6 {
        0 => 0,
        1 => 1,
        2 => 4,
        3 => 8,
        _ => input.u32(),
    };
    let sector = if pick & 0x80 == 0 { input.u64() % (DISK_SECTORS + 8) } else { input.u64() };
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&req_type.to_le_bytes());
    header[8..].copy_from_slice(&sector.to_le_bytes());
    let _ = mem.write_bytes(GuestPhysAddr::new(at), &header);
}

fn guest_map() -> GuestMemoryMap {
    let region = GuestRegion::new(GuestPhysAddr::new(0), HostPhysAddr::new(0x10_0000), GUEST_BYTES, Perms::RW);
    GuestMemoryMap::new(region.into_iter().collect()).unwrap()
}

pub fn run(data: &[u8]) {
    drive(data);
}

/// Runs one input; returns what the device counted.
fn drive(data: &[u8]) -> BlkCounters {
    let mut input = Input::new(data);
    let map = guest_map();
    let mut mem = GuestMemory::new(&map, VecHostMemory::new(HostPhysAddr::new(0x10_0000), GUEST_BYTES as usize));
    // The first byte: bit 0 brings the device up, bit 1 makes the disk read-only,
    // bit 2 makes the disk take the guest's buffers straight (no bounce buffer).
    let start = input.u8().unwrap_or(0);
    let read_only = start & 2 != 0;
    let mut backend = MemoryBackend::new(DISK_SECTORS, read_only, [b'f'; ID_BYTES]);
    backend.direct = start & 4 != 0;
    for (i, b) in backend.bytes_mut().iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13);
    }
    let initial: Vec<u8> = backend.bytes().to_vec();
    let disk = Shared::new(backend);
    let mut device = VirtioBlk::new(alloc::boxed::Box::new(disk.clone())).unwrap();
    if start & 1 != 0 {
        bring_up(&mut device);
    }
    let mut queue = BlkDriverQueue::default();
    let mut messages: Vec<MsiMessage> = Vec::new();
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        match op % 9 {
            0 => {
                let offset = u64::from(input.u16()) % BAR_SIZE;
                let size = input.size(true);
                assert_fits(device.read(offset, size), size);
            }
            1 => {
                let offset = u64::from(input.u16()) % BAR_SIZE;
                let size = input.size(true);
                let value = input.value(size);
                device.write(offset, size, value);
            }
            2 => {
                let offset = input.u8().unwrap_or(0).into();
                let size = input.size(false);
                let value = input.value(size) as u32;
                device.config_write(offset, size, value);
            }
            3 | 4 => add_chain(&mut input, &mut mem, &mut queue),
            5 => write_header(&mut input, &mut mem),
            6 => {
                let at = u64::from(input.u16()) % GUEST_BYTES;
                let bytes = input.bytes(64);
                let _ = mem.write_bytes(GuestPhysAddr::new(at), bytes);
            }
            7 => bring_up(&mut device),
            _ => {
                let served = device.serve(&mut mem);
                assert!(served.requests <= REQUESTS_PER_POLL, "{served:?}");
                assert!(served.bytes < BYTES_PER_POLL + MAX_REQUEST_BYTES, "{served:?}");
                messages.clear();
                device.take_messages(&mut messages);
                assert!(messages.len() <= 2, "more messages than vectors: {messages:?}");
            }
        }
        let c = device.counters();
        assert_ne!(c.last_reject, Some(Reject::Backend), "the backend refused what the parser let through: {c:?}");
        assert!(c.bytes_read <= c.reads.saturating_mul(MAX_REQUEST_BYTES), "{c:?}");
        assert!(c.bytes_written <= c.writes.saturating_mul(MAX_REQUEST_BYTES), "{c:?}");
        let d = disk.lock();
        assert_eq!(d.bytes().len() as u64, DISK_SECTORS * 512);
        if read_only {
            assert_eq!(d.writes, 0);
        }
    }
    if read_only {
        assert!(disk.lock().bytes() == &initial[..], "a read-only disk changed");
    }
    device.counters()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_accesses() {
        super::super::Prng::new(0xb10c).drive(2000, 512, super::run);
    }

    /// The run above must reach the interesting paths, or it proves little: some
    /// inputs complete reads and writes, and some are refused.
    #[test]
    fn random_inputs_reach_reads_writes_and_refusals() {
        let mut prng = super::super::Prng::new(0xb10c);
        let (mut ok, mut refused) = (0u64, 0u64);
        let mut buf = Vec::new();
        for _ in 0..300 {
            buf.clear();
            buf.push(1);
            // Bring-up, then rounds of: header, chain, serve.
            for _ in 0..40 {
                buf.extend_from_slice(&[5]);
                buf.extend_from_slice(&prng.next().to_le_bytes());
                buf.extend_from_slice(&[3]);
                buf.extend_from_slice(&prng.next().to_le_bytes());
                buf.extend_from_slice(&prng.next().to_le_bytes());
                buf.extend_from_slice(&prng.next().to_le_bytes());
                buf.push(8);
            }
            let c = drive(&buf);
            ok += c.reads + c.writes;
            refused += c.io_errors + c.unsupported;
        }
        assert!(ok > 0 && refused > 0, "ok {ok} refused {refused}");
    }
}
