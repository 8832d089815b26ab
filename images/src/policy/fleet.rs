//! Policies built in Rust (the default image, benchmarks and tests), signed with the
//! demo key, and the boot module that carries them. A test that must hand the
//! hypervisor a value the TOML compiler would refuse builds it here directly.

use bulkhead_policy::model::{Hotkey, Link, NetRule, Network, Policy, Restart, Target, Vm, VmKind};

use crate::disk::{BootModule, FileSource};

/// A VM of `kind` started from boot module `image`, labelled with its name, never
/// restarted; change the rest with struct update syntax.
pub fn vm(name: &str, kind: VmKind, image: &str, memory_mib: u32) -> Vm {
    Vm {
        name: name.into(),
        kind,
        image: image.into(),
        initrd: None,
        modules: Vec::new(),
        cmdline: String::new(),
        memory_mib,
        vcpus: 1,
        label: name.into(),
        colour: 0x7f8c8d,
        restart: Restart::Never,
        devices: Vec::new(),
        network: None,
        needs_lease: false,
        disk: None,
        expect: None,
    }
}

/// A self-test payload VM.
pub fn payload(name: &str, image: &str, memory_mib: u32) -> Vm {
    vm(name, VmKind::Payload, image, memory_mib)
}

/// `network = { via, rule, allow }`.
pub fn network(via: &str, rule: NetRule, allow: &[&str]) -> Option<Network> {
    Some(Network { via: via.into(), rule, allow: allow.iter().map(|a| a.to_string()).collect() })
}

/// A demo policy (group `staff`, valid 90 days from now) running `vms` in this order.
pub fn demo_policy(vms: Vec<Vm>) -> Policy {
    let now = super::compile::now();
    Policy {
        version: 1,
        issued_at: now,
        expires_at: now + 90 * 86_400,
        target: Target::Group("staff".into()),
        organisation: "Bulkhead demo".into(),
        management: None,
        vms,
        links: Vec::new(),
        hotkeys: Vec::new(),
    }
}

/// `policy` with desktop links between these pairs of VMs.
pub fn with_links(mut policy: Policy, links: &[(&str, &str)]) -> Policy {
    policy.links.extend(links.iter().map(|(a, b)| Link { a: (*a).into(), b: (*b).into() }));
    policy
}

/// `policy` with this key map (`(action, combo)`).
pub fn with_hotkeys(mut policy: Policy, hotkeys: &[(&str, &str)]) -> Policy {
    policy.hotkeys.extend(hotkeys.iter().map(|(a, c)| Hotkey { action: (*a).into(), combo: (*c).into() }));
    policy
}

/// The boot module `policy`: `policy` signed with the demo key.
pub fn demo_module(policy: &Policy) -> BootModule {
    bundle_module(super::tools::sign_demo(policy))
}

/// The boot module `policy` carrying an already signed bundle.
pub fn bundle_module(bundle: Vec<u8>) -> BootModule {
    BootModule { name: bulkhead_policy::POLICY_MODULE.into(), source: FileSource::Bytes(bundle) }
}
