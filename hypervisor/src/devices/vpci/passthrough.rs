//! An assigned host PCI function as its VM sees it: a [`VirtualPciFunction`] whose
//! configuration space is filtered (see `config_filter`).
//!
//! * IDs, class, subsystem: the device's own, read-only.
//! * Interrupt pin: the device's own when its INTx line is routed to the VM
//!   ([`PassthroughFunction::with_intx`]; the interrupt line register then reads the
//!   guest GSI), else 0: the guest sees no INTx and uses MSI.
//! * BARs: virtual. The guest sizes and places them at guest-physical addresses; the
//!   device keeps its host addresses. [`PassthroughFunction::bar_mappings`] tells the
//!   VM what to map (GPA → HPA) in its nested page tables.
//! * Command: the guest's bits reach the device filtered: decode and bus mastering
//!   as the guest sets them (bus mastering stays off until the VM's driver enables
//!   it); INTx disable as the guest sets it when INTx is routed, else always set.
//! * Capabilities: the real list, reduced to power management, MSI, MSI-X and PCI
//!   Express, relinked; vendor-specific and everything else is hidden, and the
//!   extended space (AER, ACS, ATS, SR-IOV, ...) reads as empty.
//! * MSI/MSI-X: emulated; the device only gets remapped messages (see `msi`).
//! * Expansion ROM: when the VM has a copy of the device's ROM
//!   ([`PassthroughFunction::with_rom`]), a virtual ROM BAR the guest sizes, places
//!   and enables; the VM maps the copy read-only there. Else it reads 0.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::devices::vpci::config_filter::{ConfigFilter, Rule};
use crate::devices::vpci::host_bridge::{BarRegion, VBarKind, VirtualPciFunction};
use crate::devices::vpci::msi::{InterruptRouter, MsiRoute, MsixTable};
use crate::host::pci::{BarKind, PciDevice};
use crate::host::pci::{ConfigAccess, PciError};
use crate::hw::AccessSize;
use crate::hw::Bdf;
use crate::hw::MsiMessage;
use crate::hw::pci::cap_id;
use crate::hw::pci::*;

use crate::host::pci::rom::{ROM_ADDRESS, ROM_BAR, ROM_ENABLE};

/// [`BarRegion::index`] of the expansion ROM (Linux's `PCI_ROM_RESOURCE`).
pub const ROM_INDEX: u8 = 6;

/// Command bits the guest controls: decode, bus mastering, parity and SERR reporting
/// (INTx Disable too, when INTx is routed).
const GUEST_COMMAND: u16 = CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | CMD_PARITY | CMD_SERR;

/// Which address space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarSpace {
    Mmio,
    Io,
    /// A read-only copy of the expansion ROM in host memory.
    Rom,
}

/// A BAR the VM must map: guest address → host address, `len_bytes` long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMapping {
    pub bar: u8,
    pub guest_addr: u64,
    pub host_addr: u64,
    pub len_bytes: u64,
    pub space: BarSpace,
}

#[derive(Debug, Clone, Copy)]
struct VBar {
    index: u8,
    kind: BarKind,
    prefetchable: bool,
    host_addr: u64,
    size: u64,
}

#[derive(Debug, Clone, Copy)]
struct MsiCap {
    offset: u16,
    is_64bit: bool,
    per_vector_mask: bool,
    len: u16,
    /// Last route handed to the router (to reprogram only on change).
    routed: Option<MsiRoute>,
    /// The message the device holds and has enabled, if any.
    programmed: Option<MsiMessage>,
}

#[derive(Debug, Clone)]
struct MsixCap {
    offset: u16,
    table: MsixTable,
}

/// Capability lengths we expose (PCI 3.0 §6.8; PCIe 6.0 §7.5.3).
const PM_LEN: u16 = 8;
const MSIX_LEN: u16 = 12;

/// PCI Express capability register offsets (PCIe 6.0 §7.5.3).
mod pcie {
    pub const DEVCTL: u16 = 0x08;
    pub const DEVSTA: u16 = 0x0a;
    /// Device Control bits the guest may change: error reporting enables (3:0),
    /// relaxed ordering (4), no snoop (11). MPS, MRRS, extended tags, phantom
    /// functions, aux power and Initiate FLR stay the hypervisor's.
    pub const DEVCTL_GUEST: u16 = 0x081f;
}

/// An assigned function.
#[derive(Debug)]
pub struct PassthroughFunction<A: ConfigAccess, R: InterruptRouter> {
    bdf: Bdf,
    access: A,
    router: R,
    filter: ConfigFilter,
    bars: Vec<VBar>,
    msi: Option<MsiCap>,
    msix: Option<MsixCap>,
    has_caps: bool,
    /// The guest GSI the function's INTx line drives, when it is routed.
    intx: Option<u8>,
    /// The size of the virtual ROM BAR, when a ROM copy is offered.
    rom_size: Option<u64>,
    /// The guest changed the MSI-X control word: the function is masked on the device
    /// and its table is brought in line once, at [`VirtualPciFunction::settle`] (a REP
    /// string write toggling the enable bit would otherwise re-sync the whole table,
    /// up to 2048 entries, per element).
    msix_resync: bool,
    /// The guest wrote the MSI capability: its route is re-evaluated once, at
    /// [`VirtualPciFunction::settle`], so a REP string write costs one IOMMU update.
    msi_dirty: bool,
}

impl<A: ConfigAccess, R: InterruptRouter> PassthroughFunction<A, R> {
    /// Builds the filtered view of `device` (as enumerated) and quiesces the device:
    /// decode, bus mastering and MSI/MSI-X off, INTx disabled.
    pub fn new(device: &PciDevice, access: A, router: R) -> Result<Self, PciError> {
        let bdf = device.bdf;
        if access.read32(bdf, 0) & 0xffff == 0xffff {
            return Err(PciError::Absent(bdf));
        }
        if device.header_type != 0 {
            return Err(PciError::NotAnEndpoint(bdf));
        }
        let mut f = Self {
            bdf,
            access,
            router,
            filter: ConfigFilter::new(),
            bars: Vec::new(),
            msi: None,
            msix: None,
            has_caps: false,
            intx: None,
            rom_size: None,
            msix_resync: false,
            msi_dirty: false,
        };
        f.build_header(device);
        f.build_capabilities(device);
        f.access.write32(bdf, COMMAND, u32::from(CMD_INTX_DISABLE));
        log::info!(
            target: "pci",
            "{bdf}: passthrough view: {} BAR(s), MSI {}, MSI-X {}",
            f.bars.len(), f.msi.is_some(), f.msix.as_ref().map_or(0, |m| m.table.entries.len())
        );
        Ok(f)
    }

    fn build_header(&mut self, device: &PciDevice) {
        let fl = &mut self.filter;
        fl.set(0x00, 4, Rule::Real); // vendor, device
        fl.set_virtual(COMMAND, 2, 0, u32::from(GUEST_COMMAND));
        fl.set_virtual(STATUS, 2, 0, 0); // computed on read
        fl.set(0x08, 4, Rule::Real); // revision, class
        fl.set_virtual(0x0c, 1, 0, 0xff); // cache line size
        fl.set_virtual(0x0d, 1, 0, 0); // latency timer
        fl.set_virtual(HEADER_TYPE, 1, 0, 0); // type 0, single function
        fl.set(0x0f, 1, Rule::Zero); // BIST
        fl.set(0x28, 4, Rule::Zero); // CardBus CIS
        fl.set(0x2c, 4, Rule::Real); // subsystem ids
        fl.set(ROM_BAR, 4, Rule::Zero); // expansion ROM: none until `with_rom`
        fl.set_virtual(CAP_PTR, 1, 0, 0);
        fl.set_virtual(INTERRUPT_LINE, 1, u32::from(device.interrupt_line), 0xff);
        fl.set(0x3d, 3, Rule::Real); // pin, min_gnt, max_lat
        fl.set_virtual(INTERRUPT_PIN, 1, 0, 0); // no INTx until `with_intx`
        // BARs: virtual registers with the real type bits and size masks.
        for index in 0..6u16 {
            fl.set_virtual(BAR0.saturating_add(index.saturating_mul(4)), 4, 0, 0);
        }
        for bar in &device.bars {
            let at = BAR0.saturating_add(u16::from(bar.index).saturating_mul(4));
            let size = guest_bar_size(bar.size);
            let mask = !size.wrapping_sub(1);
            let (low_bits, low_mask) = match bar.kind {
                BarKind::Io => (1u32, (mask as u32) & 0xffff_fffc),
                BarKind::Mem32 | BarKind::Mem1M => (u32::from(bar.prefetchable) << 3, (mask as u32) & !0xf),
                BarKind::Mem64 => (0b100 | u32::from(bar.prefetchable) << 3, (mask as u32) & !0xf),
            };
            fl.set_virtual(at, 4, low_bits, low_mask);
            if bar.kind == BarKind::Mem64 {
                fl.set_virtual(at.saturating_add(4), 4, 0, (mask >> 32) as u32);
            }
            self.bars.push(VBar {
                index: bar.index,
                kind: bar.kind,
                prefetchable: bar.prefetchable,
                host_addr: bar.address,
                size,
            });
        }
    }

    /// Exposes PM, MSI, MSI-X and PCIe from the real list (in its order), relinked.
    fn build_capabilities(&mut self, device: &PciDevice) {
        let mut exposed: Vec<(u16, u16)> = Vec::new();
        for cap in &device.capabilities {
            let offset = u16::from(cap.offset);
            let control = self.access.read16(self.bdf, offset.saturating_add(2));
            let len = match cap.id {
                cap_id::POWER_MANAGEMENT => PM_LEN,
                cap_id::MSI => msi_len(control),
                cap_id::MSIX => MSIX_LEN,
                // Version 2 structures are 3Ch bytes; an endpoint's version 1
                // structure ends after Link Status (14h). Clipped to the header.
                cap_id::PCI_EXPRESS => {
                    (if control & 0xf >= 2 { 0x3c } else { 0x14 }).min(0x100u16.saturating_sub(offset))
                }
                _ => {
                    log::debug!(target: "pci", "{}: capability {:#04x} at {offset:#x} hidden", self.bdf, cap.id);
                    continue;
                }
            };
            let end = offset.saturating_add(len);
            if offset < 0x40
                || end > 0x100
                || len < 8
                || exposed.iter().any(|(o, l)| offset < o.saturating_add(*l) && *o < end)
            {
                log::warn!(target: "pci", "{}: capability {:#04x} at {offset:#x} overlaps or overruns; hidden", self.bdf, cap.id);
                continue;
            }
            self.expose(cap.id, offset, control);
            exposed.push((offset, len));
        }
        // Relink: the header's pointer, then each exposed capability's next byte.
        let mut prev_next = CAP_PTR;
        for (offset, _) in &exposed {
            self.filter.set_virtual(prev_next, 1, u32::from(*offset), 0);
            prev_next = offset.saturating_add(1);
        }
        self.filter.set_virtual(prev_next, 1, 0, 0);
        self.has_caps = !exposed.is_empty();
    }

    fn expose(&mut self, id: u8, offset: u16, control: u16) {
        let fl = &mut self.filter;
        fl.set(offset, 1, Rule::Real);
        match id {
            cap_id::POWER_MANAGEMENT => {
                fl.set(offset.saturating_add(2), 2, Rule::Real); // PMC
                // PMCSR: a virtual power state (the device stays in D0, so a D3hot
                // round trip cannot reset it behind the VM's back); PME_En writable.
                fl.set_virtual(offset.saturating_add(4), 2, 0x0008, 0x0103);
                fl.set(offset.saturating_add(6), 2, Rule::Real);
            }
            cap_id::MSI => {
                // One vector offered (MMC = 0): multi-message MSI would need
                // contiguous remapping handles.
                let is_64bit = control & (1 << 7) != 0;
                let per_vector_mask = control & (1 << 8) != 0;
                let ro_control = control & ((1 << 7) | (1 << 8));
                fl.set_virtual(offset.saturating_add(2), 2, u32::from(ro_control), 0x0001);
                let mut at = offset.saturating_add(4);
                fl.set_virtual(at, 4, 0, 0xffff_fffc);
                at = at.saturating_add(4);
                if is_64bit {
                    fl.set_virtual(at, 4, 0, u32::MAX);
                    at = at.saturating_add(4);
                }
                fl.set_virtual(at, 2, 0, 0xffff);
                if per_vector_mask {
                    fl.set(at.saturating_add(2), 2, Rule::Zero);
                    fl.set_virtual(at.saturating_add(4), 4, 0, 1); // mask bits
                    fl.set_virtual(at.saturating_add(8), 4, 0, 0); // pending bits
                }
                self.msi = Some(MsiCap {
                    offset,
                    is_64bit,
                    per_vector_mask,
                    len: msi_len(control),
                    routed: None,
                    programmed: None,
                });
            }
            cap_id::MSIX => {
                fl.set_virtual(offset.saturating_add(2), 2, u32::from(control & 0x07ff), 0xc000);
                fl.set(offset.saturating_add(4), 8, Rule::Real); // table and PBA locations
                let table = self.access.read32(self.bdf, offset.saturating_add(4));
                let size = (control & 0x7ff).saturating_add(1);
                self.msix = Some(MsixCap { offset, table: MsixTable::new((table & 7) as u8, table & !7, size) });
            }
            cap_id::PCI_EXPRESS => {
                let len = 0x100u16.saturating_sub(offset).min(0x3c);
                fl.set(offset.saturating_add(2), len.saturating_sub(2), Rule::Real);
                let ctl = offset.saturating_add(pcie::DEVCTL);
                let [lo, hi] = pcie::DEVCTL_GUEST.to_le_bytes();
                fl.set_each(ctl, &[Rule::RealWrite(lo), Rule::RealWrite(hi)]);
                fl.set_each(offset.saturating_add(pcie::DEVSTA), &[Rule::RealW1c(0x0f), Rule::Real]);
            }
            _ => {}
        }
    }

    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// The BARs the guest enabled, as GPA → HPA ranges for the VM's nested page
    /// tables (MMIO) or I/O permission map (ports). The MSI-X table pages must be
    /// left unmapped and trapped: see [`PassthroughFunction::msix_table_region`].
    pub fn bar_mappings(&self) -> Vec<BarMapping> {
        let command = self.filter.shadow_u16(COMMAND);
        self.bars
            .iter()
            .filter_map(|b| {
                let guest_addr = self.guest_bar_address(b);
                let (space, enabled) = match b.kind {
                    BarKind::Io => (BarSpace::Io, command & CMD_IO != 0),
                    _ => (BarSpace::Mmio, command & CMD_MEMORY != 0),
                };
                (enabled && guest_addr != 0).then_some(BarMapping {
                    bar: b.index,
                    guest_addr,
                    host_addr: b.host_addr,
                    len_bytes: b.size,
                    space,
                })
            })
            .collect()
    }

    fn guest_bar_address(&self, b: &VBar) -> u64 {
        let at = BAR0.saturating_add(u16::from(b.index).saturating_mul(4));
        let low = u64::from(self.filter.shadow_u32(at));
        match b.kind {
            BarKind::Io => low & !0x3,
            BarKind::Mem64 => u64::from(self.filter.shadow_u32(at.saturating_add(4))) << 32 | (low & !0xf),
            _ => low & !0xf,
        }
    }

    /// Sets the guest address of BAR `index` as firmware would (the device keeps its
    /// host address). False if there is no such BAR or it cannot hold the address
    /// (misaligned, or above 4 GiB for a 32-bit BAR).
    pub fn place_bar(&mut self, index: u8, guest_addr: u64) -> bool {
        if index == ROM_INDEX {
            // Placed with its decode off, as firmware leaves ROMs.
            let Ok(addr) = u32::try_from(guest_addr) else { return false };
            self.config_write(ROM_BAR, AccessSize::Dword, addr);
            return self.rom_region().is_some_and(|r| r.address == guest_addr);
        }
        let Some(b) = self.bars.iter().find(|b| b.index == index).copied() else { return false };
        if b.kind != BarKind::Mem64 && guest_addr > u64::from(u32::MAX) {
            return false;
        }
        let at = BAR0.saturating_add(u16::from(index).saturating_mul(4));
        self.config_write(at, AccessSize::Dword, guest_addr as u32);
        if b.kind == BarKind::Mem64 {
            self.config_write(at.saturating_add(4), AccessSize::Dword, (guest_addr >> 32) as u32);
        }
        self.guest_bar_address(&b) == guest_addr
    }

    /// The MSI-X table as (BAR, offset in the BAR, length): the VM traps these bytes
    /// and forwards them to [`PassthroughFunction::msix_table_read`] / `_write`.
    pub fn msix_table_region(&self) -> Option<(u8, u64, u64)> {
        self.msix.as_ref().map(|m| (m.table.bar, u64::from(m.table.table_offset), m.table.len_bytes()))
    }

    pub fn msix_table_read(&self, offset: u64, size: AccessSize) -> u32 {
        self.msix.as_ref().map_or(u32::MAX, |m| m.table.read(offset, size.bytes()))
    }

    pub fn msix_table_write(&mut self, offset: u64, size: AccessSize, value: u32) {
        let enabled = self.msix_enabled();
        let Some(m) = self.msix.as_mut() else { return };
        if let Some(index) = m.table.write(offset, size.bytes(), value)
            && !self.msix_resync
        {
            m.table.sync(self.bdf, enabled, &mut self.router, Some(index));
        }
    }

    fn msix_enabled(&self) -> bool {
        self.msix.as_ref().is_some_and(|m| {
            let control = self.filter.shadow_u16(m.offset.saturating_add(2));
            control & MSIX_CTRL_ENABLE != 0 && control & MSIX_CTRL_FUNCTION_MASK == 0
        })
    }

    /// Shows the function's INTx pin to the guest, its line routed to guest GSI
    /// `guest_gsi`: the pin register reads the device's pin, the line register the
    /// GSI, and the guest's INTx disable bit and the pending-INTx status bit are the
    /// device's.
    pub fn with_intx(mut self, guest_gsi: u8) -> Self {
        self.intx = Some(guest_gsi);
        let fl = &mut self.filter;
        fl.set(INTERRUPT_PIN, 1, Rule::Real);
        fl.set_virtual(INTERRUPT_LINE, 1, u32::from(guest_gsi), 0xff);
        let command = self.filter.shadow_u16(COMMAND);
        self.filter.set_virtual(COMMAND, 2, u32::from(command), u32::from(GUEST_COMMAND | CMD_INTX_DISABLE));
        self
    }

    /// Offers a ROM copy of `len` bytes: the ROM BAR becomes a virtual register the
    /// guest sizes ([`crate::host::pci::rom::rom_bar_size`]), places and enables; [`ROM_INDEX`] in
    /// [`VirtualPciFunction::bars`] reports it.
    pub fn with_rom(mut self, len: u64) -> Self {
        let size = crate::host::pci::rom::rom_bar_size(len);
        if size == 0 || size > u64::from(u32::MAX) {
            return self;
        }
        self.rom_size = Some(size);
        let mask = (!size.wrapping_sub(1) as u32 & ROM_ADDRESS) | ROM_ENABLE;
        self.filter.set_virtual(ROM_BAR, 4, 0, mask);
        self
    }

    /// The virtual ROM BAR as the guest programmed it: (address, size, decoding).
    fn rom_region(&self) -> Option<BarRegion> {
        let size = self.rom_size?;
        let reg = self.filter.shadow_u32(ROM_BAR);
        let memory = self.filter.shadow_u16(COMMAND) & CMD_MEMORY != 0;
        Some(BarRegion {
            index: ROM_INDEX,
            kind: VBarKind::Memory32 { prefetchable: false },
            address: u64::from(reg & ROM_ADDRESS),
            size,
            enabled: memory && reg & ROM_ENABLE != 0,
        })
    }

    /// The router, for the VM to inspect or reconfigure.
    pub fn router_mut(&mut self) -> &mut R {
        &mut self.router
    }

    /// Applies the guest's command register to the device (filtered).
    fn apply_command(&mut self) {
        // Status half written as 0: its error bits are write-1-to-clear.
        self.access.write32(self.bdf, COMMAND, u32::from(self.device_command()));
    }

    /// Re-evaluates MSI after a guest write to its capability.
    fn apply_msi(&mut self) {
        let Some(mut msi) = self.msi else { return };
        let control = self.filter.shadow_u16(msi.offset.saturating_add(2));
        let addr_at = msi.offset.saturating_add(4);
        let mut address = u64::from(self.filter.shadow_u32(addr_at));
        let data_at = if msi.is_64bit {
            address |= u64::from(self.filter.shadow_u32(addr_at.saturating_add(4))) << 32;
            msi.offset.saturating_add(12)
        } else {
            msi.offset.saturating_add(8)
        };
        let data = u32::from(self.filter.shadow_u16(data_at));
        let masked = msi.per_vector_mask && self.filter.shadow_u32(data_at.saturating_add(4)) & 1 != 0;
        let route = if control & 1 != 0 && !masked { MsiRoute::decode(address, data) } else { None };
        if route == msi.routed {
            return;
        }
        let bdf = self.bdf;
        let ctl_at = msi.offset.saturating_add(2);
        let real_control = self.access.read16(bdf, ctl_at);
        // Enable off, one message (MME = 0).
        let disabled = real_control & !(MSI_CTRL_ENABLE | MSI_CTRL_MME);
        match route {
            None => {
                // The device stops sending first; then the route is torn down.
                self.access.write16(bdf, ctl_at, disabled, 0);
                self.router.route(bdf, 0, None);
                msi.programmed = None;
            }
            Some(r) => {
                let message = self.router.route(bdf, 0, Some(r));
                // A new guest vector or destination keeps the remapped message: the
                // device is left alone unless its message changes.
                if message != msi.programmed || real_control & 1 == 0 {
                    self.access.write16(bdf, ctl_at, disabled, 0);
                    if let Some(m) = message {
                        self.access.write32(bdf, addr_at, m.address as u32);
                        if msi.is_64bit {
                            self.access.write32(bdf, addr_at.saturating_add(4), (m.address >> 32) as u32);
                        }
                        self.access.write16(bdf, data_at, m.data as u16, 0);
                        self.access.write16(bdf, ctl_at, disabled | 1, 0);
                    }
                    msi.programmed = message;
                }
            }
        }
        msi.routed = route;
        self.msi = Some(msi);
    }

    /// After a guest write to the MSI-X control word: masks the function on the
    /// device now; [`Self::settle_msix`] brings the table in line at the exit's end.
    fn apply_msix_control(&mut self) {
        let Some(m) = self.msix.as_ref() else { return };
        if !self.msix_resync {
            let ctl_at = m.offset.saturating_add(2);
            let real = self.access.read16(self.bdf, ctl_at);
            self.access.write16(self.bdf, ctl_at, (real & 0x07ff) | 0xc000, 0);
            self.msix_resync = true;
        }
    }

    /// Re-evaluates every MSI-X entry once after control word changes, then applies
    /// the guest's enable and mask bits on the device (still masked until then).
    pub fn settle_msix(&mut self) {
        if !core::mem::take(&mut self.msix_resync) {
            return;
        }
        let enabled = self.msix_enabled();
        let Some(m) = self.msix.as_mut() else { return };
        let ctl_at = m.offset.saturating_add(2);
        let guest = self.filter.shadow_u16(ctl_at) & 0xc000;
        let real = self.access.read16(self.bdf, ctl_at);
        m.table.sync(self.bdf, enabled, &mut self.router, None);
        self.access.write16(self.bdf, ctl_at, (real & 0x07ff) | guest, 0);
    }

    fn status(&self) -> u16 {
        let real = self.access.read16(self.bdf, STATUS);
        let caps = if self.has_caps { STS_CAP_LIST } else { 0 };
        // Report the device's error bits and speed flags, our own capability bit, and
        // a pending INTx (bit 3) only when INTx is routed.
        let intx = if self.intx.is_some() { 0 } else { STS_INTX };
        (real & !(STS_CAP_LIST | intx)) | caps
    }

    fn touches(offset: u16, size: u16, start: u16, len: u16) -> bool {
        offset < start.saturating_add(len) && start < offset.saturating_add(size)
    }
}

/// Stops a function's interrupts on the device itself (INTx disabled; MSI enable off;
/// MSI-X disabled with the function mask set), before its interrupt routes are torn
/// down or it is reset: from then on it sends no message that could fault.
pub fn quiesce_interrupts(access: &impl ConfigAccess, device: &PciDevice) {
    let command = access.read16(device.bdf, COMMAND);
    access.write16(device.bdf, COMMAND, command | CMD_INTX_DISABLE, STS_ERRORS);
    for cap in &device.capabilities {
        let ctl_at = u16::from(cap.offset).saturating_add(2);
        match cap.id {
            cap_id::MSI => {
                let control = access.read16(device.bdf, ctl_at);
                access.write16(device.bdf, ctl_at, control & !(MSI_CTRL_ENABLE | MSI_CTRL_MME), 0);
            }
            cap_id::MSIX => {
                let control = access.read16(device.bdf, ctl_at);
                access.write16(device.bdf, ctl_at, (control & MSIX_CTRL_TABLE_SIZE) | MSIX_CTRL_FUNCTION_MASK, 0);
            }
            _ => {}
        }
    }
}

fn msi_len(control: u16) -> u16 {
    // 0Ah base; +4 for a 64-bit address; +0Ah for the mask and pending bits.
    match (control & (1 << 7) != 0, control & (1 << 8) != 0) {
        (false, false) => 0x0a,
        (true, false) => 0x0e,
        (false, true) => 0x14,
        (true, true) => 0x18,
    }
}

impl<A: ConfigAccess, R: InterruptRouter> VirtualPciFunction for PassthroughFunction<A, R> {
    fn config_read(&mut self, offset: u16, size: AccessSize) -> u32 {
        if offset >= 0x100 {
            return 0; // no extended capabilities are offered
        }
        let mut value = self.filter.read(&self.access, self.bdf, offset, size.bytes());
        if Self::touches(offset, u16::from(size.bytes()), STATUS, 2) {
            let status = u32::from(self.status()) << 16;
            let shift = u32::from(offset & 3).saturating_mul(8);
            let word_mask = 0xffff_0000u32 >> shift;
            value = (value & !word_mask) | ((status >> shift) & word_mask);
        }
        value
    }

    fn config_write(&mut self, offset: u16, size: AccessSize, value: u32) {
        if offset >= 0x100 {
            return;
        }
        let len = u16::from(size.bytes());
        // Status error bits: write-1-to-clear on the device.
        if Self::touches(offset, len, STATUS, 2) {
            // The bytes of `value` that land on the status register, wherever the
            // access starts (a misaligned one too).
            let byte_at = |reg: u16| {
                reg.checked_sub(offset)
                    .filter(|&i| i < len)
                    .and_then(|i| value.checked_shr(u32::from(i).saturating_mul(8)))
                    .map_or(0, |v| v as u8)
            };
            let clear = u16::from_le_bytes([byte_at(STATUS), byte_at(STATUS.saturating_add(1))]) & STS_ERRORS;
            if clear != 0 {
                self.access.write32(self.bdf, COMMAND, u32::from(clear) << 16 | u32::from(self.device_command()));
            }
        }
        let changed = self.filter.write(&self.access, self.bdf, offset, size.bytes(), value);
        if !changed {
            return;
        }
        if Self::touches(offset, len, COMMAND, 2) {
            self.apply_command();
        }
        if let Some(msi) = self.msi
            && Self::touches(offset, len, msi.offset, msi.len)
        {
            self.msi_dirty = true;
        }
        if let Some(m) = self.msix.as_ref()
            && Self::touches(offset, len, m.offset.saturating_add(2), 2)
        {
            self.apply_msix_control();
        }
    }

    fn bars(&self) -> Vec<BarRegion> {
        let command = self.filter.shadow_u16(COMMAND);
        let mut bars: Vec<BarRegion> = self
            .bars
            .iter()
            .map(|b| BarRegion {
                index: b.index,
                kind: match b.kind {
                    BarKind::Io => VBarKind::Io,
                    BarKind::Mem64 => VBarKind::Memory64 { prefetchable: b.prefetchable },
                    _ => VBarKind::Memory32 { prefetchable: b.prefetchable },
                },
                address: self.guest_bar_address(b),
                size: b.size,
                enabled: if b.kind == BarKind::Io { command & CMD_IO != 0 } else { command & CMD_MEMORY != 0 },
            })
            .collect();
        bars.extend(self.rom_region());
        bars
    }

    fn settle(&mut self) {
        if core::mem::take(&mut self.msi_dirty) {
            self.apply_msi();
        }
        self.settle_msix();
    }
}

impl<A: ConfigAccess, R: InterruptRouter> PassthroughFunction<A, R> {
    fn device_command(&self) -> u16 {
        let guest = self.filter.shadow_u16(COMMAND);
        let intx = if self.intx.is_some() { guest & CMD_INTX_DISABLE } else { CMD_INTX_DISABLE };
        (guest & GUEST_COMMAND) | intx
    }
}

impl<A: ConfigAccess, R: InterruptRouter> crate::devices::vpci::msix_window::MsixTableOwner
    for PassthroughFunction<A, R>
{
    fn msix_table_read(&self, offset: u64, size: AccessSize) -> u32 {
        PassthroughFunction::msix_table_read(self, offset, size)
    }
    fn msix_table_write(&mut self, offset: u64, size: AccessSize, value: u32) {
        PassthroughFunction::msix_table_write(self, offset, size, value)
    }
}

/// The size the guest sees for a host BAR: a power of two of at least 16 bytes (what
/// the BAR's size mask encodes); 0 if it cannot be encoded.
pub fn guest_bar_size(host_size: u64) -> u64 {
    host_size.max(16).checked_next_power_of_two().unwrap_or(0)
}

#[cfg(test)]
mod tests;
