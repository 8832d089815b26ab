//! PCI configuration-space registers and bits used by the host drivers and the
//! guest's PCI bus alike: the type-0/type-1 header (PCI Local Bus Spec 3.0 §6.1-6.2,
//! PCI-PCI Bridge Spec 1.2 §3.2), capability ids (PCI Code and ID Assignment Spec
//! 1.11 §2-3), and MSI/MSI-X control (PCI 3.0 §6.8).

// Type-0 header offsets, PCI 3.0 §6.1 Figure 6-1.
pub const VENDOR_ID: u16 = 0x00;
pub const DEVICE_ID: u16 = 0x02;
pub const COMMAND: u16 = 0x04;
pub const STATUS: u16 = 0x06;
pub const REVISION_ID: u16 = 0x08;
pub const CLASS_CODE: u16 = 0x09;
pub const CACHE_LINE_SIZE: u16 = 0x0c;
pub const HEADER_TYPE: u16 = 0x0e;
pub const BAR0: u16 = 0x10;
/// Type-2 (CardBus) header: where its capability pointer sits.
pub const CARDBUS_CAP_PTR: u16 = 0x14;
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
pub const SUBSYSTEM_ID: u16 = 0x2e;
/// Expansion ROM base address register of a type-0 header (§6.2.5.2).
pub const ROM_BAR: u16 = 0x30;
pub const CAP_PTR: u16 = 0x34;
pub const INTERRUPT_LINE: u16 = 0x3c;
pub const INTERRUPT_PIN: u16 = 0x3d;
/// Type-1 header: bridge control.
pub const BRIDGE_CONTROL: u16 = 0x3e;
/// Capabilities start after the standard header (§6.7).
pub const FIRST_CAPABILITY: u16 = 0x40;
/// PCI Express extended capabilities start here (PCIe Base 4.0 §7.6).
pub const EXT_CAP_START: u16 = 0x100;

// Command register, §6.2.2.
pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
pub const CMD_PARITY: u16 = 1 << 6;
pub const CMD_SERR: u16 = 1 << 8;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;

// Status register, §6.2.3.
/// The function is asserting INTx.
pub const STS_INTX: u16 = 1 << 3;
pub const STS_CAP_LIST: u16 = 1 << 4;
/// Error bits 8 and 11-15, write-1-to-clear.
pub const STS_ERRORS: u16 = 1 << 8 | 0x1f << 11;

/// Bridge control: Secondary Bus Reset (PCI-PCI Bridge 1.2 §3.2.5.18).
pub const BCTL_SBR: u16 = 1 << 6;

// MSI and MSI-X message control (§6.8.1.3, §6.8.2.3).
/// MSI: enable, multiple message enable (bits 6:4).
pub const MSI_CTRL_ENABLE: u16 = 1 << 0;
pub const MSI_CTRL_MME: u16 = 0b111 << 4;
pub const MSIX_CTRL_ENABLE: u16 = 1 << 15;
pub const MSIX_CTRL_FUNCTION_MASK: u16 = 1 << 14;
/// Table size minus one.
pub const MSIX_CTRL_TABLE_SIZE: u16 = 0x07ff;

/// Capability ids (PCI Code and ID Assignment Spec 1.11 §2).
pub mod cap_id {
    pub const POWER_MANAGEMENT: u8 = 0x01;
    pub const MSI: u8 = 0x05;
    pub const VENDOR: u8 = 0x09;
    pub const PCI_EXPRESS: u8 = 0x10;
    pub const MSIX: u8 = 0x11;
}

/// Extended capability ids (PCI Code and ID Assignment Spec 1.11 §3).
pub mod ext_cap_id {
    pub const AER: u16 = 0x0001;
    pub const ACS: u16 = 0x000d;
    pub const ARI: u16 = 0x000e;
    pub const ATS: u16 = 0x000f;
    pub const SRIOV: u16 = 0x0010;
    pub const PRI: u16 = 0x0013;
    pub const PASID: u16 = 0x001b;
}
