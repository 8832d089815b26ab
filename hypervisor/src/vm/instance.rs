//! One VM: its memory, nested page tables, vCPU, devices and console, and the loop that
//! runs it for a time slice. Everything a guest does ends in this loop as a decided
//! action; nothing it does can panic the hypervisor.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use crate::devices::layout::{SCRATCH_MMIO_BASE, SCRATCH_MMIO_LEN};

use crate::arch::backend::{Arch, InitialState, VcpuConfig};
use crate::arch::exit::StopReason;
use crate::arch::regs::RegisterFile;
use crate::arch::x86::cpuid::HostCpuid;
use crate::devices::bus::{BusRange, MemBus, PioBus};
use crate::devices::scratch::Scratch;
use crate::devices::shared::Shared;
use crate::devices::vpci::host_bridge::VpciHost;
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
use crate::memory::direct_map::{self, DirectMap};
use crate::memory::guest::{GuestMemory, GuestMemoryAccess, GuestMemoryMap, GuestRegion, HostMemory, Perms};
use crate::memory::page_table::{PageTable, PteFormat};
use crate::memory::phys::GlobalFrames;
use crate::storage::disks::Unavailable;
use crate::vcpu::cpuid::CpuidPolicy;
use crate::vcpu::dispatch::VmIdentity;
use crate::vm::config::{Kind, VmConfig};
use crate::vm::console::VmConsole;
use crate::vm::counters::ExitCounters;
use crate::vm::desktop::{self, DesktopPlatform, HostTime};
use crate::vm::disk_port::{DiskPort, DiskPortError, VmDisk};
use crate::vm::exit_loop::{self, ExitLoop};
use crate::vm::host_blocks::{HostBlocks, PhysBlocks, zero_ranges};
use crate::vm::linux::{BootRequest, BzImage, Framebuffer, PixelLayout};
use crate::vm::multiboot;
use crate::vm::net_port::{NetPort, NetPortError};
use crate::vm::passthrough::host_vectors::{GuestTarget, VectorShortage};
use crate::vm::passthrough::{self, VmDevices};
use crate::vm::payload;
use crate::vm::platform::Platform;
use crate::vm::slice_host::{Machine, SliceHost};
use crate::vm::start_error::{BackendError, ImageError};
use crate::vm::vcpus::{self, StartupAction, VcpuSlot, VcpuState};

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// At least one vCPU can run.
    Runnable,
    /// Every vCPU executed HLT (or waits for a STARTUP); runnable again when an
    /// interrupt is pending for one.
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

/// Why a VM cannot be created or started; `E` is the backend's error (`Arch::Error`).
#[derive(Debug)]
pub enum VmError<E> {
    OutOfMemory(&'static str),
    Image(ImageError),
    Backend(BackendError<E>),
    /// Its devices' interrupts cannot all have host vectors.
    HostVectors(VectorShortage),
    /// Its assigned devices cannot be set up.
    Devices(crate::vm::passthrough::PassthroughError),
    /// Its virtio-net devices cannot be set up.
    Net(NetPortError),
    /// Its virtio-blk device cannot be set up.
    Disk(DiskPortError),
}

impl<E> VmError<E> {
    /// The same error with the backend's own error made vendor-neutral, for reports
    /// made after the backend type is gone.
    pub fn into_vendor(self) -> VmError<crate::arch::backend::VendorError>
    where
        E: Into<crate::arch::backend::VendorError>,
    {
        match self {
            VmError::OutOfMemory(what) => VmError::OutOfMemory(what),
            VmError::Image(why) => VmError::Image(why),
            VmError::Backend(why) => VmError::Backend(why.map_vcpu(Into::into)),
            VmError::HostVectors(shortage) => VmError::HostVectors(shortage),
            VmError::Devices(why) => VmError::Devices(why),
            VmError::Net(why) => VmError::Net(why),
            VmError::Disk(why) => VmError::Disk(why),
        }
    }
}

impl<E: core::fmt::Debug> core::fmt::Display for VmError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmError::OutOfMemory(what) => write!(f, "out of memory for the {what}"),
            VmError::Image(why) => write!(f, "bad boot image: {why}"),
            VmError::Backend(why) => write!(f, "the virtualisation backend refused: {why}"),
            VmError::HostVectors(shortage) => write!(f, "{shortage}"),
            VmError::Devices(why) => write!(f, "the virtualisation backend refused: {why}"),
            VmError::Net(why) => write!(f, "{why}"),
            VmError::Disk(why) => write!(f, "{why}"),
        }
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
    pub devices: &'static [crate::hw::Bdf],
    /// A Multiboot kernel's boot modules: (name, contents), in order.
    pub modules: &'static [(&'static str, &'static [u8])],
    /// Its ends of the configuration's links (virtio-net devices).
    pub net_ports: &'static [NetPort],
    /// The service VM's desktop links, in its port order (empty for other VMs).
    pub service_links: &'static [crate::vm::service_net::ServiceLink],
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
fn sync_device_bars<F: PteFormat>(
    devices: &mut Option<VmDevices>,
    pci: &VpciHost,
    npt: Option<&mut PageTable<F>>,
    fresh: bool,
) -> bool {
    match (devices, npt) {
        (Some(devices), Some(npt)) => devices.sync_bars(pci, npt, fresh),
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
    npt: Option<PageTable<A::Stage2>>,
    io_map: HostPhysAddr,
    msr_map: HostPhysAddr,
    /// Its vCPUs, `config.vcpus` of them once started (`vm/vcpus.rs`).
    vcpus: Vec<VcpuSlot<A::Vcpu>>,
    /// What every vCPU is created with (an AP's initial state comes from its STARTUP).
    vcpu_config: Option<VcpuConfig>,
    /// The guest TSC offset every vCPU shares (guest TSC 0 at the VM's start).
    tsc_offset: u64,
    /// The vCPU that ran last (its TLB entries carry the VM's ASID).
    last_vcpu: Option<usize>,
    features: A::Features,
    ports: PioBus,
    mmio: MemBus,
    pub console: Arc<spin::Mutex<VmConsole>>,
    pub counters: ExitCounters,
    /// Interrupts of its assigned devices raised in it since its last start.
    pub device_interrupts: u64,
    /// Its virtual platform: a payload's pending vectors or a desktop VM's PC.
    platform: Platform,
    /// Host memory the VM holds (RAM, permission maps, framebuffer).
    blocks: HostBlocks,
    policy: CpuidPolicy,
    resources: VmResources,
    /// The service VM's network state (`kind=service` only).
    network: Option<crate::vm::service_net::ServiceNetwork>,
    framebuffer: Option<GuestFramebuffer>,
    /// How many times the VM has been started (1 after creation).
    pub starts: u32,
    /// Host PCI functions it owns, attached to its IOMMU domain.
    devices: Option<VmDevices>,
    /// The PCI host its assigned functions sit on (when it has devices).
    pci: Option<Shared<VpciHost>>,
    /// Its virtual disk (a Linux or payload VM configured with one).
    disk: Option<DiskPort>,
    /// Why its configured disk is missing, if it is: the VM never starts.
    disk_unavailable: Option<Unavailable>,
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
    ) -> Result<Vm<A>, VmError<A::Error>> {
        let mut blocks = HostBlocks::default();
        match Self::build(id, config, image, resources, *features, &mut blocks) {
            Ok(mut vm) => {
                vm.blocks = blocks;
                if let Some(why) = vm.disk_unavailable {
                    // Never started: its desktop tile says why.
                    let locked = why == Unavailable::Locked;
                    log::warn!(
                        target: "vm",
                        "vm {id} ({}) does not start: its disk is {}",
                        vm.config.name,
                        if locked { "locked" } else { "unavailable (see the storage log)" }
                    );
                    vm.stop_with(StopReason::DiskUnavailable { locked });
                    return Ok(vm);
                }
                if let Err(e) = vm.start(features) {
                    vm.release();
                    return Err(e);
                }
                Ok(vm)
            }
            Err(e) => {
                // Nothing a failed creation allocated stays taken (the framebuffer too).
                blocks.release(&mut PhysBlocks);
                passthrough::unreserve_vectors(id);
                Err(e)
            }
        }
    }

    /// Allocates the VM's memory into `blocks` and assigns its devices.
    fn build(
        id: u32,
        config: VmConfig,
        image: &'static [u8],
        resources: VmResources,
        features: A::Features,
        blocks: &mut HostBlocks,
    ) -> Result<Vm<A>, VmError<A::Error>> {
        let ram_bytes = config.memory_bytes;
        let ram = blocks.take(&mut PhysBlocks, ram_bytes, LARGE_PAGE_SIZE, "guest RAM")?;
        let maps = A::permission_maps();
        let io_map = blocks.take(&mut PhysBlocks, IO_MAP_BYTES, PAGE_SIZE, "I/O map")?;
        let msr_map = blocks.take(&mut PhysBlocks, MSR_MAP_BYTES, PAGE_SIZE, "MSR map")?;
        DirectMap.write(io_map, maps.io.get(..IO_MAP_BYTES as usize).unwrap_or(&maps.io));
        DirectMap.write(msr_map, maps.msr.get(..MSR_MAP_BYTES as usize).unwrap_or(&maps.msr));
        let mut regions = Vec::new();
        for (gpa, offset, len) in desktop::vm_ram_blocks(config.kind, ram_bytes) {
            // `offset` lies inside the RAM block just taken: no wrap.
            let hpa = HostPhysAddr::new(ram.raw().wrapping_add(offset));
            regions.push(
                GuestRegion::new(GuestPhysAddr::new(gpa), hpa, len, Perms::RWX)
                    .map_err(|e| VmError::Image(ImageError::Memory(e)))?,
            );
        }
        let framebuffer = match config.kind {
            Kind::Linux => {
                let (width, height) = resources.display;
                let stride_bytes = width.saturating_mul(4);
                // The product of two u32 values fits a u64.
                let len =
                    u64::from(stride_bytes).wrapping_mul(u64::from(height)).max(1).next_multiple_of(LARGE_PAGE_SIZE);
                let hpa = blocks.take(&mut PhysBlocks, len, LARGE_PAGE_SIZE, "framebuffer")?;
                let gpa = GuestPhysAddr::new(crate::devices::layout::FRAMEBUFFER_GPA);
                regions.push(
                    GuestRegion::new(gpa, hpa, len, Perms::RW).map_err(|e| VmError::Image(ImageError::Memory(e)))?,
                );
                Some(GuestFramebuffer { gpa, hpa, width, height, stride_bytes, len })
            }
            Kind::Payload | Kind::Multiboot | Kind::Service => None,
        };
        let map = GuestMemoryMap::new(regions).map_err(|e| VmError::Image(ImageError::Memory(e)))?;
        for port in resources.net_ports {
            port.wire.lock().set_map(port.side, map.clone());
        }
        let (disk, disk_unavailable) = match crate::vm::disk_port::disk_for(id, &config, &map, blocks)? {
            VmDisk::None => (None, None),
            VmDisk::Port(port) => (Some(port), None),
            VmDisk::Unavailable(why) => (None, Some(why)),
        };
        let cpu = if resources.devices.is_empty() { 0 } else { crate::arch::x86::lapic::id() };
        // Before anything is attached: a VM that would run with masked vectors does not start.
        let vectors = passthrough::reserve_vectors(id, resources.devices).map_err(VmError::HostVectors)?;
        if vectors > 0 {
            log::info!(target: "msi", "vm {id} ({}): {vectors} host vectors set aside for its devices", config.name);
        }
        let devices = VmDevices::assign(&config, id, cpu, resources.devices, &map).map_err(VmError::Devices)?;
        let mut policy = CpuidPolicy::new(&HostCpuid);
        if config.kind == Kind::Linux {
            policy.kvm_features = Some(crate::vcpu::pvclock::KVM_FEATURES);
            policy.lapic = true;
        }
        let config_kind = config.kind;
        let vm = Vm {
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
            vcpus: Vec::new(),
            vcpu_config: None,
            tsc_offset: 0,
            last_vcpu: None,
            features,
            ports: PioBus::new("pio"),
            mmio: MemBus::new("mmio"),
            counters: ExitCounters::default(),
            device_interrupts: 0,
            platform: Platform::default(),
            policy,
            network: (config_kind == Kind::Service).then(|| {
                crate::vm::service_net::ServiceNetwork::new(
                    id,
                    resources.service_links.to_vec(),
                    crate::arch::x86::tsc::cached_ticks_per_ms(),
                )
            }),
            resources,
            framebuffer,
            starts: 0,
            devices,
            pci: None,
            blocks: HostBlocks::default(),
            disk,
            disk_unavailable,
        };
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
        if !self.vcpus.first()?.is_started() {
            return None;
        }
        let npages = (fb.len / PAGE_SIZE) as usize;
        // A vCPU running elsewhere could write through a translation cached before the
        // clean, unseen: the pages are cleaned with every vCPU at home. Nothing to clean
        // (a still screen) needs no recall: since the last clean's TLB flush, every
        // write sets its page's Dirty bit again.
        let away = self.vcpus.iter().any(|slot| slot.away.is_some());
        if away && !self.npt.as_mut()?.any_dirty(&mut GlobalFrames, fb.gpa, npages) {
            return Some(0);
        }
        if !self.recall_all() {
            return Some(0);
        }
        let npt = self.npt.as_mut()?;
        let dirty = npt.take_dirty(&mut GlobalFrames, fb.gpa, npages, bitmap);
        if dirty > 0 {
            // Every vCPU may hold a writable translation of a page just cleaned.
            for vcpu in self.vcpus.iter_mut().filter_map(|slot| slot.vcpu.as_mut()) {
                A::request_tlb_flush(vcpu.as_mut());
            }
        }
        Some(dirty)
    }

    /// The keyboard LEDs the guest last set, when they changed (for the real keyboard).
    pub fn take_led_change(&self) -> Option<u8> {
        self.platform.desktop().and_then(|p| p.keyboard.lock().take_led_change())
    }

    /// Key bytes the VM's keyboard dropped (the guest had it disabled, or its queue
    /// was full).
    pub fn dropped_keys(&self) -> u64 {
        self.platform.desktop().map_or(0, |p| p.keyboard.lock().dropped_keys())
    }

    /// The keyboard LEDs the guest set last (bit 0 Scroll, 1 Num, 2 Caps Lock).
    pub fn keyboard_leds(&self) -> u8 {
        self.platform.desktop().map_or(0, |p| p.keyboard.lock().leds())
    }

    /// Types into the VM's serial console (tests, the service console).
    pub fn serial_input(&self, bytes: &[u8]) {
        if let Some(p) = self.platform.desktop() {
            p.uart.lock().push_input(bytes);
        }
    }

    /// Gives the VM key presses as set-1 scan codes (from the switcher).
    pub fn inject_scancodes(&self, bytes: &[u8]) {
        if let Some(p) = self.platform.desktop() {
            p.keyboard.lock().inject_scancodes(bytes);
        }
    }

    /// Builds the VM's devices from scratch (on every start, so a restart also resets
    /// the hardware).
    fn build_devices(&mut self, start_tsc: u64) -> Result<(), VmError<A::Error>> {
        self.ports = PioBus::new("pio");
        self.mmio = MemBus::new("mmio");
        self.platform = Platform::default();
        self.pci = None;
        match self.config.kind {
            // A Multiboot kernel gets the payload's machine and a serial port; the
            // service VM the payload's machine with its link ports on a PCI bus.
            Kind::Payload | Kind::Multiboot | Kind::Service => {
                let range = BusRange::new(SCRATCH_MMIO_BASE, SCRATCH_MMIO_LEN)
                    .ok_or(VmError::Image(ImageError::ScratchRange))?;
                self.mmio
                    .insert(range, Box::new(Scratch::new()))
                    .map_err(|e| VmError::Backend(BackendError::Bus(e)))?;
                // An i8042 with no interrupt wired and no keys fed to it: there for
                // payloads that test how the model holds up (bulkhead_abi::payload).
                let kbc = crate::devices::i8042::I8042::new(Box::new(crate::devices::irq_line::NoIrq));
                self.ports
                    .insert_ports(crate::devices::layout::I8042_DATA_PORT, 5, Box::new(kbc))
                    .map_err(|e| VmError::Backend(BackendError::Bus(e)))?;
                if self.config.kind == Kind::Multiboot {
                    // Its serial port, polled (no interrupt wired), for the kernel's console.
                    let uart = crate::devices::uart16550::Uart16550::new(
                        &self.config.name,
                        Box::new(crate::devices::irq_line::NoIrq),
                        Box::new(crate::vm::desktop::ConsoleLines(self.console.clone())),
                    );
                    self.ports
                        .insert_ports(
                            crate::devices::layout::COM1_PORT,
                            crate::devices::layout::COM1_PORT_COUNT,
                            Box::new(uart),
                        )
                        .map_err(|e| VmError::Backend(BackendError::Bus(e)))?;
                }
                if self.devices.is_some() || !self.resources.net_ports.is_empty() || self.disk.is_some() {
                    let mut host = match &self.devices {
                        Some(devices) => devices.build_bus(&mut self.mmio).map_err(VmError::Devices)?,
                        None => crate::devices::vpci::host_bridge::VpciHost::new(1),
                    };
                    for port in self.resources.net_ports {
                        port.attach(&mut host, &mut self.mmio).map_err(VmError::Net)?;
                    }
                    // A payload's disk is test equipment: its driver is the payload's own.
                    if let Some(disk) = &self.disk {
                        disk.attach(&mut host, &mut self.mmio).map_err(VmError::Disk)?;
                    }
                    let bus = Shared::new(host);
                    self.ports
                        .insert_ports(crate::devices::layout::PCI_CONFIG_ADDRESS_PORT, 8, Box::new(bus.clone()))
                        .map_err(|e| VmError::Backend(BackendError::Bus(e)))?;
                    self.pci = Some(bus);
                }
            }
            Kind::Linux => {
                let platform = DesktopPlatform::new(
                    self.config.vcpus,
                    &self.config.name,
                    self.console.clone(),
                    self.resources.host_time,
                    start_tsc,
                    &mut self.ports,
                    &mut self.mmio,
                )
                .map_err(|e| VmError::Backend(BackendError::Platform(e)))?;
                for port in self.resources.net_ports {
                    port.attach(&mut platform.pci.lock(), &mut self.mmio).map_err(VmError::Net)?;
                }
                if let Some(disk) = &self.disk {
                    disk.attach(&mut platform.pci.lock(), &mut self.mmio).map_err(VmError::Disk)?;
                }
                if let Some(devices) = &self.devices {
                    devices.add_to(&mut platform.pci.lock(), &mut self.mmio).map_err(VmError::Devices)?;
                    self.pci = Some(platform.pci.clone());
                    // Its I/O APIC inputs driven by host INTx lines end each interrupt
                    // at the guest's EOI (see `intx_routing`).
                    let mut irq = platform.irq.borrow_mut();
                    for line in devices.guest_intx() {
                        irq.ioapic.set_resample(line.gsi, true);
                    }
                }
                self.platform = Platform::Desktop(Box::new(platform));
            }
        }
        Ok(())
    }

    /// (Re)loads the boot image into zeroed RAM and creates a fresh vCPU.
    fn start(&mut self, features: &A::Features) -> Result<(), VmError<A::Error>> {
        self.teardown_vcpu();
        if self.starts > 0 {
            if let Some(devices) = &self.devices {
                devices.reset_all();
            }
            self.scrub_ram();
        }
        let mut npt = PageTable::<A::Stage2>::new(&mut GlobalFrames, A::STAGE2)
            .map_err(|e| VmError::Backend(BackendError::Npt(e)))?;
        // The framebuffer gets 4 KiB leaves so the switcher can track written pages.
        npt.map_all_tracking(&mut GlobalFrames, &self.map, self.framebuffer.map(|fb| fb.gpa))
            .map_err(|e| VmError::Backend(BackendError::Npt(e)))?;
        let initial = self.load_image()?;
        if self.config.kind == Kind::Payload {
            self.write_canary();
        }
        let config = VcpuConfig {
            // Ids are indices below MAX_VMS: no wrap.
            tag: self.id.wrapping_add(1),
            stage2_root: npt.root(),
            io_bitmap: self.io_map,
            msr_bitmap: self.msr_map,
            initial,
        };
        self.npt = Some(npt);
        let mut vcpu = A::create_vcpu(features, &config, &mut GlobalFrames)
            .map_err(|e| VmError::Backend(BackendError::Vcpu(e)))?;
        // The guest's TSC starts at 0 when the VM starts (TSC offsetting).
        let start_tsc = crate::arch::x86::instr::rdtsc();
        self.tsc_offset = 0u64.wrapping_sub(start_tsc);
        A::regs(&mut vcpu).set_tsc_offset(self.tsc_offset);
        self.vcpu_config = Some(config);
        // vCPU 0 runs; the others wait for the guest's INIT and STARTUP.
        self.vcpus = (1..self.config.vcpus.max(1)).map(|_| VcpuSlot::parked()).collect();
        self.vcpus.insert(0, VcpuSlot::running(vcpu));
        self.last_vcpu = None;
        self.build_devices(start_tsc)?;
        // Assigned BARs where the devices' views place them (the new table has none).
        if let Some(pci) = &self.pci {
            sync_device_bars(&mut self.devices, &pci.lock(), self.npt.as_mut(), true);
        }
        self.state = VmState::Runnable;
        self.starts = self.starts.saturating_add(1);
        Ok(())
    }

    fn load_image(&mut self) -> Result<InitialState, VmError<A::Error>> {
        match self.config.kind {
            Kind::Payload | Kind::Service => {
                let plan = payload::plan(self.image, self.config.memory_bytes)
                    .map_err(|e| VmError::Image(ImageError::Payload(e)))?;
                let mut mem = GuestMemory::new(&self.map, DirectMap);
                for (gpa, what, data) in &plan.writes {
                    mem.write_bytes(*gpa, data)
                        .map_err(|error| VmError::Image(ImageError::Place { what, gpa: *gpa, error }))?;
                }
                Ok(plan.entry)
            }
            Kind::Linux => self.load_linux(),
            Kind::Multiboot => self.load_multiboot(),
        }
    }

    /// The Multiboot kernel, its modules and the information structure in guest
    /// memory; entry in 32-bit protected mode.
    fn load_multiboot(&mut self) -> Result<InitialState, VmError<A::Error>> {
        let modules: Vec<multiboot::Module<'_>> =
            self.resources.modules.iter().map(|&(string, data)| multiboot::Module { string, data }).collect();
        let request = multiboot::MultibootRequest {
            image: self.image,
            cmdline: &self.config.cmdline,
            modules: &modules,
            ram_bytes: self.config.memory_bytes,
        };
        let plan = multiboot::plan(&request).map_err(|e| VmError::Image(ImageError::Multiboot(e)))?;
        let mut mem = GuestMemory::new(&self.map, DirectMap);
        for (gpa, what, data) in &plan.writes {
            mem.write_bytes(*gpa, data)
                .map_err(|error| VmError::Image(ImageError::Place { what, gpa: *gpa, error }))?;
        }
        Ok(plan.entry)
    }

    /// The Linux 64-bit boot protocol: ACPI tables, zero page, command line, kernel and
    /// initrd in guest memory, entry in long mode.
    fn load_linux(&mut self) -> Result<InitialState, VmError<A::Error>> {
        let image = |e| VmError::Image(ImageError::Linux(e));
        let kernel = BzImage::parse(self.image).map_err(image)?;
        let fb = self.framebuffer.ok_or(VmError::Image(ImageError::NoFramebuffer))?;
        // One local APIC entry per vCPU (APIC ID = vCPU index).
        let mut acpi_config = crate::vm::acpi::AcpiConfig {
            vcpus: u32::from(self.config.vcpus.max(1)),
            ..crate::vm::acpi::AcpiConfig::default()
        };
        if let Some(devices) = &self.devices {
            // Assigned 64-bit BARs sit above 4 GiB and above the VM's RAM: offer that
            // window too.
            let w = devices.windows().mmio64;
            acpi_config.pci.mmio64 = Some(crate::vm::acpi::AcpiWindow::new(w.start, w.end.saturating_sub(1)));
            acpi_config.pci.intx = devices.guest_intx();
        }
        let acpi = crate::vm::acpi::build_acpi_tables(
            &acpi_config,
            GuestPhysAddr::new(crate::devices::layout::ACPI_TABLES_GPA),
        )
        .map_err(|e| VmError::Image(ImageError::Acpi(e)))?;
        let e820 = desktop::e820(self.config.memory_bytes, fb.len);
        let request = BootRequest {
            kernel,
            initrd: self.resources.initrd.unwrap_or(&[]),
            cmdline: self.config.cmdline.as_bytes(),
            // The kernel, initrd and boot data go in the low block.
            mem_size: self.config.memory_bytes.min(crate::devices::layout::LOW_RAM_MAX),
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
        let plan = crate::vm::linux::build_boot_plan(&request).map_err(image)?;
        let mut mem = GuestMemory::new(&self.map, DirectMap);
        mem.write_bytes(acpi.base, &acpi.bytes).map_err(|e| VmError::Image(ImageError::PlaceAcpi(e)))?;
        let reset_vector = GuestPhysAddr::new(desktop::RESET_VECTOR_GPA);
        mem.write_bytes(reset_vector, &desktop::reset_vector_code())
            .map_err(|error| VmError::Image(ImageError::Place { what: "reset vector", gpa: reset_vector, error }))?;
        for w in &plan.writes {
            mem.write_bytes(w.gpa, &w.data)
                .map_err(|error| VmError::Image(ImageError::Place { what: w.what, gpa: w.gpa, error }))?;
        }
        let e = plan.entry;
        Ok(InitialState::Long64 { rip: e.rip, rsp: e.rsp, cr3: e.cr3, rsi: e.rsi })
    }

    /// Zeroes all guest RAM and the framebuffer, so a restarted VM starts from the same
    /// state as a new one (and a restarted desktop does not show its previous screen).
    fn scrub_ram(&mut self) {
        // RAM is one host block however the guest sees it (low and high blocks).
        let mut ranges = vec![(self.ram, self.config.memory_bytes)];
        ranges.extend(self.framebuffer.map(|fb| (fb.hpa, fb.len)));
        zero_ranges(&mut DirectMap, &ranges);
    }

    fn canary_gpa(&self) -> GuestPhysAddr {
        GuestPhysAddr::new(self.config.memory_bytes.saturating_sub(PAGE_SIZE))
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

    /// Whether an interrupt waits for any of its vCPUs.
    pub fn interrupt_pending(&self) -> bool {
        (0..self.vcpus.len()).any(|v| self.platform.interrupt_pending(v))
    }

    /// How many vCPUs the VM has (while it runs).
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// Whether vCPU `vcpu` can run now.
    pub fn vcpu_runnable(&self, vcpu: usize) -> bool {
        !matches!(self.state, VmState::Stopped(_))
            && self.vcpus.get(vcpu).is_some_and(|slot| slot.state == VcpuState::Runnable && slot.vcpu.is_some())
    }

    /// Carries out the INIT and STARTUP IPIs its vCPUs sent each other, wakes halted
    /// vCPUs that have an interrupt pending, and updates the VM's state from theirs.
    pub fn update_vcpus(&mut self) {
        if matches!(self.state, VmState::Stopped(_)) {
            return;
        }
        for index in 0..self.vcpus.len() {
            let signals = self.platform.take_startup(index);
            if (signals.init || signals.sipi.is_some()) && self.vcpus.get(index).is_some_and(|s| s.away.is_some()) {
                // INIT or STARTUP for a vCPU running elsewhere: it comes home first.
                self.recall(index);
            }
            let pending = self.platform.interrupt_pending(index) || self.platform.nmi_pending(index);
            let Some(slot) = self.vcpus.get_mut(index) else { continue };
            match vcpus::startup_action(index, slot.state, signals) {
                StartupAction::Nothing => {}
                StartupAction::Park => {
                    if let Some(vcpu) = slot.vcpu.take() {
                        A::destroy_vcpu(*vcpu, &mut GlobalFrames);
                    }
                    slot.state = VcpuState::WaitForSipi;
                }
                StartupAction::Start { vector } => self.start_ap(index, vector),
            }
            if let Some(slot) = self.vcpus.get_mut(index) {
                slot.state = vcpus::wake(slot.state, pending);
            }
        }
        self.state = vcpus::vm_state(self.vcpus.iter().map(|slot| slot.state));
    }

    /// Creates application processor `index` in the state a STARTUP with `vector`
    /// gives it. Without memory for it, it stays parked and the guest sees an AP that
    /// never answers (its kernel gives up on it).
    fn start_ap(&mut self, index: usize, vector: u8) {
        let Some(template) = self.vcpu_config else { return };
        let Some(slot) = self.vcpus.get_mut(index) else { return };
        if let Some(old) = slot.vcpu.take() {
            A::destroy_vcpu(*old, &mut GlobalFrames);
        }
        let config = VcpuConfig { initial: InitialState::Startup { vector }, ..template };
        match A::create_vcpu(&self.features, &config, &mut GlobalFrames) {
            Ok(mut vcpu) => {
                A::regs(&mut vcpu).set_tsc_offset(self.tsc_offset);
                *slot = VcpuSlot::running(vcpu);
                // A guest can cycle INIT and STARTUP: the line is rate limited.
                let (id, name, at) = (self.id, &self.config.name, u32::from(vector) << 12);
                crate::limited!(
                    crate::log_limit::Source::Emulation,
                    id,
                    log::info!(target: "vm", "vm {id} ({name}): vCPU {index} started at {at:#x}")
                );
            }
            Err(e) => {
                slot.state = VcpuState::WaitForSipi;
                let (id, name) = (self.id, &self.config.name);
                crate::limited!(
                    crate::log_limit::Source::Emulation,
                    id,
                    log::warn!(target: "vm", "vm {id} ({name}): vCPU {index} cannot start: {e:?}")
                );
            }
        }
    }

    /// EOIs the guest signalled without an exit (paravirtual EOI), so far.
    pub fn pv_eois(&self) -> u64 {
        self.platform.pv_eois()
    }

    /// How long the IPIs between the VM's vCPUs took since it started (guest TSC
    /// ticks; `devices::vlapic::ipi_latency`).
    pub fn ipi_latency(&self) -> crate::devices::vlapic::ipi_latency::IpiLatency {
        self.platform.ipi_latency()
    }

    /// Host TSC at which a halted VM's next timer fires, if it has one.
    pub fn wake_deadline(&self) -> Option<u64> {
        self.platform.wake_deadline()
    }

    /// Host TSC of the next timer that can interrupt vCPU `index` (its own local APIC
    /// timer, or the PIT): where its run on another CPU ends by itself.
    pub fn wake_deadline_of(&self, index: usize) -> Option<u64> {
        self.platform.wake_deadline_among(|v| v == index)
    }

    /// Host TSC of the next timer the boot CPU must wake for: those of the vCPUs at
    /// home (a vCPU away has its run end at its own timer) and the PIT.
    pub fn wake_deadline_at_home(&self) -> Option<u64> {
        self.platform.wake_deadline_among(|v| !self.is_away(v))
    }

    /// Lets timers that expired while the VM was halted raise their interrupts.
    pub fn poll_timers(&mut self) {
        self.platform.update(Machine.now_tsc());
    }

    /// Raises an interrupt of one of the VM's assigned devices where its guest asked
    /// for it (see [`Platform::deliver_device_interrupt`]). A halted VM becomes
    /// runnable. Returns whether the interrupt was accepted.
    pub fn deliver_device_interrupt(&mut self, target: GuestTarget) -> bool {
        if matches!(self.state, VmState::Stopped(_)) {
            return false;
        }
        let accepted = self.platform.deliver_device_interrupt(self.id, target, &mut self.device_interrupts);
        self.update_vcpus();
        accepted
    }

    /// Its ends of links.
    pub fn net_ports(&self) -> &'static [NetPort] {
        self.resources.net_ports
    }

    /// Carries frames its links left over and disk requests its disk left over, and
    /// raises its virtio devices' ready interrupts; a halted VM with one becomes runnable.
    pub fn poll_net(&mut self) {
        for port in self.resources.net_ports {
            port.poll_leftover();
        }
        if let Some(disk) = &self.disk {
            disk.poll_leftover();
        }
        if matches!(self.state, VmState::Stopped(_)) || (self.resources.net_ports.is_empty() && self.disk.is_none()) {
            return;
        }
        for port in self.resources.net_ports {
            port.deliver(self.id, &mut self.platform, &mut self.device_interrupts);
        }
        if let Some(disk) = &self.disk {
            disk.deliver(self.id, &mut self.platform, &mut self.device_interrupts);
        }
        self.update_vcpus();
    }

    /// Unmasks the host pins of the INTx lines the guest just finished with (its I/O
    /// APIC dropped them on the EOI), so the devices' real levels are sampled again.
    pub fn resample_intx_lines(&self) {
        exit_loop::resample_intx_lines(&self.platform, self.id, &Machine);
    }

    /// Restarts the VM from its boot image (after a crash, by policy).
    pub fn restart(&mut self, features: &A::Features) -> Result<(), VmError<A::Error>> {
        self.counters = ExitCounters::default();
        self.device_interrupts = 0;
        self.start(features)
    }

    /// Runs vCPU `index` until the slice ends (host timer), it yields, halts or stops.
    pub fn run_slice(&mut self, index: usize) -> SliceEnd {
        if matches!(self.state, VmState::Stopped(_)) || self.vcpus.first().is_none_or(|slot| !slot.is_started()) {
            return SliceEnd::Stopped(StopReason::GuestShutdown { status: 0 });
        }
        if !self.vcpu_runnable(index) {
            return SliceEnd::Yielded;
        }
        let flush = vcpus::needs_tlb_flush(self.vcpus.len(), self.last_vcpu, index);
        self.last_vcpu = Some(index);
        if flush && let Some(vcpu) = self.vcpus.get_mut(index).and_then(|slot| slot.vcpu.as_mut()) {
            A::request_tlb_flush(vcpu.as_mut());
        }
        let end = self.run_exits(index, &Machine);
        self.record_end(index, end);
        end
    }

    /// The exit loop over vCPU `index` of this VM, its devices and memory.
    fn run_exits(&mut self, index: usize, host: &impl SliceHost) -> SliceEnd {
        self.with_exit_loop(index, host, |exits| exits.run())
            .unwrap_or(SliceEnd::Stopped(StopReason::GuestShutdown { status: 0 }))
    }

    /// Runs `f` on the exit loop over vCPU `index`, its devices and memory; `None`
    /// when the vCPU has no state here (parked, or away on another CPU). A nested page
    /// table change it made is flushed on every other vCPU too.
    fn with_exit_loop<H: SliceHost, R>(
        &mut self,
        index: usize,
        host: &H,
        f: impl FnOnce(&mut ExitLoop<'_, A, H>) -> R,
    ) -> Option<R> {
        let npt_changed = core::cell::Cell::new(false);
        let result = {
            let Some(VcpuSlot { vcpu: Some(vcpu), msrs, .. }) = self.vcpus.get_mut(index) else {
                return None;
            };
            let (devices, pci, npt) = (&mut self.devices, self.pci.as_ref(), &mut self.npt);
            // After an exit that may have written configuration space: apply the deferred
            // work once (MSI-X re-sync), then follow a BAR the guest moved or switched,
            // under one lock of the PCI host.
            let mut sync_bars = || {
                let Some(pci) = pci else { return false };
                let mut pci = pci.lock();
                pci.settle();
                let changed = sync_device_bars(devices, &pci, npt.as_mut(), false);
                npt_changed.set(npt_changed.get() || changed);
                changed
            };
            let mut memory = GuestMemory::new(&self.map, DirectMap);
            let mut exits = ExitLoop::<A, H> {
                vm: VmIdentity { id: self.id, name: &self.config.name, memory_bytes: self.config.memory_bytes },
                vcpu: vcpu.as_mut(),
                vcpu_index: index,
                platform: &mut self.platform,
                ports: &mut self.ports,
                mmio: &mut self.mmio,
                msrs,
                policy: &self.policy,
                cpuid: &HostCpuid,
                memory: &mut memory,
                console: &self.console,
                counters: &mut self.counters,
                device_interrupts: &mut self.device_interrupts,
                host,
                sync_bars: &mut sync_bars,
                net_ports: self.resources.net_ports,
                disk: self.disk.as_ref(),
                network: self.network.as_mut().map(|n| n as &mut (dyn crate::vcpu::dispatch::NetworkService + 'static)),
            };
            f(&mut exits)
        };
        if npt_changed.get() {
            self.flush_siblings(index);
        }
        Some(result)
    }

    /// A halt of vCPU `index` becomes its state (and the VM's, when no vCPU is left
    /// to run); a stop stops the whole VM and frees its vCPUs. IPIs sent in the slice
    /// take effect (INIT, STARTUP, woken vCPUs).
    pub(crate) fn record_end(&mut self, index: usize, end: SliceEnd) {
        match end {
            SliceEnd::Halted => {
                if let Some(slot) = self.vcpus.get_mut(index) {
                    slot.state = VcpuState::Halted;
                }
                self.update_vcpus();
            }
            SliceEnd::Stopped(reason) => {
                self.platform.flush_console();
                self.state = VmState::Stopped(reason);
                self.teardown_vcpu();
            }
            SliceEnd::Preempted | SliceEnd::Yielded => self.update_vcpus(),
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
            passthrough::unreserve_vectors(self.id);
        }
    }

    /// Frees the vCPU and nested page tables; RAM stays (for inspection and restart).
    /// Its virtio-net devices let go of its rings: a stopped VM's memory stays as it was.
    fn teardown_vcpu(&mut self) {
        if let Some(network) = self.network.as_mut() {
            network.service_stopped();
        }
        for port in self.resources.net_ports {
            port.stop();
        }
        if let Some(disk) = &self.disk {
            disk.stop();
        }
        self.recall_all();
        for slot in self.vcpus.drain(..) {
            if let Some(vcpu) = slot.vcpu {
                A::destroy_vcpu(*vcpu, &mut GlobalFrames);
            } else if let Some(cpu) = slot.away {
                // Its CPU did not give it back: it cannot be freed while that CPU may
                // still run it. The frames are lost; the CPU gets no other vCPU.
                log::error!(target: "vm", "vm {} ({}): cpu{cpu} did not give a vCPU back; its frames are kept", self.id, self.config.name);
            }
        }
        self.last_vcpu = None;
        if let Some(npt) = self.npt.take() {
            npt.destroy(&mut GlobalFrames);
        }
    }

    /// Returns everything to the frame allocator (which scrubs it before reuse).
    pub fn release(&mut self) {
        self.release_devices();
        self.teardown_vcpu();
        // RAM, permission maps and the framebuffer.
        self.blocks.release(&mut PhysBlocks);
    }
}

pub mod remote;
