//! Queued invalidation (VT-d spec §6.5.2): 128-bit descriptors in a ring the unit
//! consumes from IQH to IQT. Only the legacy-mode descriptor types Bulkhead issues.
#![forbid(unsafe_code)]

use core::mem::size_of;

use crate::memory::addr::HostPhysAddr;

/// One invalidation descriptor (§6.5.2, 128-bit form; IQA.DW = 0).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvDesc {
    pub lo: u64,
    pub hi: u64,
}

const _: () = assert!(size_of::<InvDesc>() == 16);

/// Descriptor type codes, bits 3:0 (§6.5.2, Table 6-"Invalidation Descriptor Types").
pub mod kind {
    pub const CONTEXT_CACHE: u64 = 0x1;
    pub const IOTLB: u64 = 0x2;
    pub const DEVICE_TLB: u64 = 0x3;
    pub const INTERRUPT_ENTRY_CACHE: u64 = 0x4;
    pub const WAIT: u64 = 0x5;
}

/// Granularity field (bits 5:4) values.
const GLOBAL: u64 = 0b01 << 4;
const DOMAIN: u64 = 0b10 << 4;
const DEVICE: u64 = 0b11 << 4;

impl InvDesc {
    /// Context-cache invalidation, global (§6.5.2.1).
    pub fn context_global() -> Self {
        Self { lo: kind::CONTEXT_CACHE | GLOBAL, hi: 0 }
    }

    /// Context-cache invalidation of one device's entry in domain `did` (§6.5.2.1):
    /// DID bits 31:16, SID bits 47:32, function mask 49:48 = 0.
    pub fn context_device(did: u16, sid: u16) -> Self {
        Self { lo: kind::CONTEXT_CACHE | DEVICE | u64::from(did) << 16 | u64::from(sid) << 32, hi: 0 }
    }

    /// IOTLB invalidation, global, draining reads and writes (§6.5.2.3).
    pub fn iotlb_global() -> Self {
        Self { lo: kind::IOTLB | GLOBAL | DRAIN, hi: 0 }
    }

    /// IOTLB invalidation of every mapping of domain `did` (§6.5.2.3).
    pub fn iotlb_domain(did: u16) -> Self {
        Self { lo: kind::IOTLB | DOMAIN | DRAIN | u64::from(did) << 16, hi: 0 }
    }

    /// Interrupt entry cache invalidation, global (§6.5.2.7; granularity bit 4 = 0).
    pub fn iec_global() -> Self {
        Self { lo: kind::INTERRUPT_ENTRY_CACHE, hi: 0 }
    }

    /// Interrupt entry cache invalidation of one entry (§6.5.2.7): bit 4 = index
    /// selective, IM bits 31:27 = 0, IIDX bits 47:32.
    pub fn iec_index(index: u16) -> Self {
        Self { lo: kind::INTERRUPT_ENTRY_CACHE | 1 << 4 | u64::from(index) << 32, hi: 0 }
    }

    /// Invalidation wait (§6.5.2.8) with Status Write: when every earlier descriptor
    /// has completed, the unit writes `data` (bits 63:32) to `status` (hi, bits
    /// 63:2); Fence (bit 6) orders later descriptors behind it.
    pub fn wait(status: HostPhysAddr, data: u32) -> Self {
        Self { lo: kind::WAIT | WAIT_SW | WAIT_FN | u64::from(data) << 32, hi: status.raw() & !0b11 }
    }

    pub fn kind(self) -> u64 {
        self.lo & 0xf
    }
}

/// IOTLB descriptor: drain reads (bit 7) and writes (bit 6).
const DRAIN: u64 = 1 << 7 | 1 << 6;
/// Wait descriptor: Status Write (bit 5), Fence (bit 6).
pub const WAIT_SW: u64 = 1 << 5;
pub const WAIT_FN: u64 = 1 << 6;

/// Entries in the queue: one 4 KiB page of 16-byte descriptors (IQA.QS = 0).
pub const QUEUE_ENTRIES: usize = 256;

/// The ring's software state. The descriptors live in one frame at `base`.
#[derive(Debug, Clone, Copy)]
pub struct InvQueue {
    pub base: HostPhysAddr,
    /// Next free slot (what IQT will point at after submission).
    pub tail: usize,
    /// Status word and counter for wait descriptors.
    pub status: HostPhysAddr,
    pub sequence: u32,
}

impl InvQueue {
    /// IQA value: base, descriptor width 128 bits (bit 11 = 0), queue size 0 (256).
    pub fn iqa(&self) -> u64 {
        self.base.raw() & !0xfff
    }

    /// IQT/IQH register encoding of a slot (bits 18:4).
    pub fn register(slot: usize) -> u64 {
        (slot as u64) << 4
    }

    /// Slot index from an IQH/IQT value.
    pub fn slot(register: u64) -> usize {
        ((register >> 4) & 0x7fff) as usize % QUEUE_ENTRIES
    }
}
