//! The vCPUs of one VM and the rules that move them between states: vCPU 0 (the BSP)
//! starts with the VM; the others wait until the guest sends them INIT and a STARTUP
//! IPI through its local APIC, as an unmodified kernel brings up its application
//! processors; a vCPU that halts gives the CPU to the others until an interrupt is
//! pending for it. The VM is runnable while any of its vCPUs is.
//!
//! Every vCPU of a VM uses the VM's one ASID (the tag of its nested page tables), so a
//! vCPU that runs after another vCPU of the same VM flushes its guest TLB first: the
//! other one's translations of its own page tables carry the same tag.
#![forbid(unsafe_code)]

use alloc::boxed::Box;

use crate::arch::x86::smp::guest_runs::Ran;
use crate::devices::vlapic::StartupSignals;
use crate::vcpu::msr::MsrState;
use crate::vm::instance::VmState;

/// Where one vCPU is in its life (a stopped VM has no vCPU state at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuState {
    Runnable,
    /// Executed HLT; runnable again when an interrupt is pending for it.
    Halted,
    /// An application processor before its STARTUP IPI (after power-on or an INIT).
    WaitForSipi,
}

/// One vCPU: the backend's state, where it is, and its MSRs.
#[derive(Debug)]
pub struct VcpuSlot<V> {
    /// None while it waits for a STARTUP, and while it is away on another CPU.
    pub vcpu: Option<Box<V>>,
    pub state: VcpuState,
    pub msrs: MsrState,
    /// The application processor running it now (`arch::x86::smp::guest_runs`).
    pub away: Option<usize>,
    /// Host TSC at which that run ends by itself (the AP's timer; 0: none).
    pub away_until: u64,
    /// The exit of a run that came back and is not handled yet.
    pub held: Option<Ran>,
    /// Its guest TLB is flushed before its next entry: the nested page tables changed
    /// while it was away.
    pub flush_on_return: bool,
}

impl<V> VcpuSlot<V> {
    /// It has state somewhere: here, or away on another CPU (not parked).
    pub fn is_started(&self) -> bool {
        self.vcpu.is_some() || self.away.is_some()
    }

    /// An application processor that has not been started.
    pub fn parked() -> VcpuSlot<V> {
        VcpuSlot {
            vcpu: None,
            state: VcpuState::WaitForSipi,
            msrs: MsrState::new(true),
            away: None,
            away_until: 0,
            held: None,
            flush_on_return: false,
        }
    }

    /// A vCPU that runs from `vcpu`'s initial state.
    pub fn running(vcpu: V) -> VcpuSlot<V> {
        VcpuSlot { vcpu: Some(Box::new(vcpu)), state: VcpuState::Runnable, ..VcpuSlot::parked() }
    }
}

/// What INIT and STARTUP IPIs do to a vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupAction {
    Nothing,
    /// INIT: its state is dropped and it waits for a STARTUP.
    Park,
    /// A STARTUP while it waits: it starts in real mode at `vector << 12`.
    Start {
        vector: u8,
    },
}

/// What the INIT and STARTUP vCPU `index` received since the last look do to it. The
/// BSP (index 0) ignores both (a guest resets through the reboot path); a STARTUP to a
/// vCPU that is not waiting is ignored, as on hardware (Linux sends two).
pub fn startup_action(index: usize, state: VcpuState, signals: StartupSignals) -> StartupAction {
    if index == 0 {
        return StartupAction::Nothing;
    }
    let waiting = signals.init || state == VcpuState::WaitForSipi;
    match (signals.init, signals.sipi) {
        (_, Some(vector)) if waiting => StartupAction::Start { vector },
        (true, None) => StartupAction::Park,
        _ => StartupAction::Nothing,
    }
}

/// A halted vCPU with an interrupt pending becomes runnable; other states stay.
pub fn wake(state: VcpuState, interrupt_pending: bool) -> VcpuState {
    match state {
        VcpuState::Halted if interrupt_pending => VcpuState::Runnable,
        other => other,
    }
}

/// The VM's state from its vCPUs' (for a VM that has not stopped): runnable while any
/// vCPU is, halted otherwise.
pub fn vm_state(mut states: impl Iterator<Item = VcpuState>) -> VmState {
    if states.any(|s| s == VcpuState::Runnable) { VmState::Runnable } else { VmState::Halted }
}

/// Whether vCPU `next` flushes its guest TLB before it runs: the VM has several vCPUs
/// and another one (or none yet) ran last.
pub fn needs_tlb_flush(vcpus: usize, last: Option<usize>, next: usize) -> bool {
    vcpus > 1 && last != Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: StartupSignals = StartupSignals { init: true, sipi: None };
    const fn sipi(vector: u8) -> StartupSignals {
        StartupSignals { init: false, sipi: Some(vector) }
    }

    #[test]
    fn init_then_startup_starts_an_application_processor_once() {
        use VcpuState::*;
        assert_eq!(startup_action(1, WaitForSipi, StartupSignals::default()), StartupAction::Nothing);
        assert_eq!(startup_action(1, WaitForSipi, INIT), StartupAction::Park);
        assert_eq!(startup_action(1, WaitForSipi, sipi(0x9A)), StartupAction::Start { vector: 0x9A });
        // Both since the last look: the STARTUP came after the INIT (an INIT forgets older ones).
        let both = StartupSignals { init: true, sipi: Some(0x10) };
        assert_eq!(startup_action(2, Runnable, both), StartupAction::Start { vector: 0x10 });
        // The second STARTUP finds it running.
        assert_eq!(startup_action(1, Runnable, sipi(0x9A)), StartupAction::Nothing);
        assert_eq!(startup_action(1, Halted, sipi(0x9A)), StartupAction::Nothing);
        // An INIT parks a running AP; the BSP ignores INIT and STARTUP.
        assert_eq!(startup_action(1, Runnable, INIT), StartupAction::Park);
        assert_eq!(startup_action(0, Runnable, both), StartupAction::Nothing);
    }

    #[test]
    fn the_vm_runs_while_any_vcpu_can() {
        use VcpuState::*;
        assert_eq!(vm_state([Halted, Runnable].into_iter()), VmState::Runnable);
        assert_eq!(vm_state([Halted, WaitForSipi].into_iter()), VmState::Halted);
        assert_eq!(wake(Halted, true), Runnable);
        assert_eq!(wake(Halted, false), Halted);
        assert_eq!(wake(WaitForSipi, true), WaitForSipi, "an interrupt does not start an AP");
    }

    #[test]
    fn a_vcpu_flushes_the_shared_asid_after_a_sibling_ran() {
        assert!(!needs_tlb_flush(1, None, 0), "one vCPU: the entry after creation flushes anyway");
        assert!(needs_tlb_flush(2, Some(0), 1));
        assert!(needs_tlb_flush(2, None, 0));
        assert!(!needs_tlb_flush(2, Some(1), 1));
    }
}
