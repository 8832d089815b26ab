//! Assigned functions' expansion ROMs on the VM side: where the ROM decodes on the
//! host (placed in the bridge window above the function when firmware left it
//! unplaced), the copy in host memory the VM maps read-only behind its virtual ROM BAR,
//! and the sink for writes and for reads while the guest has the ROM's decode off.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use log::{debug, info, warn};

use super::HostConfig;
use crate::devices::vpci::passthrough::ROM_INDEX;
use crate::host::pci::access::BarMmio;
use crate::host::pci::rom::rom_bar_size;
use crate::host::pci::{Bar, BarKind, PciDevice, PciInventory};
use crate::hw::AccessSize;
use crate::hw::Bdf;
use crate::memory::addr::{HostPhysAddr, PAGE_SIZE};

/// A read-only copy of an assigned function's expansion ROM, in host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RomCopy {
    pub(super) hpa: u64,
    /// Bytes allocated and mapped: the virtual ROM BAR's size (the images, then
    /// all-ones).
    pub(super) len: u64,
}

impl RomCopy {
    /// The copy as the host side of the VM's ROM BAR.
    pub(super) fn as_bar(self) -> Bar {
        rom_bar(self.hpa, self.len)
    }
}

/// A ROM window of `size` bytes at `address`, as a memory BAR.
fn rom_bar(address: u64, size: u64) -> Bar {
    Bar { index: ROM_INDEX, kind: BarKind::Mem32, prefetchable: false, address, size }
}

/// The ROM BAR to plan a guest address for: a ROM small enough to copy (placed by
/// firmware or not: [`copy_rom`] places it when it can).
pub(super) fn plannable_rom(dev: &PciDevice) -> Option<Bar> {
    let rom = dev.rom.filter(|r| r.size <= crate::host::pci::rom::MAX_ROM_BYTES)?;
    Some(rom_bar(0, rom_bar_size(rom.size)))
}

/// The bridge above a function forwards no memory: its ROM cannot be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClosedBridge;

impl core::fmt::Display for ClosedBridge {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the bridge above it forwards no memory")
    }
}

/// The memory window (`[start, end)`) of the bridge `bdf` sits behind: `Ok(None)` on a
/// root bus, `Err` when the bridge forwards no memory.
fn upstream_window(inventory: &PciInventory, config: HostConfig, bdf: Bdf) -> Result<Option<(u64, u64)>, ClosedBridge> {
    let bridge = inventory.devices().iter().find(|d| {
        d.bdf.segment == bdf.segment && d.bridge.is_some_and(|b| b.secondary == bdf.bus && b.primary != bdf.bus)
    });
    let Some(bridge) = bridge else { return Ok(None) };
    bridge_window(config, bridge.bdf).map(Some).ok_or(ClosedBridge)
}

/// The non-prefetchable memory window (`[start, end)`) of bridge `bdf`, if open:
/// Memory Base/Limit, address bits 31:20 (PCI-to-PCI Bridge 1.2 §3.2.5.8).
fn bridge_window(config: HostConfig, bdf: Bdf) -> Option<(u64, u64)> {
    let reg = config.read32(bdf, 0x20);
    let base = u64::from(reg & 0xfff0) << 16;
    let end = (u64::from(reg >> 16 & 0xfff0) << 16).saturating_add(1 << 20);
    (end > base).then_some((base, end))
}

/// Host ranges a ROM must not overlap: every memory BAR, and the memory windows of
/// bridges that are not above `bdf`.
fn busy_ranges(inventory: &PciInventory, config: HostConfig, bdf: Bdf) -> Vec<(u64, u64)> {
    let mut busy: Vec<(u64, u64)> = inventory
        .devices()
        .iter()
        .flat_map(|d| d.bars.iter())
        .filter(|b| b.kind != BarKind::Io && b.size > 0)
        .map(|b| (b.address, b.address.saturating_add(b.size)))
        .collect();
    for d in inventory.devices() {
        let Some(b) = d.bridge else { continue };
        if (b.secondary..=b.subordinate).contains(&bdf.bus) && d.bdf.segment == bdf.segment {
            continue;
        }
        busy.extend(bridge_window(config, d.bdf));
    }
    busy
}

/// Copies `dev`'s ROM into fresh host memory, or `None` (logged) when it cannot be
/// offered to VM `vm`. A ROM firmware left unplaced gets an address in the window of
/// the bridge above the function first.
pub(super) fn copy_rom(dev: &PciDevice, inventory: &PciInventory, config: HostConfig, vm: &str) -> Option<RomCopy> {
    let bdf = dev.bdf;
    let mut rom = dev.rom?;
    let not_offered = |why: &dyn core::fmt::Display| {
        info!(target: "pci", "{bdf}: expansion ROM not offered to VM {vm}: {why}");
    };
    let window = match upstream_window(inventory, config, bdf) {
        Ok(w) => w,
        Err(why) => {
            not_offered(&why);
            return None;
        }
    };
    let Some(address) = crate::host::pci::rom::rom_address(rom, window, &busy_ranges(inventory, config, bdf)) else {
        not_offered(&"firmware left it unplaced and no bridge window above the function has room");
        return None;
    };
    if address != rom.address {
        config.write32(bdf, crate::host::pci::rom::ROM_BAR, address as u32);
        info!(target: "pci", "{bdf}: ROM BAR placed at {address:#x} (firmware left {:#x})", rom.address);
        rom.address = address;
    }
    let mmio = BarMmio::new(&rom_bar(rom.address, rom.size));
    let mut read32 = |pa: u64| {
        let m = mmio.as_ref()?;
        Some(m.read(pa.checked_sub(m.base())?, 4) as u32)
    };
    let (images, count) = match crate::host::pci::rom::copy_rom(&config, bdf, rom, &mut read32) {
        Ok(copied) => copied,
        Err(e) => {
            not_offered(&e);
            return None;
        }
    };
    let len = rom_bar_size(rom.size);
    let mut bytes = alloc::vec![0xffu8; usize::try_from(len).ok()?];
    bytes.get_mut(..images.len())?.copy_from_slice(&images);
    let Some(hpa) = crate::memory::phys::alloc_contiguous(len, PAGE_SIZE) else {
        warn!(target: "pci", "{bdf}: no memory for a copy of its {} KiB ROM; not offered", len >> 10);
        return None;
    };
    crate::memory::guest::HostMemory::write(&mut crate::memory::direct_map::DirectMap, hpa, &bytes);
    info!(
        target: "pci",
        "{bdf}: expansion ROM ({count} image(s), {} KiB) copied; VM {vm} sees it read-only",
        images.len() >> 10
    );
    Some(RomCopy { hpa: hpa.raw(), len })
}

/// Returns a ROM copy's memory.
pub(super) fn free_rom(copy: RomCopy) {
    crate::memory::phys::free_contiguous(HostPhysAddr::new(copy.hpa), copy.len);
}

/// The VM's ROM BAR address space where no copy is mapped (decode off, or the guest
/// writing): reads all-ones, writes are dropped, as a ROM does.
#[derive(Debug)]
pub(super) struct RomWrites {
    pub(super) host: Bdf,
}

impl crate::devices::bus::MmioDevice for RomWrites {
    fn read(&mut self, _offset: u64, size: AccessSize) -> u64 {
        size.mask()
    }
    fn write(&mut self, offset: u64, _size: AccessSize, _value: u64) {
        debug!(target: "pci", "{}: write to its ROM at offset {offset:#x} dropped", self.host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::pci::Rom;

    #[test]
    fn rom_bars_are_at_least_a_page_and_planned_placed_or_not() {
        assert_eq!((rom_bar_size(2048), rom_bar_size(0x10000), rom_bar_size(0x18000)), (4096, 0x10000, 0x20000));
        let mut dev = crate::host::iommu::fake_mem::pci_dev(2, 0, 0, [0x01, 0x08]);
        assert_eq!(plannable_rom(&dev), None, "no ROM BAR");
        for address in [0, 0xffff_c000, 0xc220_4000] {
            dev.rom = Some(Rom { address, size: 2048 });
            let bar = plannable_rom(&dev).unwrap();
            assert_eq!((bar.index, bar.kind, bar.size, bar.address), (ROM_INDEX, BarKind::Mem32, 4096, 0));
        }
        dev.rom = Some(Rom { address: 0xc000_0000, size: 8 << 20 });
        assert_eq!(plannable_rom(&dev), None, "too large to copy");
    }
}
