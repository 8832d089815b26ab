//! A device model shared between a bus and the rest of the hypervisor.
//!
//! Buses own their devices as boxed trait objects, but the VM also needs to reach some
//! models directly: to push serial input, inject scancodes, read the LED state, or to
//! register one PCI host on both the port bus (0xCF8) and the MMIO bus (ECAM).
//! `Shared<T>` is a cloneable handle whose clones can all be registered or kept.
#![forbid(unsafe_code)]

use alloc::sync::Arc;

use super::bus::{MmioDevice, PortDevice};
use crate::hw::AccessSize;

/// A device behind a lock; clones refer to the same device.
#[derive(Debug, Default)]
pub struct Shared<T>(Arc<spin::Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Shared<T> {
    pub fn new(device: T) -> Self {
        Shared(Arc::new(spin::Mutex::new(device)))
    }

    /// Locks the device. Device models never call back into a bus, so holding this
    /// while the device is also reached through a bus cannot deadlock unless the caller
    /// itself re-enters the bus.
    pub fn lock(&self) -> spin::MutexGuard<'_, T> {
        self.0.lock()
    }
}

impl<T: PortDevice> PortDevice for Shared<T> {
    fn read(&mut self, offset: u16, size: AccessSize) -> u32 {
        self.0.lock().read(offset, size)
    }
    fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
        self.0.lock().write(offset, size, value)
    }
}

impl<T: MmioDevice> MmioDevice for Shared<T> {
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        self.0.lock().read(offset, size)
    }
    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        self.0.lock().write(offset, size, value)
    }
}

impl<T: crate::devices::vpci::host_bridge::VirtualPciFunction> crate::devices::vpci::host_bridge::VirtualPciFunction
    for Shared<T>
{
    fn config_read(&mut self, offset: u16, size: AccessSize) -> u32 {
        self.0.lock().config_read(offset, size)
    }
    fn config_write(&mut self, offset: u16, size: AccessSize, value: u32) {
        self.0.lock().config_write(offset, size, value)
    }
    fn bars(&self) -> alloc::vec::Vec<crate::devices::vpci::host_bridge::BarRegion> {
        self.0.lock().bars()
    }
    fn settle(&mut self) {
        self.0.lock().settle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::{BusRange, MemBus, MmioBus, PioBus, PortBus};
    use crate::devices::layout;
    use crate::devices::scratch::Scratch;
    use crate::devices::vpci::host_bridge::VpciHost;
    use crate::memory::addr::GuestPhysAddr;
    use alloc::boxed::Box;

    #[test]
    fn one_pci_host_on_both_buses() {
        let host = Shared::new(VpciHost::new(layout::PCI_ECAM_BUSES));
        let mut pio = PioBus::new("pio");
        pio.insert_ports(layout::PCI_CONFIG_ADDRESS_PORT, layout::PCI_CONFIG_PORT_COUNT, Box::new(host.clone()))
            .unwrap();
        let mut mmio = MemBus::new("mmio");
        mmio.insert(BusRange::new(layout::PCI_ECAM_BASE, layout::PCI_ECAM_LEN).unwrap(), Box::new(host.clone()))
            .unwrap();
        pio.write(layout::PCI_CONFIG_ADDRESS_PORT, AccessSize::Dword, 0x8000_003C);
        pio.write(layout::PCI_CONFIG_DATA_PORT, AccessSize::Byte, 9);
        assert_eq!(mmio.read(GuestPhysAddr::new(layout::PCI_ECAM_BASE + 0x3C), AccessSize::Byte), 9);
        assert_eq!(host.lock().ecam_len(), layout::PCI_ECAM_LEN);
    }

    #[test]
    fn the_vm_keeps_a_handle() {
        let scratch = Shared::new(Scratch::new());
        let mut mmio = MemBus::new("mmio");
        mmio.insert(
            BusRange::new(layout::SCRATCH_MMIO_BASE, layout::SCRATCH_MMIO_LEN).unwrap(),
            Box::new(scratch.clone()),
        )
        .unwrap();
        mmio.write(GuestPhysAddr::new(layout::SCRATCH_MMIO_BASE + 8), AccessSize::Dword, 0x1234);
        assert_eq!(scratch.lock().read(8, AccessSize::Dword), 0x1234);
    }

    #[test]
    fn every_model_can_move_between_cpus() {
        fn send_and_sync<T: Send>()
        where
            Shared<T>: Send + Sync,
        {
        }
        send_and_sync::<crate::devices::uart16550::Uart16550>();
        send_and_sync::<crate::devices::i8042::I8042>();
        send_and_sync::<crate::devices::rtc::Rtc>();
        send_and_sync::<VpciHost>();
        send_and_sync::<crate::devices::power::AcpiPowerPorts>();
        send_and_sync::<Scratch>();
    }
}
