//! The VM as the switcher sees it: [`DeskVm`] for [`Vm`], the switcher's terms for a
//! stop reason, and the wall clock for its strip.

use crate::arch::backend::Arch;
use crate::arch::exit::StopReason;
use crate::switcher::desk_vm::{DeskVm, FramebufferView};
use crate::switcher::notices::StopCause;
use crate::vm::instance::{Vm, VmState};
use ui::overview;

impl<A: Arch> DeskVm for Vm<A> {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn label(&self) -> &str {
        &self.config.label
    }

    fn colour(&self) -> u32 {
        self.config.colour
    }

    fn tile_state(&self) -> overview::VmState {
        tile_state(self.state)
    }

    fn starts(&self) -> u32 {
        self.starts
    }

    fn framebuffer(&self) -> Option<FramebufferView> {
        Vm::framebuffer(self).map(|fb| FramebufferView {
            hpa: fb.hpa,
            width: fb.width,
            height: fb.height,
            stride_bytes: fb.stride_bytes,
            len: fb.len,
        })
    }

    fn take_framebuffer_dirty(&mut self, bitmap: &mut [u64]) -> Option<usize> {
        Vm::take_framebuffer_dirty(self, bitmap)
    }

    fn inject_keys(&mut self, set1: &[u8]) {
        self.inject_scancodes(set1);
    }

    fn keyboard_leds(&self) -> u8 {
        Vm::keyboard_leds(self)
    }

    fn take_led_change(&mut self) -> Option<u8> {
        Vm::take_led_change(self)
    }

    fn dropped_keys(&self) -> u64 {
        Vm::dropped_keys(self)
    }

    fn network_up(&self) -> bool {
        crate::vm::service_net::desktop_connected(&self.config.name)
    }
}

/// The overview's state for a VM.
pub fn tile_state(state: VmState) -> overview::VmState {
    match state {
        VmState::Runnable | VmState::Halted => overview::VmState::Running,
        VmState::Stopped(StopReason::PolicyHold) => overview::VmState::NeedsCheckIn,
        VmState::Stopped(StopReason::DiskUnavailable { .. }) => overview::VmState::DiskLocked,
        VmState::Stopped(StopReason::GuestShutdown { .. } | StopReason::Requested | StopReason::GuestReboot) => {
            overview::VmState::Stopped
        }
        VmState::Stopped(_) => overview::VmState::Crashed,
    }
}

/// Why a VM stopped, in the words of its notification.
pub fn stop_cause(reason: &StopReason) -> StopCause {
    match reason {
        StopReason::GuestShutdown { .. } | StopReason::Requested => StopCause::ShutDown,
        StopReason::GuestReboot => StopCause::Rebooted,
        StopReason::PolicyHold => StopCause::NeedsCheckIn,
        StopReason::DiskUnavailable { locked } => StopCause::DiskUnavailable { locked: *locked },
        StopReason::TripleFault => StopCause::Crashed("triple fault"),
        StopReason::InvalidGuestState { .. } => StopCause::Crashed("invalid processor state"),
        StopReason::UnhandledExit { .. } => StopCause::Crashed("unsupported operation"),
        StopReason::BadHypercall { .. } => StopCause::Crashed("bad hypercall"),
        StopReason::EmulationFailed { .. } => StopCause::Crashed("unsupported instruction"),
        StopReason::NestedPageFault { .. } => StopCause::Crashed("memory access outside the VM"),
        StopReason::UnsupportedPagingMode => StopCause::Crashed("unsupported paging mode"),
        StopReason::DmaFault { .. } => StopCause::Crashed("device DMA outside the VM"),
    }
}

/// Local hours and minutes now, for the switcher's strip ((0, 0) before the boot
/// path read the host clock).
pub fn wall_clock() -> (u8, u8) {
    crate::vm::desktop::HOST_TIME.get().map_or((0, 0), |t| t.clock_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_states() {
        assert_eq!(tile_state(VmState::Halted), overview::VmState::Running);
        assert_eq!(tile_state(VmState::Stopped(StopReason::Requested)), overview::VmState::Stopped);
        assert_eq!(tile_state(VmState::Stopped(StopReason::GuestReboot)), overview::VmState::Stopped);
        assert_eq!(tile_state(VmState::Stopped(StopReason::TripleFault)), overview::VmState::Crashed);
    }

    #[test]
    fn stop_causes() {
        assert_eq!(stop_cause(&StopReason::GuestShutdown { status: 0 }), StopCause::ShutDown);
        assert_eq!(stop_cause(&StopReason::Requested), StopCause::ShutDown);
        assert_eq!(stop_cause(&StopReason::GuestReboot), StopCause::Rebooted);
        assert_eq!(stop_cause(&StopReason::TripleFault), StopCause::Crashed("triple fault"));
    }
}
