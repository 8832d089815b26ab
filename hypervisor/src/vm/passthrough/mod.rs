//! Host PCI functions given to VMs: the policy check before any VM starts, and per VM
//! an IOMMU domain over exactly its memory, the reset devices attached to it, their
//! filtered configuration space on the VM's PCI bus with BARs pre-assigned in the PCI
//! window, and the BARs mapped in its nested page tables. DMA faults stop the VMs
//! that can have caused them (`fault_attribution`).
#![forbid(unsafe_code)]

pub mod error;
pub mod fault_attribution;
pub mod host_vectors;
pub mod interrupts;
pub mod intx_routing;
mod mappings;
pub mod msi_routing;
pub mod placement;
mod rom;

use crate::devices::layout;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use log::{debug, error, info, warn};

use crate::arch::x86::device_vectors::settle;
use crate::devices::bus::{BusRange, MemBus};
use crate::devices::shared::Shared;
use crate::devices::vpci::host_bridge::{self as vpci, BarRegion, VirtualPciFunction, VpciHost};
use crate::devices::vpci::msi::{InterruptRouter, MsiRoute, program_msix_entry};
use crate::devices::vpci::msix_window::MsixWindow;
use crate::devices::vpci::passthrough::{BarMapping, BarSpace, PassthroughFunction, ROM_INDEX, quiesce_interrupts};
use crate::host::acpi::aml::IntxRoute;
use crate::host::iommu::{DomainId, DynIommu, IommuFault};
use crate::host::pci::ConfigAccess;
use crate::host::pci::access::BarMmio;
use crate::host::pci::assign::DeviceReport;
use crate::host::pci::{Bar, BarKind, PciInventory};
use crate::hw::AccessSize;
use crate::hw::Bdf;
use crate::hw::MsiMessage;
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr, PAGE_SIZE};
use crate::memory::guest::{GuestMemoryMap, Perms};
use crate::memory::page_table::{PageTable, PteFormat};
use crate::memory::phys::GlobalFrames;
use crate::vm::config::{DeviceSelector, VmConfig};
pub use error::{IntxRouteError, PassthroughError};
use fault_attribution::FaultIds;
use host_vectors::{VectorOwner, VectorShortage, vectors_wanted};
use mappings::{desired_mappings, host_bar, msix_window};
use placement::{BarPlacement, BarWindow, Windows};
use rom::{RomCopy, RomWrites, copy_rom, free_rom, plannable_rom};

/// The 32-bit PCI window every desktop VM's DSDT offers (`AcpiConfig::default`).
pub const MMIO32_WINDOW: BarWindow = BarWindow { start: layout::PCI_MMIO32_START, end: layout::PCI_MMIO32_END };

/// The PCI windows of a VM whose RAM ends at `ram_end` (exclusive): the 32-bit window,
/// and 32 GiB from 32 GiB, or from the first 1 GiB boundary above the RAM when the VM
/// is larger (a desktop VM's RAM continues above 4 GiB: 64 GiB of it ends near
/// 65 GiB). Within 37 address bits for the largest VM (`MAX_MEMORY`).
pub fn windows_above(ram_end: u64) -> Windows {
    let start = ram_end
        .div_ceil(layout::PCI_MMIO64_ALIGN)
        .saturating_mul(layout::PCI_MMIO64_ALIGN)
        .max(layout::PCI_MMIO64_MIN_START);
    Windows { mmio32: MMIO32_WINDOW, mmio64: BarWindow { start, end: start.saturating_add(layout::PCI_MMIO64_LEN) } }
}

/// The RAM blocks of a VM configured as `config`, as guest `[start, end)`.
pub fn ram_ranges(config: &VmConfig) -> Vec<(u64, u64)> {
    crate::vm::desktop::vm_ram_blocks(config.kind, config.memory_bytes)
        .map(|(gpa, _, len)| (gpa, gpa.saturating_add(len)))
        .collect()
}

/// Where the RAM of a VM configured as `config` ends (exclusive guest address).
pub fn ram_end(config: &VmConfig) -> u64 {
    ram_ranges(config).iter().map(|r| r.1).max().unwrap_or(0)
}

/// The PCI windows of the VM configured as `config`, or why its devices cannot be
/// placed: RAM in a window (a payload VM's RAM is one block from 0, so more than
/// 3 GiB of it reaches the 32-bit window).
pub fn vm_windows(config: &VmConfig) -> Result<Windows, PassthroughError> {
    let windows = windows_above(ram_end(config));
    for (start, end) in ram_ranges(config) {
        for w in [windows.mmio32, windows.mmio64] {
            if start < w.end && w.start < end {
                return Err(PassthroughError::RamInWindow { vm: config.name.clone(), ram: (start, end), window: w });
            }
        }
    }
    Ok(windows)
}

/// First guest device number assigned functions get on the VM's bus 0.
pub const FIRST_GUEST_DEVICE: u8 = 3;

/// Host configuration space as the hypervisor keeps it (lives forever).
pub type HostConfig = &'static (dyn ConfigAccess + Sync);

/// What boot found, kept for launch: the IOMMU (if one is on), the PCI inventory,
/// the assignability report, the host configuration space and where each function's
/// INTx pin goes (from the firmware's `_PRT`).
pub struct HostPci {
    pub iommu: Option<DynIommu>,
    pub inventory: PciInventory,
    pub reports: Vec<DeviceReport>,
    pub config: Option<HostConfig>,
    pub intx: Vec<(Bdf, IntxRoute)>,
}

impl core::fmt::Debug for HostPci {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostPci")
            .field("iommu", &self.iommu.as_ref().map(|i| i.name()))
            .field("devices", &self.inventory.devices().len())
            .finish()
    }
}

static HOST: spin::Once<spin::Mutex<HostPci>> = spin::Once::new();

/// Called once by boot after `protect_dma`.
pub fn install(host: HostPci) {
    HOST.call_once(|| spin::Mutex::new(host));
    crate::host::iommu::shared::register(|f| {
        if let Some(host) = HOST.get()
            && let Some(iommu) = host.lock().iommu.as_deref_mut()
        {
            f(iommu);
        }
    });
}

/// Picks the host functions each VM's `devices=` names, refusing (with the reason)
/// devices that are absent, not assignable or listed twice, and any assignment
/// without an IOMMU. Pure: `reports` is the assignability report.
pub fn resolve(
    configs: &[VmConfig],
    reports: &[DeviceReport],
    iommu_on: bool,
) -> Result<Vec<Vec<Bdf>>, PassthroughError> {
    let mut taken: Vec<Bdf> = Vec::new();
    let mut out = Vec::new();
    for c in configs {
        let mut bdfs = Vec::new();
        if !c.devices.is_empty() && !iommu_on {
            return Err(PassthroughError::NeedsIommu { vm: c.name.clone() });
        }
        for sel in &c.devices {
            let matches = |r: &&DeviceReport| selects(sel, r) && !taken.contains(&r.bdf);
            // By vendor:device, the first function that can be assigned; if none can,
            // the first match gives the reason.
            let found =
                reports.iter().filter(matches).find(|r| r.assignable()).or_else(|| reports.iter().find(matches));
            let Some(r) = found else {
                return Err(PassthroughError::NotPresent { vm: c.name.clone(), device: *sel });
            };
            if let Some(why) = r.refusal {
                return Err(PassthroughError::NotAssignable { vm: c.name.clone(), device: *sel, bdf: r.bdf, why });
            }
            taken.push(r.bdf);
            bdfs.push(r.bdf);
        }
        out.push(bdfs);
    }
    Ok(out)
}

/// Whether the policy's selector `sel` names the function `r`.
fn selects(sel: &DeviceSelector, r: &DeviceReport) -> bool {
    match *sel {
        DeviceSelector::Address { bus, device, function } => {
            (r.bdf.segment, r.bdf.bus, r.bdf.device, r.bdf.function) == (0, bus, device, function)
        }
        DeviceSelector::Id { vendor, device } => r.vendor_id == vendor && r.device_id == device,
    }
}

/// The host functions `configs` give to VMs, which the hypervisor must leave alone:
/// what [`resolve`] assigns, or, when it refuses the assignment (and no VM will
/// start), every function any selector names. Pure.
pub fn claimed(configs: &[VmConfig], reports: &[DeviceReport], iommu_on: bool) -> Vec<Bdf> {
    match resolve(configs, reports, iommu_on) {
        Ok(assigned) => assigned.into_iter().flatten().collect(),
        Err(_) => reports
            .iter()
            .filter(|r| configs.iter().flat_map(|c| &c.devices).any(|sel| selects(sel, r)))
            .map(|r| r.bdf)
            .collect(),
    }
}

/// [`claimed`] against what boot found.
pub fn claimed_by(configs: &[VmConfig]) -> Vec<Bdf> {
    let Some(host) = HOST.get() else { return Vec::new() };
    let host = host.lock();
    claimed(configs, &host.reports, host.iommu.is_some() && host.config.is_some())
}

/// Lends what boot found (the IOMMU, the inventory, configuration space) to `f`, for
/// the hypervisor's own devices; `None` before `install`.
pub fn with_host<R>(f: impl FnOnce(&mut HostPci) -> R) -> Option<R> {
    HOST.get().map(|host| f(&mut host.lock()))
}

/// [`resolve`] against what boot found.
pub fn check(configs: &[VmConfig]) -> Result<Vec<Vec<Bdf>>, PassthroughError> {
    if configs.iter().all(|c| c.devices.is_empty()) {
        return Ok(configs.iter().map(|_| Vec::new()).collect());
    }
    let Some(host) = HOST.get() else {
        return Err(PassthroughError::NoDiscovery);
    };
    let host = host.lock();
    let assigned = resolve(configs, &host.reports, host.iommu.is_some() && host.config.is_some())?;
    for (c, bdfs) in configs.iter().zip(&assigned) {
        if !bdfs.is_empty() {
            let windows = vm_windows(c)?;
            plan_for(&host.inventory, bdfs, &windows)
                .map_err(|e| PassthroughError::InVm { vm: c.name.clone(), error: Box::new(e) })?;
        }
    }
    Ok(assigned)
}

/// The VM side of one assigned function's MSI/MSI-X vectors: routed through the
/// IOMMU and the machine's host vector table (`msi_routing`) to the CPU that runs
/// VMs; the function's real MSI-X table is written through host MMIO.
#[derive(Debug)]
pub struct DeviceInterrupts {
    vm: u32,
    /// Local APIC id of the CPU that runs VMs (the boot CPU).
    cpu: u32,
    /// The function's BARs as enumerated (host addresses).
    bars: Vec<Bar>,
}

impl InterruptRouter for DeviceInterrupts {
    fn route(&mut self, bdf: Bdf, index: u16, route: Option<MsiRoute>) -> Option<MsiMessage> {
        // Routes change from exits only, never while the host state is held; a held
        // lock here would be a re-entry, which must not hang the machine.
        let Some(mut host) = HOST.get()?.try_lock() else {
            error!(target: "msi", "{bdf}: vector {index}: IOMMU state busy (re-entered); stays masked");
            return None;
        };
        let iommu = host.iommu.as_mut()?;
        let owner = VectorOwner { vm: self.vm, bdf, index };
        msi_routing::route(&mut interrupts::VECTORS.lock(), &mut **iommu, owner, route, self.cpu, &mut settle)
    }

    fn write_msix_entry(&mut self, bdf: Bdf, bar: u8, offset: u64, index: u16, message: Option<MsiMessage>) {
        match self.bars.iter().find(|b| b.index == bar).and_then(BarMmio::for_own_device) {
            Some(mut mmio) => program_msix_entry(&mut mmio, offset, message),
            // The entry stays as reset left it: masked.
            None => {
                warn!(target: "msi", "{bdf}: MSI-X entry {index} in BAR{bar}, which the hypervisor cannot reach; stays masked")
            }
        }
    }
}

type Function = PassthroughFunction<HostConfig, DeviceInterrupts>;

/// Busy-wait delays for device resets.
struct TscDelay;

impl crate::host::pci::reset::Delay for TscDelay {
    fn delay_us(&mut self, us: u64) {
        let per_us = (crate::arch::x86::tsc::cached_ticks_per_ms() / 1000).max(1);
        let end = crate::arch::x86::instr::rdtsc().saturating_add(us.saturating_mul(per_us));
        while crate::arch::x86::instr::rdtsc() < end {
            core::hint::spin_loop();
        }
    }
}

/// One assigned function as the VM sees it.
#[derive(Debug)]
struct Assigned {
    host: Bdf,
    /// Its address on the VM's bus 0.
    guest: Bdf,
    /// The host's memory BARs (I/O BARs are not passed through).
    bars: Vec<Bar>,
    /// Where each memory BAR sits in the guest when the VM starts.
    placed: Vec<(u8, u64)>,
    /// The MSI-X table as (BAR, offset, length): never mapped.
    msix: Option<(u8, u64, u64)>,
    /// Its INTx line: the host route, the guest GSI and the pin (1-4), when routed.
    intx: Option<Intx>,
    /// The copy of its expansion ROM the VM sees, if it has one.
    rom: Option<RomCopy>,
    /// The unit and requester ids its faults arrive with.
    fault_ids: FaultIds,
}

/// An assigned function's INTx line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Intx {
    host: IntxRoute,
    guest_gsi: u8,
    pin: u8,
}

/// A BAR range mapped into the VM, and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapped {
    host: Bdf,
    range: BarMapping,
}

/// A guest BAR address that is not mapped, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unmappable {
    host: Bdf,
    bar: u8,
    guest_addr: u64,
    why: &'static str,
}

/// Unmappable guest BAR addresses remembered per VM (each is logged once). A guest
/// that keeps moving BARs to new bad addresses gets this many lines, then no more,
/// and the list stops growing.
const REFUSALS_REMEMBERED: usize = 32;

/// Remembers `r`; true if it is new and was remembered (log it).
fn remember_refusal(refused: &mut Vec<Unmappable>, r: Unmappable) -> bool {
    if refused.len() >= REFUSALS_REMEMBERED || refused.contains(&r) {
        return false;
    }
    refused.push(r);
    true
}

/// The devices one VM owns, attached to its IOMMU domain.
#[derive(Debug)]
pub struct VmDevices {
    devices: Vec<Assigned>,
    domain: DomainId,
    /// BAR ranges now mapped in the VM's nested page table (GPA → HPA, page-granular).
    mapped: Vec<Mapped>,
    /// Guest BAR addresses already reported as unmappable (each is logged once).
    refused: Vec<Unmappable>,
    /// The VM's PCI host write count at the last [`VmDevices::sync_bars`].
    seen_writes: Option<u64>,
    /// Functions whose MSI-X BAR the guest moved away from its trapped table (each is
    /// logged once).
    msix_moved: Vec<Bdf>,
    vm: String,
    /// The VM's id (owner of its devices' host vectors).
    vm_id: u32,
    /// Local APIC id of the CPU that runs VMs: where device interrupts are remapped to.
    cpu: u32,
    /// The VM's PCI windows (its DSDT offers them; the BARs were planned in them).
    windows: Windows,
}

/// The guest GSI for `dev`'s INTx line in VM `vm`, which already has `devices` (a
/// host line it already uses keeps its guest GSI), or `None` (logged) when the line
/// cannot have one.
fn plan_intx(
    vm: &str,
    devices: &[Assigned],
    dev: &crate::host::pci::PciDevice,
    host: Option<IntxRoute>,
) -> Option<Intx> {
    if dev.interrupt_pin == 0 {
        return None;
    }
    let Some(host) = host else {
        intx_routing::not_routed(vm, dev.bdf, IntxRouteError::NotDescribed);
        return None;
    };
    let taken: Vec<(u32, u8)> = devices.iter().filter_map(|d| d.intx).map(|i| (i.host.gsi, i.guest_gsi)).collect();
    let Some(guest_gsi) = intx_routing::guest_gsi_for(&taken, host.gsi) else {
        intx_routing::not_routed(vm, dev.bdf, IntxRouteError::GuestInputsFull);
        return None;
    };
    Some(Intx { host, guest_gsi, pin: dev.interrupt_pin })
}

/// The VM's `_PRT` entries: each assigned function's slot, its pin (0 = INTA) and the
/// guest GSI its line drives.
fn guest_prt(devices: &[Assigned]) -> Vec<crate::vm::acpi::PciIntx> {
    devices
        .iter()
        .filter_map(|d| {
            let i = d.intx?;
            Some(crate::vm::acpi::PciIntx {
                device: d.guest.device,
                pin: i.pin.saturating_sub(1),
                gsi: u32::from(i.guest_gsi),
            })
        })
        .collect()
}

/// Guest addresses for the memory BARs of `bdfs` (in that order on the guest bus), or
/// why they cannot be given to a VM.
fn plan_for(inventory: &PciInventory, bdfs: &[Bdf], windows: &Windows) -> Result<Vec<BarPlacement>, PassthroughError> {
    let mut functions = Vec::new();
    for &bdf in bdfs {
        let dev = inventory.devices().iter().find(|d| d.bdf == bdf).ok_or(PassthroughError::Vanished(bdf))?;
        let mut bars: Vec<(Bar, bool)> =
            dev.bars.iter().map(|b| (*b, placement::shares_a_page(inventory, dev, b))).collect();
        bars.extend(plannable_rom(dev).map(|rom| (rom, false)));
        functions.push(bars);
    }
    placement::plan(&functions, windows).map_err(|e| match bdfs.get(e.function) {
        Some(&bdf) => PassthroughError::Unplaceable { bdf, refusal: e.refusal },
        None => PassthroughError::Placement(e.refusal),
    })
}

impl VmDevices {
    /// Creates the domain of the VM configured as `vm` over `map`, resets each device
    /// and attaches it; plans where its BARs sit in the guest. Device interrupts will
    /// be remapped to the local APIC `cpu`.
    pub fn assign(
        vm: &VmConfig,
        vm_id: u32,
        cpu: u32,
        bdfs: &[Bdf],
        map: &GuestMemoryMap,
    ) -> Result<Option<VmDevices>, PassthroughError> {
        if bdfs.is_empty() {
            return Ok(None);
        }
        let windows = vm_windows(vm)?;
        let host = HOST.get().ok_or(PassthroughError::NoIommu)?;
        let mut host = host.lock();
        let HostPci { iommu, inventory, config, intx, .. } = &mut *host;
        let (Some(iommu), Some(config)) = (iommu.as_mut(), *config) else { return Err(PassthroughError::NoIommu) };
        let plan = plan_for(inventory, bdfs, &windows)?;
        let domain = iommu.create_domain(map).map_err(PassthroughError::CreateDomain)?;
        let mut devices = VmDevices {
            devices: Vec::new(),
            domain,
            mapped: Vec::new(),
            refused: Vec::new(),
            seen_writes: None,
            msix_moved: Vec::new(),
            vm: vm.name.as_str().into(),
            vm_id,
            cpu,
            windows,
        };
        let mut result = Ok(());
        for (i, &bdf) in bdfs.iter().enumerate() {
            let placed: Vec<(u8, u64)> =
                plan.iter().filter(|p| p.function == i).map(|p| (p.bar, p.guest_addr)).collect();
            let host_intx = intx.iter().find(|(b, _)| *b == bdf).map(|(_, r)| *r);
            if let Err(e) = devices.attach_one(iommu, inventory, config, bdf, placed, host_intx) {
                result = Err(e);
                break;
            }
        }
        match result {
            Ok(()) => Ok(Some(devices)),
            Err(e) => {
                // Nothing half-assigned stays behind: detach what was attached.
                for d in devices.devices.drain(..) {
                    let _ = iommu.detach(d.host);
                    if let Some(rom) = d.rom {
                        free_rom(rom);
                    }
                }
                let _ = iommu.destroy_domain(domain);
                Err(e)
            }
        }
    }

    fn attach_one(
        &mut self,
        iommu: &mut DynIommu,
        inventory: &PciInventory,
        config: HostConfig,
        bdf: Bdf,
        placed: Vec<(u8, u64)>,
        host_intx: Option<IntxRoute>,
    ) -> Result<(), PassthroughError> {
        let vm = self.vm.clone();
        let guest = u8::try_from(self.devices.len())
            .ok()
            .and_then(|i| FIRST_GUEST_DEVICE.checked_add(i))
            .and_then(|d| Bdf::checked(0, d, 0))
            .ok_or(PassthroughError::TooManyDevices)?;
        let dev = inventory.devices().iter().find(|d| d.bdf == bdf).ok_or(PassthroughError::Vanished(bdf))?;
        let method = crate::host::pci::reset::reset_function(dev, inventory, &config, &mut TscDelay)
            .map_err(|error| PassthroughError::Reset { bdf, error })?;
        info!(target: "pci", "{bdf}: reset ({method}) before assignment to VM {vm}");
        let unit = iommu
            .unit_of(bdf)
            .ok_or(PassthroughError::Attach { bdf, error: crate::host::iommu::IommuError::NotCovered(bdf) })?;
        let fault_ids = fault_attribution::fault_ids(inventory, bdf, unit, iommu.firmware_alias(bdf));
        if !fault_ids.aliases.is_empty() {
            info!(target: "iommu", "{bdf}: its requests may also arrive as {:04x?} (bridge or firmware alias)", fault_ids.aliases);
        }
        iommu.attach(bdf, self.domain).map_err(|error| PassthroughError::Attach { bdf, error })?;
        info!(target: "iommu", "{bdf}: attached to {} of VM {vm} (DMA reaches only its memory)", self.domain);
        let f =
            Function::new(dev, config, self.interrupts(dev)).map_err(|error| PassthroughError::View { bdf, error })?;
        let bars: Vec<Bar> = dev.bars.iter().filter(|b| b.kind != BarKind::Io).copied().collect();
        for b in dev.bars.iter().filter(|b| b.kind == BarKind::Io) {
            warn!(target: "pci", "{bdf}: I/O BAR{} not given to the VM (I/O BARs are not passed through yet)", b.index);
        }
        for (index, guest_addr) in &placed {
            if let Some(b) = bars.iter().find(|b| b.index == *index) {
                info!(
                    target: "pci",
                    "{bdf}: BAR{index} {} host {:#x} -> guest {guest_addr:#x} ({} KiB)",
                    if b.kind == BarKind::Mem64 { "64-bit" } else { "32-bit" },
                    b.address,
                    b.size >> 10
                );
            }
        }
        let intx = plan_intx(&self.vm, &self.devices, dev, host_intx);
        let rom = if placed.iter().any(|p| p.0 == ROM_INDEX) { copy_rom(dev, inventory, config, &vm) } else { None };
        let msix = f.msix_table_region();
        self.devices.push(Assigned { host: bdf, guest, bars, placed, msix, intx, rom, fault_ids });
        Ok(())
    }

    /// The VM's `_PRT`: each assigned function's slot and pin and the guest GSI its
    /// INTx line drives.
    pub fn guest_intx(&self) -> Vec<crate::vm::acpi::PciIntx> {
        guest_prt(&self.devices)
    }

    /// The VM's PCI windows (for its DSDT).
    pub fn windows(&self) -> Windows {
        self.windows
    }

    fn interrupts(&self, dev: &crate::host::pci::PciDevice) -> DeviceInterrupts {
        DeviceInterrupts { vm: self.vm_id, cpu: self.cpu, bars: dev.bars.clone() }
    }

    /// A PCI bus (ports 0xCF8-0xCFF) with the devices' filtered views, for a VM
    /// without a desktop platform; their MSI-X table pages go on `mmio`. Such a VM has
    /// no I/O APIC, so its devices show no INTx pin.
    pub fn build_bus(&self, mmio: &mut MemBus) -> Result<VpciHost, PassthroughError> {
        let mut host = VpciHost::new(1);
        self.add_functions(&mut host, mmio, false)?;
        Ok(host)
    }

    /// Adds the devices' filtered views (fresh, quiesced, BARs placed and memory
    /// decode on, as firmware leaves them) to a VM's PCI host, and the pages holding
    /// their MSI-X tables, at the placed BAR's address, to its MMIO bus (trapped, see
    /// `msix_window`). Their INTx lines are routed into the VM's I/O APIC.
    pub fn add_to(&self, pci: &mut VpciHost, mmio: &mut MemBus) -> Result<(), PassthroughError> {
        self.add_functions(pci, mmio, true)
    }

    /// [`Self::add_to`], with the INTx lines routed into the VM's I/O APIC or not.
    fn add_functions(&self, pci: &mut VpciHost, mmio: &mut MemBus, with_intx: bool) -> Result<(), PassthroughError> {
        let host = HOST.get().ok_or(PassthroughError::NoIommu)?;
        let mut host = host.lock();
        let HostPci { iommu, inventory, config, .. } = &mut *host;
        let config = config.ok_or(PassthroughError::NoConfigSpace)?;
        for d in &self.devices {
            let bdf = d.host;
            let dev = inventory.devices().iter().find(|x| x.bdf == bdf).ok_or(PassthroughError::DeviceVanished)?;
            let mut f = Function::new(dev, config, self.interrupts(dev))
                .map_err(|error| PassthroughError::View { bdf, error })?;
            if let Some(intx) = d.intx.filter(|_| with_intx) {
                match self.route_intx(iommu.as_mut(), bdf, intx) {
                    Ok(()) => f = f.with_intx(intx.guest_gsi),
                    Err(why) => intx_routing::not_routed(&self.vm, bdf, why),
                }
            }
            if let Some(rom) = d.rom {
                f = f.with_rom(rom.len);
            }
            for &(bar, guest_addr) in &d.placed {
                if bar == ROM_INDEX
                    && let Some(rom) = d.rom
                {
                    let range = BusRange::new(guest_addr, rom.len).ok_or(PassthroughError::RomRange)?;
                    mmio.insert(range, Box::new(RomWrites { host: bdf }))
                        .map_err(|error| PassthroughError::RomWindow { bdf, error })?;
                } else if bar == ROM_INDEX {
                    continue;
                }
                if !f.place_bar(bar, guest_addr) {
                    return Err(PassthroughError::BarAddress { bdf, bar, guest_addr });
                }
            }
            let command = f.config_read(vpci::COMMAND, AccessSize::Word);
            f.config_write(vpci::COMMAND, AccessSize::Word, command | u32::from(vpci::CMD_MEMORY));
            let f = Shared::new(f);
            if let Some((range, (bar, offset, len), start)) = msix_window(d) {
                let device = d.bars.iter().find(|h| h.index == bar).and_then(BarMmio::for_own_device);
                let window = MsixWindow::new(f.clone(), device, start, offset, len);
                mmio.insert(range, Box::new(window)).map_err(|error| PassthroughError::MsixWindow { bdf, error })?;
                info!(target: "pci", "{bdf}: MSI-X table at guest {:#x} trapped ({} entries)", range.start(), len / 16);
            }
            pci.add_function(d.guest, Box::new(f)).map_err(PassthroughError::AddFunction)?;
        }
        Ok(())
    }

    /// Routes `bdf`'s INTx line into the VM (see `intx_routing`).
    fn route_intx(&self, iommu: Option<&mut DynIommu>, bdf: Bdf, intx: Intx) -> Result<(), IntxRouteError> {
        let iommu = iommu.ok_or(IntxRouteError::NoIommu)?;
        let ioapics = crate::host::ioapic::HOST_IOAPICS.get().ok_or(IntxRouteError::NoIoapic)?;
        let owner = VectorOwner { vm: self.vm_id, bdf, index: 0 };
        let mut table = interrupts::VECTORS.lock();
        intx_routing::route(&mut table, &mut **iommu, &mut ioapics.lock(), owner, intx.host, intx.guest_gsi, self.cpu)
            .map(|_| ())
    }

    /// Stops every device's MSI/MSI-X and INTx on the device, then removes the VM's
    /// interrupt routes: remapping entries cleared, host pins masked, host vectors
    /// freed. Before a reset or taking the devices back.
    fn unroute_interrupts(&self, host: &mut HostPci) {
        let HostPci { iommu, inventory, config, .. } = host;
        if let Some(config) = *config {
            for d in &self.devices {
                if let Some(dev) = inventory.devices().iter().find(|x| x.bdf == d.host) {
                    quiesce_interrupts(&config, dev);
                }
            }
        }
        let Some(iommu) = iommu.as_mut() else { return };
        let mut table = interrupts::VECTORS.lock();
        let n = msi_routing::unroute_vm(&mut table, &mut **iommu, self.vm_id, &mut settle);
        if n > 0 {
            info!(target: "msi", "VM {}: {n} device interrupt route(s) removed", self.vm);
        }
        if let Some(ioapics) = crate::host::ioapic::HOST_IOAPICS.get() {
            intx_routing::unroute_vm(&mut table, &mut ioapics.lock(), self.vm_id, &mut settle);
        }
    }

    /// Brings the nested page table in line with the BARs as the guest has them now
    /// (address and memory decode): maps BARs that appeared or moved, unmaps the old
    /// places. `fresh` means `npt` is new (nothing of this VM's BARs is in it). Cheap
    /// when the guest wrote no configuration register since the last call. Returns
    /// whether `npt` changed (the caller then flushes the guest's TLB).
    pub fn sync_bars<F: PteFormat>(&mut self, pci: &VpciHost, npt: &mut PageTable<F>, fresh: bool) -> bool {
        let writes = pci.config_writes();
        if fresh {
            self.mapped.clear();
        } else if self.seen_writes == Some(writes) {
            return false;
        }
        self.seen_writes = Some(writes);
        let bars = pci.all_bars();
        self.note_moved_msix_tables(&bars);
        let (want, refused) = desired_mappings(&self.devices, &bars, &self.windows);
        for r in refused {
            if remember_refusal(&mut self.refused, r) {
                warn!(
                    target: "pci",
                    "{}: BAR{} at guest {:#x} stays unmapped in VM {}: {}",
                    r.host, r.bar, r.guest_addr, self.vm, r.why
                );
                if self.refused.len() == REFUSALS_REMEMBERED {
                    warn!(target: "pci", "VM {}: further unmappable BAR addresses are not logged", self.vm);
                }
            }
        }
        let mut changed = false;
        for old in self.mapped.iter().filter(|m| !want.contains(m)) {
            let r = old.range;
            changed = true;
            if let Err(e) = npt.unmap_range(&mut GlobalFrames, GuestPhysAddr::new(r.guest_addr), r.len_bytes) {
                error!(target: "pci", "{}: cannot unmap BAR{} at guest {:#x}: {e:?}", old.host, r.bar, r.guest_addr);
            }
        }
        let mut now = Vec::new();
        for m in want {
            if self.mapped.contains(&m) {
                now.push(m);
                continue;
            }
            let r = m.range;
            changed = true;
            let perms = if r.space == BarSpace::Rom { Perms::R } else { Perms::RW };
            match npt.map_range(
                &mut GlobalFrames,
                GuestPhysAddr::new(r.guest_addr),
                HostPhysAddr::new(r.host_addr),
                r.len_bytes,
                perms,
            ) {
                Ok(()) => {
                    if self.is_placed_range(&m) {
                        debug!(target: "pci", "{}: BAR{} mapped at guest {:#x}", m.host, r.bar, r.guest_addr);
                    } else {
                        info!(target: "pci", "{}: BAR{} moved by VM {} to guest {:#x}", m.host, r.bar, self.vm, r.guest_addr);
                    }
                    now.push(m);
                }
                Err(e) => {
                    error!(target: "pci", "{}: cannot map BAR{} at guest {:#x}: {e:?}", m.host, r.bar, r.guest_addr)
                }
            }
        }
        self.mapped = now;
        changed
    }

    /// The MSI-X table trap stays where the BAR was placed at VM start: a guest that
    /// moves that BAR finds its table pages unmapped at the new place (an access there
    /// stops the VM). Logged once per function.
    fn note_moved_msix_tables(&mut self, bars: &[(Bdf, BarRegion)]) {
        for d in &self.devices {
            let Some((bar, ..)) = d.msix else { continue };
            let Some(&(_, placed)) = d.placed.iter().find(|p| p.0 == bar) else { continue };
            let moved = bars
                .iter()
                .any(|(b, r)| *b == d.guest && r.index == bar && r.enabled && r.address != 0 && r.address != placed);
            if moved && !self.msix_moved.contains(&d.host) {
                warn!(
                    target: "pci",
                    "{}: VM {} moved BAR{bar} away from {placed:#x}; its MSI-X table stays trapped there only \
                     (the table pages at the new address are not mapped)",
                    d.host, self.vm
                );
                self.msix_moved.push(d.host);
            }
        }
    }

    /// Whether `m` lies where the BAR was placed at VM start (not moved by the guest).
    fn is_placed_range(&self, m: &Mapped) -> bool {
        let page = |a: u64| a & !(PAGE_SIZE - 1);
        let Some(d) = self.devices.iter().find(|d| d.host == m.host) else { return false };
        let placed = d.placed.iter().find(|p| p.0 == m.range.bar);
        let host = host_bar(d, m.range.bar);
        let (Some(&(_, addr)), Some(host)) = (placed, host) else { return false };
        page(host.address).wrapping_sub(page(addr)) == m.range.host_addr.wrapping_sub(m.range.guest_addr)
    }

    /// The functions this VM owns and how each shows up in fault reports (see
    /// [`fault_attribution`]).
    pub fn fault_sources(&self) -> impl Iterator<Item = (Bdf, &FaultIds)> {
        self.devices.iter().map(|d| (d.host, &d.fault_ids))
    }

    /// Resets the devices (they stay attached): on a VM restart, so nothing the old
    /// run programmed keeps doing DMA into the fresh memory.
    pub fn reset_all(&self) {
        let Some(host) = HOST.get() else { return };
        let mut host = host.lock();
        self.unroute_interrupts(&mut host);
        let Some(config) = host.config else { return };
        for bdf in self.devices.iter().map(|d| d.host) {
            let Some(dev) = host.inventory.devices().iter().find(|d| d.bdf == bdf) else { continue };
            match crate::host::pci::reset::reset_function(dev, &host.inventory, &config, &mut TscDelay) {
                Ok(m) => info!(target: "pci", "{bdf}: reset ({m}) for the restart of VM {}", self.vm),
                Err(e) => error!(target: "pci", "{bdf}: reset for the restart of VM {} failed: {e:?}", self.vm),
            }
        }
    }

    /// Removes the interrupt routes (remapping entries cleared), detaches (DMA
    /// blocked again), resets the devices and frees the domain.
    pub fn release(&mut self) {
        let Some(host) = HOST.get() else { return };
        let mut host = host.lock();
        self.unroute_interrupts(&mut host);
        let HostPci { iommu, inventory, config, .. } = &mut *host;
        let Some(iommu) = iommu.as_mut() else { return };
        for (bdf, rom) in self.devices.drain(..).map(|d| (d.host, d.rom)) {
            if let Some(rom) = rom {
                free_rom(rom);
            }
            if let Err(e) = iommu.detach(bdf) {
                error!(target: "iommu", "{bdf}: cannot detach: {e}");
            }
            if let (Some(dev), Some(config)) = (inventory.devices().iter().find(|d| d.bdf == bdf), *config) {
                match crate::host::pci::reset::reset_function(dev, inventory, &config, &mut TscDelay) {
                    Ok(m) => info!(target: "pci", "{bdf}: taken back from VM {} ({m}), blocked", self.vm),
                    Err(e) => error!(target: "pci", "{bdf}: reset after VM {} failed: {e:?}", self.vm),
                }
            }
        }
        self.mapped.clear();
        match iommu.destroy_domain(self.domain) {
            Ok(()) => info!(target: "iommu", "{} of VM {} freed", self.domain, self.vm),
            Err(e) => error!(target: "iommu", "cannot free {}: {e}", self.domain),
        }
    }
}

/// Sets aside host vectors for the devices `bdfs` of VM `vm_id` (see
/// [`HostVectorTable::reserve`](crate::vm::passthrough::host_vectors::HostVectorTable::reserve));
/// a VM restart keeps them. Returns how many.
pub fn reserve_vectors(vm_id: u32, bdfs: &[Bdf]) -> Result<usize, VectorShortage> {
    if bdfs.is_empty() {
        return Ok(0);
    }
    let Some(host) = HOST.get() else { return Ok(0) };
    let wanted = {
        let host = host.lock();
        let devices: Vec<_> =
            bdfs.iter().filter_map(|b| host.inventory.devices().iter().find(|d| d.bdf == *b)).collect();
        vectors_wanted(&devices)
    };
    interrupts::VECTORS.lock().reserve(vm_id, wanted)?;
    Ok(wanted)
}

/// Gives VM `vm_id`'s host vector reservation back (it is gone for good).
pub fn unreserve_vectors(vm_id: u32) {
    interrupts::VECTORS.lock().unreserve(vm_id);
}

/// The faults drained from the IOMMU in one go, and which IOMMU it is.
#[derive(Debug, Default)]
pub struct FaultBatch {
    pub iommu: &'static str,
    pub faults: Vec<IommuFault>,
}

/// Drains the IOMMU's fault log. The caller logs each fault as it attributes it.
pub fn poll_faults() -> FaultBatch {
    let Some(host) = HOST.get() else { return FaultBatch::default() };
    let Some(mut host) = host.try_lock() else { return FaultBatch::default() };
    match host.iommu.as_mut() {
        Some(i) => FaultBatch { iommu: i.name(), faults: i.poll_faults() },
        None => FaultBatch::default(),
    }
}

#[cfg(test)]
mod tests;
