//! Host PCI functions given to VMs: the policy check before any VM starts, and per VM
//! an IOMMU domain over exactly its memory, the reset devices attached to it, their
//! filtered configuration space on the VM's PCI bus with BARs pre-assigned in the PCI
//! window, and the BARs mapped in its nested page tables. DMA faults stop the owner.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use log::{error, info, warn};

use crate::devices::bus::{BusRange, MemBus};
use crate::devices::pci_host::{self as vpci, PciHost, VirtualPciFunction};
use crate::devices::shared::Shared;
use crate::iommu::{DomainId, DynIommu, IommuFault, MsiMessage};
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr, PAGE_SIZE};
use crate::memory::guest::{GuestMemoryMap, Perms};
use crate::memory::phys::GlobalFrames;
use crate::memory::stage2::NestedPageTable;
use crate::pci::assign::DeviceReport;
use crate::pci::msi::{InterruptRouter, MsiRoute, program_msix_entry};
use crate::pci::msix_window::{MsixWindow, trapped_pages};
use crate::pci::passthrough::{BarMapping, BarSpace, PassthroughFunction, quiesce_interrupts};
use crate::pci::{Bdf, ConfigAccess};
use crate::platform::pci::access::BarMmio;
use crate::platform::pci::{Bar, PciInventory};
use crate::vcpu::exit::AccessSize;
use crate::vm::config::{DeviceSelector, VmConfig};
use crate::vm::host_vectors::VectorOwner;
use crate::vm::msi_routing;

/// Guest-physical base of the PCI window where assigned BARs are placed.
pub const PCI_WINDOW_GPA: u64 = 0xC000_0000;
/// First guest device number assigned functions get on the VM's bus 0.
pub const FIRST_GUEST_DEVICE: u8 = 3;

/// Host configuration space as the hypervisor keeps it (lives forever).
pub type HostConfig = &'static (dyn ConfigAccess + Sync);

/// What boot found, kept for launch: the IOMMU (if one is on), the PCI inventory,
/// the assignability report and the host configuration space.
pub struct HostPci {
    pub iommu: Option<DynIommu>,
    pub inventory: PciInventory,
    pub reports: Vec<DeviceReport>,
    pub config: Option<HostConfig>,
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
}

/// Picks the host functions each VM's `devices=` names, refusing (with the reason)
/// devices that are absent, not assignable or listed twice, and any assignment
/// without an IOMMU. Pure: `reports` is the assignability report.
pub fn resolve(configs: &[VmConfig], reports: &[DeviceReport], iommu_on: bool) -> Result<Vec<Vec<Bdf>>, String> {
    let mut taken: Vec<Bdf> = Vec::new();
    let mut out = Vec::new();
    for c in configs {
        let mut bdfs = Vec::new();
        if !c.devices.is_empty() && !iommu_on {
            return Err(format!(
                "VM {}: devices= needs an IOMMU (VT-d or AMD-Vi) and none is on; devices are never given unprotected",
                c.name
            ));
        }
        for sel in &c.devices {
            let found = reports.iter().find(|r| {
                let hit = match *sel {
                    DeviceSelector::Address { bus, device, function } => {
                        (r.bdf.segment, r.bdf.bus, r.bdf.device, r.bdf.function) == (0, bus, device, function)
                    }
                    DeviceSelector::Id { vendor, device } => r.vendor_id == vendor && r.device_id == device,
                };
                hit && !taken.contains(&r.bdf)
            });
            let Some(r) = found else {
                return Err(format!("VM {}: device {sel} is not in this machine (or already given to a VM)", c.name));
            };
            if let Some(why) = r.refusal {
                return Err(format!("VM {}: device {sel} ({}) cannot be assigned: {why}", c.name, r.bdf));
            }
            taken.push(r.bdf);
            bdfs.push(r.bdf);
        }
        out.push(bdfs);
    }
    Ok(out)
}

/// [`resolve`] against what boot found.
pub fn check(configs: &[VmConfig]) -> Result<Vec<Vec<Bdf>>, String> {
    if configs.iter().all(|c| c.devices.is_empty()) {
        return Ok(configs.iter().map(|_| Vec::new()).collect());
    }
    let Some(host) = HOST.get() else {
        return Err("devices= needs PCI and IOMMU discovery, which found nothing (no ACPI tables)".into());
    };
    let host = host.lock();
    resolve(configs, &host.reports, host.iommu.is_some() && host.config.is_some())
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
        msi_routing::route(&mut msi_routing::VECTORS.lock(), &mut **iommu, owner, route, self.cpu, &mut settle)
    }

    fn write_msix_entry(&mut self, bdf: Bdf, bar: u8, offset: u64, index: u16, message: Option<MsiMessage>) {
        match self.bars.iter().find(|b| b.index == bar).and_then(BarMmio::new) {
            Some(mut mmio) => program_msix_entry(&mut mmio, offset, message),
            // The entry stays as reset left it: masked.
            None => {
                warn!(target: "msi", "{bdf}: MSI-X entry {index} in BAR{bar}, which the hypervisor cannot reach; stays masked")
            }
        }
    }
}

fn settle(vector: u8) {
    crate::arch::x86::device_vectors::settle(vector);
}

type Function = PassthroughFunction<HostConfig, DeviceInterrupts>;

/// Busy-wait delays for device resets.
struct TscDelay;

impl crate::pci::reset::Delay for TscDelay {
    fn delay_us(&mut self, us: u64) {
        let per_us = (crate::arch::x86::tsc::cached_ticks_per_ms() / 1000).max(1);
        let end = crate::arch::x86::instr::rdtsc().saturating_add(us.saturating_mul(per_us));
        while crate::arch::x86::instr::rdtsc() < end {
            core::hint::spin_loop();
        }
    }
}

/// The devices one VM owns, attached to its IOMMU domain.
#[derive(Debug)]
pub struct VmDevices {
    bdfs: Vec<Bdf>,
    domain: DomainId,
    /// MMIO BARs as mapped into the VM (guest address → host address).
    bars: Vec<BarMapping>,
    vm: String,
    /// The VM's id (owner of its devices' host vectors).
    vm_id: u32,
    /// Local APIC id of the CPU that runs VMs: where device interrupts are remapped to.
    cpu: u32,
}

impl VmDevices {
    /// Creates the VM's domain over `map`, resets each device and attaches it.
    /// Device interrupts will be remapped to the local APIC `cpu`.
    pub fn assign(
        vm: &str,
        vm_id: u32,
        cpu: u32,
        bdfs: &[Bdf],
        map: &GuestMemoryMap,
    ) -> Result<Option<VmDevices>, String> {
        if bdfs.is_empty() {
            return Ok(None);
        }
        let host = HOST.get().ok_or("no IOMMU")?;
        let mut host = host.lock();
        let HostPci { iommu, inventory, config, .. } = &mut *host;
        let (Some(iommu), Some(config)) = (iommu.as_mut(), *config) else { return Err("no IOMMU".into()) };
        let domain = iommu.create_domain(map).map_err(|e| format!("cannot create its IOMMU domain: {e}"))?;
        let mut devices = VmDevices { bdfs: Vec::new(), domain, bars: Vec::new(), vm: vm.into(), vm_id, cpu };
        let mut next_gpa = PCI_WINDOW_GPA;
        for &bdf in bdfs {
            let Some(dev) = inventory.devices().iter().find(|d| d.bdf == bdf) else {
                return Err(format!("device {bdf} vanished"));
            };
            let method = crate::pci::reset::reset_function(dev, inventory, &config, &mut TscDelay)
                .map_err(|e| format!("cannot reset {bdf}: {e:?}"))?;
            info!(target: "pci", "{bdf}: reset ({method}) before assignment to VM {vm}");
            iommu.attach(bdf, domain).map_err(|e| format!("cannot attach {bdf}: {e}"))?;
            devices.bdfs.push(bdf);
            info!(target: "iommu", "{bdf}: attached to {domain} of VM {vm} (DMA reaches only its memory)");
            let mut f = Function::new(dev, config, devices.interrupts(dev)).map_err(|e| format!("{bdf}: {e:?}"))?;
            next_gpa = place_bars(&mut f, next_gpa);
            for b in f.bar_mappings() {
                match b.space {
                    BarSpace::Mmio => {
                        info!(target: "pci", "{bdf}: BAR{} host {:#x} -> guest {:#x} ({} KiB)", b.bar, b.host_addr, b.guest_addr, b.len_bytes >> 10);
                        devices.bars.push(b);
                    }
                    BarSpace::Io => {
                        warn!(target: "pci", "{bdf}: I/O BAR{} not given to the VM (I/O BARs are not passed through yet)", b.bar)
                    }
                }
            }
            devices.exclude_msix_table(&f);
        }
        Ok(Some(devices))
    }

    /// MSI-X table pages stay unmapped: guest accesses trap to the MSI-X window, so
    /// the device only ever holds remapped messages.
    fn exclude_msix_table(&mut self, f: &Function) {
        if let Some((bar, offset, len)) = f.msix_table_region() {
            self.bars = without_pages(core::mem::take(&mut self.bars), bar, offset, len);
        }
    }

    /// Maps the BARs into a (new) nested page table.
    pub fn map_bars(&self, npt: &mut NestedPageTable) -> Result<(), String> {
        for b in &self.bars {
            npt.map_range(
                &mut GlobalFrames,
                GuestPhysAddr::new(b.guest_addr),
                HostPhysAddr::new(b.host_addr),
                b.len_bytes.next_multiple_of(PAGE_SIZE),
                Perms::RW,
            )
            .map_err(|e| format!("cannot map BAR{} of the VM's devices: {e:?}", b.bar))?;
        }
        Ok(())
    }

    fn interrupts(&self, dev: &crate::platform::pci::PciDevice) -> DeviceInterrupts {
        DeviceInterrupts { vm: self.vm_id, cpu: self.cpu, bars: dev.bars.clone() }
    }

    /// A PCI bus (ports 0xCF8-0xCFF) with the devices' filtered views, BARs at the
    /// addresses [`VmDevices::map_bars`] mapped, for a VM without a desktop platform;
    /// their MSI-X table pages go on `mmio`.
    pub fn build_bus(&self, mmio: &mut MemBus) -> Result<PciHost, String> {
        let mut host = PciHost::new(1);
        self.add_to(&mut host, mmio)?;
        Ok(host)
    }

    /// Adds the devices' filtered views (fresh, quiesced) to a VM's PCI host, and the
    /// pages holding their MSI-X tables to its MMIO bus (trapped, see `msix_window`).
    pub fn add_to(&self, pci: &mut PciHost, mmio: &mut MemBus) -> Result<(), String> {
        let host = HOST.get().ok_or("no IOMMU")?;
        let host = host.lock();
        let config = host.config.ok_or("no config space")?;
        let mut next_gpa = PCI_WINDOW_GPA;
        for (i, &bdf) in (0u8..).zip(&self.bdfs) {
            let dev = host.inventory.devices().iter().find(|d| d.bdf == bdf).ok_or("device vanished")?;
            let mut f = Function::new(dev, config, self.interrupts(dev)).map_err(|e| format!("{bdf}: {e:?}"))?;
            next_gpa = place_bars(&mut f, next_gpa);
            let table = f.msix_table_region();
            let mappings = f.bar_mappings();
            let f = Shared::new(f);
            if let Some((bar, offset, len)) = table
                && let Some(b) = mappings.iter().find(|m| m.bar == bar && m.space == BarSpace::Mmio)
                && let Some((start, end)) = trapped_pages(b.len_bytes, offset, len)
            {
                let device = dev.bars.iter().find(|h| h.index == bar).and_then(BarMmio::new);
                let window = MsixWindow::new(f.clone(), device, start, offset, len);
                let range = BusRange::new(b.guest_addr.saturating_add(start), end - start).ok_or("MSI-X window")?;
                mmio.insert(range, Box::new(window)).map_err(|e| format!("{bdf}: MSI-X table window: {e:?}"))?;
                info!(target: "pci", "{bdf}: MSI-X table at guest {:#x} trapped ({} entries)", range.start(), len / 16);
            }
            let guest = vpci::Bdf::new(0, FIRST_GUEST_DEVICE.saturating_add(i), 0).ok_or("too many devices")?;
            pci.add_function(guest, Box::new(f)).map_err(|e| format!("{e:?}"))?;
        }
        Ok(())
    }

    /// Stops every device's MSI/MSI-X on the device, then removes the VM's interrupt
    /// routes: remapping entries cleared, host vectors freed. Before a reset or
    /// taking the devices back.
    fn unroute_interrupts(&self, host: &mut HostPci) {
        let HostPci { iommu, inventory, config, .. } = host;
        if let Some(config) = *config {
            for dev in self.bdfs.iter().filter_map(|b| inventory.devices().iter().find(|d| d.bdf == *b)) {
                quiesce_interrupts(&config, dev);
            }
        }
        let Some(iommu) = iommu.as_mut() else { return };
        let n = msi_routing::unroute_vm(&mut msi_routing::VECTORS.lock(), &mut **iommu, self.vm_id, &mut settle);
        if n > 0 {
            info!(target: "msi", "VM {}: {n} device interrupt route(s) removed", self.vm);
        }
    }

    /// Whether this VM owns the function a fault names. AMD-Vi under QEMU reports only
    /// the devfn, so a fault with bus 0 also matches by device and function.
    pub fn owns(&self, fault: &IommuFault) -> bool {
        self.bdfs.iter().any(|b| {
            *b == fault.bdf || (fault.bdf.bus == 0 && (b.device, b.function) == (fault.bdf.device, fault.bdf.function))
        })
    }

    /// Resets the devices (they stay attached): on a VM restart, so nothing the old
    /// run programmed keeps doing DMA into the fresh memory.
    pub fn reset_all(&self) {
        let Some(host) = HOST.get() else { return };
        let mut host = host.lock();
        self.unroute_interrupts(&mut host);
        let Some(config) = host.config else { return };
        for &bdf in &self.bdfs {
            let Some(dev) = host.inventory.devices().iter().find(|d| d.bdf == bdf) else { continue };
            match crate::pci::reset::reset_function(dev, &host.inventory, &config, &mut TscDelay) {
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
        for bdf in self.bdfs.drain(..) {
            if let Err(e) = iommu.detach(bdf) {
                error!(target: "iommu", "{bdf}: cannot detach: {e}");
            }
            if let (Some(dev), Some(config)) = (inventory.devices().iter().find(|d| d.bdf == bdf), *config) {
                match crate::pci::reset::reset_function(dev, inventory, &config, &mut TscDelay) {
                    Ok(m) => info!(target: "pci", "{bdf}: taken back from VM {} ({m}), blocked", self.vm),
                    Err(e) => error!(target: "pci", "{bdf}: reset after VM {} failed: {e:?}", self.vm),
                }
            }
        }
        match iommu.destroy_domain(self.domain) {
            Ok(()) => info!(target: "iommu", "{} of VM {} freed", self.domain, self.vm),
            Err(e) => error!(target: "iommu", "cannot free {}: {e}", self.domain),
        }
    }
}

/// `bars` without the pages of BAR `bar` that hold `[offset, offset + len)`.
fn without_pages(bars: Vec<BarMapping>, bar: u8, offset: u64, len: u64) -> Vec<BarMapping> {
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
                len_bytes: b.len_bytes - end,
                ..b
            });
        }
    }
    kept
}

/// Programs the guest-visible BARs at naturally aligned addresses from `next` and
/// turns memory decode on (as firmware would; bus mastering is the guest driver's); returns the next free
/// address.
fn place_bars(f: &mut Function, mut next: u64) -> u64 {
    for bar in 0..6u16 {
        let at = vpci::BAR0 + bar * 4;
        let old = f.config_read(at, AccessSize::Dword);
        f.config_write(at, AccessSize::Dword, u32::MAX);
        let probe = f.config_read(at, AccessSize::Dword);
        f.config_write(at, AccessSize::Dword, old);
        if probe == 0 || probe & 1 != 0 {
            continue;
        }
        let size = u64::from(!(probe & !0xf)).wrapping_add(1) & 0xffff_ffff;
        if size == 0 {
            continue;
        }
        let addr = next.next_multiple_of(size.max(PAGE_SIZE));
        f.config_write(at, AccessSize::Dword, addr as u32);
        next = addr.saturating_add(size.max(PAGE_SIZE));
    }
    let command = f.config_read(vpci::COMMAND, AccessSize::Word);
    f.config_write(vpci::COMMAND, AccessSize::Word, command | u32::from(vpci::CMD_MEMORY));
    next
}

/// Drains the IOMMU's fault log (faults are logged here, target "iommu").
pub fn poll_faults() -> Vec<IommuFault> {
    let Some(host) = HOST.get() else { return Vec::new() };
    let Some(mut host) = host.try_lock() else { return Vec::new() };
    let faults = host.iommu.as_mut().map(|i| i.poll_faults()).unwrap_or_default();
    crate::iommu::log_faults(&faults);
    faults
}

#[cfg(test)]
#[path = "passthrough_tests.rs"]
mod tests;
