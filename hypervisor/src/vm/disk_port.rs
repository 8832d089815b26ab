//! A VM's virtual disk: its virtio-blk PCI function (00:18.0), the function's BAR at a
//! fixed place below the link ports' BARs at the top of the 32-bit PCI window, and the
//! disk behind it. After an exit that rang the doorbell the device carries out the
//! waiting requests against the VM's own memory (within the per-call bounds of
//! `blk_serve`); the scheduler serves what the bound left over before the VM's next
//! turn and delivers the device's MSI-X messages. The disk outlives VM restarts; it
//! goes with the VM.
#![forbid(unsafe_code)]

use alloc::boxed::Box;

use crate::devices::bus::{BusError, BusRange, MemBus, MmioDevice};
use crate::devices::layout::PCI_MMIO32_END;
use crate::devices::shared::Shared;
use crate::devices::virtio::blk::VirtioBlk;
use crate::devices::virtio::blk_backend::{BlockBackend, HostRamBackend, ID_BYTES, SECTOR_SIZE};
use crate::devices::virtio::blk_serve::Served;
use crate::devices::virtio::pci_transport::BAR_SIZE;
use crate::devices::vpci::config_space::VpciError;
use crate::devices::vpci::host_bridge::VpciHost;
use crate::hw::{AccessSize, Bdf};
use crate::log_limit::Source;
use crate::memory::addr::PAGE_SIZE;
use crate::memory::direct_map::DirectMap;
use crate::memory::guest::{GuestMemory, GuestMemoryMap};
use crate::storage::disks::{self, DiskChoice, Unavailable};
use crate::vm::config::{Kind, MAX_LINKS_PER_VM, VmConfig};
use crate::vm::host_blocks::{HostBlocks, PhysBlocks};
use crate::vm::instance::VmError;
use crate::vm::platform::Platform;

/// The PCI device number of a VM's disk.
pub const DISK_SLOT: u8 = 0x18;

/// Where the disk's BAR sits: right below the BARs of the most link ports a Linux VM
/// can have (the most any VM can have).
pub const DISK_BAR: u64 = PCI_MMIO32_END - BAR_SIZE * (MAX_LINKS_PER_VM as u64 + 1);
// Link port i's BAR is at PCI_MMIO32_END - BAR_SIZE * (i + 1): the disk's ends where
// the lowest one starts, inside the window.
const _: () = assert!(DISK_BAR + BAR_SIZE == PCI_MMIO32_END - BAR_SIZE * MAX_LINKS_PER_VM as u64);
const _: () = assert!(DISK_BAR >= crate::devices::layout::PCI_MMIO32_START);

/// Why a VM's virtio-blk function could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskPortError {
    Pci(VpciError),
    Bus(BusError),
    /// The BAR's place does not make a bus range.
    BarPlace(u64),
}

impl core::fmt::Display for DiskPortError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DiskPortError::Pci(e) => write!(f, "virtio-blk function: {e:?}"),
            DiskPortError::Bus(e) => write!(f, "virtio-blk BAR: {e:?}"),
            DiskPortError::BarPlace(at) => write!(f, "virtio-blk BAR: no room at {at:#x}"),
        }
    }
}

/// The serial number of VM `vm`'s disk: `bulkhead-vmN`, NUL-padded to 20 bytes.
pub fn serial(vm: u32) -> [u8; ID_BYTES] {
    let mut id = [0u8; ID_BYTES];
    let mut text: heapless::String<ID_BYTES> = heapless::String::new();
    let _ = core::fmt::write(&mut text, format_args!("bulkhead-vm{vm}"));
    for (slot, b) in id.iter_mut().zip(text.bytes()) {
        *slot = b;
    }
    id
}

/// Largest disk kept in host RAM (on a machine without a data partition): the RAM is
/// taken from what VMs can have.
pub const MAX_RAM_DISK_MIB: u64 = 4096;

/// What a VM's configuration gets for its disk.
#[derive(Debug)]
pub enum VmDisk {
    None,
    Port(DiskPort),
    /// Its disk could not be unlocked or opened: the VM does not start.
    Unavailable(Unavailable),
}

/// The disk of VM `id` if its configuration asks for one (Linux and payload VMs): its encrypted
/// volume on the data partition, or, on a machine without one, a block of host RAM
/// taken into the VM's `blocks` (zeroed by the allocator, freed with the VM, kept
/// across its restarts), `size_bytes` rounded up to whole pages.
pub fn disk_for<E>(
    id: u32,
    config: &VmConfig,
    map: &GuestMemoryMap,
    blocks: &mut HostBlocks,
) -> Result<VmDisk, VmError<E>> {
    let Some(disk) = config.disk else { return Ok(VmDisk::None) };
    if !matches!(config.kind, Kind::Linux | Kind::Payload) {
        log::warn!(target: "vblk", "vm {id} ({}): a disk is only given to Linux and payload VMs", config.name);
        return Ok(VmDisk::None);
    }
    let (backend, where_): (Box<dyn BlockBackend + Send>, &str) = match disks::take(&config.name, serial(id)) {
        DiskChoice::Volume(volume) => (volume, "on the data partition"),
        DiskChoice::Unavailable(why) => return Ok(VmDisk::Unavailable(why)),
        DiskChoice::Ram if disk.size_bytes > MAX_RAM_DISK_MIB << 20 => {
            log::error!(
                target: "vblk",
                "vm {id} ({}): no data partition, and its {} MiB disk is too large for host RAM (at most {MAX_RAM_DISK_MIB} MiB)",
                config.name,
                disk.size_bytes >> 20
            );
            return Ok(VmDisk::Unavailable(Unavailable::Failed));
        }
        DiskChoice::Ram => {
            let bytes = disk
                .size_bytes
                .max(PAGE_SIZE)
                .checked_next_multiple_of(PAGE_SIZE)
                .ok_or(VmError::OutOfMemory("virtual disk"))?;
            let base = blocks.take(&mut PhysBlocks, bytes, PAGE_SIZE, "virtual disk")?;
            let backend = HostRamBackend::new(DirectMap, base, bytes / SECTOR_SIZE, disk.read_only, serial(id));
            (Box::new(backend), "in host RAM, lost at power-off")
        }
    };
    let mib = backend.capacity_sectors().saturating_mul(SECTOR_SIZE) >> 20;
    let read_only = backend.read_only();
    let port = DiskPort::new(id, backend, map.clone()).map_err(VmError::Disk)?;
    log::info!(
        target: "vblk",
        "vm {id} ({}): virtio-blk disk of {mib} MiB{} at 00:{DISK_SLOT:02x}.0, {where_}",
        config.name,
        if read_only { ", read-only" } else { "" }
    );
    Ok(VmDisk::Port(port))
}

/// One VM's disk device and the VM's memory map (the only memory its requests reach).
#[derive(Debug)]
pub struct DiskPort {
    pub device: Shared<VirtioBlk>,
    map: GuestMemoryMap,
    vm_id: u32,
}

impl DiskPort {
    pub fn new(vm_id: u32, backend: Box<dyn BlockBackend + Send>, map: GuestMemoryMap) -> Result<Self, DiskPortError> {
        let device = VirtioBlk::new(backend).map_err(DiskPortError::Pci)?;
        Ok(DiskPort { device: Shared::new(device), map, vm_id })
    }

    pub fn bdf(&self) -> Bdf {
        Bdf::masked(0, DISK_SLOT, 0)
    }

    /// On every VM start: the device as after power-on (the disk as it was), its BAR
    /// placed, the function on the VM's PCI bus and the BAR on its MMIO bus.
    pub fn attach(&self, pci: &mut VpciHost, mmio: &mut MemBus) -> Result<(), DiskPortError> {
        self.device.lock().power_on(DISK_BAR).map_err(DiskPortError::Pci)?;
        pci.add_function(self.bdf(), Box::new(self.device.clone())).map_err(DiskPortError::Pci)?;
        let range = BusRange::new(DISK_BAR, BAR_SIZE).ok_or(DiskPortError::BarPlace(DISK_BAR))?;
        mmio.insert(range, Box::new(DiskBar { device: self.device.clone() })).map_err(DiskPortError::Bus)
    }

    /// Its VM stopped: the device lets go of the VM's ring.
    pub fn stop(&self) {
        self.device.lock().reset_by_host();
    }

    /// Carries out waiting requests if the driver rang the doorbell or an earlier call
    /// left some.
    pub fn after_exit(&self) {
        let mut device = self.device.lock();
        if device.take_notified() || device.has_leftover() {
            self.serve(&mut device);
        }
    }

    /// Carries out what an earlier call left over.
    pub fn poll_leftover(&self) {
        let mut device = self.device.lock();
        if device.has_leftover() {
            self.serve(&mut device);
        }
    }

    fn serve(&self, device: &mut VirtioBlk) -> Served {
        let mut memory = GuestMemory::new(&self.map, DirectMap);
        let served = device.serve(&mut memory);
        if let Some(error) = device.take_error() {
            let vm = self.vm_id;
            crate::limited!(
                Source::Emulation,
                vm,
                log::warn!(target: "vblk", "vm {vm}: virtio-blk needs reset: {error:?}")
            );
        }
        served
    }

    /// Raises the device's ready MSI-X messages in the VM; returns how many were accepted.
    pub fn deliver(&self, vm: u32, platform: &mut Platform, delivered: &mut u64) -> usize {
        let mut messages = alloc::vec::Vec::new();
        let intx = {
            let mut device = self.device.lock();
            device.take_messages(&mut messages);
            device.intx_asserted()
        };
        crate::vm::net_port::deliver_messages(&messages, intx, vm, platform, delivered)
    }
}

/// The BAR on the VM's MMIO bus at [`DISK_BAR`]. If the guest moves the BAR or turns
/// memory decoding off, the old place reads all-ones and drops writes.
struct DiskBar {
    device: Shared<VirtioBlk>,
}

impl MmioDevice for DiskBar {
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        let mut device = self.device.lock();
        if device.transport().bar_decoded_at() == Some(DISK_BAR) {
            MmioDevice::read(&mut *device, offset, size)
        } else {
            size.mask()
        }
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        let mut device = self.device.lock();
        if device.transport().bar_decoded_at() == Some(DISK_BAR) {
            MmioDevice::write(&mut *device, offset, size, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_name_the_vm() {
        assert_eq!(&serial(3), b"bulkhead-vm3\0\0\0\0\0\0\0\0");
        assert_eq!(&serial(12)[..14], b"bulkhead-vm12\0");
    }
}
