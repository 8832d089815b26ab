//! AmdViCommand buffer entries (AMD IOMMU spec §2.4, "Commands"): 128 bits each, opcode in
//! bits 63:60 of the first quadword.
#![forbid(unsafe_code)]

use core::mem::size_of;

use crate::memory::addr::HostPhysAddr;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdViCommand(pub [u64; 2]);

const _: () = assert!(size_of::<AmdViCommand>() == 16);

/// Opcodes (§2.4, Table 42 "AmdViCommand Summary").
pub mod opcode {
    pub const COMPLETION_WAIT: u8 = 0x01;
    pub const INVALIDATE_DEVTAB_ENTRY: u8 = 0x02;
    pub const INVALIDATE_IOMMU_PAGES: u8 = 0x03;
    pub const INVALIDATE_IOTLB_PAGES: u8 = 0x04;
    pub const INVALIDATE_INTERRUPT_TABLE: u8 = 0x05;
    pub const INVALIDATE_IOMMU_ALL: u8 = 0x08;
}

const fn op(code: u8) -> u64 {
    (code as u64) << 60
}

/// INVALIDATE_IOMMU_PAGES with S = 1 and this address covers every page (§2.4.3).
const ALL_PAGES: u64 = 0x7fff_ffff_ffff_f000;

impl AmdViCommand {
    /// COMPLETION_WAIT (§2.4.1) with Store: once every earlier command completed, the
    /// IOMMU writes `data` to `store` (8-byte aligned, bits 51:3 in quadword 0).
    pub fn completion_wait(store: HostPhysAddr, data: u64) -> Self {
        Self([op(opcode::COMPLETION_WAIT) | (store.raw() & 0x000f_ffff_ffff_fff8) | 1, data])
    }

    /// INVALIDATE_DEVTAB_ENTRY (§2.4.2).
    pub fn invalidate_devtab_entry(devid: u16) -> Self {
        Self([op(opcode::INVALIDATE_DEVTAB_ENTRY) | u64::from(devid), 0])
    }

    /// INVALIDATE_IOMMU_PAGES (§2.4.3) for the whole of `domain`: S = 1, PDE = 1,
    /// address 7FFF_FFFF_FFFF_F000h.
    pub fn invalidate_domain(domain: u16) -> Self {
        Self([op(opcode::INVALIDATE_IOMMU_PAGES) | u64::from(domain) << 32, ALL_PAGES | 0b11])
    }

    /// INVALIDATE_INTERRUPT_TABLE (§2.4.5).
    pub fn invalidate_interrupt_table(devid: u16) -> Self {
        Self([op(opcode::INVALIDATE_INTERRUPT_TABLE) | u64::from(devid), 0])
    }

    /// INVALIDATE_IOMMU_ALL (§2.4.6; needs EFR.IASup).
    pub fn invalidate_all() -> Self {
        Self([op(opcode::INVALIDATE_IOMMU_ALL), 0])
    }

    pub fn opcode(&self) -> u8 {
        (self.0[0] >> 60) as u8
    }
}
