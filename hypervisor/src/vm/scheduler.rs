//! Time-slicing VMs on the boot CPU: round robin, preempted by the host LAPIC timer,
//! restart by policy, and (for self-test images) the final verdict.

use alloc::vec::Vec;

use log::{error, info, warn};

use crate::arch::backend::Arch;
use crate::arch::exit::StopReason;
use crate::arch::x86::debug_exit;
use crate::arch::x86::{idt, lapic};
use crate::memory::addr::HostPhysAddr;
use crate::memory::direct_map;
use crate::memory::paging;
use crate::switcher::desk::Desk;
use crate::vm::config::Restart;
use crate::vm::instance::{SliceEnd, Vm, VmState};
use crate::vm::selftest::{self, VmOutcome};

/// Length of a time slice.
const SLICE_US: u64 = 10_000;

/// Lines typed on the hypervisor's serial console: `@NAME text` types `text` and a
/// newline into VM NAME's serial console.
#[derive(Debug, Default)]
struct SerialCommands {
    line: heapless::String<256>,
}

impl SerialCommands {
    /// A complete command line, once one has been typed.
    fn poll(&mut self) -> Option<heapless::String<256>> {
        while let Some(byte) = crate::logging::read_byte() {
            match byte {
                b'\r' | b'\n' => {
                    if !self.line.is_empty() {
                        return Some(core::mem::take(&mut self.line));
                    }
                }
                b => {
                    let _ = self.line.push(char::from(b));
                }
            }
        }
        None
    }
}

/// Guest-load figures: exits until the guest is ready, then the idle exit rate.
#[derive(Debug, Default, Clone)]
struct LoadReport {
    /// Counters and host TSC when the ready marker appeared.
    at_ready: Option<(crate::vm::counters::ExitCounters, u64)>,
    /// Counters, host TSC and paravirtual EOIs when the idle window opened.
    idle_from: Option<(crate::vm::counters::ExitCounters, u64, u64)>,
    idle_reported: bool,
}

/// The idle window opens this long after the ready marker, once the guest's shells
/// have started and printed their prompts ...
const IDLE_SETTLE_S: u64 = 5;
/// ... and the idle exit rate is measured over this many seconds.
const IDLE_WINDOW_S: u64 = 10;

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
    features: A::Features,
    /// Checksum of the hypervisor's text and rodata at start.
    image_checksum: u64,
    commands: SerialCommands,
    /// The screen and the keyboard.
    desk: Desk,
}

impl<A: Arch> core::fmt::Debug for Scheduler<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.slots.iter().map(|s| &s.vm)).finish()
    }
}

/// Arms the host timer for the end of a slice or a VM timer at host TSC `deadline`,
/// whichever comes first.
fn arm_timer(deadline: Option<u64>) {
    let mut micros = SLICE_US;
    if let Some(deadline) = deadline {
        let ticks = deadline.saturating_sub(crate::arch::x86::instr::rdtsc());
        let per_us = (crate::arch::x86::tsc::cached_ticks_per_ms() / 1000).max(1);
        micros = micros.min((ticks / per_us).saturating_add(1));
    }
    lapic::arm_oneshot_us(micros);
}

fn hypervisor_checksum() -> u64 {
    let image = paging::image_layout();
    let text = direct_map::checksum(HostPhysAddr::new(image.text.0), image.text.1 - image.text.0);
    let rodata = direct_map::checksum(HostPhysAddr::new(image.rodata.0), image.rodata.1 - image.rodata.0);
    text ^ rodata.rotate_left(1)
}

impl<A: Arch> Scheduler<A> {
    pub fn new(vms: Vec<Vm<A>>, features: A::Features, hotkeys: crate::switcher::hotkeys::Hotkeys) -> Self {
        let desk = Desk::new(vms.len(), hotkeys, crate::vm::desk_view::wall_clock);
        Scheduler {
            slots: vms.into_iter().map(|vm| Slot { vm, report: LoadReport::default(), final_checksum: None }).collect(),
            features,
            image_checksum: hypervisor_checksum(),
            commands: SerialCommands::default(),
            desk,
        }
    }

    /// Runs the VMs forever; a self-test run ends with the verdict on isa-debug-exit.
    pub fn run(mut self, selftest: bool) -> ! {
        // From here on exits only buffer log lines; they reach the UART between slices.
        crate::logging::defer_output();
        loop {
            let mut ran = false;
            for i in 0..self.slots.len() {
                // Device interrupts that arrived during the last slice (for a halted VM,
                // or one whose slice they ended) make their owners runnable first.
                self.deliver_device_interrupts();
                let Some(slot) = self.slots.get_mut(i) else { continue };
                let vm = &mut slot.vm;
                if vm.state == VmState::Halted {
                    vm.poll_timers();
                    if vm.interrupt_pending() {
                        vm.state = VmState::Runnable;
                    }
                }
                if vm.state != VmState::Runnable {
                    continue;
                }
                ran = true;
                arm_timer(vm.wake_deadline());
                let end = vm.run_slice();
                lapic::disarm();
                crate::logging::drain();
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
            }
            self.desk.poll_input(&mut self.slots);
            self.handle_dma_faults();
            self.handle_commands();
            self.desk.refresh(&mut self.slots);
            self.report_load();
            let log_drained = crate::logging::drain();
            if selftest && self.slots.iter().all(|s| s.final_checksum.is_some()) {
                self.finish_selftest();
            }
            // An idle machine with log output waiting keeps draining instead of sleeping.
            if !ran && log_drained && !crate::arch::x86::device_vectors::PENDING.any() {
                // Everything is halted or stopped: sleep until the next interrupt or the
                // earliest VM timer.
                idt::TIMER_FIRED.store(false, core::sync::atomic::Ordering::Release);
                let earliest = self.slots.iter().filter_map(|s| s.vm.wake_deadline()).min();
                arm_timer(earliest);
                x86_64::instructions::interrupts::enable_and_hlt();
                x86_64::instructions::interrupts::disable();
            }
        }
    }

    /// Raises the device interrupts that arrived (host vectors recorded by the IDT)
    /// in the VMs that own them; halted ones become runnable. Interrupts for a VM that
    /// has stopped are dropped.
    fn deliver_device_interrupts(&mut self) {
        for fired in crate::vm::passthrough::msi_routing::take_fired() {
            match self.slots.iter_mut().find(|s| s.vm.id == fired.vm) {
                Some(slot) => {
                    slot.vm.deliver_device_interrupt(fired.target);
                }
                None => warn!(target: "msi", "host vector {:#x} fired for unknown vm {}", fired.host_vector, fired.vm),
            }
        }
    }

    /// Logs each guest's exits during boot (at its ready marker) and its idle exit rate
    /// over a window that opens a few seconds later: the figures `cargo xtask bench
    /// linux-boot` reports.
    fn report_load(&mut self) {
        let now = crate::arch::x86::instr::rdtsc();
        let per_s = crate::arch::x86::tsc::cached_ticks_per_ms().saturating_mul(1000).max(1);
        for slot in &mut self.slots {
            let (vm, report) = (&slot.vm, &mut slot.report);
            if report.idle_reported {
                continue;
            }
            let Some((_, ready_tsc)) = &report.at_ready else {
                if vm.console.lock().guest_ready {
                    info!(target: "vm", "vm {} ({}) exits during boot: {}", vm.id, vm.config.name, vm.counters);
                    report.at_ready = Some((vm.counters.clone(), now));
                }
                continue;
            };
            let Some((from, tsc, pv_eois_from)) = &report.idle_from else {
                if now.saturating_sub(*ready_tsc) >= IDLE_SETTLE_S * per_s {
                    report.idle_from = Some((vm.counters.clone(), now, vm.pv_eois()));
                }
                continue;
            };
            if now.saturating_sub(*tsc) < IDLE_WINDOW_S * per_s {
                continue;
            }
            let idle = vm.counters.since(from);
            let seconds = now.saturating_sub(*tsc) as f64 / per_s as f64;
            let rate = idle.total() as f64 / seconds;
            let pv_eois = vm.pv_eois().saturating_sub(*pv_eois_from);
            info!(
                target: "vm",
                "vm {} ({}) idle exits: {rate:.1} per second over {seconds:.1} s: {idle}; EOIs without an exit: {pv_eois}",
                vm.id, vm.config.name
            );
            report.idle_reported = true;
        }
    }

    fn handle_commands(&mut self) {
        let Some(line) = self.commands.poll() else { return };
        if self.desk.command(&line, &self.slots) {
            return;
        }
        // `!exits VM`: that VM's exit counters and the device interrupts raised in it
        // since its last start, on one line.
        if let Some(name) = line.trim().strip_prefix("!exits ") {
            match self.slots.iter().find(|s| s.vm.config.name == name.trim()) {
                Some(slot) => {
                    let vm = &slot.vm;
                    info!(
                        target: "vm",
                        "EXITS {} {}{} device_interrupts={}",
                        vm.config.name,
                        vm.counters,
                        vm.counters.msr_writes(),
                        vm.device_interrupts
                    )
                }
                None => warn!(target: "vm", "!exits: no VM named {name:?}"),
            }
            return;
        }
        let Some((name, text)) = line.strip_prefix('@').and_then(|l| l.split_once(' ')) else {
            warn!(target: "vm", "serial command {line:?} not understood (use `@VM text` or `!exits VM`)");
            return;
        };
        match self.slots.iter().find(|s| s.vm.config.name == name) {
            Some(slot) => {
                slot.vm.serial_input(text.as_bytes());
                slot.vm.serial_input(b"\n");
            }
            None => warn!(target: "vm", "serial command for unknown VM {name:?}"),
        }
    }

    fn on_stop(&mut self, i: usize, reason: StopReason) {
        let features = self.features;
        let Some(slot) = self.slots.get_mut(i) else { return };
        let vm = &mut slot.vm;
        warn!(target: "vm", "vm {} ({}) stopped: {reason:?}; {}", vm.id, vm.config.name, vm.counters);
        let crashed = !matches!(reason, StopReason::GuestShutdown { .. });
        let restart = match (reason, vm.config.restart) {
            (StopReason::GuestReboot, _) => true,
            (_, Restart::Always) => crashed,
            (_, Restart::Times(n)) => crashed && vm.starts <= n,
            (_, Restart::Never) => false,
        };
        let restarted = restart
            && match vm.restart(&features) {
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

    /// A VM whose device did DMA outside its memory (or an interrupt the IOMMU
    /// rejected) is stopped; faults of devices no VM owns are only logged.
    fn handle_dma_faults(&mut self) {
        for fault in crate::vm::passthrough::poll_faults() {
            let owner = self
                .slots
                .iter()
                .position(|s| s.final_checksum.is_none() && s.vm.devices().is_some_and(|d| d.owns(&fault)));
            let Some(i) = owner else {
                warn!(target: "iommu", "fault of {} which no running VM owns", fault.bdf);
                continue;
            };
            let reason = StopReason::DmaFault { requester: fault.bdf.requester_id(), address: fault.address };
            if let Some(slot) = self.slots.get_mut(i) {
                error!(target: "vm", "vm {} ({}): its device {} faulted ({}); stopping it", slot.vm.id, slot.vm.config.name, fault.bdf, fault.reason);
                slot.vm.stop_with(reason);
            }
            self.on_stop(i, reason);
        }
    }

    fn finish_selftest(&self) -> ! {
        let outcomes: Vec<VmOutcome<'_>> = self
            .slots
            .iter()
            .map(|s| {
                // One console lock per VM: field temporaries live until the end of the
                // literal, so locking per field would deadlock on the spin lock.
                let console = s.vm.console.lock();
                let (passed_checks, failed_checks, checks_done) =
                    (console.passed_checks, console.failed_checks, console.checks_done);
                drop(console);
                VmOutcome {
                    name: &s.vm.config.name,
                    expect: s.vm.config.expect,
                    restart: s.vm.config.restart,
                    starts: s.vm.starts,
                    reason: match s.vm.state {
                        VmState::Stopped(r) => Some(r),
                        _ => None,
                    },
                    passed_checks,
                    failed_checks,
                    checks_done,
                    canary_intact: s.vm.canary_intact(),
                    checksum_at_stop: s.final_checksum.unwrap_or(0),
                    checksum_now: s.vm.memory_checksum(),
                }
            })
            .collect();
        let failures = selftest::failures(&outcomes, hypervisor_checksum() == self.image_checksum);
        if failures.is_empty() {
            info!(target: "selftest", "SELFTEST PASS: {} VMs ended as expected, memory of every VM and of the hypervisor intact", outcomes.len());
            debug_exit::exit(debug_exit::ExitCode::Success);
        } else {
            for f in &failures {
                error!(target: "selftest", "{f}");
            }
            error!(target: "selftest", "SELFTEST FAIL: {} problem(s)", failures.len());
            debug_exit::exit(debug_exit::ExitCode::Failure);
        }
        crate::arch::x86::instr::halt_forever()
    }
}
