//! Event log entries (AMD IOMMU spec §2.5, "Event Logging"): 128 bits, DeviceID in
//! bits 15:0, flags in 59:48 (§2.5.3 IO_PAGE_FAULT), EventCode in 63:60, address in
//! the second quadword.
#![forbid(unsafe_code)]

use crate::host::iommu::{FaultKind, IommuFault};
use crate::hw::Bdf;

/// Event codes (§2.5, Table 45 "Event Log Types").
pub mod code {
    pub const ILLEGAL_DEV_TABLE_ENTRY: u8 = 0x1;
    pub const IO_PAGE_FAULT: u8 = 0x2;
    pub const DEV_TAB_HARDWARE_ERROR: u8 = 0x3;
    pub const PAGE_TAB_HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_COMMAND_ERROR: u8 = 0x5;
    pub const COMMAND_HARDWARE_ERROR: u8 = 0x6;
    pub const IOTLB_INV_TIMEOUT: u8 = 0x7;
    pub const INVALID_DEVICE_REQUEST: u8 = 0x8;
}

/// IO_PAGE_FAULT flags (bits 59:48, §2.5.3): I = interrupt request, PR = the page
/// was present (permission fault), RW = write.
const FLAG_I: u64 = 1 << (48 + 3);
const FLAG_PR: u64 = 1 << (48 + 4);
const FLAG_RW: u64 = 1 << (48 + 5);

/// Decodes one event log entry of unit `unit` (on PCI segment `segment`). Every
/// entry is a fault of some kind.
pub fn decode_event(unit: usize, segment: u16, lo: u64, hi: u64) -> IommuFault {
    let event = (lo >> 60) as u8;
    let devid = lo as u16;
    let kind = match event {
        code::IO_PAGE_FAULT if lo & FLAG_I != 0 => FaultKind::Interrupt,
        code::IO_PAGE_FAULT if lo & FLAG_RW != 0 => FaultKind::DmaWrite,
        code::IO_PAGE_FAULT => FaultKind::DmaRead,
        _ => FaultKind::Other,
    };
    let reason = match event {
        code::ILLEGAL_DEV_TABLE_ENTRY => "illegal device table entry",
        code::IO_PAGE_FAULT if lo & FLAG_PR != 0 => "I/O page fault (permission)",
        code::IO_PAGE_FAULT => "I/O page fault (not present)",
        code::DEV_TAB_HARDWARE_ERROR => "device table hardware error",
        code::PAGE_TAB_HARDWARE_ERROR => "page table hardware error",
        code::ILLEGAL_COMMAND_ERROR => "illegal command",
        code::COMMAND_HARDWARE_ERROR => "command buffer hardware error",
        code::IOTLB_INV_TIMEOUT => "IOTLB invalidation timeout",
        code::INVALID_DEVICE_REQUEST => "invalid device request",
        _ => "unknown event",
    };
    IommuFault {
        unit,
        bdf: Bdf::new(segment, (devid >> 8) as u8, ((devid >> 3) & 0x1f) as u8, (devid & 7) as u8),
        address: hi,
        code: u16::from(event),
        reason,
        kind,
    }
}
