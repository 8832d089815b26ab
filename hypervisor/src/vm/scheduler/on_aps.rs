//! The scheduler's side of vCPUs that run on application processors: placing them
//! at launch, and at every turn of the boot CPU's loop taking back the runs that
//! ended, handling their exits, giving each AP its next run, and cutting a run short
//! when something waits for its vCPU (see `vm/run_queues.rs` for the rules).

use alloc::vec::Vec;

use log::info;

use super::{Scheduler, Slot};
use crate::arch::backend::Arch;
use crate::arch::x86::instr::rdtsc;
use crate::arch::x86::smp::{guest_runs, percpu};
use crate::vm::instance::remote::Collected;
use crate::vm::instance::{SliceEnd, Vm};
use crate::vm::run_queues::{self, Member};

/// Where each VM's vCPUs run: round robin over the online APs when the backend can
/// enter a vCPU on any CPU, else all on the boot CPU. Logged once.
pub(super) fn placement<A: Arch>(vms: &[Vm<A>]) -> Vec<Vec<Option<usize>>> {
    let aps: Vec<usize> = if A::RUNS_ON_ANY_CPU && !run_queues::boot_cpu_only() {
        percpu::all().map(|c| c.index).filter(|&i| guest_runs::available(i)).collect()
    } else {
        Vec::new()
    };
    let counts: Vec<usize> = vms.iter().map(|vm| usize::from(vm.config.vcpus.max(1))).collect();
    let placement = run_queues::place(&counts, &aps);
    if aps.is_empty() {
        if percpu::online_count() > 1 && run_queues::boot_cpu_only() {
            info!(target: "sched", "every vCPU runs on cpu0: the command line says guests=boot-cpu");
        } else if percpu::online_count() > 1 {
            info!(target: "sched", "every vCPU runs on cpu0: the {} backend enters a vCPU only on the CPU that made it", A::NAME);
        }
        return placement;
    }
    info!(
        target: "sched",
        "guests run on {} application processors; cpu0 keeps the switcher, the devices and the exit handlers",
        aps.len()
    );
    for (vm, cpus) in vms.iter().zip(&placement) {
        let list: Vec<alloc::string::String> =
            cpus.iter().enumerate().map(|(v, cpu)| alloc::format!("vCPU {v} on cpu{}", cpu.unwrap_or(0))).collect();
        info!(target: "sched", "vm {} ({}): {}", vm.id, vm.config.name, list.join(", "));
    }
    placement
}

impl<A: Arch> Scheduler<A> {
    /// The AP vCPU `vcpu` of the VM in slot `slot` is pinned to, if any.
    pub(super) fn placed_on(&self, slot: usize, vcpu: usize) -> Option<usize> {
        self.placement.get(slot).and_then(|p| p.get(vcpu)).copied().flatten()
    }

    /// Whether the turn's second half (switcher, commands, lease, screen, load
    /// report, log) is due while remote exits keep the loop busy: a key waits, or a
    /// millisecond has passed since it last ran.
    pub(super) fn housekeeping_due(&self) -> bool {
        let per_ms = crate::arch::x86::tsc::cached_ticks_per_ms().max(1);
        crate::arch::x86::idt::KEYBOARD_FIRED.load(core::sync::atomic::Ordering::Acquire)
            || rdtsc().wrapping_sub(self.housekept) >= per_ms
    }

    /// One turn over the APs' run queues; whether any exit was handled.
    pub(super) fn serve_queues(&mut self) -> bool {
        if self.queues.is_empty() {
            return false;
        }
        // Cleared before looking: a run that ends after this sets it again.
        guest_runs::EXITS_WAITING.store(false, core::sync::atomic::Ordering::Release);
        let mut handled = false;
        for q in 0..self.queues.len() {
            handled |= self.collect_run(q);
            self.start_run(q);
            self.kick_if_needed(q);
        }
        handled
    }

    /// Takes back queue `q`'s vCPU if its run ended and handles the exit.
    fn collect_run(&mut self, q: usize) -> bool {
        let Some(member) = self.queues.get(q).and_then(|queue| queue.current()) else { return false };
        let Some(slot) = self.slots.get_mut(member.slot) else { return false };
        match slot.vm.collect_remote(member.vcpu) {
            Collected::Away | Collected::Home => false,
            Collected::Continue => true,
            Collected::Ended(end) => {
                if let Some(queue) = self.queues.get_mut(q) {
                    queue.yield_current();
                }
                if let SliceEnd::Stopped(reason) = end {
                    self.on_stop(member.slot, reason);
                }
                true
            }
        }
    }

    /// Gives queue `q`'s CPU its next run if it holds none.
    fn start_run(&mut self, q: usize) {
        let Some(queue) = self.queues.get(q) else { return };
        if !guest_runs::idle(queue.cpu) {
            return;
        }
        let now = rdtsc();
        let per_us = (crate::arch::x86::tsc::cached_ticks_per_ms() / 1000).max(1);
        let slice = super::SLICE_US.saturating_mul(per_us);
        let slots = &self.slots;
        let runnable = |m: Member| runnable(slots, m);
        let Some(queue) = self.queues.get_mut(q) else { return };
        let cpu = queue.cpu;
        let Some(pick) = queue.pick(now, slice, runnable) else { return };
        let Some(slot) = self.slots.get_mut(pick.member.slot) else { return };
        let deadline = match (slot.vm.wake_deadline_of(pick.member.vcpu), pick.slice_end) {
            (Some(timer), 0) => timer.max(1),
            (Some(timer), end) => timer.min(end).max(1),
            (None, end) => end,
        };
        if slot.vm.send_away(pick.member.vcpu, cpu, pick.flush, deadline)
            && slot.vm.needs_attention(pick.member.vcpu)
            && let Some(queue) = self.queues.get_mut(q)
        {
            // Something already waited at the entry and could not be delivered (the
            // guest had interrupts off): the entry asked for an exit as soon as it can
            // take it. Kicking would only end the run before the guest got that far,
            // again and again.
            queue.kicked = true;
        }
    }

    /// Cuts queue `q`'s run short when an interrupt arrived for its vCPU after the
    /// entry, or its TLB must be flushed (once per run).
    fn kick_if_needed(&mut self, q: usize) {
        let Some(queue) = self.queues.get_mut(q) else { return };
        if queue.kicked {
            return;
        }
        let Some(member) = queue.current() else { return };
        if self.slots.get(member.slot).is_some_and(|s| s.vm.needs_attention(member.vcpu)) {
            queue.kicked = true;
            guest_runs::kick(queue.cpu);
        }
    }
}

fn runnable<A: Arch>(slots: &[Slot<A>], m: Member) -> bool {
    slots.get(m.slot).is_some_and(|s| s.vm.vcpu_runnable(m.vcpu))
}
