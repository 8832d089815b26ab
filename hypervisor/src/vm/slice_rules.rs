//! The decisions of the exit loop and the scheduler, as pure functions: whether a
//! stopped VM restarts, what happens to a pending interrupt before an entry, when a
//! slice ends, and when a halted VM wakes. The loop and the scheduler only gather
//! the inputs and carry the answers out.
#![forbid(unsafe_code)]

use crate::arch::exit::{Flow, StopReason};
use crate::devices::power::PowerEvent;
use crate::vm::config::Restart;
use crate::vm::instance::{SliceEnd, VmState};

/// Whether a VM that stopped for `reason` is started again under its `rule`, after
/// `starts` starts so far. A guest reboot always restarts; a guest shutdown never
/// does; anything else is a crash, restarted as the rule allows (`Times(n)`: n
/// restarts after the first start).
pub fn should_restart(reason: StopReason, rule: Restart, starts: u32) -> bool {
    let crashed = !matches!(reason, StopReason::GuestShutdown { .. });
    match (reason, rule) {
        (StopReason::PolicyHold | StopReason::DiskUnavailable { .. }, _) => false,
        (StopReason::GuestReboot, _) => true,
        (_, Restart::Always) => crashed,
        (_, Restart::Times(n)) => crashed && starts <= n,
        (_, Restart::Never) => false,
    }
}

/// What the loop does about interrupts before entering the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryInterrupt {
    /// Nothing is pending.
    None,
    /// Take the highest-priority pending interrupt and inject it on this entry.
    Inject,
    /// The guest cannot take it now: exit as soon as it can.
    OpenWindow,
}

/// An interrupt is injected when one is pending and the guest's interrupt window is
/// open; otherwise, if one is pending, the loop asks for an interrupt-window exit.
pub fn entry_interrupt(pending: bool, window_open: bool) -> EntryInterrupt {
    match (pending, window_open) {
        (false, _) => EntryInterrupt::None,
        (true, true) => EntryInterrupt::Inject,
        (true, false) => EntryInterrupt::OpenWindow,
    }
}

/// The flow after an exit, overridden by a power-off or reset the guest asked its
/// platform for during that exit.
pub fn with_power_event(flow: Flow, event: Option<PowerEvent>) -> Flow {
    match event {
        None => flow,
        Some(PowerEvent::Off) => Flow::Stop(StopReason::GuestShutdown { status: 0 }),
        Some(PowerEvent::Reset) => Flow::Stop(StopReason::GuestReboot),
    }
}

/// How the guest's own flow ends the slice, if it does: a yield, a stop, or a HLT
/// with no interrupt pending (with one pending, the guest goes on and takes it).
pub fn end_by_guest(flow: Flow, interrupt_pending: bool) -> Option<SliceEnd> {
    match flow {
        Flow::Continue => None,
        Flow::Yield => Some(SliceEnd::Yielded),
        Flow::WaitForInterrupt if interrupt_pending => None,
        Flow::WaitForInterrupt => Some(SliceEnd::Halted),
        Flow::Stop(reason) => Some(SliceEnd::Stopped(reason)),
    }
}

/// What the host has waiting that the running VM cannot handle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostEvents {
    /// A device interrupt for another VM (the scheduler delivers it).
    pub other_vm_interrupt: bool,
    /// The slice timer (or a VM timer) fired.
    pub timer_expired: bool,
    /// A key was pressed (the switcher reads it at once: it may be a hotkey).
    pub key_pending: bool,
}

/// The slice ends (preempted) when any host event is waiting.
pub fn end_by_host(events: HostEvents) -> Option<SliceEnd> {
    (events.other_vm_interrupt || events.timer_expired || events.key_pending).then_some(SliceEnd::Preempted)
}

/// An IPI (or interrupt) one vCPU gave another vCPU of its VM ends its slice, so the
/// scheduler runs the receiver soon: a sender often waits for the answer (a TLB
/// shootdown, a function call on another CPU). `kicked` has a bit per vCPU that
/// received something; the running vCPU's own bit does not count.
pub fn end_for_siblings(kicked: u32, running: usize) -> Option<SliceEnd> {
    let own = u32::try_from(running).ok().and_then(|i| 1u32.checked_shl(i)).unwrap_or(0);
    (kicked & !own != 0).then_some(SliceEnd::Yielded)
}

/// A halted VM becomes runnable once an interrupt is pending; other states stay.
pub fn wake(state: VmState, interrupt_pending: bool) -> VmState {
    match state {
        VmState::Halted if interrupt_pending => VmState::Runnable,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRASH: StopReason = StopReason::TripleFault;
    const SHUTDOWN: StopReason = StopReason::GuestShutdown { status: 0 };

    #[test]
    fn a_reboot_restarts_under_every_rule() {
        for rule in [Restart::Never, Restart::Times(0), Restart::Times(2), Restart::Always] {
            assert!(should_restart(StopReason::GuestReboot, rule, 7), "{rule:?}");
        }
    }

    #[test]
    fn a_shutdown_never_restarts() {
        for rule in [Restart::Never, Restart::Times(5), Restart::Always] {
            assert!(!should_restart(SHUTDOWN, rule, 1), "{rule:?}");
        }
    }

    #[test]
    fn crashes_restart_as_the_rule_allows() {
        assert!(!should_restart(CRASH, Restart::Never, 1));
        assert!(should_restart(CRASH, Restart::Always, 1000));
        assert!(should_restart(StopReason::Requested, Restart::Always, 1), "a stop by request counts as a crash");
        // Times(2): the first start and two restarts.
        assert!(should_restart(CRASH, Restart::Times(2), 1));
        assert!(should_restart(CRASH, Restart::Times(2), 2));
        assert!(!should_restart(CRASH, Restart::Times(2), 3));
        assert!(!should_restart(CRASH, Restart::Times(0), 1));
    }

    #[test]
    fn interrupts_wait_for_the_window() {
        assert_eq!(entry_interrupt(false, true), EntryInterrupt::None);
        assert_eq!(entry_interrupt(false, false), EntryInterrupt::None);
        assert_eq!(entry_interrupt(true, true), EntryInterrupt::Inject);
        assert_eq!(entry_interrupt(true, false), EntryInterrupt::OpenWindow);
    }

    #[test]
    fn power_events_override_the_flow() {
        assert_eq!(with_power_event(Flow::Continue, None), Flow::Continue);
        assert_eq!(with_power_event(Flow::Yield, Some(PowerEvent::Off)), Flow::Stop(SHUTDOWN));
        assert_eq!(with_power_event(Flow::Continue, Some(PowerEvent::Reset)), Flow::Stop(StopReason::GuestReboot));
    }

    #[test]
    fn the_guest_ends_its_slice_by_yield_stop_or_idle_halt() {
        assert_eq!(end_by_guest(Flow::Continue, true), None);
        assert_eq!(end_by_guest(Flow::Yield, false), Some(SliceEnd::Yielded));
        assert_eq!(end_by_guest(Flow::WaitForInterrupt, false), Some(SliceEnd::Halted));
        assert_eq!(end_by_guest(Flow::WaitForInterrupt, true), None, "a pending interrupt wakes it at once");
        assert_eq!(end_by_guest(Flow::Stop(CRASH), true), Some(SliceEnd::Stopped(CRASH)));
    }

    #[test]
    fn any_host_event_preempts() {
        assert_eq!(end_by_host(HostEvents::default()), None);
        for events in [
            HostEvents { other_vm_interrupt: true, ..HostEvents::default() },
            HostEvents { timer_expired: true, ..HostEvents::default() },
            HostEvents { key_pending: true, ..HostEvents::default() },
        ] {
            assert_eq!(end_by_host(events), Some(SliceEnd::Preempted), "{events:?}");
        }
    }

    #[test]
    fn an_ipi_to_a_sibling_ends_the_slice_one_to_itself_does_not() {
        assert_eq!(end_for_siblings(0, 0), None);
        assert_eq!(end_for_siblings(0b01, 0), None);
        assert_eq!(end_for_siblings(0b10, 0), Some(SliceEnd::Yielded));
        assert_eq!(end_for_siblings(0b11, 1), Some(SliceEnd::Yielded));
        assert_eq!(end_for_siblings(0b10, 1), None);
    }

    #[test]
    fn only_a_halted_vm_with_an_interrupt_wakes() {
        assert_eq!(wake(VmState::Halted, true), VmState::Runnable);
        assert_eq!(wake(VmState::Halted, false), VmState::Halted);
        assert_eq!(wake(VmState::Stopped(CRASH), true), VmState::Stopped(CRASH));
        assert_eq!(wake(VmState::Runnable, false), VmState::Runnable);
    }
}
