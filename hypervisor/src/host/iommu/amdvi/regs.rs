//! AMD-Vi MMIO registers (AMD I/O Virtualization Technology (IOMMU) Specification,
//! pub. 48882 rev 3.x, §3.4 "IOMMU MMIO Registers"). The two register groups are
//! `#[repr(C)]` images whose layout is checked against the spec at compile time.
#![forbid(unsafe_code)]

use core::mem::{offset_of, size_of};

/// MMIO offsets 0000h-003Fh (§3.4.1-3.4.6).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AmdViControlBlock {
    /// §3.4.1 Device Table Base Address: bits 51:12 base, 8:0 size in 4 KiB - 1.
    pub device_table_base: u64,
    /// §3.4.2 Command Buffer Base Address: bits 51:12 base, 59:56 ComLen.
    pub command_buffer_base: u64,
    /// §3.4.3 Event Log Base Address: bits 51:12 base, 59:56 EventLen.
    pub event_log_base: u64,
    /// §3.4.4 IOMMU Control.
    pub control: u64,
    /// §3.4.5 Exclusion Range Base / Limit.
    pub exclusion_base: u64,
    pub exclusion_limit: u64,
    /// §3.4.6 Extended Feature Register.
    pub extended_features: u64,
    /// PPR Log Base Address.
    pub ppr_log_base: u64,
}

/// MMIO offsets 2000h-203Fh (§3.4.9-3.4.11): ring pointers and status.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AmdViRingBlock {
    pub command_head: u64,
    pub command_tail: u64,
    pub event_head: u64,
    pub event_tail: u64,
    /// §3.4.11 IOMMU Status.
    pub status: u64,
    _rsvd: u64,
    pub ppr_head: u64,
    pub ppr_tail: u64,
}

/// Where [`AmdViRingBlock`] starts.
pub const RING_BLOCK: usize = 0x2000;

const _: () = {
    assert!(offset_of!(AmdViControlBlock, device_table_base) == 0x00);
    assert!(offset_of!(AmdViControlBlock, command_buffer_base) == 0x08);
    assert!(offset_of!(AmdViControlBlock, event_log_base) == 0x10);
    assert!(offset_of!(AmdViControlBlock, control) == 0x18);
    assert!(offset_of!(AmdViControlBlock, exclusion_base) == 0x20);
    assert!(offset_of!(AmdViControlBlock, exclusion_limit) == 0x28);
    assert!(offset_of!(AmdViControlBlock, extended_features) == 0x30);
    assert!(offset_of!(AmdViControlBlock, ppr_log_base) == 0x38);
    assert!(size_of::<AmdViControlBlock>() == 0x40);
    assert!(offset_of!(AmdViRingBlock, command_head) == 0x2000 - RING_BLOCK);
    assert!(offset_of!(AmdViRingBlock, command_tail) == 0x2008 - RING_BLOCK);
    assert!(offset_of!(AmdViRingBlock, event_head) == 0x2010 - RING_BLOCK);
    assert!(offset_of!(AmdViRingBlock, event_tail) == 0x2018 - RING_BLOCK);
    assert!(offset_of!(AmdViRingBlock, status) == 0x2020 - RING_BLOCK);
    assert!(offset_of!(AmdViRingBlock, ppr_head) == 0x2030 - RING_BLOCK);
    assert!(size_of::<AmdViRingBlock>() == 0x40);
};

pub const DEVICE_TABLE_BASE: usize = offset_of!(AmdViControlBlock, device_table_base);
pub const COMMAND_BUFFER_BASE: usize = offset_of!(AmdViControlBlock, command_buffer_base);
pub const EVENT_LOG_BASE: usize = offset_of!(AmdViControlBlock, event_log_base);
pub const CONTROL: usize = offset_of!(AmdViControlBlock, control);
pub const EXCLUSION_BASE: usize = offset_of!(AmdViControlBlock, exclusion_base);
pub const EXTENDED_FEATURES: usize = offset_of!(AmdViControlBlock, extended_features);
pub const COMMAND_HEAD: usize = RING_BLOCK + offset_of!(AmdViRingBlock, command_head);
pub const COMMAND_TAIL: usize = RING_BLOCK + offset_of!(AmdViRingBlock, command_tail);
pub const EVENT_HEAD: usize = RING_BLOCK + offset_of!(AmdViRingBlock, event_head);
pub const EVENT_TAIL: usize = RING_BLOCK + offset_of!(AmdViRingBlock, event_tail);
pub const STATUS: usize = RING_BLOCK + offset_of!(AmdViRingBlock, status);

/// IOMMU Control register bits (§3.4.4).
pub mod control {
    pub const IOMMU_EN: u64 = 1 << 0;
    pub const HT_TUN_EN: u64 = 1 << 1;
    pub const EVENT_LOG_EN: u64 = 1 << 2;
    pub const EVENT_INT_EN: u64 = 1 << 3;
    pub const COM_WAIT_INT_EN: u64 = 1 << 4;
    /// Device table accesses are coherent.
    pub const COHERENT: u64 = 1 << 10;
    pub const CMD_BUF_EN: u64 = 1 << 12;
    pub const PPR_LOG_EN: u64 = 1 << 13;
    pub const GT_EN: u64 = 1 << 16;
    /// Guest virtual APIC (128-bit IRTEs); Bulkhead uses the legacy 32-bit format.
    pub const GA_EN: u64 = 1 << 17;
}

/// IOMMU Status register bits (§3.4.11).
pub mod status {
    pub const EVENT_OVERFLOW: u64 = 1 << 0;
    pub const EVENT_LOG_INT: u64 = 1 << 1;
    pub const COM_WAIT_INT: u64 = 1 << 2;
    pub const EVENT_LOG_RUN: u64 = 1 << 3;
    pub const CMD_BUF_RUN: u64 = 1 << 4;
    /// Write-1-to-clear bits.
    pub const W1C: u64 = EVENT_OVERFLOW | EVENT_LOG_INT | COM_WAIT_INT;
}

/// Ring length field value (bits 59:56) for 256 entries of 16 bytes, one page
/// (§3.4.2 ComLen / §3.4.3 EventLen: 2^n entries, n >= 8).
pub const RING_LEN_256: u64 = 8 << 56;
pub const RING_ENTRIES: usize = 256;

/// Extended Feature Register (§3.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Efr(pub u64);

impl Efr {
    /// XTSup: x2APIC interrupt destinations.
    pub fn xt(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// IASup: INVALIDATE_IOMMU_ALL.
    pub fn invalidate_all(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// GASup: guest virtual APIC / 128-bit IRTEs.
    pub fn ga(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// HATS: maximum host page-table levels (00b = 4, 01b = 5, 10b = 6).
    pub fn max_levels(self) -> u8 {
        // At most 4 + 2: cannot overflow.
        4u8.wrapping_add(((self.0 >> 10) & 0b11).min(2) as u8)
    }
}
