//! The two host mechanisms for PCI configuration space, as `pci_types`
//! `ConfigRegionAccess` implementations, [`HostConfigSpace`], the safe handle the
//! enumerator uses, and [`BarMmio`], the few device registers the hypervisor writes
//! itself (assigned devices' MSI-X tables). This is the only `unsafe` of the PCI layer.

use crate::hw::mmio::MmioRegion;
use alloc::vec::Vec;

use pci_types::{ConfigRegionAccess, PciAddress};

use crate::arch::x86::instr::{inl, outb, outl};
use crate::host::acpi::{EcamRegion, PlatformTables};
use crate::host::pci::model::{Bar, BarKind};

/// Configuration mechanism #1 (PCI Local Bus Spec 3.0 §3.2.2.3.2): CONFIG_ADDRESS at
/// 0xcf8, CONFIG_DATA at 0xcfc. Segment 0 and offsets below 0x100 only.
#[derive(Debug)]
pub struct LegacyPorts {
    _owned: (),
}

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// The address/data pair is one shared state machine; two CPUs must not interleave.
static LEGACY_LOCK: spin::Mutex<()> = spin::Mutex::new(());

impl LegacyPorts {
    /// # Safety
    /// Ports 0xcf8-0xcff must belong to the hypervisor (no guest can reach them), and
    /// the host bridge must decode configuration mechanism #1 (every PC chipset does).
    pub unsafe fn new() -> Self {
        Self { _owned: () }
    }

    fn config_address(address: PciAddress, offset: u16) -> Option<u32> {
        if address.segment() != 0 || offset >= 0x100 || address.device() >= 32 || address.function() >= 8 {
            return None;
        }
        Some(
            0x8000_0000
                | u32::from(address.bus()) << 16
                | u32::from(address.device()) << 11
                | u32::from(address.function()) << 8
                | u32::from(offset & 0xfc),
        )
    }
}

impl LegacyPorts {
    /// Writes one byte of a function's configuration space (the FADT's reset register
    /// may be a byte in a bus-0 function), under the same lock as every other access.
    ///
    /// # Safety
    /// The caller vouches for the effect of the write on the device.
    pub unsafe fn write8(&self, address: PciAddress, offset: u16, value: u8) {
        let Some(cfg) = Self::config_address(address, offset) else {
            return;
        };
        let _guard = LEGACY_LOCK.lock();
        // SAFETY: as for `read`.
        unsafe { outl(CONFIG_ADDRESS, cfg) };
        // `offset & 3` is at most 3: the port add cannot overflow.
        let data_port = CONFIG_DATA.wrapping_add(offset & 3);
        // SAFETY: the byte lane of the selected dword; the caller vouches for the effect.
        unsafe { outb(data_port, value) };
    }
}

impl ConfigRegionAccess for LegacyPorts {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let Some(cfg) = Self::config_address(address, offset) else {
            return u32::MAX;
        };
        let _guard = LEGACY_LOCK.lock();
        // SAFETY: `new`'s contract gives the hypervisor ports 0xcf8/0xcfc; the lock makes
        // the address/data pair atomic. Selecting a register has no other effect.
        unsafe { outl(CONFIG_ADDRESS, cfg) };
        // SAFETY: as above; reads the register just selected.
        unsafe { inl(CONFIG_DATA) }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        let Some(cfg) = Self::config_address(address, offset) else {
            return;
        };
        let _guard = LEGACY_LOCK.lock();
        // SAFETY: as for `read`.
        unsafe { outl(CONFIG_ADDRESS, cfg) };
        // SAFETY: the caller vouches for the effect of the write on the device (the
        // `ConfigRegionAccess::write` contract).
        unsafe { outl(CONFIG_DATA, value) };
    }
}

/// Enhanced configuration access (PCIe Base Spec 6.0 §7.2.2): a 4 KiB MMIO window per
/// function at `base + (bus << 20 | dev << 15 | fn << 12)`, from the MCFG.
#[derive(Debug)]
pub struct Ecam {
    region: EcamRegion,
    window: MmioRegion,
}

impl Ecam {
    /// # Safety
    /// `region` must describe a real ECAM window (from a validated MCFG) that is
    /// identity-mapped uncacheable and owned by the hypervisor.
    pub unsafe fn new(region: EcamRegion) -> Self {
        // SAFETY: the caller's contract covers the whole window.
        let window = unsafe { MmioRegion::new(region.base, region.len_bytes()) };
        Self { region, window }
    }

    /// The dword's offset in the window, if `address` is on this segment's buses.
    fn window_offset(&self, address: PciAddress, offset: u16) -> Option<u64> {
        if address.segment() != self.region.segment || offset & 3 != 0 {
            return None;
        }
        let pa = self.region.config_address(address.bus(), address.device(), address.function(), offset)?;
        pa.checked_sub(self.region.base)
    }
}

impl ConfigRegionAccess for Ecam {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        // A config read of an absent function returns all-ones rather than faulting.
        self.window_offset(address, offset).map_or(u32::MAX, |at| self.window.read(at))
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        // The caller vouches for the effect on the device.
        if let Some(at) = self.window_offset(address, offset) {
            self.window.write(at, value);
        }
    }
}

/// A configuration-space accessor that may be used freely: reads and writes of any
/// function on its segment are sound. Built only through an `unsafe` constructor that
/// establishes this, so the enumerator itself is safe code.
#[derive(Debug)]
pub struct HostConfigSpace<A> {
    access: A,
    segment: u16,
    /// Whether offsets 0x100-0xfff (PCIe extended capabilities) are reachable.
    extended: bool,
}

impl<A: ConfigRegionAccess> HostConfigSpace<A> {
    /// # Safety
    /// The hypervisor must own every PCI function reachable through `access` (no guest
    /// runs yet, or none is assigned), and any config read or write through it must be
    /// memory-safe (true for the accessors above under their own contracts).
    pub unsafe fn new(access: A, segment: u16, extended: bool) -> Self {
        Self { access, segment, extended }
    }

    pub fn segment(&self) -> u16 {
        self.segment
    }

    pub fn has_extended(&self) -> bool {
        self.extended
    }

    pub fn read(&self, address: PciAddress, offset: u16) -> u32 {
        // SAFETY: `new`'s contract.
        unsafe { self.access.read(address, offset) }
    }

    pub fn write(&self, address: PciAddress, offset: u16, value: u32) {
        // SAFETY: `new`'s contract.
        unsafe { self.access.write(address, offset, value) }
    }
}

impl<A: ConfigRegionAccess> ConfigRegionAccess for HostConfigSpace<A> {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        HostConfigSpace::read(self, address, offset)
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        HostConfigSpace::write(self, address, offset, value)
    }
}

/// Either host mechanism, chosen per segment.
#[derive(Debug)]
pub enum HostAccess {
    Legacy(LegacyPorts),
    Ecam(Ecam),
}

impl ConfigRegionAccess for HostAccess {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        match self {
            // SAFETY: forwarded under the caller's guarantee.
            Self::Legacy(a) => unsafe { a.read(address, offset) },
            // SAFETY: forwarded under the caller's guarantee.
            Self::Ecam(a) => unsafe { a.read(address, offset) },
        }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        match self {
            // SAFETY: forwarded under the caller's guarantee.
            Self::Legacy(a) => unsafe { a.write(address, offset, value) },
            // SAFETY: forwarded under the caller's guarantee.
            Self::Ecam(a) => unsafe { a.write(address, offset, value) },
        }
    }
}

/// One config space per ECAM window in the MCFG, with the bus to start scanning at;
/// without an MCFG, the legacy ports for segment 0 from bus 0.
pub fn host_config_spaces(tables: &PlatformTables) -> Vec<(HostConfigSpace<HostAccess>, u8)> {
    let mut spaces = Vec::new();
    for region in tables.ecam_regions() {
        // SAFETY: the region comes from the firmware's MCFG and the hypervisor
        // identity-maps MMIO.
        let ecam = unsafe { Ecam::new(*region) };
        // SAFETY: the hypervisor owns every device while it enumerates (boot, before
        // any guest exists).
        let space = unsafe { HostConfigSpace::new(HostAccess::Ecam(ecam), region.segment, true) };
        spaces.push((space, region.bus_start));
    }
    if spaces.is_empty() {
        // SAFETY: ports 0xcf8/0xcfc are never given to guests.
        let ports = unsafe { LegacyPorts::new() };
        // SAFETY: the hypervisor owns every device while it enumerates.
        let space = unsafe { HostConfigSpace::new(HostAccess::Legacy(ports), 0, false) };
        spaces.push((space, 0));
    }
    spaces
}

/// Memory BARs the hypervisor reaches itself lie in the 32-bit PCI hole: below 4 GiB
/// every address is in the hypervisor's identity map (`memory::paging` maps at least
/// up to 4 GiB), and firmware's MTRRs make the hole uncacheable. BARs above 4 GiB
/// are not reached (nor given to VMs yet).
const MMIO_HOLE_END: u64 = 1 << 32;
/// The architectural limit of physical addresses (52 bits).
const MAX_PHYS: u64 = 1 << 52;
/// Nothing below 1 MiB is a BAR the hypervisor writes (legacy ranges, real-mode RAM).
const MMIO_HOLE_START: u64 = 1 << 20;

/// A host function's memory BAR, for the device registers the hypervisor writes
/// itself: an assigned device's MSI-X table (remapped messages and mask bits only)
/// and the bytes sharing its pages. Accesses are naturally aligned, 1/2/4/8 bytes,
/// and bounds-checked against the BAR; anything else reads all-ones and writes
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMmio {
    region: MmioRegion,
}

impl BarMmio {
    /// The window on `bar` if it is a memory BAR, naturally aligned and wholly inside
    /// the 32-bit PCI hole; `None` otherwise (I/O BARs, unprogrammed or 64-bit BARs
    /// placed above 4 GiB).
    pub fn new(bar: &Bar) -> Option<Self> {
        let end = bar.address.checked_add(bar.size)?;
        let memory = bar.kind != BarKind::Io;
        let aligned = bar.size.is_power_of_two() && bar.address.is_multiple_of(bar.size);
        (memory && aligned && bar.address >= MMIO_HOLE_START && end <= MMIO_HOLE_END).then(|| {
            // SAFETY: a memory BAR the enumerator read from a device, naturally aligned,
            // in the 32-bit PCI hole that firmware keeps apart from RAM and the
            // hypervisor identity-maps; device memory no Rust reference points into.
            // Only the owner of the assigned device builds one.
            Self { region: unsafe { MmioRegion::new(bar.address, bar.size) } }
        })
    }

    /// The window on a memory BAR whose registers the hypervisor writes itself (its own
    /// NVMe drive; an assigned device's MSI-X table): one in the 32-bit hole as
    /// [`new`](Self::new), or a 64-bit BAR above 4 GiB (below 2^52),
    /// naturally aligned, which is first mapped uncacheable into the hypervisor's page
    /// tables (`paging::map_device_registers`). `None` for anything else.
    pub fn for_own_device(bar: &Bar) -> Option<Self> {
        if let Some(window) = Self::new(bar) {
            return Some(window);
        }
        let end = bar.address.checked_add(bar.size)?;
        let aligned = bar.size.is_power_of_two() && bar.address.is_multiple_of(bar.size);
        if bar.kind != BarKind::Mem64 || !aligned || bar.address < MMIO_HOLE_END || end > MAX_PHYS {
            return None;
        }
        crate::memory::paging::map_device_registers(bar.address, bar.size).ok()?;
        // SAFETY: a 64-bit memory BAR the enumerator read from a device, naturally
        // aligned, above 4 GiB where firmware places no RAM it reported to us, now
        // identity mapped uncacheable (or already mapped by the identity map of an MMIO
        // hole); device memory no Rust reference points into. Only the hypervisor's own
        // driver or the MSI-X code of the device's owner builds one.
        Some(Self { region: unsafe { MmioRegion::new(bar.address, bar.size) } })
    }

    /// The BAR's host physical address.
    pub fn base(&self) -> u64 {
        self.region.base()
    }

    /// Reads `bytes` (1, 2, 4 or 8) at `offset`; all-ones outside the BAR or misaligned.
    pub fn read(&self, offset: u64, bytes: u8) -> u64 {
        let r = &self.region;
        match bytes {
            1 if r.address_of::<u8>(offset).is_some() => u64::from(r.read::<u8>(offset)),
            2 if r.address_of::<u16>(offset).is_some() => u64::from(r.read::<u16>(offset)),
            4 if r.address_of::<u32>(offset).is_some() => u64::from(r.read::<u32>(offset)),
            8 => r.read::<u64>(offset),
            _ => u64::MAX,
        }
    }

    /// Writes `bytes` (1, 2, 4 or 8) at `offset`; the effect on the device is the
    /// caller's business (it owns the device). Dropped outside the BAR or misaligned.
    pub fn write(&self, offset: u64, bytes: u8, value: u64) {
        match bytes {
            1 => self.region.write(offset, value as u8),
            2 => self.region.write(offset, value as u16),
            4 => self.region.write(offset, value as u32),
            8 => self.region.write(offset, value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod bar_tests {
    use super::*;

    fn bar(kind: BarKind, address: u64, size: u64) -> Bar {
        Bar { index: 0, kind, prefetchable: false, address, size }
    }

    #[test]
    fn only_aligned_memory_bars_in_the_32_bit_hole() {
        assert!(BarMmio::new(&bar(BarKind::Mem32, 0xfebf_0000, 0x1_0000)).is_some());
        assert!(BarMmio::new(&bar(BarKind::Mem64, 0xc000_0000, 0x10_0000)).is_some());
        assert!(BarMmio::new(&bar(BarKind::Io, 0xc000_0000, 0x100)).is_none());
        assert!(BarMmio::new(&bar(BarKind::Mem64, 0x8_0000_0000, 0x1000)).is_none(), "above 4 GiB");
        assert!(BarMmio::new(&bar(BarKind::Mem32, 0xffff_f000, 0x2000)).is_none(), "crosses 4 GiB");
        assert!(BarMmio::new(&bar(BarKind::Mem32, 0xfebf_0800, 0x1000)).is_none(), "misaligned");
        assert!(BarMmio::new(&bar(BarKind::Mem32, 0, 0x1000)).is_none(), "unprogrammed");
        assert!(BarMmio::new(&bar(BarKind::Mem32, 0xfebf_0000, 0)).is_none());
    }

    #[test]
    fn accesses_outside_or_misaligned_touch_nothing() {
        let m = BarMmio::new(&bar(BarKind::Mem32, 0xfebf_0000, 0x1000)).expect("a valid BAR");
        assert_eq!(m.region.address_of::<u32>(0xffc), Some(0xfebf_0ffc));
        assert_eq!(m.region.address_of::<u64>(0xffc), None, "past the end");
        assert_eq!(m.region.address_of::<u32>(0x2), None, "misaligned");
        assert_eq!(m.region.address_of::<u8>(u64::MAX), None);
        // Out-of-range accesses return before any pointer is formed.
        assert_eq!(m.read(0x1000, 4), u64::MAX);
        m.write(0x1000, 4, 0);
    }
}
