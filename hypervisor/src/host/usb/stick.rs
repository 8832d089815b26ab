//! A USB stick as a block device: SCSI commands over Bulk-Only Transport (`bot.rs`,
//! `scsi.rs`) on the device's bulk endpoints, with the BOT error handling of
//! usbmassbulk_10 §5.3 and §6.6: a stalled data stage has its halt cleared and the
//! status read anyway; a stalled status stage is read once more; an invalid status, a
//! phase error or a failed transfer gets a reset recovery (Bulk-Only Mass Storage
//! Reset, then Clear Feature HALT on both endpoints). A stick that fails recovery is
//! marked failed and sent nothing more.
#![forbid(unsafe_code)]

use bulkhead_vdisk::device::check_range;
use bulkhead_vdisk::{BlockDevice, DeviceError};

use super::bot::{self, BotDirection, Cbw, CswStatus};
use super::controller::{BOUNCE, BOUNCE_BYTES, CBW_BUFFER, CSW_BUFFER, UsbError, XhciHw};
use super::descriptors::MassStorage;
use super::device::{Bulk, ControlData, UsbDevice};
use super::scsi::{self, Capacity, Inquiry, Sense};

/// USB 2.0 §9.4: standard requests and the endpoint halt feature.
const REQ_CLEAR_FEATURE: u8 = 0x01;
const FEATURE_ENDPOINT_HALT: u16 = 0;
/// bmRequestType: class request to the interface, host to device.
const CLASS_INTERFACE_OUT: u8 = 0x21;
const STANDARD_ENDPOINT_OUT: u8 = 0x02;
/// TEST UNIT READY tries at start (a stick reports UNIT ATTENTION after reset).
const READY_TRIES: u32 = 8;

/// Why a SCSI command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScsiError {
    /// The transport failed (after recovery was tried).
    Usb(UsbError),
    /// CHECK CONDITION, with the sense data when REQUEST SENSE gave some.
    Check(Option<Sense>),
    /// The device moved fewer bytes than asked for.
    Short { wanted: usize, got: usize },
}

impl core::fmt::Display for ScsiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ScsiError::Usb(e) => write!(f, "{e}"),
            ScsiError::Check(Some(s)) => {
                write!(f, "check condition: sense key {:#x}, ASC {:#04x}, ASCQ {:#04x}", s.key, s.asc, s.ascq)
            }
            ScsiError::Check(None) => write!(f, "check condition without sense data"),
            ScsiError::Short { wanted, got } => write!(f, "{got} of {wanted} bytes moved"),
        }
    }
}

impl From<UsbError> for ScsiError {
    fn from(e: UsbError) -> Self {
        ScsiError::Usb(e)
    }
}

impl From<ScsiError> for DeviceError {
    fn from(e: ScsiError) -> Self {
        match e {
            ScsiError::Check(Some(s)) => DeviceError::Medium { status: s.status() },
            ScsiError::Check(None) | ScsiError::Short { .. } => DeviceError::Medium { status: 0 },
            ScsiError::Usb(_) => DeviceError::Timeout,
        }
    }
}

/// What the stick says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickInfo {
    pub vendor_id: u16,
    pub product_id: u16,
    pub inquiry: Inquiry,
    pub capacity: Capacity,
}

/// A USB mass-storage device (LUN 0) behind the hypervisor's xHCI driver.
#[derive(Debug)]
pub struct UsbStick<H: XhciHw> {
    dev: UsbDevice<H>,
    ms: MassStorage,
    tag: u32,
    pub info: StickInfo,
}

impl<H: XhciHw> UsbStick<H> {
    /// Starts the stick on a configured device: INQUIRY (a direct-access device),
    /// TEST UNIT READY until it is, READ CAPACITY (16 when 10 cannot say).
    pub fn open(dev: UsbDevice<H>, ms: MassStorage, ids: (u16, u16)) -> Result<Self, ScsiError> {
        let mut stick = UsbStick {
            dev,
            ms,
            tag: 0,
            info: StickInfo {
                vendor_id: ids.0,
                product_id: ids.1,
                inquiry: Inquiry {
                    device_type: 0,
                    removable: false,
                    vendor: heapless::String::new(),
                    product: heapless::String::new(),
                },
                capacity: Capacity { blocks: 0, block_size: 512 },
            },
        };
        let n = stick.command(&scsi::inquiry(), BotDirection::In, u32::from(scsi::INQUIRY_BYTES))?;
        let mut data = [0u8; scsi::INQUIRY_BYTES as usize];
        stick.dev.xhci.dma_read(BOUNCE, &mut data)?;
        let inquiry = scsi::parse_inquiry(data.get(..n).unwrap_or(&[]))
            .ok_or(ScsiError::Usb(UsbError::Device("malformed INQUIRY data")))?;
        if inquiry.device_type != 0 {
            return Err(ScsiError::Usb(UsbError::Device("not a direct-access block device")));
        }
        stick.info.inquiry = inquiry;
        let mut last = Ok(0);
        for _ in 0..READY_TRIES {
            last = stick.command(&scsi::test_unit_ready(), BotDirection::Out, 0);
            if last.is_ok() {
                break;
            }
            let settle = stick.dev.xhci.deadline(100_000);
            let _ = stick.dev.xhci.wait_until(settle, |_| false);
        }
        last?;
        stick.info.capacity = stick.read_capacity()?;
        Ok(stick)
    }

    fn read_capacity(&mut self) -> Result<Capacity, ScsiError> {
        let n = self.command(&scsi::read_capacity_10(), BotDirection::In, scsi::CAPACITY_10_BYTES as u32)?;
        let mut data = [0u8; 32];
        self.dev.xhci.dma_read(BOUNCE, &mut data)?;
        match scsi::parse_capacity_10(data.get(..n).unwrap_or(&[])) {
            Ok(c) => Ok(c),
            Err(scsi::CapacityError::NeedSixteen) => {
                let n =
                    self.command(&scsi::read_capacity_16(), BotDirection::In, u32::from(scsi::CAPACITY_16_BYTES))?;
                self.dev.xhci.dma_read(BOUNCE, &mut data)?;
                scsi::parse_capacity_16(data.get(..n).unwrap_or(&[]))
                    .map_err(|_| ScsiError::Usb(UsbError::Device("unusable READ CAPACITY(16) data")))
            }
            Err(_) => Err(ScsiError::Usb(UsbError::Device("unusable READ CAPACITY(10) data"))),
        }
    }

    /// One command with a REQUEST SENSE after a CHECK CONDITION; the data stage uses
    /// the bounce buffer. Returns the bytes moved.
    fn command(&mut self, cdb: &[u8], dir: BotDirection, len: u32) -> Result<usize, ScsiError> {
        match self.transport(cdb, dir, len)? {
            (CswStatus::Passed, moved) => Ok(moved),
            _ => {
                let sense = match self.transport(&scsi::request_sense(), BotDirection::In, u32::from(scsi::SENSE_BYTES))
                {
                    Ok((CswStatus::Passed, n)) => {
                        let mut data = [0u8; scsi::SENSE_BYTES as usize];
                        self.dev.xhci.dma_read(BOUNCE, &mut data)?;
                        scsi::parse_sense(data.get(..n).unwrap_or(&[]))
                    }
                    _ => None,
                };
                Err(ScsiError::Check(sense))
            }
        }
    }

    /// CBW, data stage, CSW (usbmassbulk_10 §5). `Passed`/`Failed` with the bytes
    /// moved; a transport error after a reset recovery.
    fn transport(&mut self, cdb: &[u8], dir: BotDirection, len: u32) -> Result<(CswStatus, usize), UsbError> {
        if self.dev.failed() {
            return Err(UsbError::Failed);
        }
        self.tag = self.tag.wrapping_add(1);
        let tag = self.tag;
        let cbw = Cbw { tag, data_length: len, direction: dir, lun: 0, cdb }.encode().ok_or(UsbError::Dma)?;
        self.dev.xhci.dma_write(CBW_BUFFER, &cbw)?;
        if let Err(e) = self.dev.bulk(Bulk::Out, CBW_BUFFER, bot::CBW_BYTES as u32) {
            return Err(self.reset_recovery(e));
        }
        let mut moved = 0;
        if len > 0 {
            let which = if dir == BotDirection::In { Bulk::In } else { Bulk::Out };
            match self.dev.bulk(which, BOUNCE, len) {
                Ok(n) => moved = n,
                // §6.7.2/6.7.3: a stalled data stage; clear it and read the status.
                Err(UsbError::Transfer(6)) => {
                    if let Err(e) = self.clear_halt(which) {
                        return Err(self.reset_recovery(e));
                    }
                }
                Err(e) => return Err(self.reset_recovery(e)),
            }
        }
        let mut got = self.dev.bulk(Bulk::In, CSW_BUFFER, bot::CSW_BYTES as u32);
        if got == Err(UsbError::Transfer(6)) {
            // §5.3.3: a stalled status stage is cleared and read once more.
            if let Err(e) = self.clear_halt(Bulk::In) {
                return Err(self.reset_recovery(e));
            }
            got = self.dev.bulk(Bulk::In, CSW_BUFFER, bot::CSW_BYTES as u32);
        }
        let n = match got {
            Ok(n) => n,
            Err(e) => return Err(self.reset_recovery(e)),
        };
        let mut raw = [0u8; bot::CSW_BYTES];
        self.dev.xhci.dma_read(CSW_BUFFER, &mut raw)?;
        match bot::decode_csw(raw.get(..n).unwrap_or(&[]), tag, len) {
            Ok(csw) if csw.status == CswStatus::PhaseError => {
                Err(self.reset_recovery(UsbError::Device("phase error in the status wrapper")))
            }
            Ok(csw) => Ok((csw.status, moved.min(len.saturating_sub(csw.residue) as usize))),
            Err(e) => {
                log::warn!(target: "usb", "stick: {e}");
                Err(self.reset_recovery(UsbError::Device("invalid status wrapper")))
            }
        }
    }

    /// Clear Feature ENDPOINT_HALT to the device for `which` (the controller side was
    /// reset by the driver already).
    fn clear_halt(&mut self, which: Bulk) -> Result<(), UsbError> {
        let address = self.dev.endpoint_address(which);
        self.dev
            .control(
                STANDARD_ENDPOINT_OUT,
                REQ_CLEAR_FEATURE,
                FEATURE_ENDPOINT_HALT,
                u16::from(address),
                ControlData::None,
            )
            .map(|_| ())
    }

    /// §5.3.4 reset recovery; returns `cause` for the caller to report. When recovery
    /// itself fails the stick is marked failed.
    fn reset_recovery(&mut self, cause: UsbError) -> UsbError {
        log::warn!(target: "usb", "stick: {cause}; reset recovery");
        let iface = u16::from(self.ms.interface);
        let result = self
            .dev
            .control(CLASS_INTERFACE_OUT, bot::REQUEST_RESET, 0, iface, ControlData::None)
            .and_then(|_| self.clear_halt(Bulk::In))
            .and_then(|_| self.clear_halt(Bulk::Out));
        if let Err(e) = result {
            log::error!(target: "usb", "stick: reset recovery failed ({e}); the stick is no longer used");
            self.dev.xhci.failed = true;
        }
        cause
    }

    /// The largest number of blocks one READ(10)/WRITE(10) moves.
    fn blocks_per_command(&self) -> u64 {
        BOUNCE_BYTES.checked_div(u64::from(self.info.capacity.block_size)).unwrap_or(1).max(1)
    }

    /// READ(10) into the bounce buffer, or WRITE(10) of `data` from it, of
    /// `len` bytes at `lba`.
    fn rw(&mut self, data: Option<&[u8]>, lba: u64, len: usize) -> Result<(), ScsiError> {
        let bs = u64::from(self.info.capacity.block_size);
        let blocks = (len as u64).checked_div(bs).unwrap_or(0);
        let lba32 = u32::try_from(lba).map_err(|_| ScsiError::Usb(UsbError::Device("LBA beyond READ(10)")))?;
        let count = u16::try_from(blocks).map_err(|_| ScsiError::Usb(UsbError::Dma))?;
        let (opcode, dir) = match data {
            Some(_) => (scsi::WRITE_10, BotDirection::Out),
            None => (scsi::READ_10, BotDirection::In),
        };
        let cdb = scsi::rw_10(opcode, lba32, count);
        // One retry after a UNIT ATTENTION (a reset or medium change the stick reports
        // once); the bounce buffer is filled again, REQUEST SENSE used it.
        let mut tries = 0u32;
        let got = loop {
            tries = tries.saturating_add(1);
            if let Some(d) = data {
                self.dev.xhci.dma_write(BOUNCE, d)?;
            }
            match self.command(&cdb, dir, len as u32) {
                Err(ScsiError::Check(Some(s))) if s.key == scsi::KEY_UNIT_ATTENTION && tries < 2 => continue,
                other => break other?,
            }
        };
        if got != len {
            return Err(ScsiError::Short { wanted: len, got });
        }
        Ok(())
    }

    pub fn is_failed(&self) -> bool {
        self.dev.failed()
    }
}

impl<H: XhciHw> BlockDevice for UsbStick<H> {
    fn block_size(&self) -> u32 {
        self.info.capacity.block_size
    }

    /// Blocks READ(10) reaches (at most 2^32).
    fn blocks(&self) -> u64 {
        self.info.capacity.blocks.min(1 << 32)
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range(lba, buf.len(), self.block_size(), self.blocks())?;
        let chunk = self.blocks_per_command().saturating_mul(u64::from(self.block_size())) as usize;
        let mut at = lba;
        for part in buf.chunks_mut(chunk.max(1)) {
            self.rw(None, at, part.len())?;
            self.dev.xhci.dma_read(BOUNCE, part).map_err(ScsiError::Usb)?;
            at = at.saturating_add(self.blocks_per_command());
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        check_range(lba, buf.len(), self.block_size(), self.blocks())?;
        let chunk = self.blocks_per_command().saturating_mul(u64::from(self.block_size())) as usize;
        let mut at = lba;
        for part in buf.chunks(chunk.max(1)) {
            self.rw(Some(part), at, part.len())?;
            at = at.saturating_add(self.blocks_per_command());
        }
        Ok(())
    }

    /// SYNCHRONIZE CACHE(10); a stick that refuses it (ILLEGAL REQUEST: no cache to
    /// flush) has nothing to flush.
    fn flush(&mut self) -> Result<(), DeviceError> {
        match self.command(&scsi::synchronize_cache_10(), BotDirection::Out, 0) {
            Ok(_) => Ok(()),
            Err(ScsiError::Check(Some(s))) if s.key == 0x5 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
