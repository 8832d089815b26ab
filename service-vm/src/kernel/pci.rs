//! PCI configuration space through ports 0xCF8/0xCFC (configuration mechanism #1), for
//! virtio-drivers' PCI transport and the uplink's BAR.

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

const ADDRESS: u16 = 0xCF8;
const DATA: u16 = 0xCFC;

/// The VM's own configuration ports (the hypervisor's virtual PCI bus).
#[derive(Debug)]
pub struct PortConfigAccess;

fn address(f: DeviceFunction, offset: u8) -> u32 {
    1 << 31 | u32::from(f.bus) << 16 | u32::from(f.device) << 11 | u32::from(f.function) << 8 | u32::from(offset & 0xFC)
}

impl ConfigurationAccess for PortConfigAccess {
    fn read_word(&self, f: DeviceFunction, offset: u8) -> u32 {
        let value: u32;
        // SAFETY: the ports belong to this VM's virtual PCI host; the address/data pair
        // is used by this kernel alone, one access at a time (no interrupts touch it).
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") ADDRESS, in("eax") address(f, offset), options(nomem, nostack));
            core::arch::asm!("in eax, dx", in("dx") DATA, out("eax") value, options(nomem, nostack));
        }
        value
    }

    fn write_word(&mut self, f: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: as in `read_word`.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") ADDRESS, in("eax") address(f, offset), options(nomem, nostack));
            core::arch::asm!("out dx, eax", in("dx") DATA, in("eax") data, options(nomem, nostack));
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortConfigAccess
    }
}
