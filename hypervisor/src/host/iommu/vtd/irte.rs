//! VT-d interrupt remapping (VT-d spec chapter 5): the remapped-format IRTE (§9.10)
//! and the remappable MSI address/data a device is programmed with (§5.1.5.2).
#![forbid(unsafe_code)]

use core::mem::size_of;

use crate::host::iommu::MsiTarget;

use crate::hw::MsiMessage;

/// An Interrupt Remapping Table Entry in remapped format (§9.10, "Interrupt
/// Remapping Table Entry (IRTE) for Remapped Interrupts").
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VtdIrte {
    /// Bit 0 Present, 1 FPD, 2 Destination Mode, 3 Redirection Hint, 4 Trigger Mode,
    /// 7:5 Delivery Mode, 15 IRTE Mode (0 = remapped), 23:16 Vector,
    /// 63:32 Destination ID (xAPIC: APIC id in bits 47:40).
    pub lo: u64,
    /// Bits 15:0 Source Identifier, 17:16 Source-id Qualifier, 19:18 Source Validation
    /// Type.
    pub hi: u64,
}

const _: () = assert!(size_of::<VtdIrte>() == 16);

/// SVT = 01b: verify the requester id against SID using SQ (§9.10).
pub const SVT_VERIFY_SID: u64 = 0b01 << 18;
/// TM = 1: level-triggered delivery (§9.10).
const TM_LEVEL: u64 = 1 << 4;
/// SQ = 00b: compare all 16 bits of the requester id.
pub const SQ_ALL_BITS: u64 = 0b00 << 16;

impl VtdIrte {
    /// A present entry delivering `target` (fixed, edge, physical destination) that
    /// only requester `sid` may use.
    pub fn remapped(target: MsiTarget, sid: u16, x2apic: bool) -> Self {
        let dest = if x2apic { u64::from(target.dest_apic_id) } else { u64::from(target.dest_apic_id & 0xff) << 8 };
        Self { lo: 1 | u64::from(target.vector) << 16 | dest << 32, hi: SVT_VERIFY_SID | SQ_ALL_BITS | u64::from(sid) }
    }
    /// The same entry delivering level-triggered (TM, bit 4): for a level-triggered
    /// I/O APIC pin, so the local APIC sets TMR and broadcasts the EOI (§9.10).
    pub fn level_triggered(self) -> Self {
        Self { lo: self.lo | TM_LEVEL, ..self }
    }
    /// Whether the entry delivers level-triggered.
    pub fn is_level(self) -> bool {
        self.lo & TM_LEVEL != 0
    }
    pub fn present(self) -> bool {
        self.lo & 1 != 0
    }
    pub fn vector(self) -> u8 {
        (self.lo >> 16) as u8
    }
    /// xAPIC destination (bits 47:40).
    pub fn xapic_dest(self) -> u8 {
        (self.lo >> 40) as u8
    }
    pub fn sid(self) -> u16 {
        self.hi as u16
    }
    pub fn svt(self) -> u64 {
        (self.hi >> 18) & 0b11
    }
    pub fn words(self) -> [u64; 2] {
        [self.lo, self.hi]
    }
    pub fn from_words(w: [u64; 2]) -> Self {
        Self { lo: w[0], hi: w[1] }
    }
}

/// The MSI a device must send to use IRTE `handle` (§5.1.5.2 "Interrupt Requests in
/// Remappable Format"): address 0xFEE in bits 31:20, handle[14:0] in 19:5, Interrupt
/// Format = 1 (bit 4), SHV = 0 (bit 3), handle[15] in bit 2; data 0.
pub fn remappable_msi(handle: u16) -> MsiMessage {
    let h = u64::from(handle);
    MsiMessage { address: 0xfee0_0000 | (h & 0x7fff) << 5 | 1 << 4 | (h >> 15) << 2, data: 0 }
}

/// The IRTE handle of a remappable-format MSI address, or `None` for a
/// compatibility-format one (bit 4 clear).
pub fn decode_remappable(address: u64, data: u32) -> Option<u16> {
    if address & (1 << 4) == 0 {
        return None;
    }
    let mut handle = ((address >> 5) & 0x7fff) as u16 | (((address >> 2) & 1) as u16) << 15;
    if address & (1 << 3) != 0 {
        handle = handle.wrapping_add(data as u16);
    }
    Some(handle)
}

/// IRTA register value (§11.4.10.1): table base, EIME (bit 11), size field S with
/// 2^(S+1) entries.
pub fn irta(base: u64, entries: usize, x2apic: bool) -> u64 {
    let s = (entries.max(2).trailing_zeros() as u64).saturating_sub(1) & 0xf;
    (base & !0xfff) | if x2apic { 1 << 11 } else { 0 } | s
}
