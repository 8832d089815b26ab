//! The drive the data partition lies on: the laptop's NVMe namespace or the USB stick
//! the machine booted from. Both are `BlockDevice`s; this enum lets the rest of storage
//! (the GPT search, the disk store, the self-test) take either.
#![forbid(unsafe_code)]

use bulkhead_vdisk::{BlockDevice, DeviceError, DmaSegment};

use crate::host::nvme::{HostNvmeHw, NvmeNamespace};
use crate::host::usb::{HostXhciHw, UsbStick};

#[derive(Debug)]
pub enum DataDrive {
    Nvme(NvmeNamespace<HostNvmeHw>),
    UsbStick(UsbStick<HostXhciHw>),
}

impl DataDrive {
    /// Where the drive is, for the log and the boot screen.
    pub fn kind(&self) -> &'static str {
        match self {
            DataDrive::Nvme(_) => "NVMe drive",
            DataDrive::UsbStick(_) => "USB stick",
        }
    }
}

impl BlockDevice for DataDrive {
    fn block_size(&self) -> u32 {
        match self {
            DataDrive::Nvme(d) => d.block_size(),
            DataDrive::UsbStick(d) => d.block_size(),
        }
    }

    fn blocks(&self) -> u64 {
        match self {
            DataDrive::Nvme(d) => d.blocks(),
            DataDrive::UsbStick(d) => d.blocks(),
        }
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        match self {
            DataDrive::Nvme(d) => d.read(lba, buf),
            DataDrive::UsbStick(d) => d.read(lba, buf),
        }
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        match self {
            DataDrive::Nvme(d) => d.write(lba, buf),
            DataDrive::UsbStick(d) => d.write(lba, buf),
        }
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        match self {
            DataDrive::Nvme(d) => d.flush(),
            DataDrive::UsbStick(d) => d.flush(),
        }
    }

    // Forwarded so each drive keeps its own in-place path (the NVMe driver's bounce
    // region); the trait's defaults would add a copy through a buffer of their own.
    fn read_with(
        &mut self,
        lba: u64,
        len: usize,
        take: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        match self {
            DataDrive::Nvme(d) => d.read_with(lba, len, take),
            DataDrive::UsbStick(d) => d.read_with(lba, len, take),
        }
    }

    fn write_with(
        &mut self,
        lba: u64,
        len: usize,
        fill: &mut dyn FnMut(usize, &mut [u8]) -> bool,
    ) -> Result<(), DeviceError> {
        match self {
            DataDrive::Nvme(d) => d.write_with(lba, len, fill),
            DataDrive::UsbStick(d) => d.write_with(lba, len, fill),
        }
    }

    // The NVMe drive moves data straight to and from the caller's memory; the stick
    // has no such path (its transfers go through the xHCI driver's bounce buffer).
    fn read_direct(&mut self, lba: u64, segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        match self {
            DataDrive::Nvme(d) => d.read_direct(lba, segments),
            DataDrive::UsbStick(_) => None,
        }
    }

    fn write_direct(&mut self, lba: u64, segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        match self {
            DataDrive::Nvme(d) => d.write_direct(lba, segments),
            DataDrive::UsbStick(_) => None,
        }
    }
}
