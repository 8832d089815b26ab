//! The policy the laptop runs and its check-ins, behind one lock.
//!
//! Wiring (the boot path and the UEFI variables):
//! - [`install`] once at boot, with the verified policy and the state read from the
//!   UEFI variables; before it, `POLICY_CHECKIN` answers as for an unmanaged laptop.
//! - [`persist`] is called whenever the state changes (a check-in, an accepted
//!   bundle); it must write the state and, when given, the pending bundle (which the
//!   next boot verifies and runs).
//! - [`last_checkin`] and [`lease`] for VMs that need the offline lease.
//!
//! Time is Unix seconds from the host clock, passed in by the caller
//! (`vm::policy_service::unix_now`).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use bulkhead_abi::hypercall::{
    BundleRefusal, CHECKIN_GROUP_MAX, CHECKIN_SERVER_MAX, POLICY_ANSWER_MAX, PolicyAnswer, PolicyCheckin,
};
use bulkhead_policy::device::{self, Refusal};
use bulkhead_policy::heartbeat::{Answer, HeartbeatError, MAX_ANSWER};
use bulkhead_policy::lease::{self, Lease};
use bulkhead_policy::model::Management;
use bulkhead_policy::{DeviceState, Policy};

const _: () = assert!(POLICY_ANSWER_MAX as usize == MAX_ANSWER);
const _: () = assert!(CHECKIN_GROUP_MAX == device::MAX_GROUP);

/// An accepted update, waiting for the next boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub policy: Policy,
    pub bundle: Vec<u8>,
}

/// What an answer did, for the caller's log line and the guest's status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckinOutcome {
    /// Heartbeat accepted; no newer bundle.
    UpToDate { server_time: u64 },
    /// Heartbeat and bundle accepted: this policy is pending.
    Accepted { policy: Policy },
    /// Heartbeat accepted; the bundle refused.
    BundleRefused(Refusal),
    /// The answer itself did not count.
    Refused(HeartbeatError),
}

impl CheckinOutcome {
    /// What `POLICY_ANSWER` returns for it.
    pub fn status(&self) -> PolicyAnswer {
        match self {
            CheckinOutcome::UpToDate { .. } => PolicyAnswer::UpToDate,
            CheckinOutcome::Accepted { policy } => PolicyAnswer::Accepted { version: policy.version },
            CheckinOutcome::BundleRefused(r) => PolicyAnswer::BundleRefused(refusal_code(r)),
            CheckinOutcome::Refused(HeartbeatError::Malformed) => PolicyAnswer::Malformed,
            CheckinOutcome::Refused(HeartbeatError::BadSignature) => PolicyAnswer::BadSignature,
            CheckinOutcome::Refused(HeartbeatError::NotForThisCheckin) => PolicyAnswer::NotForThisCheckin,
        }
    }
}

pub fn refusal_code(r: &Refusal) -> BundleRefusal {
    match r {
        Refusal::Format(_) => BundleRefusal::Format,
        Refusal::BadSignature => BundleRefusal::BadSignature,
        Refusal::UnknownKey { .. } => BundleRefusal::UnknownKey,
        Refusal::RetiredKey { .. } => BundleRefusal::RetiredKey,
        Refusal::BrokenEndorsement { .. } => BundleRefusal::BrokenEndorsement,
        Refusal::Rollback { .. } => BundleRefusal::Rollback,
        Refusal::Expired { .. } => BundleRefusal::Expired,
        Refusal::NotYetValid { .. } => BundleRefusal::NotYetValid,
        Refusal::WrongDevice { .. } => BundleRefusal::WrongDevice,
        Refusal::WrongGroup { .. } => BundleRefusal::WrongGroup,
    }
}

/// The running policy and what the laptop remembers.
#[derive(Debug, Clone)]
pub struct Runtime {
    running: Policy,
    state: DeviceState,
    /// The nonce of the latest `POLICY_CHECKIN`, until an answer uses it.
    nonce: Option<[u8; 16]>,
    pending: Option<Pending>,
    /// The check-in time last written to the variable store.
    saved_checkin: u64,
}

/// A check-in without a new bundle is written to the variable store at most this
/// often: the service VM decides how often it checks in, and flash wears.
const SAVE_CHECKIN_EVERY_S: u64 = 60;

impl Runtime {
    pub fn new(running: Policy, state: DeviceState) -> Runtime {
        let saved_checkin = state.last_checkin;
        Runtime { running, state, nonce: None, pending: None, saved_checkin }
    }

    /// Persists a check-in that brought no new bundle, rate-limited.
    fn save_checkin(&mut self) {
        if self.state.last_checkin >= self.saved_checkin.saturating_add(SAVE_CHECKIN_EVERY_S) {
            persist(&self.state, None);
            self.saved_checkin = self.state.last_checkin;
        }
    }

    /// The newest accepted policy: the pending update, else the one running. Its
    /// management section (server, key, interval) is the one in force: IT signed it.
    pub fn effective(&self) -> &Policy {
        self.pending.as_ref().map_or(&self.running, |p| &p.policy)
    }

    fn management(&self) -> Option<&Management> {
        self.effective().management.as_ref()
    }

    pub fn state(&self) -> &DeviceState {
        &self.state
    }

    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// `POLICY_CHECKIN`: remembers `nonce` (replacing an unused one) and returns what the
    /// request carries; `None` when the policy names no management server (or one whose
    /// URL does not fit).
    pub fn checkin(&mut self, nonce: [u8; 16], network_generation: u32) -> Option<PolicyCheckin> {
        let management = self.management()?;
        let server = management.server.as_bytes();
        let group = self.state.group.as_deref().unwrap_or("").as_bytes();
        if server.len() > CHECKIN_SERVER_MAX || group.len() > CHECKIN_GROUP_MAX {
            return None;
        }
        let mut c = PolicyCheckin {
            device_id: self.state.device_id,
            nonce,
            running_version: self.state.highest_version,
            interval_s: management.checkin_interval_s,
            group_len: group.len() as u32,
            server_len: server.len() as u32,
            network_generation,
            ..PolicyCheckin::default()
        };
        c.group.iter_mut().zip(group).for_each(|(d, s)| *d = *s);
        c.server.iter_mut().zip(server).for_each(|(d, s)| *d = *s);
        self.nonce = Some(nonce);
        Some(c)
    }

    /// `POLICY_ANSWER` at host time `now`: `None` when the laptop is not managed (the
    /// call is unknown then). The outstanding nonce is used up by any answer.
    pub fn answer(&mut self, bytes: &[u8], now: u64) -> Option<CheckinOutcome> {
        let key = self.management()?.server_key;
        let Some(nonce) = self.nonce.take() else {
            return Some(CheckinOutcome::Refused(HeartbeatError::NotForThisCheckin));
        };
        let answer = match Answer::decode(bytes) {
            Ok(a) => a,
            Err(e) => return Some(CheckinOutcome::Refused(e)),
        };
        let heartbeat = match answer.verify(&key, &self.state.device_id, &nonce) {
            Ok(h) => h,
            Err(e) => return Some(CheckinOutcome::Refused(e)),
        };
        // The server vouches for its time; it only ever moves trusted time forward.
        self.state.trusted_time = self.state.trusted_time.max(heartbeat.server_time);
        self.state.last_checkin = self.state.trusted_time;
        let fresh = answer.bundle.and_then(|bundle| match device::verify(&bundle, &self.state, now) {
            // The version already accepted (rules allow an equal one): nothing new.
            Ok(a) if a.policy.version == self.state.highest_version => None,
            Ok(a) => Some(Ok((a, bundle))),
            Err(r) => Some(Err(r)),
        });
        Some(match fresh {
            None => {
                self.save_checkin();
                CheckinOutcome::UpToDate { server_time: heartbeat.server_time }
            }
            Some(Err(refusal)) => {
                self.save_checkin();
                CheckinOutcome::BundleRefused(refusal)
            }
            Some(Ok((accepted, bundle))) => {
                let mut state = accepted.state;
                state.last_checkin = self.state.last_checkin;
                state.trusted_time = state.trusted_time.max(self.state.trusted_time);
                self.state = state;
                persist(&self.state, Some(&bundle));
                self.saved_checkin = self.state.last_checkin;
                self.pending = Some(Pending { policy: accepted.policy.clone(), bundle });
                CheckinOutcome::Accepted { policy: accepted.policy }
            }
        })
    }

    /// The offline lease at clock time `now` (`bulkhead_policy::lease`): `None` for a
    /// laptop without a management section, whose VMs need no lease.
    pub fn lease(&self, now: u64) -> Option<Lease> {
        let m = self.running.management.as_ref()?;
        let s = &self.state;
        Some(lease::lease(now, s.trusted_time, s.last_checkin, self.running.issued_at, u64::from(m.offline_lease_s)))
    }
}

static RUNTIME: spin::Mutex<Option<Runtime>> = spin::Mutex::new(None);

/// Called once at boot with the verified policy and the laptop's state.
pub fn install(policy: Policy, state: DeviceState) {
    log::info!(
        target: "policy",
        "running policy v{}{}",
        policy.version,
        if policy.management.is_some() { ", managed" } else { ", stick-managed" }
    );
    *RUNTIME.lock() = Some(Runtime::new(policy, state));
}

/// Runs `f` on the runtime; `None` before [`install`].
pub fn with<T>(f: impl FnOnce(&mut Runtime) -> T) -> Option<T> {
    RUNTIME.lock().as_mut().map(f)
}

/// Unix seconds of the last server-signed check-in (this boot or remembered); `None`
/// before [`install`] or when there was none.
pub fn last_checkin() -> Option<u64> {
    with(|r| r.state.last_checkin).filter(|&t| t != 0)
}

/// See [`Runtime::lease`]; before [`install`] the lease does not hold.
pub fn lease(now: u64) -> Option<Lease> {
    with(|r| r.lease(now)).unwrap_or(Some(Lease::Expired { offline_s: 0, lease_s: 0 }))
}

/// The accepted update waiting for the next boot.
pub fn pending() -> Option<Pending> {
    with(|r| r.pending.clone()).flatten()
}

/// Makes `state` (and `bundle`, the accepted update) survive a reboot: the bundle
/// first, then the state, so a cut between the two leaves a delivered bundle the old
/// state accepts at the next boot, never a highest version without its bundle.
pub fn persist(state: &DeviceState, bundle: Option<&[u8]>) {
    if let Some(bundle) = bundle {
        match super::nv::store_bundle(bundle) {
            Ok(()) => log::info!(target: "policy", "delivered bundle saved ({} bytes)", bundle.len()),
            Err(e) => {
                log::error!(target: "policy", "cannot save the delivered bundle: {e}; it applies until the next boot only");
                return;
            }
        }
    }
    match super::nv::store_state(state) {
        Ok(()) => log::debug!(
            target: "policy",
            "state saved: version {} trusted time {} last check-in {}",
            state.highest_version,
            state.trusted_time,
            state.last_checkin
        ),
        Err(e) => log::error!(target: "policy", "cannot save the policy state: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use bulkhead_policy::bundle::signing::{SecretKey, sign_policy};
    use bulkhead_policy::heartbeat::{Heartbeat, sign_answer};
    use bulkhead_policy::model::Target;

    use super::*;

    const ID: [u8; 16] = [7; 16];

    fn it_key() -> SecretKey {
        SecretKey([1; 32])
    }

    fn server_key() -> SecretKey {
        SecretKey([2; 32])
    }

    fn policy(version: u64, group: &str) -> Policy {
        Policy {
            version,
            issued_at: 1_000,
            expires_at: 1_000_000,
            target: Target::Group(group.into()),
            organisation: "Example Corp IT".into(),
            management: Some(Management {
                server: "http://10.0.2.2:8470".into(),
                checkin_interval_s: 60,
                offline_lease_s: 3600,
                server_key: server_key().public(),
            }),
            vms: vec![],
            links: vec![],
            hotkeys: vec![],
        }
    }

    fn enrolled() -> Runtime {
        let state = DeviceState {
            trusted_key: Some(it_key().public()),
            device_id: ID,
            group: Some("staff".into()),
            highest_version: 1,
            trusted_time: 5_000,
            ..DeviceState::default()
        };
        Runtime::new(policy(1, "staff"), state)
    }

    fn answer(nonce: [u8; 16], server_time: u64, bundle: Option<Vec<u8>>) -> Vec<u8> {
        let heartbeat = Heartbeat { device_id: ID, nonce, server_time, latest_version: 2 };
        sign_answer(&server_key(), &heartbeat, bundle)
    }

    #[test]
    fn a_checkin_carries_the_laptops_identity_and_the_server() {
        let mut r = enrolled();
        let c = r.checkin([3; 16], 4).unwrap();
        assert_eq!((c.device_id, c.nonce, c.running_version, c.interval_s), (ID, [3; 16], 1, 60));
        assert_eq!((c.group(), c.server(), c.network_generation), (&b"staff"[..], &b"http://10.0.2.2:8470"[..], 4));
        let mut unmanaged = policy(1, "staff");
        unmanaged.management = None;
        let mut r = Runtime::new(unmanaged, DeviceState::default());
        assert!(r.checkin([3; 16], 0).is_none());
        assert!(r.answer(&answer([3; 16], 6_000, None), 6_000).is_none(), "unknown call when unmanaged");
        assert!(r.lease(u64::MAX).is_none(), "no lease without a server");
    }

    #[test]
    fn a_newer_bundle_is_pending_and_the_nonce_works_once() {
        let mut r = enrolled();
        r.checkin([3; 16], 0).unwrap();
        let v2 = sign_policy(&policy(2, "staff"), &it_key(), vec![]);
        let bytes = answer([3; 16], 6_000, Some(v2.clone()));
        let outcome = r.answer(&bytes, 6_000).unwrap();
        assert_eq!(outcome.status(), PolicyAnswer::Accepted { version: 2 });
        assert_eq!(r.pending().unwrap().bundle, v2);
        assert_eq!((r.state().highest_version, r.state().last_checkin), (2, 6_000));
        assert_eq!(r.checkin([4; 16], 0).unwrap().running_version, 2);
        // The same answer again: its nonce is spent.
        assert_eq!(r.answer(&bytes, 6_000).unwrap().status(), PolicyAnswer::NotForThisCheckin);
        // The next check-in with the v2 bundle again is up to date, not a second update.
        r.checkin([5; 16], 0).unwrap();
        let again = r.answer(&answer([5; 16], 7_000, Some(v2)), 7_000).unwrap();
        assert_eq!(again.status(), PolicyAnswer::UpToDate);
        assert_eq!(r.state().last_checkin, 7_000);
    }

    #[test]
    fn forged_or_stale_answers_change_nothing() {
        let mut r = enrolled();
        r.checkin([3; 16], 0).unwrap();
        let heartbeat = Heartbeat { device_id: ID, nonce: [3; 16], server_time: 9_000, latest_version: 2 };
        let forged = sign_answer(&it_key(), &heartbeat, None);
        assert_eq!(r.answer(&forged, 9_000).unwrap().status(), PolicyAnswer::BadSignature);
        // The forgery used the nonce up: the genuine answer that follows is refused too.
        assert_eq!(r.answer(&answer([3; 16], 9_000, None), 9_000).unwrap().status(), PolicyAnswer::NotForThisCheckin);
        r.checkin([4; 16], 0).unwrap();
        assert_eq!(r.answer(&answer([3; 16], 9_000, None), 9_000).unwrap().status(), PolicyAnswer::NotForThisCheckin);
        r.checkin([5; 16], 0).unwrap();
        assert_eq!(r.answer(b"garbage", 9_000).unwrap().status(), PolicyAnswer::Malformed);
        assert_eq!(r.state(), enrolled().state());
        assert!(!r.lease(1_000_000).unwrap().holds(), "never checked in, long after the issue time");
    }

    #[test]
    fn a_refused_bundle_still_counts_the_checkin_and_time_only_moves_forward() {
        let mut r = enrolled();
        r.checkin([3; 16], 0).unwrap();
        let other_group = sign_policy(&policy(2, "finance"), &it_key(), vec![]);
        // The server's clock is behind the trusted time: the check-in is recorded at
        // the trusted time.
        let outcome = r.answer(&answer([3; 16], 4_000, Some(other_group)), 4_000).unwrap();
        assert_eq!(outcome.status(), PolicyAnswer::BundleRefused(BundleRefusal::WrongGroup));
        assert_eq!((r.state().last_checkin, r.state().trusted_time, r.state().highest_version), (5_000, 5_000, 1));
        assert!(r.pending().is_none());
        assert!(r.lease(5_000 + 3_599).unwrap().holds() && !r.lease(5_000 + 3_600).unwrap().holds());
        r.checkin([4; 16], 0).unwrap();
        let old = sign_policy(&policy(0, "staff"), &it_key(), vec![]);
        let outcome = r.answer(&answer([4; 16], 6_000, Some(old)), 6_000).unwrap();
        assert_eq!(outcome.status(), PolicyAnswer::BundleRefused(BundleRefusal::Rollback));
    }
}
