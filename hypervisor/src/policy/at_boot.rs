//! Which bundle the laptop runs, decided before any VM starts.
//!
//! There are two candidates: the bundle on the boot medium (module `policy`) and the
//! newest one a management server delivered (kept in a UEFI variable). Each is checked
//! by the same rules (`bulkhead_policy::device::verify`) against the state the laptop
//! remembers. The newer valid one runs. When the medium's bundle is refused and no
//! delivered bundle can stand in for it, nothing starts and the medium's refusal is
//! the reason on the safe-mode screen; a delivered bundle that no longer verifies
//! (expired, say) is only logged.
//!
//! The state the accepted bundle implies (enrolment, highest version, rotated key,
//! trusted time) is written back before any VM starts, so a rollback is refused on
//! the next boot too.
#![forbid(unsafe_code)]

use bulkhead_policy::device::{self, Accepted, DeviceState, Refusal};
use bulkhead_policy::{DeviceId, Policy};

use super::nv::StateError;

/// Where the running bundle came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleSource {
    /// The boot medium (stick or installed disk).
    Medium,
    /// A management server, earlier (the UEFI variable).
    Delivered,
}

/// The bundle chosen at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub policy: Policy,
    /// The state to persist (and run with).
    pub state: DeviceState,
    pub source: BundleSource,
    pub enrolled: bool,
    pub rotated: bool,
    /// Why the other candidate was passed over, for the log.
    pub passed_over: Option<(BundleSource, Refusal)>,
}

/// Why nothing may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootRefusal {
    /// The image has no `policy` module.
    NoBundle,
    State(StateError),
    Refused(Refusal),
}

impl core::fmt::Display for BootRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootRefusal::NoBundle => f.write_str("the image carries no signed policy (boot module `policy`)"),
            BootRefusal::State(e) => write!(f, "{e}"),
            BootRefusal::Refused(r) => write!(f, "{r}"),
        }
    }
}

/// Decides what runs. `stored_state` is the state variable's bytes (empty: never
/// enrolled, and `new_device_id` becomes this laptop's id); `delivered` the delivered
/// bundle's (empty: none); `now` the clock in Unix seconds.
pub fn choose(
    medium: Option<&[u8]>,
    delivered: &[u8],
    stored_state: &[u8],
    new_device_id: DeviceId,
    now: u64,
) -> Result<Chosen, BootRefusal> {
    let state = match super::nv::decode(stored_state) {
        Ok(Some(state)) => state,
        Ok(None) => DeviceState { device_id: new_device_id, ..DeviceState::default() },
        Err(e) => return Err(BootRefusal::State(e)),
    };
    let from_medium = medium.map(|bytes| device::verify(bytes, &state, now));
    // A delivered bundle exists only on an enrolled laptop; it must verify against the
    // state as it is, like the medium's.
    let from_server = (!delivered.is_empty()).then(|| device::verify(delivered, &state, now));
    let pick = |a: Accepted, source: BundleSource, passed_over: Option<(BundleSource, Refusal)>| Chosen {
        policy: a.policy,
        state: a.state,
        source,
        enrolled: a.enrolled,
        rotated: a.rotated,
        passed_over,
    };
    match (from_medium, from_server) {
        (None, None) => Err(BootRefusal::NoBundle),
        (Some(Ok(m)), Some(Ok(d))) if d.policy.version > m.policy.version => Ok(pick(d, BundleSource::Delivered, None)),
        (Some(Ok(m)), other) => {
            Ok(pick(m, BundleSource::Medium, other.and_then(Result::err).map(|r| (BundleSource::Delivered, r))))
        }
        // The medium is older than what the server delivered (or unusable for another
        // reason) while the delivered bundle holds: run the delivered one. A refused
        // medium without a delivered stand-in is the reason nothing starts.
        (Some(Err(r)), Some(Ok(d))) => Ok(pick(d, BundleSource::Delivered, Some((BundleSource::Medium, r)))),
        (Some(Err(r)), _) => Err(BootRefusal::Refused(r)),
        (None, Some(Ok(d))) => Ok(pick(d, BundleSource::Delivered, None)),
        (None, Some(Err(_))) => Err(BootRefusal::NoBundle),
    }
}

/// The state after a boot: the trusted time moves to the clock when the clock is
/// ahead of it (so a clock wound back later is noticed), never backwards.
pub fn advance_trusted_time(state: &mut DeviceState, now: u64) {
    state.trusted_time = state.trusted_time.max(now);
}

/// The boot module holding the signed bundle.
pub const POLICY_MODULE: &str = bulkhead_policy::POLICY_MODULE;

/// Most bytes a state variable may have before it counts as damaged (it is 192).
const STATE_READ_LIMIT: usize = 4096;

/// Runs the boot-time decision on what the loader handed over, logs it, and persists
/// the resulting state. `now` is the CMOS clock in Unix seconds.
pub fn start(boot_info: &bulkhead_abi::BootInfo, now: u64) -> Result<Chosen, BootRefusal> {
    use crate::host::handoff;
    use bulkhead_policy::device::{device_id_hex, fingerprint};
    use log::{error, info, warn};

    let medium = handoff::module_data(handoff::modules(boot_info), POLICY_MODULE);
    let stored = handoff::phys_bytes(boot_info.nv_policy_state, STATE_READ_LIMIT);
    let delivered = handoff::phys_bytes(boot_info.nv_policy_bundle, bulkhead_abi::nv::MAX_BUNDLE_VARIABLE);
    if !crate::host::uefi_runtime::available() {
        warn!(target: "policy", "no UEFI runtime services: accepted versions cannot be remembered across reboots");
    }
    let mut chosen = choose(medium, delivered, stored, crate::arch::x86::instr::random_128(), now)?;
    advance_trusted_time(&mut chosen.state, now);
    let state = &chosen.state;
    let key = state.trusted_key.map(|k| fingerprint(&k));
    let key = key.as_ref().map_or("-", |k| k.as_str());
    let group = state.group.as_deref().unwrap_or("-");
    if chosen.enrolled {
        info!(target: "policy", "enrolled this laptop: organisation key {key}, group {group}");
    }
    if chosen.rotated {
        info!(target: "policy", "key rotation accepted: this laptop now trusts key {key} only");
    }
    info!(target: "policy", "device id {}, group {group}, key {key}", device_id_hex(&state.device_id));
    let p = &chosen.policy;
    let from = match chosen.source {
        BundleSource::Medium => "the boot medium",
        BundleSource::Delivered => "the management server's last delivery",
    };
    info!(
        target: "policy",
        "running policy version {} of {:?} from {from}, valid until {} (Unix time)",
        p.version, p.organisation, p.expires_at
    );
    if let Some((source, refusal)) = &chosen.passed_over {
        let which = if *source == BundleSource::Medium { "the boot medium's" } else { "the delivered" };
        warn!(target: "policy", "{which} policy was not used: {refusal}");
    }
    if super::nv::decode(stored).ok().flatten().as_ref() != Some(&chosen.state) {
        match super::nv::store_state(&chosen.state) {
            Ok(()) => info!(target: "policy", "state saved (highest version {})", chosen.state.highest_version),
            Err(e) => error!(target: "policy", "cannot save the policy state: {e}"),
        }
    }
    Ok(chosen)
}

/// The boot screen's policy line, and whether it is a warning.
pub fn boot_screen_line(chosen: &Chosen) -> (alloc::string::String, bool) {
    if chosen.state.trusted_key == Some(bulkhead_policy::DEMO_PUBLIC_KEY) {
        return (
            alloc::string::String::from("DEMO policy: signed with the public demo key, not for real laptops"),
            true,
        );
    }
    (alloc::format!("Policy version {} from {}", chosen.policy.version, chosen.policy.organisation), false)
}

#[cfg(test)]
mod tests {
    use bulkhead_policy::bundle::signing::{SecretKey, sign_policy};
    use bulkhead_policy::model::Target;

    use super::*;
    use crate::policy::nv;

    const NOW: u64 = 1_800_000_000;

    fn policy(version: u64) -> Policy {
        Policy {
            version,
            issued_at: NOW - 100,
            expires_at: NOW + 86_400,
            target: Target::Group("staff".into()),
            organisation: "Example".into(),
            management: None,
            vms: Vec::new(),
            links: Vec::new(),
            hotkeys: Vec::new(),
        }
    }

    fn signed(version: u64) -> Vec<u8> {
        sign_policy(&policy(version), &SecretKey([1; 32]), Vec::new())
    }

    #[test]
    fn first_boot_enrols_with_the_new_device_id() {
        let chosen = choose(Some(&signed(1)), &[], &[], [4; 16], NOW).unwrap();
        assert!(chosen.enrolled);
        assert_eq!(chosen.state.device_id, [4; 16]);
        assert_eq!(chosen.source, BundleSource::Medium);
    }

    #[test]
    fn a_newer_delivered_bundle_wins_and_an_older_medium_alone_is_a_rollback() {
        let state = choose(Some(&signed(2)), &[], &[], [4; 16], NOW).unwrap().state;
        let stored = nv::encode(&state);
        let chosen = choose(Some(&signed(1)), &signed(3), &stored, [0; 16], NOW).unwrap();
        assert_eq!((chosen.source, chosen.policy.version), (BundleSource::Delivered, 3));
        assert!(matches!(chosen.passed_over, Some((BundleSource::Medium, Refusal::Rollback { .. }))));
        let refusal = choose(Some(&signed(1)), &[], &stored, [0; 16], NOW).unwrap_err();
        assert_eq!(refusal, BootRefusal::Refused(Refusal::Rollback { version: 1, highest: 2 }));
        // A newer medium beats an older delivered bundle.
        let chosen = choose(Some(&signed(4)), &signed(3), &stored, [0; 16], NOW).unwrap();
        assert_eq!((chosen.source, chosen.policy.version), (BundleSource::Medium, 4));
    }

    #[test]
    fn damaged_state_and_missing_bundle_refuse() {
        assert_eq!(choose(None, &[], &[], [0; 16], NOW).unwrap_err(), BootRefusal::NoBundle);
        assert_eq!(
            choose(Some(&signed(1)), &[], &[1, 2, 3], [0; 16], NOW).unwrap_err(),
            BootRefusal::State(StateError::Damaged)
        );
    }
}
