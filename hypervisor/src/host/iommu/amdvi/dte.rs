//! The 256-bit Device Table Entry (AMD IOMMU spec §2.2.2.1, Table 7 "Device Table
//! Entry (DTE) Field Definitions").
#![forbid(unsafe_code)]

use core::mem::size_of;

use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::Perms;
use crate::memory::page_table::{ADDR_MASK, PteFormat};

/// One device table entry, as four little-endian quadwords.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dte(pub [u64; 4]);

const _: () = assert!(size_of::<Dte>() == 32);

// Quadword 0 (bits 63:0).
const V: u64 = 1 << 0;
const TV: u64 = 1 << 1;
const MODE_SHIFT: u32 = 9;
const IR: u64 = 1 << 61;
const IW: u64 = 1 << 62;
// Quadword 1 (bits 127:64): DomainID in 15:0, SysMgt in 41:40.
const SYSMGT_SHIFT: u32 = 40;
// Quadword 2 (bits 191:128).
const IV: u64 = 1 << 0;
const INT_TAB_LEN_SHIFT: u32 = 1;
/// IntTablePtr: bits 179:134, i.e. address bits 51:6.
const INT_TABLE_MASK: u64 = 0x000f_ffff_ffff_ffc0;
const INIT_PASS: u64 = 1 << 56;
const EINT_PASS: u64 = 1 << 57;
const NMI_PASS: u64 = 1 << 58;
const INT_CTL_SHIFT: u32 = 60;
const LINT0_PASS: u64 = 1 << 62;
const LINT1_PASS: u64 = 1 << 63;

/// IntCtl (bits 189:188): what happens to fixed and arbitrated interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum IntCtl {
    /// Target abort.
    Abort = 0b00,
    /// Forwarded unmapped.
    Forward = 0b01,
    /// Remapped through the interrupt table.
    Remap = 0b10,
}

impl Dte {
    /// A device that may do nothing (§2.2.2.1): V = 1 and TV = 1 with Mode 0
    /// (translation disabled) and IR = IW = 0 rejects every DMA; IV = 1 with IntCtl
    /// abort rejects its interrupts. `settings` is the IVHD data byte.
    pub fn blocked(settings: u8) -> Self {
        let mut d = Self([V | TV, 0, IV | (IntCtl::Abort as u64) << INT_CTL_SHIFT, 0]);
        d.apply_settings(settings);
        d
    }

    /// An IOAPIC/HPET: no DMA, interrupts not remapped (IV = 0: they come from the
    /// hypervisor's own interrupt controllers). IV = 0 rather than IntCtl = forward
    /// keeps them working on units without interrupt remapping (QEMU without
    /// `intremap=on` rejects every interrupt of a DTE with IV = 1).
    pub fn interrupt_source(settings: u8) -> Self {
        let mut d = Self([V | TV, 0, 0, 0]);
        d.apply_settings(settings);
        d
    }

    /// A device translated through `root` (`levels`-level tables) in `domain`, its
    /// interrupts remapped through the 2^`table_len_log2`-entry table at `irt`.
    pub fn translated(root: HostPhysAddr, levels: u8, domain: u16, irt: HostPhysAddr, table_len_log2: u8) -> Self {
        let q0 = V | TV | (u64::from(levels & 7) << MODE_SHIFT) | (root.raw() & ADDR_MASK) | IR | IW;
        let q2 = IV
            | u64::from(table_len_log2 & 0xf) << INT_TAB_LEN_SHIFT
            | (irt.raw() & INT_TABLE_MASK)
            | (IntCtl::Remap as u64) << INT_CTL_SHIFT;
        Self([q0, u64::from(domain), q2, 0])
    }

    /// Copies the IVHD DTE-setting byte (§5.2.2.2, Table 95): INITPass, EIntPass,
    /// NMIPass, SysMgt, Lint0Pass, Lint1Pass.
    pub fn apply_settings(&mut self, settings: u8) {
        let s = u64::from(settings);
        let pass = [(0, INIT_PASS), (1, EINT_PASS), (2, NMI_PASS), (6, LINT0_PASS), (7, LINT1_PASS)];
        for (bit, field) in pass {
            if s & (1 << bit) != 0 {
                self.0[2] |= field;
            }
        }
        self.0[1] |= ((s >> 4) & 0b11) << SYSMGT_SHIFT;
    }

    pub fn valid(&self) -> bool {
        self.0[0] & V != 0
    }
    pub fn translation_valid(&self) -> bool {
        self.0[0] & TV != 0
    }
    pub fn mode(&self) -> u8 {
        ((self.0[0] >> MODE_SHIFT) & 7) as u8
    }
    pub fn root(&self) -> HostPhysAddr {
        HostPhysAddr::new(self.0[0] & ADDR_MASK)
    }
    pub fn readable(&self) -> bool {
        self.0[0] & IR != 0
    }
    pub fn writable(&self) -> bool {
        self.0[0] & IW != 0
    }
    pub fn domain(&self) -> u16 {
        self.0[1] as u16
    }
    pub fn interrupt_valid(&self) -> bool {
        self.0[2] & IV != 0
    }
    pub fn int_table_len_log2(&self) -> u8 {
        ((self.0[2] >> INT_TAB_LEN_SHIFT) & 0xf) as u8
    }
    pub fn int_table(&self) -> HostPhysAddr {
        HostPhysAddr::new(self.0[2] & INT_TABLE_MASK)
    }
    pub fn int_ctl(&self) -> u8 {
        ((self.0[2] >> INT_CTL_SHIFT) & 0b11) as u8
    }
}

/// Bits QEMU 7.2 treats as reserved and answers with ILLEGAL_DEV_TABLE_ENTRY
/// (`AMDVI_DTE_*_QUAD_RESERVED`): note bit 8 of the domain id, and all of quadword 3.
pub const QEMU72_RESERVED: [u64; 4] = [0x8030_0000_0000_00fc, 0x0000_0000_0000_0100, 0x08f0_0000_0000_0000, u64::MAX];

/// AMD-Vi I/O page-table entries (§2.2.3, Tables 14-15): PR bit 0, NextLevel 11:9
/// (0 for a page), address 51:12, IR bit 61, IW bit 62. Permissions combine across
/// levels, so table entries grant IR+IW. A format for the page-table engine in
/// `memory::page_table`; it has no Dirty bit, so these tables offer no dirty tracking.
#[derive(Debug, Clone, Copy)]
pub struct IoPte;

pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const NEXT_LEVEL_SHIFT: u32 = 9;
    pub const IR: u64 = 1 << 61;
    pub const IW: u64 = 1 << 62;
    pub const fn next_level(e: u64) -> u8 {
        ((e >> NEXT_LEVEL_SHIFT) & 7) as u8
    }
}

impl PteFormat for IoPte {
    const NAME: &'static str = "AMD-Vi I/O page table";
    const LOG_TARGET: &'static str = "iommu";
    const RIGHTS: Perms = Perms::RW;

    fn table(next: HostPhysAddr, level: u8) -> u64 {
        (next.raw() & ADDR_MASK)
            | pte::PRESENT
            | u64::from(level.saturating_sub(1) & 7) << pte::NEXT_LEVEL_SHIFT
            | pte::IR
            | pte::IW
    }
    fn leaf(hpa: HostPhysAddr, _level: u8, perms: Perms) -> Option<u64> {
        // A present entry without IR and IW would only fault: refuse it.
        if !perms.read && !perms.write {
            return None;
        }
        let mut e = (hpa.raw() & ADDR_MASK) | pte::PRESENT;
        if perms.read {
            e |= pte::IR;
        }
        if perms.write {
            e |= pte::IW;
        }
        Some(e)
    }
    fn is_present(entry: u64) -> bool {
        entry & pte::PRESENT != 0
    }
    fn is_leaf(entry: u64, level: u8) -> bool {
        level == 1 || matches!(pte::next_level(entry), 0 | 7)
    }
    fn rights(entry: u64) -> Perms {
        Perms { read: entry & pte::IR != 0, write: entry & pte::IW != 0, exec: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::addr::GuestPhysAddr;
    use crate::memory::fake_frames::FakeFrames;
    use crate::memory::frames::FrameSource;
    use crate::memory::page_table::{Geometry, PageTable, conformance};

    const FOUR_LEVELS: Geometry = Geometry { levels: 4, large_pages: true, hpa_limit: 1 << 48 };

    #[test]
    fn io_page_tables_meet_the_engine_contract() {
        conformance::check_all::<IoPte>(FOUR_LEVELS);
        conformance::check_all::<IoPte>(Geometry { levels: 3, ..FOUR_LEVELS });
    }

    /// The transfer window builds 4 KiB leaves as the frame's address ORed with the
    /// bits of a leaf at address 0 (`Domains::map_window`).
    #[test]
    fn small_leaves_are_the_address_with_the_permission_bits() {
        for perms in [Perms::RW, Perms::R] {
            let bits = IoPte::leaf(HostPhysAddr::new(0), 1, perms).unwrap();
            for hpa in [0x1000u64, 0x1_2345_6000, 0xf_ffff_f000] {
                assert_eq!(IoPte::leaf(HostPhysAddr::new(hpa), 1, perms), Some(bits | hpa));
            }
        }
    }

    #[test]
    fn io_page_table_entries_are_encoded_per_spec() {
        let mut f = FakeFrames::new();
        let mut t = PageTable::<IoPte>::new(&mut f, FOUR_LEVELS).unwrap();
        t.map_range(&mut f, GuestPhysAddr::new(0x20_0000), HostPhysAddr::new(0x60_0000), 0x20_1000, Perms::RW).unwrap();
        t.map_range(&mut f, GuestPhysAddr::new(0x50_0000), HostPhysAddr::new(0x9000), 0x1000, Perms::RX).unwrap();
        // Table entries name the level of the table they point at and grant IR+IW.
        let mut table = t.root();
        for level in [4u64, 3] {
            let e = f.table_mut(table)[0];
            assert_eq!(e & !ADDR_MASK, pte::PRESENT | (level - 1) << pte::NEXT_LEVEL_SHIFT | pte::IR | pte::IW);
            table = HostPhysAddr::new(e & ADDR_MASK);
        }
        // A 2 MiB page is a leaf at level 2 with NextLevel 0.
        assert_eq!(f.table_mut(table)[1], 0x60_0000 | pte::PRESENT | pte::IR | pte::IW);
        let l1 = HostPhysAddr::new(f.table_mut(table)[2] & ADDR_MASK);
        assert_eq!(pte::next_level(f.table_mut(table)[2]), 1);
        assert_eq!(f.table_mut(l1)[0], 0x80_0000 | pte::PRESENT | pte::IR | pte::IW);
        // Execute means nothing to DMA: a read-execute region is read-only.
        assert_eq!(f.table_mut(l1)[0x100], 0x9000 | pte::PRESENT | pte::IR);
        t.destroy(&mut f);
        assert_eq!(f.live(), 0);
    }
}
