//! The service VM's check-in hypercalls on the hypervisor's side: the policy runtime
//! with the host clock and fresh nonces, one log line per answer, and the desktops'
//! network rules from an accepted policy (applied at once; VM changes wait for the
//! next boot).

use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_abi::hypercall::{PolicyAnswer, PolicyCheckin};
use bulkhead_policy::Policy;
use bulkhead_policy::model::NetRule as PolicyRule;
use log::{info, warn};

use crate::log_limit::Source;
use crate::policy::runtime::{self, CheckinOutcome};
use crate::vm::config::NetRule;
use crate::vm::desktop::HOST_TIME;
use crate::vm::service_net::ServiceLink;

/// Unix seconds now, from the host clock read at boot and the TSC since (0 when the
/// clock could not be read: trusted time then decides alone).
pub fn unix_now() -> u64 {
    HOST_TIME.get().map_or(0, |t| t.at(crate::arch::x86::instr::rdtsc()).sec)
}

/// `POLICY_CHECKIN` for service VM `vm`.
pub fn checkin(vm: u32, network_generation: u64) -> Option<PolicyCheckin> {
    let nonce = crate::policy::nonce::fresh();
    let generation = u32::try_from(network_generation).unwrap_or(u32::MAX);
    let checkin = runtime::with(|r| r.checkin(nonce, generation)).flatten();
    if checkin.is_some() {
        crate::limited!(Source::Policy, vm, log::debug!(target: "policy", "check-in started"));
    }
    checkin
}

/// `POLICY_ANSWER` for service VM `vm`: the status for the guest, and the newly
/// accepted policy.
pub fn answer(vm: u32, bytes: &[u8]) -> Option<(PolicyAnswer, Option<Policy>)> {
    let now = unix_now();
    let outcome = runtime::with(|r| r.answer(bytes, now)).flatten()?;
    let status = outcome.status();
    match &outcome {
        CheckinOutcome::UpToDate { server_time } => {
            crate::limited!(
                Source::Policy,
                vm,
                info!(target: "policy", "check-in: up to date (server time {server_time})")
            );
        }
        CheckinOutcome::Accepted { policy } => {
            crate::limited!(
                Source::Policy,
                vm,
                info!(target: "policy", "policy v{} accepted; network rules applied now, VM changes at next boot", policy.version)
            );
        }
        CheckinOutcome::BundleRefused(refusal) => {
            crate::limited!(
                Source::Policy,
                vm,
                warn!(target: "policy", "check-in: the server's bundle is refused: {refusal}")
            );
        }
        CheckinOutcome::Refused(e) => {
            crate::limited!(Source::Policy, vm, warn!(target: "policy", "check-in answer refused: {e}"));
        }
    }
    let accepted = match outcome {
        CheckinOutcome::Accepted { policy } => Some(policy),
        _ => None,
    };
    Some((status, accepted))
}

/// Whether an allow-list entry can go into the configuration text as it is (the
/// service VM parses and checks it again): `CIDR[:port]` characters only.
fn plain_entry(entry: &str) -> bool {
    !entry.is_empty()
        && entry.len() <= 64
        && entry.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'/' || b == b':')
}

/// Each link's rule under `policy`: the desktop's network there, or `Isolated` when
/// the policy no longer gives it one (or gives it an entry that cannot be used).
pub fn rules_from_policy(policy: &Policy, links: &[ServiceLink]) -> Vec<NetRule> {
    links
        .iter()
        .map(|link| {
            let network = policy.vms.iter().find(|vm| vm.name == link.desktop).and_then(|vm| vm.network.as_ref());
            match network.map(|n| (n.rule, &n.allow)) {
                Some((PolicyRule::Internet, _)) => NetRule::Internet,
                Some((PolicyRule::CorporateOnly, allow)) if allow.iter().all(|a| plain_entry(a)) => {
                    NetRule::CorporateOnly(allow.iter().map(String::clone).collect())
                }
                _ => NetRule::Isolated,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bulkhead_policy::model::{Network, Restart, Target, Vm, VmKind};

    use super::*;

    fn vm(name: &str, network: Option<Network>) -> Vm {
        Vm {
            name: name.into(),
            kind: VmKind::Linux,
            image: "bzImage".into(),
            initrd: None,
            modules: vec![],
            cmdline: String::new(),
            memory_mib: 256,
            vcpus: 1,
            label: name.into(),
            colour: 0,
            restart: Restart::Never,
            devices: vec![],
            network,
            needs_lease: false,
            disk: None,
            expect: None,
        }
    }

    fn net(rule: PolicyRule, allow: &[&str]) -> Option<Network> {
        Some(Network { via: "net".into(), rule, allow: allow.iter().map(|a| String::from(*a)).collect() })
    }

    fn link(name: &str) -> ServiceLink {
        ServiceLink { desktop: name.into(), desktop_mac: [2, 0, 0, 0, 0, 1], rule: NetRule::Internet }
    }

    #[test]
    fn each_link_takes_its_desktops_rule_and_missing_ones_are_isolated() {
        let policy = Policy {
            version: 2,
            issued_at: 0,
            expires_at: 1,
            target: Target::Group("staff".into()),
            organisation: String::new(),
            management: None,
            vms: vec![
                vm("corporate", net(PolicyRule::CorporateOnly, &["10.0.2.2/32:8080"])),
                vm("personal", net(PolicyRule::Internet, &[])),
                vm("odd", net(PolicyRule::CorporateOnly, &["10.0.0.0/8 rule=internet"])),
                vm("offline", None),
            ],
            links: vec![],
            hotkeys: vec![],
        };
        let links = [link("personal"), link("corporate"), link("odd"), link("offline"), link("gone")];
        assert_eq!(
            rules_from_policy(&policy, &links),
            vec![
                NetRule::Internet,
                NetRule::CorporateOnly(vec!["10.0.2.2/32:8080".into()]),
                NetRule::Isolated,
                NetRule::Isolated,
                NetRule::Isolated,
            ]
        );
    }
}
