//! Key and endorsement files, one line of text each:
//!
//! ```text
//! bulkhead-ed25519-secret-v1 <64 hex digits: the Ed25519 seed>      NAME.secret (mode 0600)
//! bulkhead-ed25519-public-v1 <64 hex digits: the public key>        NAME.public
//! bulkhead-endorsement-v1 old=<64 hex> new=<64 hex> generation=<N> signature=<128 hex>
//! ```
//!
//! A secret key stays with IT: it never goes into an image, only the bundles it signs.

use std::io::Write;
use std::path::{Path, PathBuf};

use bulkhead_policy::bundle::signing::{SecretKey, endorse};
use bulkhead_policy::{Endorsement, PublicKey};

use super::compile::{hex, parse_hex};

pub const SECRET_TAG: &str = "bulkhead-ed25519-secret-v1";
pub const PUBLIC_TAG: &str = "bulkhead-ed25519-public-v1";
pub const ENDORSEMENT_TAG: &str = "bulkhead-endorsement-v1";

fn read_tagged(path: &Path, tag: &str, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let rest = text.trim().strip_prefix(tag).ok_or_else(|| {
        format!(
            "{} is not a {what} (it should start with `{tag}`; make one with `cargo xtask policy keygen`)",
            path.display()
        )
    })?;
    Ok(rest.trim().to_string())
}

pub fn read_secret(path: &Path) -> Result<SecretKey, String> {
    let hex = read_tagged(path, SECRET_TAG, "secret key")?;
    parse_hex::<32>(&hex)
        .map(SecretKey)
        .ok_or_else(|| format!("{}: the secret key is not 64 hex digits (damaged?)", path.display()))
}

pub fn read_public(path: &Path) -> Result<PublicKey, String> {
    let hex = read_tagged(path, PUBLIC_TAG, "public key")?;
    parse_hex::<32>(&hex).ok_or_else(|| format!("{}: the public key is not 64 hex digits (damaged?)", path.display()))
}

pub fn public_text(key: &PublicKey) -> String {
    format!("{PUBLIC_TAG} {}\n", hex(key))
}

/// Writes `NAME.secret` (readable by its owner only) and `NAME.public`; refuses to
/// overwrite an existing key. Returns both paths.
pub fn keygen(out: &Path) -> Result<(PathBuf, PathBuf, SecretKey), String> {
    let secret_path = with_suffix(out, "secret");
    let public_path = with_suffix(out, "public");
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(format!(
                "{} exists; a key is never overwritten: choose another --out or remove it",
                p.display()
            ));
        }
    }
    let key = SecretKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&secret_path).map_err(|e| format!("cannot create {}: {e}", secret_path.display()))?;
    file.write_all(format!("{SECRET_TAG} {}\n", hex(&key.0)).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", secret_path.display()))?;
    std::fs::write(&public_path, public_text(&key.public()))
        .map_err(|e| format!("cannot write {}: {e}", public_path.display()))?;
    Ok((secret_path, public_path, key))
}

/// `out` with `.suffix` added (`keys/it` becomes `keys/it.secret`).
fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

pub fn endorsement_text(e: &Endorsement) -> String {
    format!(
        "{ENDORSEMENT_TAG} old={} new={} generation={} signature={}\n",
        hex(&e.old_key),
        hex(&e.new_key),
        e.generation,
        hex(&e.signature)
    )
}

pub fn parse_endorsement(text: &str) -> Option<Endorsement> {
    let rest = text.trim().strip_prefix(ENDORSEMENT_TAG)?;
    let (mut old, mut new, mut generation, mut signature) = (None, None, None, None);
    for field in rest.split_whitespace() {
        match field.split_once('=')? {
            ("old", v) => old = parse_hex::<32>(v),
            ("new", v) => new = parse_hex::<32>(v),
            ("generation", v) => generation = v.parse().ok(),
            ("signature", v) => signature = parse_hex::<64>(v),
            _ => return None,
        }
    }
    Some(Endorsement { old_key: old?, new_key: new?, generation: generation?, signature: signature? })
}

pub fn read_endorsement(path: &Path) -> Result<Endorsement, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let e = parse_endorsement(&text).ok_or_else(|| {
        format!("{} is not an endorsement (make one with `cargo xtask policy rotate`)", path.display())
    })?;
    if !e.signature_valid() {
        return Err(format!("{}: the endorsement's signature is not valid (altered?)", path.display()));
    }
    Ok(e)
}

/// `rotate`: the key in `old` endorses the public key in `new` at `generation`.
pub fn rotate(old: &Path, new: &Path, generation: u32, out: &Path) -> Result<Endorsement, String> {
    if generation == 0 {
        return Err("--generation starts at 1 (the first rotation) and grows with each one".into());
    }
    let old = read_secret(old)?;
    let new = read_public(new)?;
    if old.public() == new {
        return Err("--old and --new are the same key: rotate to a newly generated key".into());
    }
    let e = endorse(&old, &new, generation);
    std::fs::write(out, endorsement_text(&e)).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(e)
}
