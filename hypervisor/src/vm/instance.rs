//! One VM: its memory, nested page tables, vCPU, devices and console, and the loop that
//! runs it for a time slice. Everything a guest does ends in this loop as a decided
//! action; nothing it does can panic the hypervisor.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use crate::arch::x86::exit_stages::{self, Stage};
use crate::arch::x86::{device_vectors, idt};
use crate::devices::irq::{ApicSink, GsiSink};
use bulkhead_abi::payload::{SCRATCH_MMIO, SCRATCH_MMIO_LEN};

use crate::devices::bus::{BusRange, MemBus, PioBus};
use crate::devices::pci_host::PciHost;
use crate::devices::power::PowerEvent;
use crate::devices::scratch::Scratch;
use crate::devices::shared::Shared;
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
use crate::memory::direct_map::{self, DirectMap};
use crate::memory::guest::{GuestMemory, GuestMemoryAccess, GuestMemoryMap, GuestRegion, HostMemory, Perms};
use crate::memory::phys::{self, GlobalFrames};
use crate::memory::stage2::NestedPageTable;
use crate::vcpu::arch::{Arch, InitialState, VcpuConfig};
use crate::vcpu::cpuid::{CpuidPolicy, HostCpuid};
use crate::vcpu::dispatch::{self, GuestConsole, NoMsrDevices, VmEnv, VmIdentity};
use crate::vcpu::exit::{ExitReason, Flow, StopReason};
use crate::vcpu::msr::MsrState;
use crate::vcpu::regs::{Gpr, RegisterFile};
use crate::vm::config::{Kind, VmConfig};
use crate::vm::console::VmConsole;
use crate::vm::counters::ExitCounters;
use crate::vm::desktop::{self, DesktopMmio, DesktopMsrs, DesktopPlatform, DesktopPorts, HostTime};
use crate::vm::host_vectors::GuestTarget;
use crate::vm::linux::{BootRequest, BzImage, Framebuffer, PixelLayout};
use crate::vm::msi_routing;
use crate::vm::passthrough::VmDevices;
use crate::vm::payload;
use crate::vm::payload_irqs::PendingIrqs;

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    Runnable,
    /// Executed HLT; runnable again when an interrupt is pending.
    Halted,
    Stopped(StopReason),
}

/// Why `run_slice` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceEnd {
    Preempted,
    Yielded,
    Halted,
    Stopped(StopReason),
}

#[derive(Debug)]
pub enum VmError {
    OutOfMemory(&'static str),
    Image(alloc::string::String),
    Backend(alloc::string::String),
}

impl core::fmt::Display for VmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmError::OutOfMemory(what) => write!(f, "out of memory for the {what}"),
            VmError::Image(why) => write!(f, "bad boot image: {why}"),
            VmError::Backend(why) => write!(f, "the virtualisation backend refused: {why}"),
        }
    }
}

/// Console output of a VM, adapted to the dispatcher's trait.
struct ConsoleAdapter<'a>(&'a spin::Mutex<VmConsole>);

impl GuestConsole for ConsoleAdapter<'_> {
    fn write(&mut self, _vm: u32, bytes: &[u8]) {
        self.0.lock().write(bytes);
    }
}

/// What a VM needs from the machine besides its configuration and image.
#[derive(Debug, Clone, Copy)]
pub struct VmResources {
    pub initrd: Option<&'static [u8]>,
    pub host_time: HostTime,
    /// Size of the VM's framebuffer (desktop VMs).
    pub display: (u32, u32),
    /// Host PCI functions the VM owns (checked by `passthrough::check`).
    pub devices: &'static [crate::pci::Bdf],
}

/// A desktop VM's framebuffer: a region of its own memory that Linux sees as an EFI
/// framebuffer (32-bit pixels, blue in the lowest byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFramebuffer {
    pub gpa: GuestPhysAddr,
    pub hpa: HostPhysAddr,
    pub width: u32,
    pub height: u32,
    pub stride_bytes: u32,
    /// Bytes of memory backing it (whole 2 MiB pages).
    pub len: u64,
}

/// Lets a VM's nested page table follow its assigned BARs (see
/// [`VmDevices::sync_bars`]); true if the table changed.
fn sync_device_bars(
    devices: &mut Option<VmDevices>,
    pci: Option<&Shared<PciHost>>,
    npt: Option<&mut NestedPageTable>,
    fresh: bool,
) -> bool {
    match (devices, pci, npt) {
        (Some(devices), Some(pci), Some(npt)) => devices.sync_bars(&pci.lock(), npt, fresh),
        _ => false,
    }
}

/// The pattern in a VM's last page of RAM (see `bulkhead_abi::payload::CANARY_PAGES`).
fn canary_byte(vm_id: u32, offset: usize) -> u8 {
    (offset as u32).wrapping_mul(31).wrapping_add(vm_id.wrapping_mul(0x9e37)) as u8 ^ 0xa5
}

pub struct Vm<A: Arch> {
    pub id: u32,
    pub config: VmConfig,
    image: &'static [u8],
    pub state: VmState,
    ram: HostPhysAddr,
    map: GuestMemoryMap,
    npt: Option<NestedPageTable>,
    io_map: HostPhysAddr,
    msr_map: HostPhysAddr,
    vcpu: Option<A::Vcpu>,
    msrs: MsrState,
    ports: PioBus,
    mmio: MemBus,
    pub console: Arc<spin::Mutex<VmConsole>>,
    pub counters: ExitCounters,
    /// Interrupts of its assigned devices raised in it since its last start.
    pub device_interrupts: u64,
    /// Interrupts of a payload VM (no interrupt controller).
    irqs: PendingIrqs,
    /// The virtual platform of a desktop (Linux) VM.
    platform: Option<Box<DesktopPlatform>>,
    policy: CpuidPolicy,
    resources: VmResources,
    framebuffer: Option<GuestFramebuffer>,
    /// How many times the VM has been started (1 after creation).
    pub starts: u32,
    /// Host PCI functions it owns, attached to its IOMMU domain.
    devices: Option<VmDevices>,
    /// The PCI host its assigned functions sit on (when it has devices).
    pci: Option<Shared<PciHost>>,
}

impl<A: Arch> core::fmt::Debug for Vm<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vm").field("id", &self.id).field("name", &self.config.name).field("state", &self.state).finish()
    }
}

const IO_MAP_BYTES: u64 = 3 * PAGE_SIZE;
const MSR_MAP_BYTES: u64 = 2 * PAGE_SIZE;

impl<A: Arch> Vm<A> {
    /// Creates and starts a VM from its configuration and boot image.
    pub fn create(
        id: u32,
        config: VmConfig,
        image: &'static [u8],
        resources: VmResources,
        features: &A::Features,
    ) -> Result<Vm<A>, VmError> {
        let ram_bytes = config.memory_bytes;
        let ram = phys::alloc_contiguous(ram_bytes, LARGE_PAGE_SIZE).ok_or(VmError::OutOfMemory("guest RAM"))?;
        let maps = A::permission_maps();
        let io_map = phys::alloc_contiguous(IO_MAP_BYTES, PAGE_SIZE).ok_or(VmError::OutOfMemory("I/O map"))?;
        let msr_map = phys::alloc_contiguous(MSR_MAP_BYTES, PAGE_SIZE).ok_or(VmError::OutOfMemory("MSR map"))?;
        DirectMap.write(io_map, maps.io.get(..IO_MAP_BYTES as usize).unwrap_or(&maps.io));
        DirectMap.write(msr_map, maps.msr.get(..MSR_MAP_BYTES as usize).unwrap_or(&maps.msr));
        let mut regions = Vec::new();
        for (gpa, offset, len) in desktop::vm_ram_blocks(config.kind, ram_bytes) {
            let hpa = HostPhysAddr::new(ram.raw() + offset);
            regions.push(
                GuestRegion::new(GuestPhysAddr::new(gpa), hpa, len, Perms::RWX)
                    .map_err(|e| VmError::Image(alloc::format!("{e:?}")))?,
            );
        }
        let framebuffer = match config.kind {
            Kind::Linux => {
                let (width, height) = resources.display;
                let stride_bytes = width.saturating_mul(4);
                let len = (u64::from(stride_bytes) * u64::from(height)).max(1).next_multiple_of(LARGE_PAGE_SIZE);
                let hpa = phys::alloc_contiguous(len, LARGE_PAGE_SIZE).ok_or(VmError::OutOfMemory("framebuffer"))?;
                let gpa = GuestPhysAddr::new(desktop::FRAMEBUFFER_GPA);
                regions.push(
                    GuestRegion::new(gpa, hpa, len, Perms::RW).map_err(|e| VmError::Image(alloc::format!("{e:?}")))?,
                );
                Some(GuestFramebuffer { gpa, hpa, width, height, stride_bytes, len })
            }
            Kind::Payload => None,
        };
        let map = GuestMemoryMap::new(regions).map_err(|e| VmError::Image(alloc::format!("{e:?}")))?;
        let cpu = if resources.devices.is_empty() { 0 } else { crate::arch::x86::lapic::id() };
        let devices = VmDevices::assign(&config, id, cpu, resources.devices, &map).map_err(VmError::Backend)?;
        let mut policy = CpuidPolicy::new(&HostCpuid);
        if config.kind == Kind::Linux {
            policy.kvm_features = Some(crate::vcpu::pvclock::KVM_FEATURES);
            policy.lapic = true;
        }
        let mut vm = Vm {
            id,
            console: Arc::new(spin::Mutex::new(VmConsole::new(&config.name))),
            config,
            image,
            state: VmState::Runnable,
            ram,
            map,
            npt: None,
            io_map,
            msr_map,
            vcpu: None,
            msrs: MsrState::new(true),
            ports: PioBus::new("pio"),
            mmio: MemBus::new("mmio"),
            counters: ExitCounters::default(),
            device_interrupts: 0,
            irqs: PendingIrqs::default(),
            platform: None,
            policy,
            resources,
            framebuffer,
            starts: 0,
            devices,
            pci: None,
        };
        if let Err(e) = vm.start(features) {
            vm.release();
            return Err(e);
        }
        Ok(vm)
    }

    /// The VM's framebuffer, for the switcher (desktop VMs only).
    pub fn framebuffer(&self) -> Option<GuestFramebuffer> {
        self.framebuffer
    }

    /// Reads and clears which framebuffer pages the guest wrote since the last call (bit
    /// `i` of `bitmap` = page `i`); `None` when the VM is not running (its screen cannot
    /// change). Flushes the guest's TLB so its next write marks the page again.
    pub fn take_framebuffer_dirty(&mut self, bitmap: &mut [u64]) -> Option<usize> {
        let fb = self.framebuffer?;
        let npt = self.npt.as_mut()?;
        let vcpu = self.vcpu.as_mut()?;
        let npages = (fb.len / PAGE_SIZE) as usize;
        let dirty = npt.take_dirty(&mut GlobalFrames, fb.gpa, npages, bitmap);
        if dirty > 0 {
            A::request_tlb_flush(vcpu);
        }
        Some(dirty)
    }

    /// The keyboard LEDs the guest last set, when they changed (for the real keyboard).
    pub fn take_led_change(&self) -> Option<u8> {
        self.platform.as_ref().and_then(|p| p.keyboard.lock().take_led_change())
    }

    /// Key bytes the VM's keyboard dropped (the guest had it disabled, or its queue
    /// was full).
    pub fn dropped_keys(&self) -> u64 {
        self.platform.as_ref().map_or(0, |p| p.keyboard.lock().dropped_keys())
    }

    /// The keyboard LEDs the guest set last (bit 0 Scroll, 1 Num, 2 Caps Lock).
    pub fn keyboard_leds(&self) -> u8 {
        self.platform.as_ref().map_or(0, |p| p.keyboard.lock().leds())
    }

    /// Types into the VM's serial console (tests, the service console).
    pub fn serial_input(&self, bytes: &[u8]) {
        if let Some(p) = &self.platform {
            p.uart.lock().push_input(bytes);
        }
    }

    /// Gives the VM key presses as set-1 scan codes (from the switcher).
    pub fn inject_scancodes(&self, bytes: &[u8]) {
        if let Some(p) = &self.platform {
            p.keyboard.lock().inject_scancodes(bytes);
        }
    }

    /// Builds the VM's devices from scratch (on every start, so a restart also resets
    /// the hardware).
    fn build_devices(&mut self, start_tsc: u64) -> Result<(), VmError> {
        self.ports = PioBus::new("pio");
        self.mmio = MemBus::new("mmio");
        self.platform = None;
        self.pci = None;
        match self.config.kind {
            Kind::Payload => {
                let range = BusRange::new(SCRATCH_MMIO, SCRATCH_MMIO_LEN).ok_or(VmError::Image("scratch".into()))?;
                self.mmio
                    .insert(range, Box::new(Scratch::new()))
                    .map_err(|e| VmError::Backend(alloc::format!("{e:?}")))?;
                if let Some(devices) = &self.devices {
                    let bus = Shared::new(devices.build_bus(&mut self.mmio).map_err(VmError::Backend)?);
                    self.ports
                        .insert_ports(crate::devices::layout::PCI_CONFIG_ADDRESS_PORT, 8, Box::new(bus.clone()))
                        .map_err(|e| VmError::Backend(alloc::format!("{e:?}")))?;
                    self.pci = Some(bus);
                }
            }
            Kind::Linux => {
                let platform = DesktopPlatform::new(
                    &self.config.name,
                    self.console.clone(),
                    self.resources.host_time,
                    start_tsc,
                    &mut self.ports,
                    &mut self.mmio,
                )
                .map_err(|e| VmError::Backend(e.into()))?;
                if let Some(devices) = &self.devices {
                    devices.add_to(&mut platform.pci.lock(), &mut self.mmio).map_err(VmError::Backend)?;
                    self.pci = Some(platform.pci.clone());
                    // Its I/O APIC inputs driven by host INTx lines end each interrupt
                    // at the guest's EOI (see `intx_routing`).
                    let mut irq = platform.irq.borrow_mut();
                    for line in devices.guest_intx() {
                        irq.ioapic.set_resample(line.gsi, true);
                    }
                }
                self.platform = Some(Box::new(platform));
            }
        }
        Ok(())
    }

    /// (Re)loads the boot image into zeroed RAM and creates a fresh vCPU.
    fn start(&mut self, features: &A::Features) -> Result<(), VmError> {
        self.teardown_vcpu();
        if self.starts > 0 {
            if let Some(devices) = &self.devices {
                devices.reset_all();
            }
            self.scrub_ram();
        }
        let mut npt = NestedPageTable::new(&mut GlobalFrames).map_err(|e| VmError::Backend(alloc::format!("{e:?}")))?;
        // The framebuffer gets 4 KiB leaves so the switcher can track written pages.
        npt.map_all_tracking(&mut GlobalFrames, &self.map, self.framebuffer.map(|fb| fb.gpa))
            .map_err(|e| VmError::Backend(alloc::format!("{e:?}")))?;
        let initial = self.load_image()?;
        if self.config.kind == Kind::Payload {
            self.write_canary();
        }
        let config = VcpuConfig {
            tag: self.id + 1,
            stage2_root: npt.root(),
            io_bitmap: self.io_map,
            msr_bitmap: self.msr_map,
            initial,
        };
        self.npt = Some(npt);
        let mut vcpu = A::create_vcpu(features, &config, &mut GlobalFrames)
            .map_err(|e| VmError::Backend(alloc::format!("{e:?}")))?;
        // The guest's TSC starts at 0 when the VM starts (TSC offsetting).
        let start_tsc = crate::arch::x86::instr::rdtsc();
        A::regs(&mut vcpu).set_tsc_offset(0u64.wrapping_sub(start_tsc));
        self.vcpu = Some(vcpu);
        self.build_devices(start_tsc)?;
        // Assigned BARs where the devices' views place them (the new table has none).
        sync_device_bars(&mut self.devices, self.pci.as_ref(), self.npt.as_mut(), true);
        self.msrs = MsrState::new(true);
        self.irqs = PendingIrqs::default();
        self.state = VmState::Runnable;
        self.starts += 1;
        Ok(())
    }

    fn load_image(&mut self) -> Result<InitialState, VmError> {
        match self.config.kind {
            Kind::Payload => {
                let plan = payload::plan(self.image, self.config.memory_bytes)
                    .map_err(|e| VmError::Image(alloc::format!("{e}")))?;
                let mut mem = GuestMemory::new(&self.map, DirectMap);
                for (gpa, what, data) in &plan.writes {
                    mem.write_bytes(*gpa, data)
                        .map_err(|e| VmError::Image(alloc::format!("cannot place the {what} at {gpa}: {e:?}")))?;
                }
                Ok(plan.entry)
            }
            Kind::Linux => self.load_linux(),
        }
    }

    /// The Linux 64-bit boot protocol: ACPI tables, zero page, command line, kernel and
    /// initrd in guest memory, entry in long mode.
    fn load_linux(&mut self) -> Result<InitialState, VmError> {
        let image = |e: &dyn core::fmt::Display| VmError::Image(alloc::format!("{e}"));
        let kernel = BzImage::parse(self.image).map_err(|e| image(&e))?;
        let fb = self.framebuffer.ok_or(VmError::Image("a desktop VM needs a framebuffer".into()))?;
        let mut acpi_config = crate::vm::acpi::AcpiConfig::default();
        if let Some(devices) = &self.devices {
            // Assigned 64-bit BARs sit above 4 GiB and above the VM's RAM: offer that
            // window too.
            let w = devices.windows().mmio64;
            acpi_config.pci.mmio64 = Some(crate::vm::acpi::Window::new(w.start, w.end.saturating_sub(1)));
            acpi_config.pci.intx = devices.guest_intx();
        }
        let acpi = crate::vm::acpi::build_acpi_tables(&acpi_config, GuestPhysAddr::new(desktop::ACPI_TABLES_GPA))
            .map_err(|e| VmError::Image(alloc::format!("ACPI tables: {e:?}")))?;
        let e820 = desktop::e820(self.config.memory_bytes, fb.len);
        let request = BootRequest {
            kernel,
            initrd: self.resources.initrd.unwrap_or(&[]),
            cmdline: self.config.cmdline.as_bytes(),
            // The kernel, initrd and boot data go in the low block.
            mem_size: self.config.memory_bytes.min(desktop::LOW_RAM_MAX),
            e820: &e820,
            framebuffer: Some(Framebuffer {
                base: fb.gpa,
                width: fb.width,
                height: fb.height,
                stride: fb.stride_bytes,
                layout: PixelLayout::Bgrx,
            }),
            acpi_rsdp: Some(acpi.rsdp_gpa),
        };
        let plan = crate::vm::linux::build_boot_plan(&request).map_err(|e| image(&e))?;
        let mut mem = GuestMemory::new(&self.map, DirectMap);
        mem.write_bytes(acpi.base, &acpi.bytes)
            .map_err(|e| VmError::Image(alloc::format!("cannot place the ACPI tables: {e:?}")))?;
        for w in &plan.writes {
            mem.write_bytes(w.gpa, &w.data)
                .map_err(|e| VmError::Image(alloc::format!("cannot place the {} at {}: {e:?}", w.what, w.gpa)))?;
        }
        let e = plan.entry;
        Ok(InitialState::Long64 { rip: e.rip, rsp: e.rsp, cr3: e.cr3, rsi: e.rsi })
    }

    /// Zeroes all guest RAM, so a restarted VM starts from the same state as a new one.
    fn scrub_ram(&mut self) {
        // RAM is one host block however the guest sees it (low and high blocks).
        let zeros = vec![0u8; 64 * 1024];
        for offset in (0..self.config.memory_bytes).step_by(zeros.len()) {
            DirectMap.write(HostPhysAddr::new(self.ram.raw() + offset), &zeros);
        }
    }

    fn canary_gpa(&self) -> GuestPhysAddr {
        GuestPhysAddr::new(self.config.memory_bytes - PAGE_SIZE)
    }

    fn write_canary(&mut self) {
        let page: Vec<u8> = (0..PAGE_SIZE as usize).map(|i| canary_byte(self.id, i)).collect();
        let gpa = self.canary_gpa();
        let _ = GuestMemory::new(&self.map, DirectMap).write_bytes(gpa, &page);
    }

    /// Whether the canary page still holds the hypervisor's pattern (payload VMs; a
    /// desktop VM owns all of its RAM).
    pub fn canary_intact(&self) -> bool {
        if self.config.kind != Kind::Payload {
            return true;
        }
        let mut page = vec![0u8; PAGE_SIZE as usize];
        let mem = GuestMemory::new(&self.map, DirectMap);
        mem.read_bytes(self.canary_gpa(), &mut page).is_ok()
            && page.iter().enumerate().all(|(i, &b)| b == canary_byte(self.id, i))
    }

    /// Checksum of all of this VM's RAM (for isolation checks of stopped VMs).
    pub fn memory_checksum(&self) -> u64 {
        direct_map::checksum(self.ram, self.config.memory_bytes)
    }

    pub fn interrupt_pending(&self) -> bool {
        match &self.platform {
            Some(p) => p.irq.borrow().pending_vector().is_some(),
            None => self.irqs.any(),
        }
    }

    /// EOIs the guest signalled without an exit (paravirtual EOI), so far.
    pub fn pv_eois(&self) -> u64 {
        self.platform.as_deref().map_or(0, DesktopPlatform::pv_eois)
    }

    /// Host TSC at which a halted VM's next timer fires, if it has one.
    pub fn wake_deadline(&self) -> Option<u64> {
        let p = self.platform.as_ref()?;
        p.irq.borrow().next_deadline().map(|guest| guest.wrapping_add(p.start_tsc()))
    }

    /// Lets timers that expired while the VM was halted raise their interrupts.
    pub fn poll_timers(&mut self) {
        if let Some(p) = self.platform.as_deref() {
            let guest_tsc = crate::arch::x86::instr::rdtsc().wrapping_sub(p.start_tsc());
            p.update(guest_tsc);
        }
    }

    /// Raises an interrupt of one of the VM's assigned devices where its guest asked
    /// for it: an MSI in the local APIC of a desktop VM (destination and delivery mode
    /// as the guest programmed them) or in the pending set of a payload VM; an INTx
    /// line on its input of the desktop VM's I/O APIC. A halted VM becomes runnable.
    /// Returns whether the interrupt was accepted.
    pub fn deliver_device_interrupt(&mut self, target: GuestTarget) -> bool {
        if matches!(self.state, VmState::Stopped(_)) {
            return false;
        }
        let accepted = match (target, self.platform.as_deref()) {
            (GuestTarget::Msi(route), Some(p)) => p.irq.borrow_mut().lapic.deliver(&route.apic_message()),
            (GuestTarget::Msi(route), None) => self.irqs.deliver(&route.apic_message()),
            (GuestTarget::Intx { guest_gsi, .. }, Some(p)) => {
                p.irq.borrow_mut().set_level(u32::from(guest_gsi), true);
                true
            }
            // A payload VM has no I/O APIC; its devices use MSI.
            (GuestTarget::Intx { .. }, None) => false,
        };
        if accepted {
            self.device_interrupts = self.device_interrupts.saturating_add(1);
        } else {
            log::debug!(target: "msi", "vm {}: device interrupt {target:?} not accepted", self.id);
        }
        if self.state == VmState::Halted && self.interrupt_pending() {
            self.state = VmState::Runnable;
        }
        accepted
    }

    /// Unmasks the host pins of the INTx lines the guest just finished with (its I/O
    /// APIC dropped them on the EOI), so the devices' real levels are sampled again.
    pub fn resample_intx_lines(&self) {
        let Some(p) = self.platform.as_deref() else { return };
        let ended = p.irq.borrow_mut().ioapic.take_resampled();
        if ended == 0 {
            return;
        }
        if let Some(ioapics) = crate::platform::ioapic::HOST_IOAPICS.get() {
            crate::vm::intx_routing::resample(&msi_routing::VECTORS.lock(), &mut ioapics.lock(), self.id, ended);
        }
    }

    /// Delivers the device interrupts that arrived for this VM; `true` if another
    /// VM's arrived too (the slice should end so the scheduler delivers them).
    fn take_device_interrupts(&mut self) -> bool {
        if !device_vectors::PENDING.any() {
            return false;
        }
        let (mine, others) = msi_routing::take_fired_for(self.id);
        for fired in mine {
            self.deliver_device_interrupt(fired.target);
        }
        others
    }

    /// Restarts the VM from its boot image (after a crash, by policy).
    pub fn restart(&mut self, features: &A::Features) -> Result<(), VmError> {
        self.counters = ExitCounters::default();
        self.device_interrupts = 0;
        self.start(features)
    }

    /// Runs the vCPU until the slice ends (host timer), it yields, halts or stops.
    pub fn run_slice(&mut self) -> SliceEnd {
        if self.vcpu.is_none() {
            return SliceEnd::Stopped(StopReason::GuestShutdown { status: 0 });
        }
        loop {
            exit_stages::checkpoint(Stage::Apply);
            // Device interrupts that arrived (the last exit, or while the VM waited) go
            // in first; another VM's end the slice so the scheduler delivers them.
            self.resample_intx_lines();
            if self.take_device_interrupts() {
                return SliceEnd::Preempted;
            }
            let Some(vcpu) = self.vcpu.as_mut() else {
                return SliceEnd::Stopped(StopReason::GuestShutdown { status: 0 });
            };
            // Deliver an interrupt if one is pending and the guest can take it now;
            // otherwise exit as soon as it can.
            let pending = match self.platform.as_deref() {
                Some(p) => {
                    let guest_tsc = crate::arch::x86::instr::rdtsc().wrapping_sub(p.start_tsc());
                    p.update(guest_tsc);
                    p.irq.borrow().pending_vector().is_some()
                }
                None => self.irqs.any(),
            };
            if pending {
                if A::interrupt_window_open(vcpu) {
                    let vector = match self.platform.as_deref() {
                        Some(p) => p.irq.borrow_mut().take_interrupt(),
                        None => self.irqs.take_highest(),
                    };
                    if let Some(vector) = vector {
                        A::inject_interrupt(vcpu, vector);
                    }
                } else {
                    A::request_interrupt_window(vcpu);
                }
            }
            if let Some(p) = self.platform.as_deref() {
                p.offer_pv_eoi(&mut GuestMemory::new(&self.map, DirectMap));
            }
            exit_stages::checkpoint(Stage::Interrupts);
            let exit = A::run(vcpu);
            exit_stages::checkpoint(Stage::ExitDecode);
            let host_tsc = crate::arch::x86::instr::rdtsc();
            if let Some(p) = self.platform.as_deref() {
                p.collect_pv_eoi(&mut GuestMemory::new(&self.map, DirectMap));
            }
            if matches!(exit.reason, ExitReason::ExternalInterrupt | ExitReason::Nmi) {
                // The host interrupt that ended the run is still pending: take it now.
                x86_64::instructions::interrupts::enable();
                core::hint::spin_loop();
                x86_64::instructions::interrupts::disable();
            }
            self.counters.record(&exit.reason);
            exit_stages::checkpoint(Stage::Bookkeeping);
            let action = {
                let mut regs = A::regs(vcpu);
                if exit.reason == ExitReason::Hypercall && regs.gpr(Gpr::Rax) == bulkhead_abi::hypercall::VM_INFO {
                    if exit_stages::enabled() {
                        let stages = exit_stages::take();
                        log::info!(target: "vm", "vm {} ({}) exit counters: {}{stages}", self.id, self.config.name, self.counters);
                    } else {
                        log::info!(target: "vm", "vm {} ({}) exit counters: {}", self.id, self.config.name, self.counters);
                    }
                }
                let mut memory = GuestMemory::new(&self.map, DirectMap);
                let mut console = ConsoleAdapter(&self.console);
                let identity =
                    VmIdentity { id: self.id, name: &self.config.name, memory_bytes: self.config.memory_bytes };
                match self.platform.as_deref() {
                    Some(p) => {
                        let now = host_tsc.wrapping_sub(p.start_tsc());
                        let mut mmio = DesktopMmio { irq: &p.irq, now, next: &mut self.mmio };
                        let mut ports = DesktopPorts { irq: &p.irq, now, next: &mut self.ports };
                        let mut msrs = DesktopMsrs(p);
                        let mut env = VmEnv {
                            vm: identity,
                            apic_id: 0,
                            cpuid_policy: &self.policy,
                            cpuid: &HostCpuid,
                            msrs: &mut self.msrs,
                            ports: &mut ports,
                            mmio: &mut mmio,
                            memory: &mut memory,
                            console: &mut console,
                            interrupts: &mut self.irqs,
                            msr_devices: &mut msrs,
                            host_tsc,
                        };
                        dispatch::decide(&exit, &mut regs, &mut env)
                    }
                    None => {
                        let mut env = VmEnv {
                            vm: identity,
                            apic_id: 0,
                            cpuid_policy: &self.policy,
                            cpuid: &HostCpuid,
                            msrs: &mut self.msrs,
                            ports: &mut self.ports,
                            mmio: &mut self.mmio,
                            memory: &mut memory,
                            console: &mut console,
                            interrupts: &mut self.irqs,
                            msr_devices: &mut NoMsrDevices,
                            host_tsc,
                        };
                        dispatch::decide(&exit, &mut regs, &mut env)
                    }
                }
            };
            exit_stages::checkpoint(Stage::Handler);
            let mut flow = A::apply(vcpu, &action);
            // A configuration write may have moved an assigned BAR or switched its decode.
            if matches!(exit.reason, ExitReason::Io(_) | ExitReason::NestedPageFault { .. })
                && sync_device_bars(&mut self.devices, self.pci.as_ref(), self.npt.as_mut(), false)
            {
                A::request_tlb_flush(vcpu);
            }
            if let Some(event) = self.platform.as_ref().and_then(|p| p.take_power_event()) {
                flow = Flow::Stop(match event {
                    PowerEvent::Off => StopReason::GuestShutdown { status: 0 },
                    PowerEvent::Reset => StopReason::GuestReboot,
                });
            }
            match flow {
                Flow::Continue => {}
                Flow::Yield => return SliceEnd::Yielded,
                Flow::WaitForInterrupt => {
                    let pending = match self.platform.as_deref() {
                        Some(p) => p.irq.borrow().pending_vector().is_some(),
                        None => self.irqs.any(),
                    };
                    if !pending {
                        self.state = VmState::Halted;
                        return SliceEnd::Halted;
                    }
                }
                Flow::Stop(reason) => {
                    if let Some(p) = &self.platform {
                        p.uart.lock().flush_line();
                    }
                    self.state = VmState::Stopped(reason);
                    self.teardown_vcpu();
                    return SliceEnd::Stopped(reason);
                }
            }
            if idt::TIMER_FIRED.swap(false, core::sync::atomic::Ordering::AcqRel) {
                return SliceEnd::Preempted;
            }
            // A key: the switcher reads it now (it may be a hotkey).
            if idt::KEYBOARD_FIRED.load(core::sync::atomic::Ordering::Acquire) {
                return SliceEnd::Preempted;
            }
        }
    }

    /// Stops the VM on the hypervisor's own initiative (the user or policy).
    pub fn stop(&mut self) {
        self.stop_with(StopReason::Requested);
    }

    /// Stops the VM for `reason` (a DMA fault of one of its devices, ...).
    pub fn stop_with(&mut self, reason: StopReason) {
        self.state = VmState::Stopped(reason);
        self.teardown_vcpu();
    }

    /// The VM's assigned devices, if any.
    pub fn devices(&self) -> Option<&VmDevices> {
        self.devices.as_ref()
    }

    /// Takes its devices back: detached (blocked), reset, domain freed.
    pub fn release_devices(&mut self) {
        if let Some(mut devices) = self.devices.take() {
            devices.release();
        }
    }

    /// Frees the vCPU and nested page tables; RAM stays (for inspection and restart).
    fn teardown_vcpu(&mut self) {
        if let Some(vcpu) = self.vcpu.take() {
            A::destroy_vcpu(vcpu, &mut GlobalFrames);
        }
        if let Some(npt) = self.npt.take() {
            npt.destroy(&mut GlobalFrames);
        }
    }

    /// Returns everything to the frame allocator (which scrubs it before reuse).
    pub fn release(&mut self) {
        self.release_devices();
        self.teardown_vcpu();
        phys::free_contiguous(self.ram, self.config.memory_bytes);
        phys::free_contiguous(self.io_map, IO_MAP_BYTES);
        phys::free_contiguous(self.msr_map, MSR_MAP_BYTES);
    }
}
