//! The end of a self-test run: every VM's outcome checked against its expectation
//! (`selftest::failures`), the verdict logged and reported on isa-debug-exit.

use log::{error, info};

use crate::arch::backend::Arch;
use crate::arch::x86::debug_exit;
use crate::memory::addr::HostPhysAddr;
use crate::memory::direct_map;
use crate::memory::paging;
use crate::vm::instance::{Vm, VmState};
use crate::vm::selftest::{self, VmOutcome};

/// Checksum of the hypervisor's text and rodata (the same at the end of a run as at
/// its start, or a guest reached them).
pub fn hypervisor_checksum() -> u64 {
    let image = paging::image_layout();
    let text = direct_map::checksum(HostPhysAddr::new(image.text.0), image.text.1.saturating_sub(image.text.0));
    let rodata = direct_map::checksum(HostPhysAddr::new(image.rodata.0), image.rodata.1.saturating_sub(image.rodata.0));
    text ^ rodata.rotate_left(1)
}

/// How a VM ended; `final_checksum` is its memory's checksum when it stopped for
/// good.
pub fn outcome<A: Arch>(vm: &Vm<A>, final_checksum: Option<u64>) -> VmOutcome<'_> {
    // One console lock per VM: field temporaries live until the end of the literal,
    // so locking per field would deadlock on the spin lock.
    let console = vm.console.lock();
    let (passed_checks, failed_checks, checks_done) =
        (console.passed_checks, console.failed_checks, console.checks_done);
    drop(console);
    VmOutcome {
        name: &vm.config.name,
        expect: vm.config.expect,
        restart: vm.config.restart,
        starts: vm.starts,
        reason: match vm.state {
            VmState::Stopped(r) => Some(r),
            _ => None,
        },
        passed_checks,
        failed_checks,
        checks_done,
        canary_intact: vm.canary_intact(),
        checksum_at_stop: final_checksum.unwrap_or(0),
        checksum_now: vm.memory_checksum(),
    }
}

/// Logs the verdict on `outcomes` and ends the run with it on isa-debug-exit.
pub fn announce(outcomes: &[VmOutcome<'_>], hypervisor_intact: bool) -> ! {
    let failures = selftest::failures(outcomes, hypervisor_intact);
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
