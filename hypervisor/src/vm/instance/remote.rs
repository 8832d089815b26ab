//! vCPUs that run on application processors (`arch::x86::smp::guest_runs`). The
//! boot CPU prepares each entry (interrupts injected, TLB flush requested) and
//! handles each exit, exactly as for a vCPU it runs itself; only the guest's own run
//! happens on the other CPU. Whatever changes a vCPU's state while it is away (a stop,
//! an INIT, a clean of the framebuffer's dirty bits) first brings it home.

use super::*;
use crate::arch::x86::smp::guest_runs;
use crate::vm::slice_host::Elsewhere;

/// How long a CPU may take to give a vCPU back after a kick. A guest cannot delay it:
/// the kick is a physical interrupt, which always exits.
const RECALL_MS: u64 = 100;

/// What became of a vCPU placed on another CPU, at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    /// Still running there.
    Away,
    /// At home with no exit to handle.
    Home,
    /// Its exit was handled; it can go on.
    Continue,
    /// Its exit ended its run for now (halted, yielded, the VM stopped); the end is
    /// recorded in the VM, except that a stop is the caller's to report.
    Ended(SliceEnd),
}

impl<A: Arch> Vm<A> {
    /// Whether vCPU `index` is running on another CPU now.
    pub fn is_away(&self, index: usize) -> bool {
        self.vcpus.get(index).is_some_and(|slot| slot.away.is_some())
    }

    /// Takes vCPU `index` back from its CPU if its run ended, and handles the exit.
    pub fn collect_remote(&mut self, index: usize) -> Collected {
        let Some(slot) = self.vcpus.get_mut(index) else { return Collected::Home };
        if let Some(cpu) = slot.away {
            let Some((vcpu, ran)) = guest_runs::collect::<A>(cpu) else { return Collected::Away };
            slot.vcpu = Some(vcpu);
            slot.away = None;
            slot.held = Some(ran);
        }
        let Some(ran) = slot.held.take() else { return Collected::Home };
        match self.with_exit_loop(index, &Elsewhere, |exits| exits.after_run(&ran.exit, ran.entered, ran.exited)) {
            None => Collected::Home,
            Some(None) => {
                // IPIs it sent (INIT, STARTUP, wake-ups) take effect before the next look.
                self.update_vcpus();
                Collected::Continue
            }
            Some(Some(end)) => {
                self.record_end(index, end);
                Collected::Ended(end)
            }
        }
    }

    /// Prepares vCPU `index` (at home and runnable) for its next entry and gives it to
    /// CPU `cpu` until its next exit or host TSC `deadline` (0: none). `flush`: its
    /// guest TLB is flushed first (another vCPU of this VM ran there last). Whether it
    /// went.
    pub fn send_away(&mut self, index: usize, cpu: usize, flush: bool, deadline: u64) -> bool {
        if !self.vcpu_runnable(index) {
            return false;
        }
        match self.with_exit_loop(index, &Elsewhere, |exits| exits.prepare_entry()) {
            Some(None) => {}
            Some(Some(end)) => {
                self.record_end(index, end);
                return false;
            }
            None => return false,
        }
        let Some(slot) = self.vcpus.get_mut(index) else { return false };
        let Some(mut vcpu) = slot.vcpu.take() else { return false };
        if flush || core::mem::take(&mut slot.flush_on_return) {
            A::request_tlb_flush(vcpu.as_mut());
        }
        match guest_runs::give::<A>(cpu, vcpu, deadline) {
            Ok(()) => {
                slot.away = Some(cpu);
                slot.away_until = deadline;
                true
            }
            Err(vcpu) => {
                slot.vcpu = Some(vcpu);
                false
            }
        }
    }

    /// Whether vCPU `index`, away, should come back before its run ends by itself: an
    /// interrupt or NMI waits for it, or its TLB must be flushed. Not once the run's
    /// deadline has passed: the AP's timer ends it within microseconds (usually for
    /// the very timer that is pending now), and a kick would only arrive after the
    /// vCPU went back in and end that run for nothing.
    pub fn needs_attention(&self, index: usize) -> bool {
        self.vcpus.get(index).is_some_and(|slot| {
            let ends_by_itself = slot.away_until != 0 && Machine.now_tsc() >= slot.away_until;
            slot.away.is_some()
                && !ends_by_itself
                && (slot.flush_on_return || self.platform.interrupt_pending(index) || self.platform.nmi_pending(index))
        })
    }

    /// Brings vCPU `index` home if it is away; its exit is kept for the scheduler to
    /// handle. Whether it is home.
    pub(super) fn recall(&mut self, index: usize) -> bool {
        let Some(slot) = self.vcpus.get_mut(index) else { return true };
        let Some(cpu) = slot.away else { return true };
        match guest_runs::recall::<A>(cpu, RECALL_MS) {
            Some((vcpu, ran)) => {
                slot.vcpu = Some(vcpu);
                slot.away = None;
                slot.held = Some(ran);
                true
            }
            None => {
                log::error!(
                    target: "vm",
                    "vm {} ({}): cpu{cpu} did not give vCPU {index} back within {RECALL_MS} ms",
                    self.id,
                    self.config.name
                );
                false
            }
        }
    }

    /// Brings every vCPU running elsewhere home; whether all came.
    pub(super) fn recall_all(&mut self) -> bool {
        let mut all = true;
        for index in 0..self.vcpus.len() {
            all &= self.recall(index);
        }
        all
    }

    /// Every vCPU but `index` flushes its guest TLB before its next entry (the nested
    /// page tables changed): at once for those at home, on return for those away.
    pub(super) fn flush_siblings(&mut self, index: usize) {
        for (i, slot) in self.vcpus.iter_mut().enumerate() {
            if i == index {
                continue;
            }
            match slot.vcpu.as_mut() {
                Some(vcpu) => A::request_tlb_flush(vcpu.as_mut()),
                None => slot.flush_on_return = slot.away.is_some(),
            }
        }
    }
}
