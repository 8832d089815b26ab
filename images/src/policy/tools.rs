//! `sign` and `show`: a compiled policy into a bundle, and a bundle back into words.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bulkhead_policy::bundle::signing::{SecretKey, sign_policy};
use bulkhead_policy::device::fingerprint;
use bulkhead_policy::model::{NetRule, Restart, Target};
use bulkhead_policy::{Bundle, DEMO_PUBLIC_KEY, Endorsement, Policy, PublicKey};

use super::compile::{self, hex};
use super::diagnostics::render;
use super::keys;

/// What `sign` needs.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub policy: PathBuf,
    pub key: PathBuf,
    /// Endorsement files, oldest first.
    pub endorsements: Vec<PathBuf>,
    pub out: PathBuf,
    pub ram_bytes: u64,
    /// Default: now.
    pub issued_at: Option<u64>,
    /// Default: `issued_at` plus `valid_for_days`.
    pub expires_at: Option<u64>,
}

/// The signed bundle and the warnings the compiler had.
#[derive(Debug)]
pub struct Signed {
    pub bundle: Vec<u8>,
    pub policy: Policy,
    pub warnings: String,
}

/// Compiles, signs and writes a bundle.
pub fn sign(request: &SignRequest) -> Result<Signed, String> {
    let key = keys::read_secret(&request.key)?;
    let chain = request.endorsements.iter().map(|p| keys::read_endorsement(p)).collect::<Result<Vec<_>, _>>()?;
    let issued_at = request.issued_at.unwrap_or_else(compile::now);
    let compiled = compile::compile_file(&request.policy, request.ram_bytes, issued_at)?;
    let mut policy = compiled.policy;
    if let Some(expires_at) = request.expires_at {
        policy.expires_at = expires_at;
    }
    let bundle = sign_with(&policy, &key, chain)?;
    std::fs::write(&request.out, &bundle).map_err(|e| format!("cannot write {}: {e}", request.out.display()))?;
    let warnings = render(&request.policy.display().to_string(), &compiled.warnings);
    Ok(Signed { bundle, policy, warnings })
}

/// Signs an already built policy (tests use this to hand the hypervisor values the
/// compiler would refuse). The chain must lead to `key`.
pub fn sign_with(policy: &Policy, key: &SecretKey, chain: Vec<Endorsement>) -> Result<Vec<u8>, String> {
    for (i, pair) in chain.windows(2).enumerate() {
        if pair[0].new_key != pair[1].old_key || pair[1].generation <= pair[0].generation {
            return Err(format!(
                "endorsement {} does not continue endorsement {}: give the --endorsement files oldest first",
                i + 2,
                i + 1
            ));
        }
    }
    if let Some(last) = chain.last()
        && last.new_key != key.public()
    {
        return Err(format!(
            "the last endorsement hands over to key {}, but --key is key {}: sign with the newest key",
            fingerprint(&last.new_key),
            fingerprint(&key.public())
        ));
    }
    let bundle = sign_policy(policy, key, chain);
    if bundle.len() > bulkhead_policy::bundle::MAX_BUNDLE {
        return Err(format!(
            "the bundle is {} bytes, more than the {} a laptop accepts: shorten labels and command lines",
            bundle.len(),
            bulkhead_policy::bundle::MAX_BUNDLE
        ));
    }
    Ok(bundle)
}

/// A policy signed with the demo key, for images built without IT's key.
pub fn sign_demo(policy: &Policy) -> Vec<u8> {
    sign_with(policy, &bulkhead_policy::bundle::signing::demo_key(), Vec::new()).expect("a demo policy fits a bundle")
}

/// Reads `path` as a bundle and says what it holds; with `key`, whether that key (or
/// a key it endorsed) signed it.
pub fn show(path: &Path, key: Option<&Path>) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = key.map(keys::read_public).transpose()?;
    describe(&bytes, key.as_ref())
}

pub fn describe(bytes: &[u8], key: Option<&PublicKey>) -> Result<String, String> {
    let bundle = Bundle::decode(bytes).map_err(|e| e.to_string())?;
    let policy = bundle.policy().map_err(|e| e.to_string())?;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "policy version {} of {}", policy.version, policy.organisation);
    let _ = writeln!(w, "  issued   {} (Unix {})", date(policy.issued_at), policy.issued_at);
    let _ = writeln!(w, "  expires  {} (Unix {})", date(policy.expires_at), policy.expires_at);
    let _ = match &policy.target {
        Target::Group(g) => writeln!(w, "  target   group \"{g}\""),
        Target::Device(id) => writeln!(w, "  target   device {}", hex(id)),
    };
    let demo = if bundle.signer == DEMO_PUBLIC_KEY { " (the demo key)" } else { "" };
    let _ = writeln!(w, "  signer   {}{demo}", fingerprint(&bundle.signer));
    for (i, e) in bundle.endorsements.iter().enumerate() {
        let _ = writeln!(
            w,
            "  endorsement {}: {} -> {} (generation {}){}",
            i + 1,
            fingerprint(&e.old_key),
            fingerprint(&e.new_key),
            e.generation,
            if e.signature_valid() { "" } else { " INVALID SIGNATURE" }
        );
    }
    let signature = match (bundle.signature_valid(), key) {
        (false, _) => "BAD: the contents were altered after signing".to_string(),
        (true, None) => "matches the signer (give --key K.public to check who that is)".to_string(),
        (true, Some(k)) if *k == bundle.signer => format!("good, by the given key {}", fingerprint(k)),
        (true, Some(k)) if endorsed_by(&bundle, k) => {
            format!("good, by a key the given key {} endorsed", fingerprint(k))
        }
        (true, Some(k)) => format!("NOT by the given key {} nor a key it endorsed", fingerprint(k)),
    };
    let _ = writeln!(w, "  signature {signature}");
    let _ = writeln!(w, "  {} bytes", bytes.len());
    describe_content(w, &policy);
    Ok(out)
}

/// Whether the chain starts at `key` and every link of it is valid.
fn endorsed_by(bundle: &Bundle, key: &PublicKey) -> bool {
    let chain = &bundle.endorsements;
    chain.first().is_some_and(|e| e.old_key == *key)
        && chain.iter().all(Endorsement::signature_valid)
        && chain.windows(2).all(|p| p[0].new_key == p[1].old_key)
        && chain.last().is_some_and(|e| e.new_key == bundle.signer)
}

fn describe_content(w: &mut String, policy: &Policy) {
    if let Some(m) = &policy.management {
        let _ = writeln!(
            w,
            "management {} every {} s, offline lease {} s, server key {}",
            m.server,
            m.checkin_interval_s,
            m.offline_lease_s,
            fingerprint(&m.server_key)
        );
    }
    for (slot, vm) in (1..).zip(&policy.vms) {
        let restart = match vm.restart {
            Restart::Never => "never".to_string(),
            Restart::Always => "always".to_string(),
            Restart::Times(n) => format!("{n} times"),
        };
        let _ = writeln!(
            w,
            "vm {slot} {} ({:?}): image {}{}, {} MiB, {} vCPU, label \"{}\" #{:06x}, restart {restart}",
            vm.name,
            vm.kind,
            vm.image,
            vm.initrd.as_ref().map(|i| format!(" + {i}")).unwrap_or_default(),
            vm.memory_mib,
            vm.vcpus,
            vm.label,
            vm.colour
        );
        if !vm.devices.is_empty() {
            let _ = writeln!(w, "    devices {}", vm.devices.join(", "));
        }
        if let Some(n) = &vm.network {
            let rule = match n.rule {
                NetRule::Internet => "internet".to_string(),
                NetRule::Isolated => "isolated".to_string(),
                NetRule::CorporateOnly => format!("corporate-only {}", n.allow.join(", ")),
            };
            let _ = writeln!(w, "    network via {}: {rule}", n.via);
        }
        if vm.needs_lease {
            let _ = writeln!(w, "    needs the offline lease");
        }
    }
    for l in &policy.links {
        let _ = writeln!(w, "link {} <-> {}", l.a, l.b);
    }
    for h in &policy.hotkeys {
        let _ = writeln!(w, "hotkey {} = {}", h.action, h.combo);
    }
}

/// `YYYY-MM-DD HH:MM UTC` of Unix seconds.
pub fn date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", secs / 3600, secs % 3600 / 60)
}
