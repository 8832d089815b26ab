//! Time-slicing VMs on the boot CPU: round robin, preempted by the host LAPIC timer,
//! restart by policy. Between rounds it hands over to the switcher, the serial
//! commands, the load report and (for self-test images) the verdict.

use alloc::vec::Vec;

use log::{error, info, warn};

use crate::arch::backend::Arch;
use crate::arch::exit::StopReason;
use crate::arch::x86::{idt, lapic};
use crate::switcher::desk::Desk;
use crate::vm::instance::{SliceEnd, Vm, VmState};
use crate::vm::load_report::LoadReport;
use crate::vm::selftest::VmOutcome;
use crate::vm::serial_commands::{self, SerialCommands};
use crate::vm::slice_rules;
use crate::vm::verdict;

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
        micros = micros.min(ticks.checked_div(per_us).unwrap_or(ticks).saturating_add(1));
    }
    lapic::arm_oneshot_us(micros);
}

impl<A: Arch> Scheduler<A> {
    pub fn new(vms: Vec<Vm<A>>, features: A::Features, hotkeys: crate::switcher::hotkeys::Hotkeys) -> Self {
        let desk = Desk::new(vms.len(), hotkeys, crate::vm::desk_view::wall_clock);
        Scheduler {
            slots: vms.into_iter().map(|vm| Slot { vm, report: LoadReport::default(), final_checksum: None }).collect(),
            features,
            image_checksum: verdict::hypervisor_checksum(),
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
                    vm.state = slice_rules::wake(vm.state, vm.interrupt_pending());
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
        serial_commands::execute(&line, &self.slots);
    }

    fn on_stop(&mut self, i: usize, reason: StopReason) {
        let features = self.features;
        let Some(slot) = self.slots.get_mut(i) else { return };
        let vm = &mut slot.vm;
        warn!(target: "vm", "vm {} ({}) stopped: {reason:?}; {}", vm.id, vm.config.name, vm.counters);
        let restarted = slice_rules::should_restart(reason, vm.config.restart, vm.starts)
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
        let outcomes: Vec<VmOutcome<'_>> =
            self.slots.iter().map(|s| verdict::outcome(&s.vm, s.final_checksum)).collect();
        verdict::announce(&outcomes, verdict::hypervisor_checksum() == self.image_checksum)
    }
}
