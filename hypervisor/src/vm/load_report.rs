//! Guest-load figures: each guest's exits during boot (at its ready marker) and its
//! idle exit rate over a window that opens a few seconds later: the figures `cargo
//! xtask bench linux-boot` reports.

use log::info;

use crate::arch::backend::Arch;
use crate::vm::counters::ExitCounters;
use crate::vm::instance::Vm;

/// The idle window opens this long after the ready marker, once the guest's shells
/// have started and printed their prompts ...
const IDLE_SETTLE_S: u64 = 5;
/// ... and the idle exit rate is measured over this many seconds.
const IDLE_WINDOW_S: u64 = 10;

/// Where one VM's report stands.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Counters and host TSC when the ready marker appeared.
    at_ready: Option<(ExitCounters, u64)>,
    /// Counters, host TSC and paravirtual EOIs when the idle window opened.
    idle_from: Option<(ExitCounters, u64, u64)>,
    idle_reported: bool,
}

impl LoadReport {
    /// Moves the report on at host TSC `now` (`per_s` TSC ticks per second), logging
    /// the boot figures and, once, the idle rate.
    pub fn update<A: Arch>(&mut self, vm: &Vm<A>, now: u64, per_s: u64) {
        if self.idle_reported {
            return;
        }
        let Some((_, ready_tsc)) = &self.at_ready else {
            if vm.console.lock().guest_ready {
                info!(target: "vm", "vm {} ({}) exits during boot: {}", vm.id, vm.config.name, vm.counters);
                self.at_ready = Some((vm.counters.clone(), now));
            }
            return;
        };
        let Some((from, tsc, pv_eois_from)) = &self.idle_from else {
            if now.saturating_sub(*ready_tsc) >= IDLE_SETTLE_S.saturating_mul(per_s) {
                self.idle_from = Some((vm.counters.clone(), now, vm.pv_eois()));
            }
            return;
        };
        if now.saturating_sub(*tsc) < IDLE_WINDOW_S.saturating_mul(per_s) {
            return;
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
        self.idle_reported = true;
    }
}
