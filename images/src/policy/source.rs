//! The TOML sections as written, every value with its place in the file. Each section
//! (and each `[[vm]]` and `[[link]]`) is read on its own, so a mistake in one does not
//! hide the mistakes in the others; unknown fields are refused everywhere.

use serde::Deserialize;
use toml::Spanned;

/// `[policy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub version: Spanned<i64>,
    pub organisation: Spanned<String>,
    /// The target: every laptop of this group...
    pub group: Option<Spanned<String>>,
    /// ...or exactly this one (32 hex digits, as `cargo xtask` shows device ids).
    pub device: Option<Spanned<String>>,
    pub valid_for_days: Spanned<i64>,
}

/// `[management]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementSection {
    pub server: Spanned<String>,
    /// `"5m"`, `"1h"`, or seconds.
    pub checkin_interval: Spanned<toml::Value>,
    pub offline_lease: Spanned<toml::Value>,
    /// 64 hex digits...
    pub server_key: Option<Spanned<String>>,
    /// ...or a `.public` file from `cargo xtask policy keygen`, relative to the policy.
    pub server_key_file: Option<Spanned<String>>,
}

/// One `[[vm]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmEntry {
    pub name: Spanned<String>,
    /// Switcher position, 1 first (Ctrl+Alt+1).
    pub slot: Spanned<i64>,
    /// `linux`, `payload`, `multiboot` or `service`.
    pub kind: Spanned<String>,
    pub image: Spanned<String>,
    pub initrd: Option<Spanned<String>>,
    #[serde(default)]
    pub modules: Vec<Spanned<String>>,
    #[serde(default)]
    pub cmdline: String,
    /// `"384M"`, `"1G"`.
    pub memory: Spanned<String>,
    /// Virtual CPUs (1 when absent).
    pub vcpus: Option<Spanned<i64>>,
    pub label: Option<String>,
    /// `"#c0392b"`.
    pub colour: Option<Spanned<String>>,
    /// `"never"`, `"always"` or a number of restarts after crashes.
    pub restart: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub devices: Vec<Spanned<String>>,
    pub network: Option<Spanned<NetworkEntry>>,
    #[serde(default)]
    pub needs_lease: Option<Spanned<bool>>,
    pub expect: Option<Spanned<String>>,
    pub disk: Option<Spanned<DiskEntry>>,
}

/// A VM's `disk = { size = "8G", mode = "persistent" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskEntry {
    /// `"512M"`, `"8G"`: whole MiB.
    pub size: Spanned<String>,
    /// `persistent` (the default), `reset-on-boot` or `read-only`.
    pub mode: Option<Spanned<String>>,
}

/// A VM's `network = { via = "net", rule = "...", allow = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    pub via: Spanned<String>,
    /// `internet`, `corporate-only` or `isolated`.
    pub rule: Spanned<String>,
    #[serde(default)]
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One `[[link]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkEntry {
    pub between: Spanned<Vec<Spanned<String>>>,
}
