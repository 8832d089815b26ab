//! The signed policy on a booted laptop, one attack at a time, on one laptop whose
//! UEFI variables persist from boot to boot like a real one's flash:
//!
//! - a good bundle enrols the laptop (key, group, device id) and starts its VM;
//! - refused: a bundle with one flipped byte, one signed by another organisation's
//!   key, an older version than the one accepted (rollback, across the reboot), an
//!   expired one, and one for another device id (mix-and-match);
//! - a bundle signed by a rotated key with the old key's endorsement is accepted;
//!   then a key without endorsement and the retired old key are refused.
//!
//! Every refusal must show the safe-mode screen with its reason, compared pixel for
//! pixel with the same screen rendered on the host, and start no VM.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulkhead_policy::bundle::signing::{SecretKey, endorse, sign_policy};
use bulkhead_policy::model::{Policy, Restart, Target, Vm, VmKind};
use tests::screen::Screenshot;
use tests::{Machine, image};

const SCENARIO: &str = "policy-attacks";
const TITLE: &str = "Bulkhead refused this laptop's policy";
const HINT_OTHER: &str = "Ask IT for a Bulkhead stick signed for this laptop. Nothing on this laptop was changed.";
const HINT_ROLLBACK: &str = "Use the newest Bulkhead stick from IT: this laptop does not go back to an older policy. Nothing on this laptop \
     was changed.";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

fn key(seed: u8) -> SecretKey {
    SecretKey([seed; 32])
}

/// A policy with one self-test VM, valid for a day.
fn policy(version: u64) -> Policy {
    Policy {
        version,
        issued_at: now() - 60,
        expires_at: now() + 86_400,
        target: Target::Group("staff".into()),
        organisation: "Example Corp IT".into(),
        management: None,
        vms: vec![Vm {
            name: "checks".into(),
            kind: VmKind::Payload,
            image: "checks".into(),
            initrd: None,
            modules: vec![],
            cmdline: String::new(),
            memory_mib: 16,
            vcpus: 1,
            label: "Self-test".into(),
            colour: 0x2980b9,
            restart: Restart::Never,
            devices: vec![],
            network: None,
            needs_lease: false,
            disk: None,
            expect: None,
        }],
        links: vec![],
        hotkeys: vec![],
    }
}

struct Laptop {
    dir: PathBuf,
    boots: usize,
}

impl Laptop {
    fn new() -> Laptop {
        Laptop { dir: image::scenario_dir(SCENARIO), boots: 0 }
    }

    /// Boots the laptop from a stick carrying `bundle`; the first boot starts with
    /// empty variables, every later one with what the earlier boots left.
    fn boot(&mut self, name: &str, bundle: Vec<u8>) -> Machine {
        let stick = image::build_payload_image_at(&self.dir.join(format!("{name}.img")), "", bundle);
        self.boots += 1;
        let tune = |c: &mut images::qemu::MachineConfig| {
            c.memory_mib = 512;
            c.cpus = 1;
        };
        let mut m =
            if self.boots == 1 { Machine::boot(name, &stick, tune) } else { Machine::boot_again(name, &stick, tune) };
        m.connect_qmp();
        m
    }

    /// The bundle must be accepted: its version runs and its VM is created.
    fn accepted(&mut self, name: &str, bundle: Vec<u8>, version: u64) -> String {
        let mut m = self.boot(name, bundle);
        m.expect(&format!("running policy version {version} "), Duration::from_secs(120));
        m.expect("created:", Duration::from_secs(60));
        let serial = m.serial();
        drop(m);
        serial
    }

    /// The bundle must be refused with `reason`, on the screen as in the log, and no
    /// VM may be created.
    fn refused(&mut self, name: &str, bundle: Vec<u8>, reason: &str, hint: &str) {
        self.refused_for(name, bundle, hint, |logged| logged == reason);
    }

    /// Like [`Laptop::refused`], for a reason the test can only check in part.
    fn refused_for(&mut self, name: &str, bundle: Vec<u8>, hint: &str, reason_ok: impl Fn(&str) -> bool) {
        let mut m = self.boot(name, bundle);
        let line = m.expect("no VM started", Duration::from_secs(120));
        let reason = line.split("no VM started: policy refused: ").nth(1).map(str::trim).unwrap_or_default();
        assert!(reason_ok(reason), "{name}: unexpected refusal: {line}");
        let reason = reason.to_string();
        let reason = reason.as_str();
        let expected = Screenshot::render(1280, 800, |canvas| {
            ui::safe_mode::draw(canvas, &ui::safe_mode::SafeMode { title: TITLE, reason, hint })
        });
        let mut differing = usize::MAX;
        for _ in 0..10 {
            let shot = m.screendump(name);
            differing = shot.differing_pixels(&expected);
            if differing == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if differing != 0 {
            let _ = expected.save(&self.dir.join(format!("{name}-expected.png")));
            m.fail(&format!("{name}: the screen differs from the safe-mode screen in {differing} pixels"));
        }
        assert!(!m.serial().contains("created:"), "{name}: a VM was created although the policy was refused");
        drop(m);
    }
}

fn device_id(serial: &str) -> [u8; 16] {
    let line = serial.lines().find(|l| l.contains("policy] device id ")).expect("the device id is logged");
    let hex = line.split("device id ").nth(1).and_then(|r| r.split(',').next()).expect("device id field");
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex device id");
    }
    id
}

fn fingerprint(key: &SecretKey) -> String {
    key.public()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn forged_old_expired_foreign_and_unendorsed_policies_are_refused_and_rotation_is_followed() {
    let (k1, k2, k3, k4) = (key(1), key(2), key(3), key(4));
    let mut laptop = Laptop::new();

    // 1. Enrolment.
    let serial = laptop.accepted("enrol", sign_policy(&policy(2), &k1, vec![]), 2);
    assert!(serial.contains(&format!("enrolled this laptop: organisation key {}, group staff", fingerprint(&k1))));
    assert!(serial.contains("state saved (highest version 2)"), "the state was not saved");
    let id = device_id(&serial);

    // 2. One flipped byte in the signed policy.
    let mut flipped = sign_policy(&policy(3), &k1, vec![]);
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    laptop.refused(
        "flipped-byte",
        flipped,
        "the policy's signature does not match its contents: it was altered after signing",
        HINT_OTHER,
    );

    // 3. Another organisation's key.
    laptop.refused(
        "other-key",
        sign_policy(&policy(3), &k2, vec![]),
        &format!(
            "the policy is signed by key {}, but this laptop belongs to the organisation with key {}",
            fingerprint(&k2),
            fingerprint(&k1)
        ),
        HINT_OTHER,
    );

    // 4. Rollback to version 1 after version 2 was accepted (a reboot in between).
    laptop.refused(
        "rollback",
        sign_policy(&policy(1), &k1, vec![]),
        "the policy is version 1, older than version 2 which this laptop already accepted (rollback)",
        HINT_ROLLBACK,
    );

    // 5. Expired an hour ago.
    let mut expired = policy(3);
    expired.issued_at = now() - 2 * 86_400;
    expired.expires_at = now() - 3600;
    let expired_at = expired.expires_at;
    // The exact age depends on the seconds the boot took; the words do not.
    laptop.refused_for("expired", sign_policy(&expired, &k1, vec![]), HINT_OTHER, |reason| {
        reason.starts_with("the policy expired ")
            && reason.ends_with(&format!("ago (at Unix time {expired_at}); IT must sign a new one"))
    });

    // 6. A bundle for another laptop.
    let mut other = policy(3);
    let other_id = [0xabu8; 16];
    other.target = Target::Device(other_id);
    let hex = |id: &[u8; 16]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    laptop.refused(
        "other-device",
        sign_policy(&other, &k1, vec![]),
        &format!("the policy is for device {}, not this laptop ({})", hex(&other_id), hex(&id)),
        HINT_OTHER,
    );

    // 7. IT rotates to key 3: the old key endorses it; the laptop follows.
    let serial = laptop.accepted("rotated", sign_policy(&policy(3), &k3, vec![endorse(&k1, &k3.public(), 1)]), 3);
    assert!(serial.contains(&format!("key rotation accepted: this laptop now trusts key {} only", fingerprint(&k3))));

    // 8. A key nobody endorsed.
    laptop.refused(
        "not-endorsed",
        sign_policy(&policy(4), &k4, vec![]),
        &format!(
            "the policy is signed by key {}, but this laptop belongs to the organisation with key {}",
            fingerprint(&k4),
            fingerprint(&k3)
        ),
        HINT_OTHER,
    );

    // 9. The retired key cannot sign for this laptop any more.
    laptop.refused(
        "retired-key",
        sign_policy(&policy(4), &k1, vec![]),
        &format!("the policy is signed by key {}, which was replaced by a newer key on this laptop", fingerprint(&k1)),
        HINT_OTHER,
    );

    let _ = std::fs::remove_dir_all(Path::new(&laptop.dir));
}
