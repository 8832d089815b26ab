//! Which pages of an assigned function the VM maps: its BARs where the guest has
//! them (when mappable), page-granular, with the MSI-X table pages cut out, and the
//! ROM copy read-only.
#![forbid(unsafe_code)]

use crate::host::pci::access::BarMmio;
use crate::hw::Bdf;
use alloc::vec::Vec;

use super::{Assigned, Mapped, RomCopy, Unmappable};
use crate::devices::bus::BusRange;
use crate::devices::vpci::host_bridge::BarRegion;
use crate::devices::vpci::msix_window::trapped_pages;
use crate::devices::vpci::passthrough::{BarMapping, BarSpace, ROM_INDEX};
use crate::host::pci::Bar;
use crate::memory::addr::PAGE_SIZE;
use crate::vm::passthrough::placement::{self, Windows};

/// The BAR ranges to map for the BARs as the guest programmed them (`bars`, from its
/// PCI host): enabled memory BARs of assigned functions whose address is mappable
/// ([`placement::mappable`]) and that overlap no other BAR, page-granular, with the
/// MSI-X table pages cut out. The rest is returned with the reason.
pub(super) fn desired_mappings(
    devices: &[Assigned],
    bars: &[(Bdf, BarRegion)],
    windows: &Windows,
) -> (Vec<Mapped>, Vec<Unmappable>) {
    let mut want: Vec<Mapped> = Vec::new();
    let mut refused = Vec::new();
    for d in devices {
        let mut mine: Vec<BarMapping> = Vec::new();
        for (_, r) in bars.iter().filter(|(b, r)| *b == d.guest && r.enabled && r.address != 0) {
            let Some(host) = host_bar(d, r.index) else { continue };
            let (host_start, len) = placement::host_pages(&host);
            let guest_start = r.address & !(PAGE_SIZE - 1);
            let refuse = |why| Unmappable { host: d.host, bar: r.index, guest_addr: r.address, why };
            if let Err(why) = placement::mappable(windows, r.address, host.address, len) {
                refused.push(refuse(why));
                continue;
            }
            let end = guest_start.saturating_add(len);
            let overlaps =
                |m: &BarMapping| m.guest_addr < end && guest_start < m.guest_addr.saturating_add(m.len_bytes);
            if mine.iter().any(overlaps) || want.iter().any(|m| overlaps(&m.range)) {
                refused.push(refuse("it overlaps another BAR"));
                continue;
            }
            mine.push(BarMapping {
                bar: r.index,
                guest_addr: guest_start,
                host_addr: host_start,
                len_bytes: len,
                space: if r.index == ROM_INDEX { BarSpace::Rom } else { BarSpace::Mmio },
            });
        }
        if let Some((bar, offset, len)) = d.msix {
            mine = without_pages(mine, bar, offset, len);
        }
        want.extend(mine.into_iter().map(|range| Mapped { host: d.host, range }));
    }
    (want, refused)
}

/// What backs BAR `index` of `d` on the host: the device's BAR, or the ROM copy.
pub(super) fn host_bar(d: &Assigned, index: u8) -> Option<Bar> {
    if index == ROM_INDEX {
        return d.rom.map(RomCopy::as_bar);
    }
    d.bars.iter().find(|b| b.index == index).copied()
}

/// `bars` without the pages of BAR `bar` that hold `[offset, offset + len)`.
pub(super) fn without_pages(bars: Vec<BarMapping>, bar: u8, offset: u64, len: u64) -> Vec<BarMapping> {
    let mut kept = Vec::new();
    for b in bars {
        if b.bar != bar {
            kept.push(b);
            continue;
        }
        let (start, end) = trapped_pages(b.len_bytes, offset, len).unwrap_or((b.len_bytes, b.len_bytes));
        if start > 0 {
            kept.push(BarMapping { len_bytes: start, ..b });
        }
        if end < b.len_bytes {
            kept.push(BarMapping {
                guest_addr: b.guest_addr.saturating_add(end),
                host_addr: b.host_addr.saturating_add(end),
                len_bytes: b.len_bytes.saturating_sub(end),
                ..b
            });
        }
    }
    kept
}

/// Where a function's MSI-X table is trapped in its VM: the guest range of the table's
/// pages at the placed BAR address, the table as (BAR, offset, length), and the
/// window's first byte as a BAR offset. `None` without MSI-X or a placed BAR.
pub(super) fn msix_window(d: &Assigned) -> Option<(BusRange, (u8, u64, u64), u64)> {
    let (bar, offset, len) = d.msix?;
    let &(_, guest_addr) = d.placed.iter().find(|p| p.0 == bar)?;
    let host = d.bars.iter().find(|b| b.index == bar)?;
    let (_, bar_pages) = placement::host_pages(host);
    let (start, end) = trapped_pages(bar_pages, offset, len)?;
    let range = BusRange::new((guest_addr & !(PAGE_SIZE - 1)).saturating_add(start), end.saturating_sub(start))?;
    Some((range, (bar, offset, len), start))
}

/// The wiring: an assigned function's host BAR is where the guest-visible MSI-X
/// window and table programming reach the device.
impl crate::devices::vpci::msix_window::DeviceBytes for BarMmio {
    fn read(&self, offset: u64, bytes: u8) -> u64 {
        BarMmio::read(self, offset, bytes)
    }
    fn write(&self, offset: u64, bytes: u8, value: u64) {
        BarMmio::write(self, offset, bytes, value)
    }
}

impl crate::devices::vpci::msi::BarRegisters for BarMmio {
    fn write32(&mut self, offset: u64, value: u32) {
        self.write(offset, 4, u64::from(value));
    }
}
