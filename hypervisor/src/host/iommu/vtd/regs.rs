//! VT-d remapping-unit registers (Intel VT-d spec rev 3.x / 4.x, chapter 11, §11.4).
//! Offsets come from [`VtdRegisterBlock`], a `#[repr(C)]` image of the fixed part of
//! the block, so the layout is checked at compile time against the spec's table.
#![forbid(unsafe_code)]

use core::mem::{offset_of, size_of};

/// The fixed registers at the start of a remapping unit (§11.4, Table 11-1 "Address
/// Mapping for Remapping Hardware Registers"). The fault recording and IOTLB
/// registers live at offsets given by CAP.FRO and ECAP.IRO.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VtdRegisterBlock {
    /// §11.4.1 Version.
    pub ver: u32,
    _rsvd0: u32,
    /// §11.4.2 Capability.
    pub cap: u64,
    /// §11.4.3 Extended Capability.
    pub ecap: u64,
    /// §11.4.4.1 Global Command.
    pub gcmd: u32,
    /// §11.4.4.2 Global Status.
    pub gsts: u32,
    /// §11.4.5 Root Table Address.
    pub rtaddr: u64,
    /// §11.4.6.1 Context Command.
    pub ccmd: u64,
    _rsvd1: u32,
    /// §11.4.7.1 Fault Status.
    pub fsts: u32,
    /// §11.4.7.2 Fault Event Control, data, address, upper address.
    pub fectl: u32,
    pub fedata: u32,
    pub feaddr: u32,
    pub feuaddr: u32,
    _rsvd2: [u64; 2],
    /// §11.4.7.4 Advanced Fault Log.
    pub aflog: u64,
    _rsvd3: u32,
    /// §11.4.8.1 Protected Memory Enable and the protected regions.
    pub pmen: u32,
    pub plmbase: u32,
    pub plmlimit: u32,
    pub phmbase: u64,
    pub phmlimit: u64,
    /// §11.4.9.1-3 Invalidation Queue Head, Tail, Address.
    pub iqh: u64,
    pub iqt: u64,
    pub iqa: u64,
    _rsvd4: u32,
    /// §11.4.9.4 Invalidation Completion Status.
    pub ics: u32,
    /// §11.4.9.5-8 Invalidation Event Control, data, address, upper address.
    pub iectl: u32,
    pub iedata: u32,
    pub ieaddr: u32,
    pub ieuaddr: u32,
    /// §11.4.9.9 Invalidation Queue Error Record.
    pub iqercd: u64,
    /// §11.4.10.1 Interrupt Remapping Table Address.
    pub irta: u64,
}

const _: () = {
    assert!(offset_of!(VtdRegisterBlock, ver) == 0x00);
    assert!(offset_of!(VtdRegisterBlock, cap) == 0x08);
    assert!(offset_of!(VtdRegisterBlock, ecap) == 0x10);
    assert!(offset_of!(VtdRegisterBlock, gcmd) == 0x18);
    assert!(offset_of!(VtdRegisterBlock, gsts) == 0x1c);
    assert!(offset_of!(VtdRegisterBlock, rtaddr) == 0x20);
    assert!(offset_of!(VtdRegisterBlock, ccmd) == 0x28);
    assert!(offset_of!(VtdRegisterBlock, fsts) == 0x34);
    assert!(offset_of!(VtdRegisterBlock, fectl) == 0x38);
    assert!(offset_of!(VtdRegisterBlock, fedata) == 0x3c);
    assert!(offset_of!(VtdRegisterBlock, feaddr) == 0x40);
    assert!(offset_of!(VtdRegisterBlock, feuaddr) == 0x44);
    assert!(offset_of!(VtdRegisterBlock, aflog) == 0x58);
    assert!(offset_of!(VtdRegisterBlock, pmen) == 0x64);
    assert!(offset_of!(VtdRegisterBlock, phmbase) == 0x70);
    assert!(offset_of!(VtdRegisterBlock, iqh) == 0x80);
    assert!(offset_of!(VtdRegisterBlock, iqt) == 0x88);
    assert!(offset_of!(VtdRegisterBlock, iqa) == 0x90);
    assert!(offset_of!(VtdRegisterBlock, ics) == 0x9c);
    assert!(offset_of!(VtdRegisterBlock, iectl) == 0xa0);
    assert!(offset_of!(VtdRegisterBlock, iqercd) == 0xb0);
    assert!(offset_of!(VtdRegisterBlock, irta) == 0xb8);
    assert!(size_of::<VtdRegisterBlock>() == 0xc0);
};

pub const VER: usize = offset_of!(VtdRegisterBlock, ver);
pub const CAP: usize = offset_of!(VtdRegisterBlock, cap);
pub const ECAP: usize = offset_of!(VtdRegisterBlock, ecap);
pub const GCMD: usize = offset_of!(VtdRegisterBlock, gcmd);
pub const GSTS: usize = offset_of!(VtdRegisterBlock, gsts);
pub const RTADDR: usize = offset_of!(VtdRegisterBlock, rtaddr);
pub const CCMD: usize = offset_of!(VtdRegisterBlock, ccmd);
pub const FSTS: usize = offset_of!(VtdRegisterBlock, fsts);
pub const FECTL: usize = offset_of!(VtdRegisterBlock, fectl);
pub const PMEN: usize = offset_of!(VtdRegisterBlock, pmen);
pub const IQH: usize = offset_of!(VtdRegisterBlock, iqh);
pub const IQT: usize = offset_of!(VtdRegisterBlock, iqt);
pub const IQA: usize = offset_of!(VtdRegisterBlock, iqa);
pub const ICS: usize = offset_of!(VtdRegisterBlock, ics);
pub const IQERCD: usize = offset_of!(VtdRegisterBlock, iqercd);
pub const IRTA: usize = offset_of!(VtdRegisterBlock, irta);

/// Size of the register window we map (one 4 KiB page; DRHD size_pages_log2 may
/// announce more, we never touch it).
pub const REGISTER_WINDOW: usize = 0x1000;

/// Global Command / Global Status bits (§11.4.4.1-2). Status bits sit at the same
/// positions as their commands.
pub mod gcmd {
    /// Translation Enable.
    pub const TE: u32 = 1 << 31;
    /// Set Root Table Pointer (one-shot).
    pub const SRTP: u32 = 1 << 30;
    /// Set Fault Log (one-shot).
    pub const SFL: u32 = 1 << 29;
    pub const EAFL: u32 = 1 << 28;
    /// Write Buffer Flush (one-shot).
    pub const WBF: u32 = 1 << 27;
    /// Queued Invalidation Enable.
    pub const QIE: u32 = 1 << 26;
    /// Interrupt Remapping Enable.
    pub const IRE: u32 = 1 << 25;
    /// Set Interrupt Remap Table Pointer (one-shot).
    pub const SIRTP: u32 = 1 << 24;
    /// Compatibility Format Interrupt (allow untranslated MSIs).
    pub const CFI: u32 = 1 << 23;
    /// Bits that stay set in GSTS and must be written back with every command.
    pub const PERSISTENT: u32 = TE | EAFL | QIE | IRE | CFI;
}

/// Fault Status bits (§11.4.7.1).
pub mod fsts {
    pub const PFO: u32 = 1 << 0;
    pub const PPF: u32 = 1 << 1;
    pub const IQE: u32 = 1 << 4;
    pub const ICE: u32 = 1 << 5;
    pub const ITE: u32 = 1 << 6;
    /// Fault Record Index of the first pending record.
    pub const fn fri(v: u32) -> u32 {
        (v >> 8) & 0xff
    }
    /// All write-1-to-clear bits.
    pub const W1C: u32 = PFO | IQE | ICE | ITE;
}

/// Context Command register (§11.4.6.1).
pub mod ccmd {
    pub const ICC: u64 = 1 << 63;
    pub const GLOBAL: u64 = 1 << 61;
}

/// IOTLB Invalidate register at ECAP.IRO + 8 (§11.4.8.1).
pub mod iotlb {
    pub const IVT: u64 = 1 << 63;
    pub const GLOBAL: u64 = 1 << 60;
    pub const DRAIN_READS: u64 = 1 << 49;
    pub const DRAIN_WRITES: u64 = 1 << 48;
}

/// Capability register (§11.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    /// Number of domain ids: 2^(4 + 2·ND).
    pub fn domain_ids(self) -> u32 {
        // ND is clamped to 6, so the shift is at most 16.
        1u32 << 4u64.wrapping_add(2u64.wrapping_mul((self.0 & 0x7).min(6)))
    }
    /// Required Write-Buffer Flushing.
    pub fn rwbf(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Caching Mode: not-present entries may be cached (virtual IOMMUs).
    pub fn caching_mode(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// Supported Adjusted Guest Address Widths: bit 1 = 39-bit (3-level),
    /// bit 2 = 48-bit (4-level), bit 3 = 57-bit (5-level).
    pub fn sagaw(self) -> u8 {
        ((self.0 >> 8) & 0x1f) as u8
    }
    /// Maximum Guest Address Width in bits.
    pub fn mgaw(self) -> u8 {
        (((self.0 >> 16) & 0x3f) as u8).saturating_add(1)
    }
    /// Byte offset of the first fault recording register (FRO is in 16-byte units).
    pub fn fault_record_offset(self) -> usize {
        (((self.0 >> 24) & 0x3ff) as usize).wrapping_mul(16)
    }
    /// Second-level large page support: bit 0 = 2 MiB, bit 1 = 1 GiB.
    pub fn sllps(self) -> u8 {
        ((self.0 >> 34) & 0xf) as u8
    }
    /// Number of fault recording registers.
    pub fn fault_records(self) -> usize {
        (((self.0 >> 40) & 0xff) as usize).wrapping_add(1)
    }
    /// The page-table depth to use: 4 levels if 48-bit is supported, else 3.
    pub fn levels(self) -> Option<u8> {
        if self.sagaw() & 0b0100 != 0 {
            Some(4)
        } else if self.sagaw() & 0b0010 != 0 {
            Some(3)
        } else {
            None
        }
    }
}

/// Extended Capability register (§11.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecap(pub u64);

impl Ecap {
    /// Page-walk Coherency: table walks snoop the CPU caches.
    pub fn coherent(self) -> bool {
        self.0 & 1 != 0
    }
    /// Queued Invalidation support.
    pub fn queued_invalidation(self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// Interrupt Remapping support.
    pub fn interrupt_remapping(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Extended Interrupt Mode (x2APIC destinations).
    pub fn eim(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Pass Through translation type.
    pub fn pass_through(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// Byte offset of the IOTLB registers (IRO is in 16-byte units).
    pub fn iotlb_offset(self) -> usize {
        (((self.0 >> 8) & 0x3ff) as usize).wrapping_mul(16)
    }
    /// Scalable Mode Translation Support (we use legacy mode either way).
    pub fn scalable_mode(self) -> bool {
        self.0 & (1 << 43) != 0
    }
}
