//! Time-slicing VMs on the boot CPU: round robin over the VMs and, within a VM, over
//! its runnable vCPUs (each gets its own slice), preempted by the host LAPIC timer,
//! restart by policy. Between rounds it hands over to the switcher, the serial
//! commands, the load report and (for self-test images) the verdict.

use alloc::vec::Vec;

use log::{error, info, warn};

use crate::arch::backend::Arch;
use crate::arch::exit::StopReason;
use crate::arch::x86::smp::guest_runs;
use crate::arch::x86::{closed_stretches, idt, lapic};
use crate::host::iommu::IommuFault;
use crate::log_limit::{Admit, LogBudget, ROUTES_BURST, ROUTES_PER_SEC};
use crate::switcher::desk::Desk;
use crate::vm::instance::{SliceEnd, Vm, VmState};
use crate::vm::load_report::LoadReport;
use crate::vm::passthrough::fault_attribution::{Attribution, OwnedFunction, Why, attribute, how_many};
use crate::vm::run_queues::{self, RunQueue};
use crate::vm::selftest::VmOutcome;
use crate::vm::serial_commands::{self, SerialCommands};
use crate::vm::slice_rules;
use crate::vm::verdict;

mod on_aps;

/// Length of a time slice.
const SLICE_US: u64 = 10_000;

struct Slot<A: Arch> {
    vm: Vm<A>,
    report: LoadReport,
    /// Set once the VM has stopped for good (no restart left).
    final_checksum: Option<u64>,
}

impl<A: Arch> AsMut<Vm<A>> for Slot<A> {
    fn as_mut(&mut self) -> &mut Vm<A> {
        &mut self.vm
    }
}

impl<A: Arch> AsRef<Vm<A>> for Slot<A> {
    fn as_ref(&self) -> &Vm<A> {
        &self.vm
    }
}

pub struct Scheduler<A: Arch> {
    slots: Vec<Slot<A>>,
    /// TSC when the offline lease was last checked.
    lease_checked: u64,
    features: A::Features,
    /// Checksum of the hypervisor's text and rodata at start.
    image_checksum: u64,
    commands: SerialCommands,
    /// The screen and the keyboard.
    desk: Desk,
    /// The CPU of each VM's vCPUs (`placement[slot][vcpu]`, `None`: the boot CPU).
    placement: Vec<Vec<Option<usize>>>,
    /// One run queue per application processor that runs vCPUs.
    queues: Vec<RunQueue>,
    /// TSC when the switcher, commands, lease, screen and log were last served.
    housekept: u64,
}

impl<A: Arch> core::fmt::Debug for Scheduler<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.slots.iter().map(|s| &s.vm)).finish()
    }
}

/// Fault lines that stop no VM (a device no VM owns, or one whose VM this round
/// already stops): a device can fault as fast as it can issue requests.
static FAULT_LINES: spin::Mutex<LogBudget> = spin::Mutex::new(LogBudget::new(ROUTES_BURST, ROUTES_PER_SEC));

/// Whether one more such line may be logged now: `Some(lines suppressed before it)`.
fn admit_fault_line() -> Option<u64> {
    match FAULT_LINES.lock().admit(crate::log_limit::now_ms()) {
        Admit::Log { suppressed } => Some(suppressed),
        Admit::Drop => None,
    }
}

/// An IOMMU unit as log lines name it: "VT-d unit 0".
#[derive(Clone, Copy)]
struct UnitName {
    iommu: &'static str,
    index: usize,
}

impl core::fmt::Display for UnitName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} unit {}", self.iommu, self.index)
    }
}

/// Arms the host timer for the end of a slice or a VM timer at host TSC `deadline`,
/// whichever comes first.
fn arm_timer(deadline: Option<u64>) {
    let mut micros = SLICE_US;
    if let Some(deadline) = deadline {
        let ticks = deadline.saturating_sub(crate::arch::x86::instr::rdtsc());
        let per_us = (crate::arch::x86::tsc::cached_ticks_per_ms() / 1000).max(1);
        micros = micros.min(ticks.checked_div(per_us).unwrap_or(ticks).saturating_add(1));
    }
    lapic::arm_oneshot_us(micros);
}

impl<A: Arch> Scheduler<A> {
    pub fn new(vms: Vec<Vm<A>>, features: A::Features, hotkeys: crate::switcher::hotkeys::Hotkeys) -> Self {
        let desk = Desk::new(vms.len(), hotkeys, crate::vm::desk_view::wall_clock);
        let placement = on_aps::placement(&vms);
        Scheduler {
            slots: vms.into_iter().map(|vm| Slot { vm, report: LoadReport::default(), final_checksum: None }).collect(),
            lease_checked: 0,
            features,
            image_checksum: verdict::hypervisor_checksum(),
            commands: SerialCommands::default(),
            desk,
            queues: run_queues::queues(&placement),
            placement,
            housekept: 0,
        }
    }

    /// Runs the VMs forever; a self-test run ends with the verdict on isa-debug-exit.
    pub fn run(mut self, selftest: bool) -> ! {
        // From here on exits only buffer log lines; they reach the UART between slices.
        crate::logging::defer_output();
        // A VM that needs the lease never runs a slice without it.
        self.enforce_lease();
        self.announce_locked_disks();
        loop {
            let mut ran = false;
            for i in 0..self.slots.len() {
                // Device interrupts that arrived during the last slice (for a halted VM,
                // or one whose slice they ended) make their owners runnable first.
                self.deliver_device_interrupts();
                let Some(slot) = self.slots.get_mut(i) else { continue };
                let vm = &mut slot.vm;
                // Frames its links left over, and its virtio-net interrupts.
                vm.poll_net();
                // Timers that expired since its last entry (a halted vCPU's timer may
                // have fired while a sibling ran), then who runs.
                vm.poll_timers();
                vm.update_vcpus();
                // Each runnable vCPU of the VM kept on this CPU gets its own slice, in
                // vCPU order.
                for v in 0..vm.vcpu_count() {
                    if self.placed_on(i, v).is_none() && self.run_vcpu(i, v) {
                        ran = true;
                    }
                }
            }
            // The vCPUs on the other CPUs: their exits, their next runs.
            ran |= self.serve_queues();
            // With vCPUs on other CPUs the rest of the turn runs at most once a
            // millisecond (at once for a key): it would otherwise follow every exit.
            let housekeeping = self.queues.is_empty() || self.housekeeping_due();
            let mut log_drained = true;
            if housekeeping {
                self.housekept = crate::arch::x86::instr::rdtsc();
                self.desk.poll_input(&mut self.slots);
                self.handle_dma_faults();
                self.handle_commands();
                self.enforce_lease();
                self.desk.refresh(&mut self.slots);
                self.report_load();
                log_drained = closed_stretches::with_interrupts_open(crate::logging::drain);
                if selftest && self.slots.iter().all(|s| s.final_checksum.is_some()) {
                    self.finish_selftest();
                }
            }
            // An idle machine with log output waiting keeps draining instead of sleeping.
            if !ran
                && log_drained
                && !crate::arch::x86::device_vectors::PENDING.any()
                && !guest_runs::EXITS_WAITING.load(core::sync::atomic::Ordering::Acquire)
            {
                // Everything is halted, stopped or running elsewhere: sleep until the
                // next interrupt, the earliest VM timer, or the next turn's second half.
                idt::TIMER_FIRED.store(false, core::sync::atomic::Ordering::Release);
                let mut earliest = self.slots.iter().filter_map(|s| s.vm.wake_deadline_at_home()).min();
                if !housekeeping {
                    let due = self.housekept.saturating_add(crate::arch::x86::tsc::cached_ticks_per_ms());
                    earliest = Some(earliest.map_or(due, |e| e.min(due)));
                }
                arm_timer(earliest);
                closed_stretches::stretch_ends();
                let halted = crate::arch::x86::instr::rdtsc();
                x86_64::instructions::interrupts::enable_and_hlt();
                x86_64::instructions::interrupts::disable();
                let idle = crate::arch::x86::instr::rdtsc().wrapping_sub(halted);
                crate::vm::counters::IDLE_TSC.fetch_add(idle, core::sync::atomic::Ordering::Relaxed);
                closed_stretches::stretch_starts();
            }
        }
    }

    /// Runs one slice of vCPU `v` of the VM in slot `i` if it can run; whether it ran.
    /// Between slices: the log, the VM's INTx lines, a stop, and the keyboard.
    fn run_vcpu(&mut self, i: usize, v: usize) -> bool {
        let Some(slot) = self.slots.get_mut(i) else { return false };
        let vm = &mut slot.vm;
        if vm.state != VmState::Runnable || !vm.vcpu_runnable(v) {
            return false;
        }
        // Timers that expired while a sibling ran fire now, so the slice is armed for
        // the next deadline, not one already past (which would end it at once).
        vm.poll_timers();
        arm_timer(vm.wake_deadline());
        // A host interrupt ends the guest's run at once: interrupts are as good
        // as open all through the slice.
        closed_stretches::stretch_ends();
        let end = vm.run_slice(v);
        closed_stretches::stretch_starts();
        lapic::disarm();
        closed_stretches::with_interrupts_open(crate::logging::drain);
        // An EOI in the slice's last exit reopens its INTx line now, not at
        // the VM's next slice.
        vm.resample_intx_lines();
        if let SliceEnd::Stopped(reason) = end {
            self.on_stop(i, reason);
        }
        let key_irq = idt::KEYBOARD_FIRED.load(core::sync::atomic::Ordering::Acquire);
        self.desk.read_keyboard();
        if key_irq {
            // Hotkeys act now, not after the other VMs' slices.
            self.desk.poll_input(&mut self.slots);
            self.desk.refresh(&mut self.slots);
        }
        true
    }

    /// Raises the device interrupts that arrived (host vectors recorded by the IDT)
    /// in the VMs that own them; halted ones become runnable. Interrupts for a VM that
    /// has stopped are dropped.
    fn deliver_device_interrupts(&mut self) {
        for fired in crate::vm::passthrough::interrupts::take_fired() {
            match self.slots.iter_mut().find(|s| s.vm.id == fired.vm) {
                Some(slot) => {
                    slot.vm.deliver_device_interrupt(fired.target);
                }
                None => warn!(target: "msi", "host vector {:#x} fired for unknown vm {}", fired.host_vector, fired.vm),
            }
        }
    }

    /// Logs each guest's load figures (see [`LoadReport`]).
    fn report_load(&mut self) {
        let now = crate::arch::x86::instr::rdtsc();
        let per_s = crate::arch::x86::tsc::cached_ticks_per_ms().saturating_mul(1000).max(1);
        for slot in &mut self.slots {
            slot.report.update(&slot.vm, now, per_s);
        }
    }

    /// A typed line goes to the switcher first, then to the VMs.
    fn handle_commands(&mut self) {
        let Some(line) = self.commands.poll() else { return };
        if self.desk.command(&line, &self.slots) {
            return;
        }
        if let Some(name) = line.trim().strip_prefix("!stop ") {
            self.stop_by_name(name.trim());
            return;
        }
        serial_commands::execute(&line, &self.slots);
    }

    /// Holds back the VMs that need the offline lease while it does not hold, and
    /// starts them again once a check-in renewed it. Checked about once a second.
    fn enforce_lease(&mut self) {
        let now_tsc = crate::arch::x86::instr::rdtsc();
        let per_s = crate::arch::x86::tsc::cached_ticks_per_ms().saturating_mul(1000);
        if self.lease_checked != 0 && now_tsc.saturating_sub(self.lease_checked) < per_s {
            return;
        }
        self.lease_checked = now_tsc.max(1);
        if !self.slots.iter().any(|s| s.vm.config.needs_lease) {
            return;
        }
        let lease = crate::policy::runtime::lease(crate::vm::service_policy::unix_now());
        let holds = lease.is_none_or(|l| l.holds());
        let features = self.features;
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots.get_mut(i) else { continue };
            if !slot.vm.config.needs_lease {
                continue;
            }
            let vm = &mut slot.vm;
            let held = vm.state == VmState::Stopped(StopReason::PolicyHold);
            if held && holds {
                match closed_stretches::with_interrupts_open(|| vm.restart(&features)) {
                    Ok(()) => {
                        info!(target: "vm", "vm {} ({}) started: the offline lease holds again", vm.id, vm.config.name)
                    }
                    Err(e) => error!(target: "vm", "vm {} ({}) cannot start: {e}", vm.id, vm.config.name),
                }
            } else if !held && !holds && !matches!(vm.state, VmState::Stopped(_)) {
                let why = lease.map(|l| alloc::format!("{l}")).unwrap_or_default();
                warn!(target: "vm", "vm {} ({}) held back: {why}", vm.id, vm.config.name);
                vm.stop_with(StopReason::PolicyHold);
                self.desk.vm_stopped(
                    &mut self.slots,
                    i,
                    crate::vm::desk_view::stop_cause(&StopReason::PolicyHold),
                    false,
                );
            }
        }
    }

    /// A notification for each VM that never started because its disk is locked.
    fn announce_locked_disks(&mut self) {
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots.get(i) else { continue };
            if let VmState::Stopped(reason @ StopReason::DiskUnavailable { .. }) = slot.vm.state {
                self.desk.vm_stopped(&mut self.slots, i, crate::vm::desk_view::stop_cause(&reason), false);
            }
        }
    }

    /// `!stop VM`: stops a running VM as the user would; its restart policy applies.
    fn stop_by_name(&mut self, name: &str) {
        let Some(i) = self.slots.iter().position(|s| s.vm.config.name == name) else {
            warn!(target: "vm", "!stop: no VM named {name:?}");
            return;
        };
        let Some(slot) = self.slots.get_mut(i) else { return };
        if matches!(slot.vm.state, VmState::Stopped(_)) {
            warn!(target: "vm", "!stop: {name} is not running");
            return;
        }
        slot.vm.stop();
        self.on_stop(i, StopReason::Requested);
    }

    fn on_stop(&mut self, i: usize, reason: StopReason) {
        let features = self.features;
        let Some(slot) = self.slots.get_mut(i) else { return };
        let vm = &mut slot.vm;
        warn!(target: "vm", "vm {} ({}) stopped: {reason:?}; {}", vm.id, vm.config.name, vm.counters);
        for queue in &mut self.queues {
            queue.forget_slot(i);
        }
        let restarted = slice_rules::should_restart(reason, vm.config.restart, vm.starts)
            && match closed_stretches::with_interrupts_open(|| vm.restart(&features)) {
                Ok(()) => {
                    info!(target: "vm", "vm {} ({}) restarted (start {})", vm.id, vm.config.name, vm.starts);
                    true
                }
                Err(e) => {
                    error!(target: "vm", "vm {} ({}) cannot restart: {e}", vm.id, vm.config.name);
                    false
                }
            };
        self.desk.vm_stopped(&mut self.slots, i, crate::vm::desk_view::stop_cause(&reason), restarted);
        let Some(slot) = self.slots.get_mut(i) else { return };
        if !restarted {
            slot.vm.release_devices();
            slot.final_checksum = Some(slot.vm.memory_checksum());
        }
    }

    /// Drains the IOMMU's faults and stops, once per batch, every VM that can have
    /// caused one (`passthrough::fault_attribution`: the owner of the requester on the
    /// reporting unit, or every candidate when the requester id is ambiguous). A fault
    /// no running VM can have caused stops nobody and is logged within a budget.
    fn handle_dma_faults(&mut self) {
        let batch = crate::vm::passthrough::poll_faults();
        if batch.faults.is_empty() {
            return;
        }
        let owned: Vec<OwnedFunction> = self
            .slots
            .iter()
            .filter(|s| s.final_checksum.is_none())
            .filter_map(|s| s.vm.devices().map(|d| (s.vm.id, d)))
            .flat_map(|(vm, d)| d.fault_sources().map(move |(bdf, ids)| OwnedFunction { vm, bdf, ids: ids.clone() }))
            .collect();
        let mut stops: Vec<(u32, StopReason)> = Vec::new();
        for fault in &batch.faults {
            let unit = UnitName { iommu: batch.iommu, index: fault.unit };
            let verdict = attribute(fault, &owned);
            let fresh = verdict.vms.iter().any(|vm| !stops.iter().any(|(s, _)| s == vm));
            if !fresh {
                // Nobody's, or only VMs this batch already stops: one line, within budget.
                if let Some(suppressed) = admit_fault_line() {
                    if suppressed > 0 {
                        warn!(target: "iommu", "{suppressed} IOMMU fault lines suppressed");
                    }
                    match verdict.why {
                        Why::Unknown => {
                            warn!(target: "iommu", "{fault} on {unit}: no running VM can have caused it; nobody stopped")
                        }
                        _ => warn!(target: "iommu", "{fault} on {unit}: its VM is already being stopped"),
                    }
                }
                continue;
            }
            self.log_attribution(fault, unit, &verdict);
            let reason = StopReason::DmaFault { requester: fault.bdf.requester_id(), address: fault.address };
            for vm in &verdict.vms {
                if !stops.iter().any(|(s, _)| s == vm) {
                    stops.push((*vm, reason));
                }
            }
        }
        for (vm, reason) in stops {
            let Some(i) = self.slots.iter().position(|s| s.vm.id == vm) else { continue };
            if let Some(slot) = self.slots.get_mut(i) {
                slot.vm.stop_with(reason);
            }
            self.on_stop(i, reason);
        }
    }

    /// Says which VMs `fault` stops and why.
    fn log_attribution(&self, fault: &IommuFault, unit: UnitName, verdict: &Attribution) {
        let names: Vec<&str> = verdict
            .vms
            .iter()
            .filter_map(|vm| self.slots.iter().find(|s| s.vm.id == *vm))
            .map(|s| s.vm.config.name.as_str())
            .collect();
        let how = match verdict.why {
            Why::Requester | Why::Unknown => "",
            Why::Alias => " (a requester id their functions share)",
            Why::BehindBridge => " (behind a bridge their functions sit behind)",
        };
        match (verdict.why, verdict.vms.as_slice(), names.as_slice()) {
            (Why::Requester, [id], [name]) => {
                error!(target: "vm", "vm {id} ({name}): its device {} faulted ({fault}) on {unit}; stopping it", fault.bdf)
            }
            (_, [id], [name]) => error!(
                target: "vm",
                "vm {id} ({name}): DMA fault from {} on {unit} can only be from its devices{how} ({fault}); stopping it",
                fault.bdf
            ),
            _ => error!(
                target: "vm",
                "DMA fault from {} on {unit} could be from VMs {}{how} ({fault}): stopping {}",
                fault.bdf,
                names.join(", "),
                how_many(verdict.vms.len())
            ),
        }
    }

    fn finish_selftest(&self) -> ! {
        let outcomes: Vec<VmOutcome<'_>> =
            self.slots.iter().map(|s| verdict::outcome(&s.vm, s.final_checksum)).collect();
        verdict::announce(&outcomes, verdict::hypervisor_checksum() == self.image_checksum)
    }
}
