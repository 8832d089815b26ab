//! The self-test payload batch both virtualisation backends run: one VM runs every
//! in-guest check, one triple-faults (and is restarted once by policy), one attacks
//! memory outside its VM, and a Multiboot kernel checks the state its loader gave it.

use bulkhead_policy::model::{Policy, Restart, Vm, VmKind};
use images::policy::fleet::{self, payload};

/// The four VMs, signed with the demo key. The Multiboot kernel is given the policy
/// bundle and the checks payload as its modules.
pub fn four_vms() -> Policy {
    fleet::demo_policy(vec![
        Vm { label: "Self-test".into(), expect: Some("bad-hypercall".into()), ..payload("checks", "checks", 16) },
        Vm { restart: Restart::Times(1), expect: Some("triple-fault".into()), ..payload("crasher", "triple-fault", 8) },
        Vm { expect: Some("npf".into()), ..payload("attacker", "attack", 8) },
        Vm {
            cmdline: "multiboot-test one=1 two".into(),
            modules: vec![bulkhead_policy::POLICY_MODULE.into(), "checks".into()],
            expect: Some("shutdown".into()),
            ..fleet::vm("multiboot", VmKind::Multiboot, "multiboot", 16)
        },
    ])
}
