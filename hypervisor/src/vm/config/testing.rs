//! Policies for unit tests: a VM with the given name, kind and memory (image `x`), to
//! which a test adds what it checks, and the configuration a list of them makes.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use bulkhead_policy::model::{Hotkey, Link, NetRule, Network, Policy, Restart, Target, Vm, VmKind};

use super::{Config, ConfigError, VmConfig};

pub fn vm(name: &str, kind: VmKind, memory_mib: u32) -> Vm {
    Vm {
        name: name.into(),
        kind,
        image: "x".into(),
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

/// A payload VM of 16 MiB owning `devices`.
pub fn with_devices(name: &str, devices: &[&str]) -> Vm {
    Vm { devices: devices.iter().map(|d| d.to_string()).collect(), ..vm(name, VmKind::Payload, 16) }
}

pub fn network(via: &str, rule: NetRule, allow: &[&str]) -> Option<Network> {
    Some(Network { via: via.into(), rule, allow: allow.iter().map(|a| a.to_string()).collect() })
}

pub fn policy(vms: Vec<Vm>, links: &[(&str, &str)], hotkeys: &[(&str, &str)]) -> Policy {
    Policy {
        version: 1,
        issued_at: 0,
        expires_at: 1,
        target: Target::Group("staff".into()),
        organisation: "Test".into(),
        management: None,
        vms,
        links: links.iter().map(|(a, b)| Link { a: (*a).into(), b: (*b).into() }).collect(),
        hotkeys: hotkeys.iter().map(|(a, c)| Hotkey { action: (*a).into(), combo: (*c).into() }).collect(),
    }
}

pub fn config(vms: Vec<Vm>) -> Result<Config, ConfigError> {
    Config::from_policy(&policy(vms, &[], &[]))
}

/// The VM configurations of `vms`, which must be valid.
pub fn vm_configs(vms: Vec<Vm>) -> Vec<VmConfig> {
    config(vms).expect("a valid test policy").vms
}
