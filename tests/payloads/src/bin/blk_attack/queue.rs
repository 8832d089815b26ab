//! A split virtqueue (VIRTIO 1.2 §2.7) written by hand, so that the payload can put
//! into it what no real driver would: descriptor loops, indices past the table,
//! indirect descriptors, an available index far ahead. Rings and buffers live in one
//! static, page-aligned arena (identity-mapped: addresses are physical addresses).

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{Ordering, fence};

use payloads::hypercall;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

/// Entries in the queue (a power of two, at most the device's maximum).
pub const SIZE: u16 = 16;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// VIRTIO_F_VERSION_1 (§6).
const VERSION_1: u64 = 1 << 32;

const PAGE: usize = 4096;
const DESC_PAGE: usize = 0;
const AVAIL_PAGE: usize = 1;
const USED_PAGE: usize = 2;
/// The request header (offset 0) and the status byte (offset [`STATUS_OFFSET`]).
const HEADER_PAGE: usize = 3;
const STATUS_OFFSET: usize = 64;
const DATA_PAGE: usize = 4;
/// Data buffer pages: 64 KiB, twice the device's largest segment.
pub const DATA_BYTES: usize = 16 * PAGE;
const PAGES: usize = DATA_PAGE + DATA_BYTES / PAGE;

#[repr(C, align(4096))]
struct Arena([u8; PAGES * PAGE]);

static mut ARENA: Arena = Arena([0; PAGES * PAGE]);

fn base() -> *mut u8 {
    (&raw mut ARENA).cast::<u8>()
}

fn page(n: usize) -> *mut u8 {
    // SAFETY: n < PAGES at every call site: the pointer stays inside ARENA.
    unsafe { base().add(n * PAGE) }
}

/// Guest-physical address of the header, the status byte and the data buffer.
pub fn header_addr() -> u64 {
    page(HEADER_PAGE) as u64
}
pub fn status_addr() -> u64 {
    header_addr() + STATUS_OFFSET as u64
}
pub fn data_addr() -> u64 {
    page(DATA_PAGE) as u64
}

/// One descriptor as it is written into the table.
#[derive(Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// A buffer of a well-linked chain.
#[derive(Clone, Copy)]
pub struct Seg {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// How a submission ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The device put the chain in the used ring; the status byte it left.
    Completed { status: u8 },
    /// Nothing came back, and the device asks to be reset.
    NeedsReset,
    /// Nothing came back, and the device does not ask for a reset.
    Silent,
}

pub struct Queue {
    transport: PciTransport,
    next_avail: u16,
    last_used: u16,
}

impl Queue {
    /// Resets the device, negotiates VERSION_1 only and enables queue 0.
    pub fn new(transport: PciTransport) -> Self {
        let mut queue = Queue { transport, next_avail: 0, last_used: 0 };
        queue.reset();
        queue
    }

    /// Device reset and the whole initialisation again (§3.1.1), with empty rings.
    pub fn reset(&mut self) {
        let t = &mut self.transport;
        t.set_status(DeviceStatus::empty());
        for _ in 0..1000 {
            if t.get_status().is_empty() {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: the ring pages are this queue's, and the device was just reset, so
        // it no longer reads or writes them.
        unsafe { core::ptr::write_bytes(base(), 0, DATA_PAGE * PAGE) };
        t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = t.read_device_features();
        t.write_driver_features(offered & VERSION_1);
        t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
        t.queue_set(0, u32::from(SIZE), page(DESC_PAGE) as u64, page(AVAIL_PAGE) as u64, page(USED_PAGE) as u64);
        t.finish_init();
        self.next_avail = 0;
        self.last_used = 0;
    }

    /// The disk's size in 512-byte sectors (config offset 0, §5.2.4), read as two
    /// 32-bit halves: VirtIO only promises 4-byte alignment of the config space.
    pub fn capacity(&self) -> u64 {
        let half = |at| self.transport.read_config_space::<u32>(at).map_or(0, u64::from);
        half(0) | half(4) << 32
    }

    pub fn needs_reset(&self) -> bool {
        self.transport.get_status().contains(DeviceStatus::DEVICE_NEEDS_RESET)
    }

    /// Submits `segments` as one chain starting at descriptor 0, linked in order.
    pub fn submit(&mut self, segments: &[Seg]) -> Outcome {
        let mut descs = [Desc { addr: 0, len: 0, flags: 0, next: 0 }; SIZE as usize];
        let n = segments.len().min(descs.len());
        for (i, seg) in segments.iter().take(n).enumerate() {
            let mut flags = if seg.writable { F_WRITE } else { 0 };
            if i + 1 < n {
                flags |= F_NEXT;
            }
            descs[i] = Desc { addr: seg.addr, len: seg.len, flags, next: i as u16 + 1 };
        }
        self.submit_raw(&descs[..n], 0, 1)
    }

    /// Writes `descs` into the table from index 0, offers `head`, and moves the
    /// available index by `advance` (1 for an honest driver).
    pub fn submit_raw(&mut self, descs: &[Desc], head: u16, advance: u16) -> Outcome {
        // SAFETY: the status byte lies inside the header page of ARENA.
        unsafe { write_volatile(page(HEADER_PAGE).add(STATUS_OFFSET), 0xFF) };
        for (i, d) in descs.iter().take(SIZE as usize).enumerate() {
            // SAFETY: i < SIZE, and a descriptor is 16 bytes: inside the table page.
            unsafe {
                let at = page(DESC_PAGE).add(i * 16);
                write_volatile(at.cast::<u64>(), d.addr);
                write_volatile(at.add(8).cast::<u32>(), d.len);
                write_volatile(at.add(12).cast::<u16>(), d.flags);
                write_volatile(at.add(14).cast::<u16>(), d.next);
            }
        }
        let slot = usize::from(self.next_avail % SIZE);
        // SAFETY: the available ring (flags, idx, ring[SIZE]) lies inside its page.
        unsafe {
            write_volatile(page(AVAIL_PAGE).add(4 + 2 * slot).cast::<u16>(), head);
            self.next_avail = self.next_avail.wrapping_add(advance);
            fence(Ordering::SeqCst);
            write_volatile(page(AVAIL_PAGE).add(2).cast::<u16>(), self.next_avail);
        }
        fence(Ordering::SeqCst);
        self.transport.notify(0);
        self.wait()
    }

    /// Polls the used ring for one completion, sleeping between looks.
    fn wait(&mut self) -> Outcome {
        for _ in 0..200 {
            // SAFETY: the used ring's idx lies inside its page.
            let used = unsafe { read_volatile(page(USED_PAGE).add(2).cast::<u16>()) };
            if used != self.last_used {
                self.last_used = self.last_used.wrapping_add(1);
                fence(Ordering::SeqCst);
                // SAFETY: as above, the status byte.
                let status = unsafe { read_volatile(page(HEADER_PAGE).add(STATUS_OFFSET)) };
                return Outcome::Completed { status };
            }
            if self.needs_reset() {
                return Outcome::NeedsReset;
            }
            hypercall::call(bulkhead_abi::hypercall::SLEEP, 100, 0, 0, 0);
        }
        Outcome::Silent
    }

    /// The data buffer, to fill or to check.
    pub fn data(&mut self) -> &mut [u8] {
        // SAFETY: the data pages are the last DATA_BYTES of ARENA; the device writes
        // them only while a request is in flight, and `wait` returned.
        unsafe { core::slice::from_raw_parts_mut(page(DATA_PAGE), DATA_BYTES) }
    }

    /// Writes the 16-byte request header (§5.2.6).
    pub fn set_header(&mut self, req_type: u32, sector: u64) {
        let h = page(HEADER_PAGE);
        // SAFETY: the header's 16 bytes lie at the start of its page.
        unsafe {
            write_volatile(h.cast::<u32>(), req_type);
            write_volatile(h.add(4).cast::<u32>(), 0);
            write_volatile(h.add(8).cast::<u64>(), sector);
        }
    }
}
