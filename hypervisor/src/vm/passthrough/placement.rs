//! Where the memory BARs of assigned functions sit in their VM, and which guest BAR
//! addresses can be mapped onto the device.
//!
//! The VM offers two PCI windows (its DSDT's `PCI0._CRS`): 32-bit BARs are placed in
//! the 32-bit window, 64-bit BARs above 4 GiB in the 64-bit window (as firmware does
//! for large prefetchable BARs), each naturally aligned, largest first. What cannot be
//! placed or mapped safely is refused with the reason before any VM starts:
//!
//! * a BAR that does not fit its window (or a legacy below-1-MiB BAR);
//! * a BAR smaller than a page whose host page also holds another device's BAR:
//!   nested paging maps whole 4 KiB pages, so the VM would reach the other device.
//!   A sub-page BAR alone in its page is placed at the same offset within a guest
//!   page as on the host, and the whole page is mapped.
//!
//! The guest may move BARs later (it owns their registers): [`mappable`] says whether
//! a guest address can be mapped — inside a window, at the host's page offset.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::host::pci::{Bar, BarKind, PciDevice, PciInventory};
use crate::memory::addr::PAGE_SIZE;

/// A guest-physical address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarWindow {
    pub start: u64,
    pub end: u64,
}

impl BarWindow {
    pub fn contains(&self, start: u64, len: u64) -> bool {
        start >= self.start && start.checked_add(len).is_some_and(|end| end <= self.end)
    }
}

/// The guest's PCI MMIO windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub mmio32: BarWindow,
    pub mmio64: BarWindow,
}

impl Windows {
    pub fn contain(&self, start: u64, len: u64) -> bool {
        self.mmio32.contains(start, len) || self.mmio64.contains(start, len)
    }
}

/// The page-granular host range nested paging must map for a BAR.
pub fn host_pages(bar: &Bar) -> (u64, u64) {
    let start = bar.address & !(PAGE_SIZE - 1);
    let end = bar.address.saturating_add(bar.size.max(1)).next_multiple_of(PAGE_SIZE);
    (start, end.saturating_sub(start))
}

/// A guest address for BAR `bar` of the `function`-th assigned function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarPlacement {
    pub function: usize,
    pub bar: u8,
    pub guest_addr: u64,
}

/// Whether a page of a memory BAR of `device` also holds a BAR of another function.
pub fn shares_a_page(inventory: &PciInventory, device: &PciDevice, bar: &Bar) -> bool {
    let (start, len) = host_pages(bar);
    let end = start.saturating_add(len);
    inventory.devices().iter().filter(|d| d.bdf != device.bdf).flat_map(|d| d.bars.iter()).any(|other| {
        other.kind != BarKind::Io
            && other.size > 0
            && other.address < end
            && start < other.address.saturating_add(other.size)
    })
}

/// Why a function's BARs cannot be placed in its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementRefusal {
    /// A legacy (below 1 MiB) memory BAR.
    Below1MiB { bar: u8 },
    /// Larger than a BAR register can describe to the guest.
    TooLarge { bar: u8, size: u64 },
    /// Smaller than a page (or not page-aligned) with another device's registers in
    /// its host page.
    SharedPage { bar: u8, size: u64, address: u64 },
    /// No room left in its window.
    DoesNotFit { bar: u8, size: u64, above_4g: bool, window: BarWindow },
}

impl core::fmt::Display for PlacementRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Below1MiB { bar } => write!(f, "BAR{bar} must sit below 1 MiB (legacy type), which VMs do not offer"),
            Self::TooLarge { bar, size } => write!(f, "BAR{bar} is too large ({size:#x} bytes)"),
            Self::SharedPage { bar, size, address } => write!(
                f,
                "BAR{bar} ({size} bytes at {address:#x}) shares its 4 KiB page with another device's registers; \
                 mapping the page would expose them"
            ),
            Self::DoesNotFit { bar, size, above_4g, window } => write!(
                f,
                "BAR{bar} ({} MiB) does not fit in the VM's {} PCI window ({:#x}-{:#x}) with the other BARs",
                size >> 20,
                if above_4g { "64-bit" } else { "32-bit" },
                window.start,
                window.end
            ),
        }
    }
}

/// A [`plan`] refused: the function (its index in the input) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementError {
    pub function: usize,
    pub refusal: PlacementRefusal,
}

/// Plans guest addresses for the memory BARs of `functions` (each given as its host
/// BARs and whether each BAR's page is shared, in the order the functions appear on
/// the guest bus). I/O BARs are left out. Deterministic: the same input gives the
/// same layout at every VM start. An error names the function (its index) and why.
pub fn plan(functions: &[Vec<(Bar, bool)>], windows: &Windows) -> Result<Vec<BarPlacement>, PlacementError> {
    struct Want {
        function: usize,
        bar: u8,
        size: u64,
        page_offset: u64,
        above_4g: bool,
    }
    let mut wants = Vec::new();
    for (function, bars) in functions.iter().enumerate() {
        let refuse = |refusal| Err(PlacementError { function, refusal });
        for (bar, shared) in bars {
            let i = bar.index;
            match bar.kind {
                BarKind::Io => continue,
                BarKind::Mem1M => {
                    return refuse(PlacementRefusal::Below1MiB { bar: i });
                }
                BarKind::Mem32 | BarKind::Mem64 => {}
            }
            let size = crate::devices::vpci::passthrough::guest_bar_size(bar.size);
            if size == 0 {
                return refuse(PlacementRefusal::TooLarge { bar: i, size: bar.size });
            }
            let sub_page = size < PAGE_SIZE || bar.address % PAGE_SIZE != 0;
            if sub_page && *shared {
                return refuse(PlacementRefusal::SharedPage { bar: i, size: bar.size, address: bar.address });
            }
            let page_offset = bar.address % PAGE_SIZE;
            wants.push(Want {
                function,
                bar: i,
                size: size.max(PAGE_SIZE),
                page_offset,
                above_4g: bar.kind == BarKind::Mem64,
            });
        }
    }
    // Largest first packs naturally aligned BARs without holes between them.
    wants.sort_by(|a, b| b.size.cmp(&a.size).then(a.function.cmp(&b.function)).then(a.bar.cmp(&b.bar)));
    let mut next32 = windows.mmio32.start;
    let mut next64 = windows.mmio64.start;
    let mut out = Vec::new();
    for w in wants {
        let (next, window) = if w.above_4g { (&mut next64, windows.mmio64) } else { (&mut next32, windows.mmio32) };
        let base =
            next.checked_next_multiple_of(w.size).filter(|b| window.contains(*b, w.size)).ok_or(PlacementError {
                function: w.function,
                refusal: PlacementRefusal::DoesNotFit { bar: w.bar, size: w.size, above_4g: w.above_4g, window },
            })?;
        *next = base.saturating_add(w.size);
        out.push(BarPlacement { function: w.function, bar: w.bar, guest_addr: base.saturating_add(w.page_offset) });
    }
    out.sort_by_key(|p| (p.function, p.bar));
    Ok(out)
}

/// Whether a BAR the guest placed at `guest_addr` can be mapped onto host `host_addr`
/// (`len` bytes, page-rounded by the caller): the range lies in one of the windows and
/// the page offsets agree. `Err` says why not.
pub fn mappable(windows: &Windows, guest_addr: u64, host_addr: u64, len: u64) -> Result<(), &'static str> {
    if guest_addr % PAGE_SIZE != host_addr % PAGE_SIZE {
        return Err("its offset within a page differs from the device's");
    }
    let start = guest_addr & !(PAGE_SIZE - 1);
    if !windows.contain(start, len) {
        return Err("it lies outside the VM's PCI windows");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const WINDOWS: Windows = Windows {
        mmio32: BarWindow { start: 0xc000_0000, end: 0xe000_0000 },
        mmio64: BarWindow { start: 0x8_0000_0000, end: 0x10_0000_0000 },
    };

    fn bar(index: u8, kind: BarKind, address: u64, size: u64) -> (Bar, bool) {
        (Bar { index, kind, prefetchable: kind == BarKind::Mem64, address, size }, false)
    }

    #[test]
    fn display_adapter_bars_land_in_the_32_bit_window_largest_first() {
        // bochs-display: BAR0 16 MiB prefetchable framebuffer, BAR2 4 KiB registers.
        let gpu = vec![bar(0, BarKind::Mem32, 0xc100_0000, 16 << 20), bar(2, BarKind::Mem32, 0xc200_0000, 0x1000)];
        let got = plan(&[gpu], &WINDOWS).unwrap();
        assert_eq!(
            got,
            [
                BarPlacement { function: 0, bar: 0, guest_addr: 0xc000_0000 },
                BarPlacement { function: 0, bar: 2, guest_addr: 0xc100_0000 },
            ]
        );
    }

    #[test]
    fn sixty_four_bit_bars_go_above_4g_and_io_bars_are_skipped() {
        // A GPU: 256 MiB 64-bit VRAM (host address far above 4 GiB), 32 MiB 64-bit
        // registers, 16 MiB 32-bit MMIO, an I/O BAR; then a NIC with 128 KiB + 16 KiB.
        let gpu = vec![
            bar(0, BarKind::Mem32, 0xfd00_0000, 16 << 20),
            bar(1, BarKind::Mem64, 0x38_0000_0000, 256 << 20),
            bar(3, BarKind::Mem64, 0x38_1000_0000, 32 << 20),
            bar(5, BarKind::Io, 0xe000, 128),
        ];
        let nic = vec![bar(0, BarKind::Mem32, 0xfebc_0000, 128 << 10), bar(3, BarKind::Mem32, 0xfebe_0000, 16 << 10)];
        let got = plan(&[gpu, nic], &WINDOWS).unwrap();
        let at = |f: usize, b: u8| got.iter().find(|p| (p.function, p.bar) == (f, b)).map(|p| p.guest_addr);
        assert_eq!(at(0, 1), Some(0x8_0000_0000));
        assert_eq!(at(0, 3), Some(0x8_1000_0000));
        assert_eq!(at(0, 0), Some(0xc000_0000));
        assert_eq!(at(1, 0), Some(0xc100_0000));
        assert_eq!(at(1, 3), Some(0xc102_0000));
        assert_eq!(at(0, 5), None);
        assert_eq!(got.len(), 5);
        for p in &got {
            let size = if (p.function, p.bar) == (0, 1) { 256 << 20 } else { 0x4000 };
            assert_eq!(p.guest_addr % size, 0, "{p:?} not naturally aligned");
        }
    }

    #[test]
    fn what_cannot_be_placed_or_mapped_safely_is_refused() {
        let too_big = vec![bar(0, BarKind::Mem32, 0x8000_0000, 1 << 30)];
        let e = plan(&[too_big], &WINDOWS).unwrap_err();
        assert_eq!(
            e.function_and_text(),
            (
                0,
                "BAR0 (1024 MiB) does not fit in the VM's 32-bit PCI window (0xc0000000-0xe0000000) with the \
                 other BARs"
                    .into()
            )
        );
        let huge64 = vec![bar(2, BarKind::Mem64, 0x40_0000_0000, 64 << 30)];
        let e = plan(&[huge64], &WINDOWS).unwrap_err();
        assert!(matches!(e.refusal, PlacementRefusal::DoesNotFit { bar: 2, above_4g: true, .. }), "{e:?}");
        assert!(e.refusal.to_string().contains("64-bit PCI window"), "{e:?}");
        // Two 256 MiB BARs fill the 32-bit window; a third one does not fit.
        let full = vec![
            bar(0, BarKind::Mem32, 0x8000_0000, 256 << 20),
            bar(1, BarKind::Mem32, 0x9000_0000, 256 << 20),
            bar(2, BarKind::Mem32, 0xa000_0000, 0x1000),
        ];
        let other = vec![bar(0, BarKind::Mem64, 0x40_0000_0000, 0x1000)];
        let e = plan(&[other, full], &WINDOWS).unwrap_err();
        assert_eq!(e.function, 1, "{e:?}");
        assert!(matches!(e.refusal, PlacementRefusal::DoesNotFit { bar: 2, above_4g: false, .. }), "{e:?}");
        let legacy = vec![bar(0, BarKind::Mem1M, 0xd_0000, 0x1000)];
        assert_eq!(
            plan(&[legacy], &WINDOWS).unwrap_err().function_and_text(),
            (0, "BAR0 must sit below 1 MiB (legacy type), which VMs do not offer".into())
        );
        let mut shared = bar(1, BarKind::Mem32, 0xfebd_1100, 0x100);
        shared.1 = true;
        assert_eq!(
            plan(&[vec![shared]], &WINDOWS).unwrap_err().function_and_text(),
            (
                0,
                "BAR1 (256 bytes at 0xfebd1100) shares its 4 KiB page with another device's registers; mapping the \
                 page would expose them"
                    .into()
            )
        );
    }

    impl PlacementError {
        fn function_and_text(&self) -> (usize, alloc::string::String) {
            (self.function, alloc::format!("{}", self.refusal))
        }
    }

    #[test]
    fn a_sub_page_bar_alone_in_its_page_keeps_its_page_offset() {
        let small = vec![bar(0, BarKind::Mem32, 0xfebd_1100, 0x100), bar(2, BarKind::Mem32, 0xfe00_0000, 0x4000)];
        let got = plan(&[small], &WINDOWS).unwrap();
        assert_eq!(got[0], BarPlacement { function: 0, bar: 0, guest_addr: 0xc000_4100 });
        assert_eq!(got[1].guest_addr, 0xc000_0000);
        assert_eq!(host_pages(&small_bar()), (0xfebd_1000, 0x1000));
        assert_eq!(mappable(&WINDOWS, 0xc000_4100, 0xfebd_1100, 0x1000), Ok(()));
        assert!(mappable(&WINDOWS, 0xc000_4200, 0xfebd_1100, 0x1000).is_err());
    }

    fn small_bar() -> Bar {
        Bar { index: 0, kind: BarKind::Mem32, prefetchable: false, address: 0xfebd_1100, size: 0x100 }
    }

    #[test]
    fn guest_addresses_are_mappable_only_inside_the_windows() {
        assert_eq!(mappable(&WINDOWS, 0xc000_0000, 0xfd00_0000, 16 << 20), Ok(()));
        assert_eq!(mappable(&WINDOWS, 0x8_0000_0000, 0x38_0000_0000, 256 << 20), Ok(()));
        // Over RAM, across the window's end, over ECAM, over the local APIC.
        for at in [0x1000_0000, 0xdfff_f000, 0xe000_0000, 0xfee0_0000, 0xffff_f000] {
            assert!(mappable(&WINDOWS, at, 0xfd00_0000, 0x2000).is_err(), "{at:#x}");
        }
        assert!(mappable(&WINDOWS, 0xffff_ffff_ffff_f000, 0xfd00_0000, 0x2000).is_err());
    }

    #[test]
    fn shared_pages_are_found_in_the_inventory() {
        use crate::host::iommu::fake_mem::pci_dev;
        let mut a = pci_dev(0, 3, 0, [0x02, 0x00]);
        a.bars = vec![Bar { index: 0, kind: BarKind::Mem32, prefetchable: false, address: 0xfebd_1000, size: 0x100 }];
        let mut b = pci_dev(0, 4, 0, [0x02, 0x00]);
        b.bars = vec![
            Bar { index: 0, kind: BarKind::Mem32, prefetchable: false, address: 0xfebd_1100, size: 0x100 },
            Bar { index: 1, kind: BarKind::Io, prefetchable: false, address: 0xfebd_2000, size: 0x100 },
        ];
        let mut c = pci_dev(0, 5, 0, [0x03, 0x00]);
        c.bars = vec![Bar { index: 0, kind: BarKind::Mem32, prefetchable: false, address: 0xfebd_3000, size: 0x1000 }];
        let inv = PciInventory::new(vec![a.clone(), b, c.clone()], true);
        assert!(shares_a_page(&inv, &a, &a.bars[0]));
        assert!(!shares_a_page(&inv, &c, &c.bars[0]), "I/O BARs and other pages do not count");
    }
}
