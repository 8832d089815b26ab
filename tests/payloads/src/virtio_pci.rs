//! A VM's virtual PCI bus for payloads that drive virtio devices with virtio-drivers:
//! configuration mechanism #1 and a DMA "HAL" over a static arena (the payload's memory
//! is identity-mapped, so virtual and physical addresses are equal).
//!
//! Not part of the library: each virtio payload includes it by path, so only they
//! link virtio-drivers (which, with its `alloc` feature on in the workspace, needs
//! the global allocator only they declare).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

const ARENA_PAGES: usize = 32;

#[repr(C, align(4096))]
struct Arena([u8; ARENA_PAGES * PAGE_SIZE]);

static mut ARENA: Arena = Arena([0; ARENA_PAGES * PAGE_SIZE]);
static NEXT_PAGE: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
pub struct ArenaHal;

// SAFETY: dma_alloc hands out distinct, zeroed, page-aligned pages of a static arena
// that is never reused; identity mapping makes virtual and physical addresses equal.
unsafe impl Hal for ArenaHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let first = NEXT_PAGE.fetch_add(pages, Ordering::Relaxed);
        assert!(first + pages <= ARENA_PAGES, "DMA arena exhausted");
        // SAFETY: the pages [first, first + pages) are handed out once, inside ARENA.
        let ptr = unsafe { (&raw mut ARENA).cast::<u8>().add(first * PAGE_SIZE) };
        (ptr as PhysAddr, NonNull::new(ptr).expect("the arena is not at address 0"))
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("a BAR is not at address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Configuration mechanism #1 (ports 0xCF8/0xCFC) of the VM's virtual PCI bus.
#[derive(Debug)]
pub struct Ports;

fn address(f: DeviceFunction, offset: u8) -> u32 {
    1 << 31 | u32::from(f.bus) << 16 | u32::from(f.device) << 11 | u32::from(f.function) << 8 | u32::from(offset & 0xFC)
}

impl ConfigurationAccess for Ports {
    fn read_word(&self, f: DeviceFunction, offset: u8) -> u32 {
        let value: u32;
        // SAFETY: the VM's own configuration ports; nothing else uses them.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") 0xCF8u16, in("eax") address(f, offset), options(nomem, nostack));
            core::arch::asm!("in eax, dx", in("dx") 0xCFCu16, out("eax") value, options(nomem, nostack));
        }
        value
    }

    fn write_word(&mut self, f: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: as in `read_word`.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") 0xCF8u16, in("eax") address(f, offset), options(nomem, nostack));
            core::arch::asm!("out dx, eax", in("dx") 0xCFCu16, in("eax") data, options(nomem, nostack));
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        Ports
    }
}

/// The transport of the first virtio function of type `kind` on bus 0, with memory
/// decoding and bus mastering on.
pub fn open(kind: DeviceType) -> Option<PciTransport> {
    let mut root = PciRoot::new(Ports);
    let (function, _) = root.enumerate_bus(0).find(|(_, info)| virtio_device_type(info) == Some(kind))?;
    root.set_command(function, Command::MEMORY_SPACE | Command::BUS_MASTER);
    PciTransport::new::<ArenaHal, _>(&mut root, function).ok()
}
