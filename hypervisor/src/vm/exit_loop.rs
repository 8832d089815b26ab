//! The loop that runs a VM's vCPU for one time slice: device interrupts in, the
//! pending interrupt injected, enter, handle the exit, decide whether the slice goes
//! on. It borrows the parts of a VM it works on and reaches the machine only through
//! [`SliceHost`], so tests run it with a fake vCPU and a fake host.

use crate::arch::backend::Arch;
use crate::arch::exit::{Exit, ExitAction, ExitReason};
use crate::arch::regs::{Gpr, RegisterFile};
use crate::arch::x86::cpuid::CpuidSource;
use crate::arch::x86::exit_stages::{self, Stage};
use crate::devices::bus::{MemBus, PioBus};
use crate::log_limit::Source;
use crate::memory::guest::GuestMemoryAccess;
use crate::vcpu::cpuid::CpuidPolicy;
use crate::vcpu::dispatch::{self, GuestConsole, NetworkService, VmEnv, VmIdentity};
use crate::vcpu::msr::MsrState;
use crate::vm::console::VmConsole;
use crate::vm::counters::ExitCounters;
use crate::vm::disk_port::DiskPort;
use crate::vm::instance::SliceEnd;
use crate::vm::net_port::NetPort;
use crate::vm::platform::Platform;
use crate::vm::slice_host::SliceHost;
use crate::vm::slice_rules::{self, EntryInterrupt, HostEvents};

/// Console output of a VM, adapted to the dispatcher's trait.
struct ConsoleAdapter<'a>(&'a spin::Mutex<VmConsole>);

impl GuestConsole for ConsoleAdapter<'_> {
    fn write(&mut self, _vm: u32, bytes: &[u8]) {
        self.0.lock().write(bytes);
    }
}

/// Unmasks the host pins of the INTx lines the guest just finished with (its I/O
/// APIC dropped them on the EOI), so the devices' real levels are sampled again.
pub fn resample_intx_lines(platform: &Platform, vm: u32, host: &impl SliceHost) {
    let ended = platform.take_resampled();
    if ended != 0 {
        host.resample_intx(vm, ended);
    }
}

/// Logs a VM's exit counters (and the exit stage times, when they are measured).
fn log_counters(vm: &VmIdentity<'_>, counters: &ExitCounters) {
    if exit_stages::enabled() {
        let stages = exit_stages::take();
        log::info!(target: "vm", "vm {} ({}) exit counters: {counters}{stages}", vm.id, vm.name);
    } else {
        log::info!(target: "vm", "vm {} ({}) exit counters: {counters}", vm.id, vm.name);
    }
}

/// One slice of one VM: what the loop reads and changes.
pub struct ExitLoop<'a, A: Arch, H: SliceHost> {
    pub vm: VmIdentity<'a>,
    pub vcpu: &'a mut A::Vcpu,
    /// Which of the VM's vCPUs runs (its local APIC, APIC ID and kvmclock).
    pub vcpu_index: usize,
    pub platform: &'a mut Platform,
    pub ports: &'a mut PioBus,
    pub mmio: &'a mut MemBus,
    pub msrs: &'a mut MsrState,
    pub policy: &'a CpuidPolicy,
    pub cpuid: &'a dyn CpuidSource,
    pub memory: &'a mut dyn GuestMemoryAccess,
    pub console: &'a spin::Mutex<VmConsole>,
    pub counters: &'a mut ExitCounters,
    /// Device interrupts raised in the VM since its start.
    pub device_interrupts: &'a mut u64,
    pub host: &'a H,
    /// Lets the nested page table follow the assigned BARs; true if it changed.
    pub sync_bars: &'a mut dyn FnMut() -> bool,
    /// Its ends of links (virtio-net devices).
    pub net_ports: &'a [NetPort],
    /// Its virtual disk (virtio-blk device).
    pub disk: Option<&'a DiskPort>,
    /// The service VM's network hypercalls (`None` for other VMs).
    pub network: Option<&'a mut (dyn NetworkService + 'static)>,
}

impl<A: Arch, H: SliceHost> core::fmt::Debug for ExitLoop<'_, A, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ExitLoop").field("vm", &self.vm).finish_non_exhaustive()
    }
}

impl<A: Arch, H: SliceHost> ExitLoop<'_, A, H> {
    /// Runs the vCPU until the slice ends: a host event, a yield, a halt with
    /// nothing pending, or a stop. The caller records a halt or a stop in the VM.
    pub fn run(&mut self) -> SliceEnd {
        loop {
            exit_stages::checkpoint(Stage::Apply);
            if let Some(end) = self.prepare_entry() {
                return end;
            }
            exit_stages::checkpoint(Stage::Interrupts);
            let entered = self.host.now_tsc();
            let exit = A::run(self.vcpu);
            exit_stages::checkpoint(Stage::ExitDecode);
            let exited = self.host.now_tsc();
            if let Some(end) = self.after_run(&exit, entered, exited) {
                return end;
            }
        }
    }

    /// Handles the exit of a run that lasted from host TSC `entered` to `exited` (here
    /// or on another CPU); `Some` when it ends the slice.
    pub fn after_run(&mut self, exit: &Exit, entered: u64, exited: u64) -> Option<SliceEnd> {
        // Time in guest mode, per VM: under -icount, its instructions (docs/networking.md).
        self.counters.add_guest_tsc(exited.wrapping_sub(entered));
        self.platform.after_exit(self.vcpu_index, self.memory);
        self.handle_exit(exit, exited)
    }

    /// Device interrupts that arrived (the last exit, or while the VM waited) go in
    /// first; another VM's end the slice so the scheduler delivers them. Then the
    /// pending interrupt is offered.
    pub fn prepare_entry(&mut self) -> Option<SliceEnd> {
        resample_intx_lines(self.platform, self.vm.id, self.host);
        let other_vm_interrupt = self.take_device_interrupts();
        if let Some(end) = slice_rules::end_by_host(HostEvents { other_vm_interrupt, ..HostEvents::default() }) {
            return Some(end);
        }
        self.offer_interrupt();
        self.platform.before_entry(self.vcpu_index, self.memory);
        None
    }

    /// Delivers the device interrupts that arrived for this VM; `true` if another
    /// VM's arrived too.
    fn take_device_interrupts(&mut self) -> bool {
        let (mine, others) = self.host.take_fired_for(self.vm.id);
        for fired in mine {
            self.platform.deliver_device_interrupt(self.vm.id, fired.target, self.device_interrupts);
        }
        for port in self.net_ports {
            port.deliver(self.vm.id, self.platform, self.device_interrupts);
        }
        if let Some(disk) = self.disk {
            disk.deliver(self.vm.id, self.platform, self.device_interrupts);
        }
        others
    }

    /// Injects the pending interrupt if the guest can take it now; otherwise asks
    /// for an exit as soon as it can.
    fn offer_interrupt(&mut self) {
        self.platform.update(self.host.now_tsc());
        // An NMI goes first; one that cannot be delivered yet waits for the exit that
        // ends the guest's NMI handler (its IRET) or any later exit.
        if self.platform.nmi_pending(self.vcpu_index) && A::nmi_window_open(self.vcpu) {
            self.platform.take_nmi(self.vcpu_index);
            A::inject_nmi(self.vcpu);
            return;
        }
        let pending = self.platform.interrupt_pending(self.vcpu_index);
        match slice_rules::entry_interrupt(pending, pending && A::interrupt_window_open(self.vcpu)) {
            EntryInterrupt::None => {}
            EntryInterrupt::Inject => {
                if let Some(vector) = self.platform.take_interrupt(self.vcpu_index) {
                    A::inject_interrupt(self.vcpu, vector);
                }
            }
            EntryInterrupt::OpenWindow => A::request_interrupt_window(self.vcpu),
        }
    }

    /// Handles one exit; `Some` when it ends the slice.
    fn handle_exit(&mut self, exit: &Exit, host_tsc: u64) -> Option<SliceEnd> {
        let hypercall = dispatch::hypercall_behind_ud(exit, &A::regs(self.vcpu), &*self.memory);
        let exit = hypercall.as_ref().unwrap_or(exit);
        if matches!(exit.reason, ExitReason::ExternalInterrupt | ExitReason::Nmi) {
            // The host interrupt that ended the run is still pending: take it now.
            self.host.take_host_interrupt();
        }
        self.counters.record(&exit.reason);
        exit_stages::checkpoint(Stage::Bookkeeping);
        let action = self.decide(exit, host_tsc);
        exit_stages::checkpoint(Stage::Handler);
        let flow = A::apply(self.vcpu, &action);
        self.follow_bars(exit);
        if matches!(exit.reason, ExitReason::NestedPageFault { .. }) {
            // An MMIO write may have rung a virtio-net or virtio-blk doorbell.
            for port in self.net_ports {
                port.after_exit();
            }
            if let Some(disk) = self.disk {
                disk.after_exit();
            }
        }
        let flow = slice_rules::with_power_event(flow, self.platform.take_power_event());
        let v = self.vcpu_index;
        let wakes = self.platform.interrupt_pending(v) || self.platform.nmi_pending(v);
        if let Some(end) = slice_rules::end_by_guest(flow, wakes) {
            return Some(end);
        }
        if let Some(end) = slice_rules::end_for_siblings(self.platform.take_kicked(), self.vcpu_index) {
            return Some(end);
        }
        slice_rules::end_by_host(HostEvents {
            other_vm_interrupt: false,
            timer_expired: self.host.timer_expired(),
            key_pending: self.host.key_pending(),
        })
    }

    /// The common exit handler's decision, with the VM's devices attached.
    fn decide(&mut self, exit: &Exit, host_tsc: u64) -> ExitAction {
        let mut regs = A::regs(self.vcpu);
        if exit.reason == ExitReason::Hypercall && regs.gpr(Gpr::Rax) == bulkhead_abi::hypercall::VM_INFO {
            // A guest can call VM_INFO in a loop: the line is rate limited.
            crate::limited!(Source::Emulation, self.vm.id, log_counters(&self.vm, self.counters));
        }
        let mut console = ConsoleAdapter(self.console);
        let mut devices = self.platform.devices(self.vcpu_index, self.ports, self.mmio, host_tsc);
        let attached = devices.attach();
        let mut env = VmEnv {
            vm: self.vm,
            // vCPU indices are below MAX_VCPUS: the APIC ID is the index.
            apic_id: u8::try_from(self.vcpu_index).unwrap_or(u8::MAX),
            cpuid_policy: self.policy,
            cpuid: self.cpuid,
            msrs: self.msrs,
            ports: attached.ports,
            mmio: attached.mmio,
            memory: self.memory,
            console: &mut console,
            interrupts: attached.interrupts,
            msr_devices: attached.msr_devices,
            network: self.network.as_deref_mut().map(|n| n as &mut dyn NetworkService),
            tsc_per_us: (crate::arch::x86::tsc::cached_ticks_per_ms() / 1000).max(1),
            host_tsc,
        };
        dispatch::decide(exit, &mut regs, &mut env)
    }

    /// A configuration write may have moved an assigned BAR or switched its decode.
    fn follow_bars(&mut self, exit: &Exit) {
        if matches!(exit.reason, ExitReason::Io(_) | ExitReason::NestedPageFault { .. }) && (self.sync_bars)() {
            A::request_tlb_flush(self.vcpu);
        }
    }
}

#[cfg(test)]
mod tests;
