//! What a page-table format gives the engine in [`super`]: how its table and leaf
//! entries are encoded, and, for formats with a Dirty bit, where that bit is.
//!
//! Every format here is a radix tree of 4 KiB tables of 512 64-bit entries, 9 address
//! bits per level, 4 KiB pages at level 1 and 2 MiB pages at level 2, with the next
//! table's or the page's address in bits 51:12. Formats differ in which bits mean
//! present, leaf and the access rights.
#![forbid(unsafe_code)]

use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::Perms;

/// Physical address bits 51:12 of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// How one kind of hardware encodes page-table entries.
pub trait PteFormat {
    /// What logs call a table of this format.
    const NAME: &'static str;
    /// The `log` target of tables of this format.
    const LOG_TARGET: &'static str;
    /// The rights a leaf can carry; other rights asked for are dropped (DMA has no
    /// execute).
    const RIGHTS: Perms;
    /// A non-leaf entry at `level` (2..) pointing at the table for `level - 1`. Rights
    /// combine across levels, so it grants everything and the leaf decides.
    fn table(next: HostPhysAddr, level: u8) -> u64;
    /// A leaf at `level` (1 = 4 KiB, 2 = 2 MiB) granting `perms` (a subset of
    /// [`Self::RIGHTS`]), or `None` when the format cannot express them.
    fn leaf(hpa: HostPhysAddr, level: u8, perms: Perms) -> Option<u64>;
    fn is_present(entry: u64) -> bool;
    /// Whether a present entry at `level` maps a page (rather than a table).
    fn is_leaf(entry: u64, level: u8) -> bool;
    /// The rights a present entry grants at its level.
    fn rights(entry: u64) -> Perms;
}

/// A format whose leaves carry a Dirty bit the hardware sets when it writes through
/// them. Only tables of such a format offer dirty tracking.
pub trait DirtyTracking: PteFormat {
    /// The Dirty bit of a leaf.
    const DIRTY: u64;
}
