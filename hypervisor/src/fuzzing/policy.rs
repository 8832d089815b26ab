//! The policy path from untrusted bytes: the device's acceptance rules
//! (`bulkhead_policy::device::verify`) with a fixed enrolled state, the boot-time choice
//! (with the input as bundle and as stored state), the bundle decoder,
//! and `Config::from_policy` on whatever policy decodes, including policies read
//! straight from the input (the bytes as a bundle body, so that every field reaches the
//! configuration checks without a valid signature). A configuration that passes must
//! keep every documented bound.

use alloc::vec::Vec;

use bulkhead_policy::bundle::{FORMAT, MAGIC};
use bulkhead_policy::model::MODEL_FORMAT;
use bulkhead_policy::{Bundle, DeviceState};

use crate::vm::config::{Config, MAX_LINKS_PER_VM, MAX_SERVICE_LINKS, MAX_VMS};

/// A laptop enrolled with the demo key in group `staff`.
fn state() -> DeviceState {
    DeviceState {
        trusted_key: Some(bulkhead_policy::DEMO_PUBLIC_KEY),
        device_id: [7; 16],
        group: Some("staff".into()),
        highest_version: 1,
        trusted_time: 1_700_000_000,
        ..DeviceState::default()
    }
}

pub fn run(data: &[u8]) {
    if let Ok(accepted) = bulkhead_policy::device::verify(data, &state(), 1_800_000_000) {
        check(Config::from_policy(&accepted.policy));
    }
    if let Ok(policy) = Bundle::decode(data).and_then(|b| b.policy()) {
        check(Config::from_policy(&policy));
    }
    // The boot-time choice with the input as the medium's bundle, the delivered one and
    // the stored state: whatever it picks passed the rules.
    let stored = crate::policy::nv::encode(&state());
    if let Ok(chosen) = crate::policy::at_boot::choose(Some(data), data, &stored, [0; 16], 1_800_000_000) {
        assert!(chosen.state.highest_version >= state().highest_version);
        check(Config::from_policy(&chosen.policy));
    }
    let _ = crate::policy::at_boot::choose(None, &[], data, [0; 16], 1_800_000_000);
    let as_body = Bundle {
        magic: MAGIC,
        format: FORMAT,
        model_format: MODEL_FORMAT,
        body: data.to_vec(),
        signer: [0; 32],
        signature: [0; 64],
        endorsements: Vec::new(),
    };
    if let Ok(policy) = as_body.policy() {
        check(Config::from_policy(&policy));
    }
}

/// The bounds a configuration the hypervisor runs always keeps.
fn check<E>(config: Result<Config, E>) {
    let Ok(config) = config else { return };
    assert!(config.vms.len() <= MAX_VMS);
    for vm in &config.vms {
        assert!(bulkhead_policy::syntax::valid_memory(vm.memory_bytes));
        assert!(bulkhead_policy::syntax::valid_vm_name(&vm.name));
    }
    for (i, link) in config.links.iter().enumerate() {
        assert!(link.a < config.vms.len() && link.b < config.vms.len() && link.a != link.b);
        assert!(config.links[..i].iter().all(|l| (l.a, l.b) != (link.a, link.b) && (l.a, l.b) != (link.b, link.a)));
    }
    for (vm, c) in config.vms.iter().enumerate() {
        let limit = if c.kind == crate::vm::config::Kind::Service { MAX_SERVICE_LINKS } else { MAX_LINKS_PER_VM };
        assert!(config.links_of(vm).count() <= limit);
    }
    assert!(config.hotkeys.len() < crate::switcher::hotkeys::MAX_HOTKEYS);
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_bytes() {
        super::super::Prng::new(0x9011).drive(3000, 512, super::run);
    }
}
