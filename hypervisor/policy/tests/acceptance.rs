//! The device's acceptance rules, one attack at a time.

use bulkhead_policy::bundle::signing::{SecretKey, endorse, sign_policy};
use bulkhead_policy::device::{DeviceState, Refusal, verify};
use bulkhead_policy::heartbeat::{Answer, Heartbeat, HeartbeatError, sign_answer};
use bulkhead_policy::model::{Policy, Target};

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn policy(version: u64, target: Target) -> Policy {
    Policy {
        version,
        issued_at: NOW - DAY,
        expires_at: NOW + 30 * DAY,
        target,
        organisation: "Example Corp IT".into(),
        management: None,
        vms: Vec::new(),
        links: Vec::new(),
        hotkeys: Vec::new(),
    }
}

fn staff(version: u64) -> Policy {
    policy(version, Target::Group("staff".into()))
}

fn fresh() -> DeviceState {
    DeviceState { device_id: [7; 16], ..DeviceState::default() }
}

fn key(seed: u8) -> SecretKey {
    SecretKey([seed; 32])
}

#[test]
fn first_bundle_enrols_the_laptop_in_its_key_and_group() {
    let k = key(1);
    let accepted = verify(&sign_policy(&staff(3), &k, vec![]), &fresh(), NOW).unwrap();
    assert!(accepted.enrolled);
    assert_eq!(accepted.state.trusted_key, Some(k.public()));
    assert_eq!(accepted.state.group.as_deref(), Some("staff"));
    assert_eq!(accepted.state.highest_version, 3);
    assert_eq!(accepted.state.trusted_time, NOW - DAY);
}

fn enrolled(k: &SecretKey, version: u64) -> DeviceState {
    verify(&sign_policy(&staff(version), k, vec![]), &fresh(), NOW).unwrap().state
}

#[test]
fn every_flipped_byte_is_refused() {
    let k = key(1);
    let state = enrolled(&k, 1);
    let bytes = sign_policy(&staff(2), &k, vec![]);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        assert!(verify(&bad, &state, NOW).is_err(), "flipping byte {i} was accepted");
    }
    let mut bad = bytes.clone();
    bad[bytes.len() - 70] ^= 1;
    let refusal = verify(&bad, &state, NOW).unwrap_err();
    assert!(matches!(refusal, Refusal::BadSignature | Refusal::Format(_)), "{refusal:?}");
}

#[test]
fn another_organisations_key_is_refused() {
    let state = enrolled(&key(1), 1);
    let refusal = verify(&sign_policy(&staff(2), &key(2), vec![]), &state, NOW).unwrap_err();
    assert!(matches!(refusal, Refusal::UnknownKey { .. }));
    assert!(refusal.to_string().contains("belongs to the organisation with key"), "{refusal}");
}

#[test]
fn older_versions_are_refused_equal_ones_accepted() {
    let k = key(1);
    let state = enrolled(&k, 5);
    let refusal = verify(&sign_policy(&staff(4), &k, vec![]), &state, NOW).unwrap_err();
    assert_eq!(refusal, Refusal::Rollback { version: 4, highest: 5 });
    assert!(refusal.to_string().contains("rollback"));
    assert!(verify(&sign_policy(&staff(5), &k, vec![]), &state, NOW).is_ok());
}

#[test]
fn expired_bundles_are_refused_even_with_the_clock_wound_back() {
    let k = key(1);
    let mut p = staff(2);
    p.expires_at = NOW - 10;
    let refusal = verify(&sign_policy(&p, &k, vec![]), &enrolled(&k, 1), NOW).unwrap_err();
    assert!(matches!(refusal, Refusal::Expired { .. }), "{refusal:?}");
    // A clock set back before the expiry does not help: the laptop trusted a later time.
    let mut state = enrolled(&k, 1);
    state.trusted_time = NOW;
    let refusal = verify(&sign_policy(&p, &k, vec![]), &state, NOW - 30 * DAY).unwrap_err();
    assert!(matches!(refusal, Refusal::Expired { .. }), "{refusal:?}");
}

#[test]
fn a_bundle_for_another_device_or_group_is_refused() {
    let k = key(1);
    let state = enrolled(&k, 1);
    let refusal = verify(&sign_policy(&policy(2, Target::Device([9; 16])), &k, vec![]), &state, NOW).unwrap_err();
    assert!(matches!(refusal, Refusal::WrongDevice { .. }));
    assert!(refusal.to_string().contains("09090909"), "{refusal}");
    assert!(verify(&sign_policy(&policy(2, Target::Device([7; 16])), &k, vec![]), &state, NOW).is_ok());
    let refusal =
        verify(&sign_policy(&policy(2, Target::Group("finance".into())), &k, vec![]), &state, NOW).unwrap_err();
    assert!(refusal.to_string().contains("\"finance\", but this laptop is in group \"staff\""), "{refusal}");
}

#[test]
fn a_rotated_key_needs_the_old_keys_endorsement_and_then_replaces_it() {
    let (old, new) = (key(1), key(2));
    let state = enrolled(&old, 1);
    let refusal = verify(&sign_policy(&staff(2), &new, vec![]), &state, NOW).unwrap_err();
    assert!(matches!(refusal, Refusal::UnknownKey { .. }));
    // Endorsed by someone else than the trusted key: still unknown.
    let forged = endorse(&key(3), &new.public(), 1);
    assert!(verify(&sign_policy(&staff(2), &new, vec![forged]), &state, NOW).is_err());
    // An endorsement whose signature was tampered with.
    let mut tampered = endorse(&old, &new.public(), 1);
    tampered.signature[5] ^= 1;
    let refusal = verify(&sign_policy(&staff(2), &new, vec![tampered]), &state, NOW).unwrap_err();
    assert_eq!(refusal, Refusal::BrokenEndorsement { index: 0 });

    let accepted = verify(&sign_policy(&staff(2), &new, vec![endorse(&old, &new.public(), 1)]), &state, NOW).unwrap();
    assert!(accepted.rotated);
    assert_eq!(accepted.state.trusted_key, Some(new.public()));
    // The old key is retired: it can no longer sign for this laptop.
    let refusal = verify(&sign_policy(&staff(3), &old, vec![]), &accepted.state, NOW).unwrap_err();
    assert!(matches!(refusal, Refusal::RetiredKey { .. }), "{refusal:?}");
    // The same endorsement again does not move the generation forward, but the new key
    // signing alone is fine.
    assert!(verify(&sign_policy(&staff(3), &new, vec![]), &accepted.state, NOW).is_ok());
}

#[test]
fn a_chain_of_two_rotations_is_followed() {
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let state = enrolled(&k1, 1);
    let chain = vec![endorse(&k1, &k2.public(), 1), endorse(&k2, &k3.public(), 2)];
    let accepted = verify(&sign_policy(&staff(2), &k3, chain.clone()), &state, NOW).unwrap();
    assert_eq!(accepted.state.trusted_key, Some(k3.public()));
    assert_eq!(accepted.state.key_generation, 2);
    // A chain out of order is broken.
    let reversed = vec![chain[1].clone(), chain[0].clone()];
    assert!(verify(&sign_policy(&staff(2), &k3, reversed), &state, NOW).is_err());
}

#[test]
fn heartbeats_are_bound_to_the_device_and_the_nonce() {
    let server = key(9);
    let hb = Heartbeat { device_id: [7; 16], nonce: [1; 16], server_time: NOW, latest_version: 2 };
    let answer = Answer::decode(&sign_answer(&server, &hb, None)).unwrap();
    assert_eq!(answer.verify(&server.public(), &[7; 16], &[1; 16]), Ok(hb.clone()));
    assert_eq!(answer.verify(&server.public(), &[7; 16], &[2; 16]), Err(HeartbeatError::NotForThisCheckin));
    assert_eq!(answer.verify(&server.public(), &[8; 16], &[1; 16]), Err(HeartbeatError::NotForThisCheckin));
    assert_eq!(answer.verify(&key(1).public(), &[7; 16], &[1; 16]), Err(HeartbeatError::BadSignature));
}

#[test]
fn oversized_and_trailing_bytes_are_refused() {
    let k = key(1);
    let mut bytes = sign_policy(&staff(1), &k, vec![]);
    bytes.push(0);
    assert!(verify(&bytes, &fresh(), NOW).is_err());
    assert!(verify(&vec![0u8; 20_000], &fresh(), NOW).is_err());
}

#[test]
fn the_demo_key_is_fixed_and_its_bundles_enrol_like_any_other() {
    use bulkhead_policy::bundle::signing::demo_key;
    assert_eq!(demo_key().public(), bulkhead_policy::DEMO_PUBLIC_KEY);
    assert_ne!(demo_key().public(), key(1).public());
    let accepted = verify(&sign_policy(&staff(1), &demo_key(), Vec::new()), &fresh(), NOW).unwrap();
    assert_eq!(accepted.state.trusted_key, Some(bulkhead_policy::DEMO_PUBLIC_KEY));
}
