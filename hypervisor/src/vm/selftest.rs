//! The self-test verdict: after every test VM has stopped for good, did each end the way
//! its configuration expects, did every in-guest check pass, and is everything the
//! hostile VMs tried to reach unchanged?
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::arch::exit::StopReason;
use crate::vm::config::{Expect, Restart};

/// What the verdict needs to know about one VM.
#[derive(Debug, Clone)]
pub struct VmOutcome<'a> {
    pub name: &'a str,
    pub expect: Option<Expect>,
    pub restart: Restart,
    pub starts: u32,
    pub reason: Option<StopReason>,
    pub passed_checks: u32,
    pub failed_checks: u32,
    pub checks_done: bool,
    pub canary_intact: bool,
    /// Checksum when the VM stopped, and now.
    pub checksum_at_stop: u64,
    pub checksum_now: u64,
}

fn matches(expect: Expect, reason: &StopReason) -> bool {
    matches!(
        (expect, reason),
        (Expect::TripleFault, StopReason::TripleFault)
            | (Expect::NestedPageFault, StopReason::NestedPageFault { .. })
            | (Expect::BadHypercall, StopReason::BadHypercall { .. })
            | (Expect::Shutdown, StopReason::GuestShutdown { .. })
            | (Expect::DmaFault, StopReason::DmaFault { .. })
    )
}

/// Every reason the run failed; empty means pass.
pub fn failures(vms: &[VmOutcome<'_>], hypervisor_intact: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !hypervisor_intact {
        out.push("the hypervisor's own code or read-only data changed".into());
    }
    for vm in vms {
        let name = vm.name;
        match (vm.expect, &vm.reason) {
            (Some(expect), Some(reason)) if !matches(expect, reason) => {
                out.push(format!("{name}: expected to end with {expect:?}, ended with {reason:?}"))
            }
            (Some(expect), None) => out.push(format!("{name}: expected to end with {expect:?}, still running")),
            _ => {}
        }
        if let Restart::Times(n) = vm.restart
            && vm.starts != n.saturating_add(1)
        {
            out.push(format!("{name}: should have been restarted {n} time(s), was started {} time(s)", vm.starts));
        }
        if vm.failed_checks > 0 {
            out.push(format!("{name}: {} in-guest check(s) failed", vm.failed_checks));
        }
        if vm.passed_checks > 0 && !vm.checks_done {
            out.push(format!("{name}: checks started but never finished"));
        }
        if !vm.canary_intact {
            out.push(format!("{name}: its canary page was overwritten"));
        }
        if vm.checksum_at_stop != vm.checksum_now {
            out.push(format!("{name}: its memory changed after it stopped"));
        }
    }
    if !vms.iter().any(|v| v.checks_done) {
        out.push("no VM reported CHECKS DONE".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::exit::NpfInfo;
    use crate::memory::addr::GuestPhysAddr;

    fn ok_vm(name: &str) -> VmOutcome<'_> {
        VmOutcome {
            name,
            expect: Some(Expect::BadHypercall),
            restart: Restart::Never,
            starts: 1,
            reason: Some(StopReason::BadHypercall { nr: 1, arg: 0 }),
            passed_checks: 10,
            failed_checks: 0,
            checks_done: true,
            canary_intact: true,
            checksum_at_stop: 7,
            checksum_now: 7,
        }
    }

    #[test]
    fn a_clean_run_passes() {
        assert!(failures(&[ok_vm("checks")], true).is_empty());
    }

    #[test]
    fn every_kind_of_breakage_is_reported() {
        let mut vm = ok_vm("attack");
        vm.expect = Some(Expect::NestedPageFault);
        vm.reason = Some(StopReason::TripleFault);
        vm.canary_intact = false;
        vm.checksum_now = 8;
        vm.restart = Restart::Times(1);
        vm.failed_checks = 2;
        let f = failures(&[vm], false);
        assert_eq!(f.len(), 6, "{f:?}");
        let npf = StopReason::NestedPageFault { gpa: GuestPhysAddr::new(0), info: NpfInfo::default() };
        assert!(matches(Expect::NestedPageFault, &npf));
    }
}
