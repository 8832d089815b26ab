//! The server's state directory:
//!
//! - `bundles/group-<name>.bundle`: the newest bundle IT published for a group;
//! - `bundles/device-<32 hex>.bundle`: one for a single laptop, which wins over its
//!   group's;
//! - `checkins.json`: every laptop seen (group, version it runs, last check-in, what it
//!   was last sent) and the most recent check-ins.
//!
//! `publish` reads a bundle's target (group or device) from the bundle itself, so a
//! bundle cannot be filed where the laptops would refuse it. Files are replaced by
//! writing a temporary file and renaming it, so a crash leaves the old or the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bulkhead_policy::Bundle;
use bulkhead_policy::device::{DeviceId, MAX_GROUP};
use bulkhead_policy::model::Target;
use serde::{Deserialize, Serialize};

use super::key::hex;

/// Check-ins kept in the log (older ones are dropped; the per-device summary stays).
pub const RECENT_CHECKINS: usize = 1000;
/// Laptops remembered; check-ins from further new ids are refused (anyone can post one).
pub const MAX_DEVICES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub group: String,
    /// The version the laptop said it runs at its last check-in.
    pub version: u64,
    /// Unix seconds of the last check-in.
    pub last_checkin: u64,
    pub checkins: u64,
    /// The version of the bundle last sent to it, if any was.
    pub last_sent: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinEntry {
    pub device: String,
    pub group: String,
    pub version: u64,
    pub time: u64,
    /// The version of the bundle the answer carried, if any.
    pub sent: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinLog {
    /// By device id (hex).
    pub devices: BTreeMap<String, DeviceRecord>,
    /// Oldest first, at most [`RECENT_CHECKINS`].
    pub recent: Vec<CheckinEntry>,
}

/// A bundle on file with the version inside it.
#[derive(Debug, Clone)]
pub struct Published {
    pub version: u64,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Group names that are safe as file names (and what `policy check` accepts).
pub fn valid_group(group: &str) -> bool {
    !group.is_empty()
        && group.len() <= MAX_GROUP
        && group.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !group.starts_with('.')
}

impl Store {
    /// The store in `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir.join("bundles"))
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        Ok(Store { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn group_path(&self, group: &str) -> Option<PathBuf> {
        valid_group(group).then(|| self.dir.join("bundles").join(format!("group-{group}.bundle")))
    }

    fn device_path(&self, device: &DeviceId) -> PathBuf {
        self.dir.join("bundles").join(format!("device-{}.bundle", hex(device)))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("checkins.json")
    }

    /// Files `bytes` under the target the signed policy inside names. Refuses a bundle
    /// that does not decode or verify against its own signer, and one not newer than
    /// the bundle already on file for that target (laptops would refuse it anyway).
    /// Returns where it went and the version.
    pub fn publish(&self, bytes: &[u8]) -> Result<(String, u64), String> {
        let bundle = Bundle::decode(bytes).map_err(|e| format!("{e}"))?;
        if !bundle.signature_valid() {
            return Err("the bundle's signature does not match its contents (altered after signing?)".into());
        }
        let policy = bundle.policy().map_err(|e| format!("{e}"))?;
        let (path, target) = match &policy.target {
            Target::Group(group) => (
                self.group_path(group).ok_or_else(|| {
                    format!("the bundle's group {group:?} is not a usable name (letters, digits, -_.)")
                })?,
                format!("group {group}"),
            ),
            Target::Device(id) => (self.device_path(id), format!("device {}", hex(id))),
        };
        if let Some(existing) = read_published(&path)? {
            if existing.bytes == bytes {
                return Ok((target, policy.version));
            }
            if existing.version >= policy.version {
                return Err(format!(
                    "{target} already has version {}; publish a bundle with a higher version (laptops refuse a \
                     lower one, and one version has one content)",
                    existing.version
                ));
            }
        }
        write_atomically(&path, bytes)?;
        Ok((target, policy.version))
    }

    /// The bundle for `device` (its own, else its group's), if any.
    pub fn bundle_for(&self, device: &DeviceId, group: &str) -> Result<Option<Published>, String> {
        if let Some(own) = read_published(&self.device_path(device))? {
            return Ok(Some(own));
        }
        match self.group_path(group) {
            Some(path) => read_published(&path),
            None => Ok(None),
        }
    }

    pub fn load_log(&self) -> Result<CheckinLog, String> {
        match std::fs::read(self.log_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!("{} is damaged: {e} (move it away to start a new log)", self.log_path().display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CheckinLog::default()),
            Err(e) => Err(format!("cannot read {}: {e}", self.log_path().display())),
        }
    }

    /// Adds one check-in to the log.
    pub fn record(&self, entry: CheckinEntry) -> Result<(), String> {
        let mut log = self.load_log()?;
        if !log.devices.contains_key(&entry.device) && log.devices.len() >= MAX_DEVICES {
            return Err(format!("{MAX_DEVICES} laptops are already on record"));
        }
        let record = log.devices.entry(entry.device.clone()).or_insert(DeviceRecord {
            group: String::new(),
            version: 0,
            last_checkin: 0,
            checkins: 0,
            last_sent: None,
        });
        record.group = entry.group.clone();
        record.version = entry.version;
        record.last_checkin = entry.time;
        record.checkins = record.checkins.saturating_add(1);
        if entry.sent.is_some() {
            record.last_sent = entry.sent;
        }
        log.recent.push(entry);
        let excess = log.recent.len().saturating_sub(RECENT_CHECKINS);
        log.recent.drain(..excess);
        let text = serde_json::to_vec_pretty(&log).map_err(|e| e.to_string())?;
        write_atomically(&self.log_path(), &text)
    }
}

fn read_published(path: &Path) -> Result<Option<Published>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let policy = Bundle::decode(&bytes)
        .and_then(|b| b.policy())
        .map_err(|e| format!("{} is not a usable bundle: {e} (publish it again)", path.display()))?;
    Ok(Some(Published { version: policy.version, bytes }))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

/// `cargo xtask mgmt status`: one line per laptop.
pub fn status_text(log: &CheckinLog, now: u64) -> String {
    if log.devices.is_empty() {
        return "no laptop has checked in yet\n".into();
    }
    let mut text =
        format!("{:<32}  {:<16}  {:>7}  {:>9}  {:>15}\n", "device", "group", "version", "last sent", "last check-in");
    for (id, r) in &log.devices {
        let sent = r.last_sent.map_or_else(|| "-".to_string(), |v| format!("v{v}"));
        let ago = format!("{} ago", bulkhead_policy::device::Duration(now.saturating_sub(r.last_checkin)));
        text.push_str(&format!("{id:<32}  {:<16}  {:>7}  {sent:>9}  {ago:>15}\n", r.group, format!("v{}", r.version)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::server::tests::{bundle_for_group, device_bundle};

    #[test]
    fn group_names_that_could_escape_the_directory_are_refused() {
        assert!(valid_group("staff-2026.eu"));
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "a b", &"g".repeat(MAX_GROUP + 1)] {
            assert!(!valid_group(bad), "{bad:?}");
        }
    }

    #[test]
    fn publish_files_by_target_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let v2 = bundle_for_group("staff", 2);
        assert_eq!(store.publish(&v2).unwrap(), ("group staff".into(), 2));
        assert_eq!(store.publish(&v2).unwrap().1, 2, "the same bytes again are fine");
        assert!(store.publish(&bundle_for_group("staff", 1)).unwrap_err().contains("already has version 2"));
        let mut damaged = bundle_for_group("staff", 3);
        let last = damaged.len() - 70;
        damaged[last] ^= 1;
        assert!(store.publish(&damaged).is_err());
        let id = [5u8; 16];
        assert_eq!(store.bundle_for(&id, "staff").unwrap().unwrap().version, 2);
        assert!(store.bundle_for(&id, "other").unwrap().is_none());
        store.publish(&device_bundle(id, 1)).unwrap();
        assert_eq!(store.bundle_for(&id, "staff").unwrap().unwrap().version, 1, "the device's own bundle wins");
    }

    #[test]
    fn the_log_keeps_the_latest_per_device_and_a_bounded_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entry = |time, sent| CheckinEntry { device: "aa".into(), group: "staff".into(), version: 1, time, sent };
        store.record(entry(10, Some(2))).unwrap();
        store.record(entry(20, None)).unwrap();
        let log = store.load_log().unwrap();
        let r = &log.devices["aa"];
        assert_eq!((r.last_checkin, r.checkins, r.last_sent), (20, 2, Some(2)));
        assert_eq!(log.recent.len(), 2);
        let text = status_text(&log, 80);
        assert!(
            text.contains("aa") && text.contains("v1") && text.contains("v2") && text.contains("60 s ago"),
            "{text}"
        );
    }
}
