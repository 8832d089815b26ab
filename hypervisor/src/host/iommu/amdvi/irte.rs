//! AMD-Vi interrupt remapping with the legacy 32-bit IRTE (AMD IOMMU spec §2.2.5.1,
//! Figure 18 "Interrupt Remapping Table Entry Format"; used while GAEn = 0).
#![forbid(unsafe_code)]

use crate::host::iommu::MsiTarget;

use crate::hw::MsiMessage;

/// Bit 0 RemapEn, 1 SupIOPF, 4:2 IntType (0 fixed), 5 RqEoi, 6 DM (0 physical),
/// 7 GuestMode, 15:8 Destination, 23:16 Vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AmdViIrte(pub u32);

const _: () = assert!(core::mem::size_of::<AmdViIrte>() == 4);

impl AmdViIrte {
    pub fn remapped(target: MsiTarget) -> Self {
        Self(1 | (target.dest_apic_id & 0xff) << 8 | u32::from(target.vector) << 16)
    }
    pub fn enabled(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn vector(self) -> u8 {
        (self.0 >> 16) as u8
    }
    pub fn destination(self) -> u8 {
        (self.0 >> 8) as u8
    }
}

/// Entries per device table (IntTabLen = 8). MSI data bits 10:0 select the entry,
/// and bits 10:8 double as the delivery mode (§2.2.5), so indices stay below 256 to
/// keep the mode "fixed".
pub const TABLE_LEN_LOG2: u8 = 8;
pub const TABLE_ENTRIES: u16 = 1 << TABLE_LEN_LOG2;

/// The message a device sends to use entry `index` of its own table: any address in
/// the interrupt range, the index in the data.
pub fn msi_for_index(index: u16) -> MsiMessage {
    MsiMessage { address: 0xfee0_0000, data: u32::from(index & 0x7ff) }
}
