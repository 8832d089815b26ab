//! One VM: its memory, nested page tables, vCPU, devices and console, and the loop that
//! runs it for a time slice. Everything a guest does ends in this loop as a decided
//! action; nothing it does can panic the hypervisor.

use alloc::vec;
use alloc::vec::Vec;

use crate::arch::x86::idt;
use crate::devices::bus::{MemBus, PioBus};
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr, LARGE_PAGE_SIZE, PAGE_SIZE};
use crate::memory::direct_map::{self, DirectMap};
use crate::memory::guest::{GuestMemory, GuestMemoryAccess, GuestMemoryMap, GuestRegion, HostMemory, Perms};
use crate::memory::phys::{self, GlobalFrames};
use crate::memory::stage2::NestedPageTable;
use crate::vcpu::arch::{Arch, InitialState, VcpuConfig};
use crate::vcpu::cpuid::{CpuidPolicy, HostCpuid};
use crate::vcpu::dispatch::{self, GuestConsole, InterruptSink, VmEnv, VmIdentity};
use crate::vcpu::exit::{ExitReason, Flow, StopReason};
use crate::vcpu::msr::MsrState;
use crate::vcpu::regs::{Gpr, RegisterFile};
use crate::vm::config::{Kind, VmConfig};
use crate::vm::console::VmConsole;
use crate::vm::counters::ExitCounters;
use crate::vm::payload;

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

/// Virtual interrupts waiting for the vCPU (a stand-in for the local APIC's IRR).
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingIrqs([u64; 4]);

impl PendingIrqs {
    fn take_highest(&mut self) -> Option<u8> {
        for (word, bits) in self.0.iter_mut().enumerate().rev() {
            if *bits != 0 {
                let bit = 63 - bits.leading_zeros();
                *bits &= !(1u64 << bit);
                return u8::try_from(word * 64 + bit as usize).ok();
            }
        }
        None
    }

    pub fn any(&self) -> bool {
        self.0.iter().any(|w| *w != 0)
    }
}

impl InterruptSink for PendingIrqs {
    fn raise(&mut self, vector: u8) {
        if let Some(word) = self.0.get_mut(usize::from(vector / 64)) {
            *word |= 1u64 << (vector % 64);
        }
    }
}

/// Console output of a VM, adapted to the dispatcher's trait.
struct ConsoleAdapter<'a>(&'a mut VmConsole);

impl GuestConsole for ConsoleAdapter<'_> {
    fn write(&mut self, _vm: u32, bytes: &[u8]) {
        self.0.write(bytes);
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
    pub console: VmConsole,
    pub counters: ExitCounters,
    irqs: PendingIrqs,
    /// How many times the VM has been started (1 after creation).
    pub starts: u32,
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
        features: &A::Features,
        devices: impl FnOnce(&mut PioBus, &mut MemBus),
    ) -> Result<Vm<A>, VmError> {
        let ram_bytes = config.memory_bytes;
        let ram = phys::alloc_contiguous(ram_bytes, LARGE_PAGE_SIZE).ok_or(VmError::OutOfMemory("guest RAM"))?;
        let maps = A::permission_maps();
        let io_map = phys::alloc_contiguous(IO_MAP_BYTES, PAGE_SIZE).ok_or(VmError::OutOfMemory("I/O map"))?;
        let msr_map = phys::alloc_contiguous(MSR_MAP_BYTES, PAGE_SIZE).ok_or(VmError::OutOfMemory("MSR map"))?;
        DirectMap.write(io_map, maps.io.get(..IO_MAP_BYTES as usize).unwrap_or(&maps.io));
        DirectMap.write(msr_map, maps.msr.get(..MSR_MAP_BYTES as usize).unwrap_or(&maps.msr));
        let region = GuestRegion::new(GuestPhysAddr::new(0), ram, ram_bytes, Perms::RWX)
            .map_err(|e| VmError::Image(alloc::format!("{e:?}")))?;
        let map = GuestMemoryMap::new(vec![region]).map_err(|e| VmError::Image(alloc::format!("{e:?}")))?;
        let mut ports = PioBus::new("pio");
        let mut mmio = MemBus::new("mmio");
        devices(&mut ports, &mut mmio);
        let mut vm = Vm {
            id,
            console: VmConsole::new(&config.name),
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
            ports,
            mmio,
            counters: ExitCounters::default(),
            irqs: PendingIrqs::default(),
            starts: 0,
        };
        if let Err(e) = vm.start(features) {
            vm.release();
            return Err(e);
        }
        Ok(vm)
    }

    /// (Re)loads the boot image into zeroed RAM and creates a fresh vCPU.
    fn start(&mut self, features: &A::Features) -> Result<(), VmError> {
        self.teardown_vcpu();
        if self.starts > 0 {
            self.scrub_ram();
        }
        let mut npt = NestedPageTable::new(&mut GlobalFrames).map_err(|e| VmError::Backend(alloc::format!("{e:?}")))?;
        npt.map_all(&mut GlobalFrames, &self.map).map_err(|e| VmError::Backend(alloc::format!("{e:?}")))?;
        let initial = self.load_image()?;
        self.write_canary();
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
        A::regs(&mut vcpu).set_tsc_offset(0u64.wrapping_sub(crate::arch::x86::instr::rdtsc()));
        self.vcpu = Some(vcpu);
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
            Kind::Linux => Err(VmError::Image("Linux guests are not supported by this build yet".into())),
        }
    }

    /// Zeroes all guest RAM, so a restarted VM starts from the same state as a new one.
    fn scrub_ram(&mut self) {
        let zeros = vec![0u8; 64 * 1024];
        let mut mem = GuestMemory::new(&self.map, DirectMap);
        for gpa in (0..self.config.memory_bytes).step_by(zeros.len()) {
            let _ = mem.write_bytes(GuestPhysAddr::new(gpa), &zeros);
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

    /// Whether the canary page still holds the hypervisor's pattern.
    pub fn canary_intact(&self) -> bool {
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
        self.irqs.any()
    }

    /// Restarts the VM from its boot image (after a crash, by policy).
    pub fn restart(&mut self, features: &A::Features) -> Result<(), VmError> {
        self.counters = ExitCounters::default();
        self.start(features)
    }

    /// Runs the vCPU until the slice ends (host timer), it yields, halts or stops.
    pub fn run_slice(&mut self, policy: &CpuidPolicy) -> SliceEnd {
        let Some(vcpu) = self.vcpu.as_mut() else {
            return SliceEnd::Stopped(StopReason::GuestShutdown { status: 0 });
        };
        loop {
            if self.irqs.any() {
                if A::interrupt_window_open(vcpu) {
                    if let Some(vector) = self.irqs.take_highest() {
                        A::inject_interrupt(vcpu, vector);
                    }
                } else {
                    A::request_interrupt_window(vcpu);
                }
            }
            let exit = A::run(vcpu);
            if matches!(exit.reason, ExitReason::ExternalInterrupt | ExitReason::Nmi) {
                // The host interrupt that ended the run is still pending: take it now.
                x86_64::instructions::interrupts::enable();
                core::hint::spin_loop();
                x86_64::instructions::interrupts::disable();
            }
            self.counters.record(&exit.reason);
            let action = {
                let mut regs = A::regs(vcpu);
                if exit.reason == ExitReason::Hypercall && regs.gpr(Gpr::Rax) == bulkhead_abi::hypercall::VM_INFO {
                    log::info!(target: "vm", "vm {} ({}) exit counters: {}", self.id, self.config.name, self.counters);
                }
                let mut memory = GuestMemory::new(&self.map, DirectMap);
                let mut console = ConsoleAdapter(&mut self.console);
                let mut env = VmEnv {
                    vm: VmIdentity { id: self.id, name: &self.config.name, memory_bytes: self.config.memory_bytes },
                    apic_id: 0,
                    cpuid_policy: policy,
                    cpuid: &HostCpuid,
                    msrs: &mut self.msrs,
                    ports: &mut self.ports,
                    mmio: &mut self.mmio,
                    memory: &mut memory,
                    console: &mut console,
                    interrupts: &mut self.irqs,
                    host_tsc: crate::arch::x86::instr::rdtsc(),
                };
                dispatch::decide(&exit, &mut regs, &mut env)
            };
            match A::apply(vcpu, &action) {
                Flow::Continue => {}
                Flow::Yield => return SliceEnd::Yielded,
                Flow::WaitForInterrupt => {
                    if !self.irqs.any() {
                        self.state = VmState::Halted;
                        return SliceEnd::Halted;
                    }
                }
                Flow::Stop(reason) => {
                    self.state = VmState::Stopped(reason);
                    self.teardown_vcpu();
                    return SliceEnd::Stopped(reason);
                }
            }
            if idt::TIMER_FIRED.swap(false, core::sync::atomic::Ordering::AcqRel) {
                return SliceEnd::Preempted;
            }
        }
    }

    /// Stops the VM on the hypervisor's own initiative (the user or policy).
    pub fn stop(&mut self) {
        self.state = VmState::Stopped(StopReason::Requested);
        self.teardown_vcpu();
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
        self.teardown_vcpu();
        phys::free_contiguous(self.ram, self.config.memory_bytes);
        phys::free_contiguous(self.io_map, IO_MAP_BYTES);
        phys::free_contiguous(self.msr_map, MSR_MAP_BYTES);
    }
}
