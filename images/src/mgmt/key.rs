//! The management server's secret key file: one line,
//! `bulkhead-ed25519-secret-v1 <64 hex digits of the 32-byte seed>`.
//!
//! This is the format `cargo xtask policy keygen` writes; this reader is the server's
//! own so that it does not depend on the policy tool (the two should be one).

use std::path::Path;

use bulkhead_policy::bundle::signing::SecretKey;

pub const SECRET_KEY_TAG: &str = "bulkhead-ed25519-secret-v1";

/// The file's text for `key`.
pub fn format_secret_key(key: &SecretKey) -> String {
    format!("{SECRET_KEY_TAG} {}\n", hex(&key.0))
}

pub fn parse_secret_key(text: &str) -> Result<SecretKey, String> {
    let mut words = text.split_whitespace();
    let (Some(tag), Some(digits), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("expected one line `{SECRET_KEY_TAG} <64 hex digits>`"));
    };
    if tag != SECRET_KEY_TAG {
        return Err(format!("starts with {tag:?}, not {SECRET_KEY_TAG:?} (is this a public key or another format?)"));
    }
    let bytes = unhex(digits).ok_or("the key is not 64 hex digits")?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| "the key is not 64 hex digits")?;
    Ok(SecretKey(seed))
}

pub fn read_secret_key(path: &Path) -> Result<SecretKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the server key {}: {e} (make one with `cargo xtask mgmt keygen --out FILE`)",
            path.display()
        )
    })?;
    parse_secret_key(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a new key file readable by its owner only; refuses to overwrite one.
pub fn write_secret_key(path: &Path, key: &SecretKey) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e} (an existing key is never overwritten)", path.display()))?;
    file.write_all(format_secret_key(key).as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_file_form() {
        let key = SecretKey::generate();
        let back = parse_secret_key(&format_secret_key(&key)).unwrap();
        assert_eq!(back.public(), key.public());
    }

    #[test]
    fn other_texts_are_refused_with_the_reason() {
        let digits = "ab".repeat(32);
        assert!(parse_secret_key(&format!("bulkhead-ed25519-public-v1 {digits}")).unwrap_err().contains("not"));
        assert!(parse_secret_key(&format!("{SECRET_KEY_TAG} {}", &digits[..62])).is_err());
        assert!(parse_secret_key(&format!("{SECRET_KEY_TAG} {}zz", &digits[..62])).is_err());
        assert!(parse_secret_key(&format!("{SECRET_KEY_TAG} {digits} extra")).is_err());
        assert!(parse_secret_key("").is_err());
    }

    #[test]
    fn an_existing_key_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.secret");
        write_secret_key(&path, &SecretKey::generate()).unwrap();
        assert!(write_secret_key(&path, &SecretKey::generate()).is_err());
        assert!(read_secret_key(&path).is_ok());
    }
}
