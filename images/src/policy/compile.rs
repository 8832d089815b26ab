//! TOML to [`Policy`]: every section is read and checked, and every problem reported.

use std::ops::Range;
use std::path::{Path, PathBuf};

use bulkhead_policy::device::MAX_GROUP;
use bulkhead_policy::model::{Hotkey, Management, Policy, Target};
use bulkhead_policy::syntax::{self, Action, KeyCombo};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diagnostics::{Diagnostic, Diagnostics};
use super::source::{LinkEntry, ManagementSection, PolicySection, VmEntry};

/// What the compiler needs besides the text.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// The laptop's RAM, against which the VMs' memory is checked.
    pub ram_bytes: u64,
    /// Where relative file names in the policy (`server_key_file`) are found.
    pub base_dir: PathBuf,
    /// Unix seconds the bundle is issued at; it expires `valid_for_days` later.
    pub issued_at: u64,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { ram_bytes: DEFAULT_RAM, base_dir: PathBuf::from("."), issued_at: now() }
    }
}

/// The laptop RAM `check` assumes without `--ram`.
pub const DEFAULT_RAM: u64 = 16 << 30;
/// Longest validity: a policy that never has to be renewed is a policy nobody renews.
pub const MAX_VALID_DAYS: i64 = 3650;

/// A policy that compiled, with the warnings about it.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub policy: Policy,
    pub warnings: Vec<Diagnostic>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Compiles the TOML file `path` (relative names in it are relative to its folder).
pub fn compile_file(path: &Path, ram_bytes: u64, issued_at: u64) -> Result<Compiled, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let base_dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    compile(&text, &CompileOptions { ram_bytes, base_dir, issued_at }).map_err(|items| {
        let errors = items.iter().filter(|d| d.severity == super::Severity::Error).count();
        format!(
            "{} has {errors} error(s); fix them and check again:\n{}",
            path.display(),
            super::diagnostics::render(&path.display().to_string(), &items).trim_end()
        )
    })
}

/// Compiles `text`; on failure, every error (and warning) sorted by position.
pub fn compile(text: &str, options: &CompileOptions) -> Result<Compiled, Vec<Diagnostic>> {
    let mut d = Diagnostics::new(text);
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    for e in &syntax_errors {
        d.error(e.span().unwrap_or(0..0), format!("this is not valid TOML: {}", e.message().trim_end()));
    }
    if !syntax_errors.is_empty() {
        return Err(d.sorted());
    }
    let root = root.into_inner();
    let mut policy_section = None;
    let mut management = None;
    let mut vms: Vec<(Range<usize>, VmEntry)> = Vec::new();
    let mut unreadable: Vec<String> = Vec::new();
    let mut links: Vec<(Range<usize>, LinkEntry)> = Vec::new();
    let mut hotkeys = Vec::new();
    for (key, value) in root.iter() {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "policy" => policy_section = read::<PolicySection>(&mut d, value.clone(), "[policy]"),
            "management" => management = read::<ManagementSection>(&mut d, value.clone(), "[management]"),
            "vm" => {
                vms = read_array(&mut d, value, "vm");
                unreadable = unreadable_names(value, &vms);
            }
            "link" => links = read_array(&mut d, value, "link"),
            "hotkeys" => hotkeys = read_hotkeys(&mut d, value),
            other => d.error(
                key_span,
                format!(
                    "unknown section `{other}`: a policy has [policy], [management], [[vm]], [[link]] and [hotkeys]; \
                     remove it or fix its name"
                ),
            ),
        }
    }
    let (version, organisation, target, valid_days) = match &policy_section {
        Some(p) => check_policy_section(&mut d, p),
        None => {
            d.error(
                0..0,
                "the [policy] section is missing: add version, organisation, group (or device) and valid_for_days",
            );
            (0, String::new(), Target::Group(String::new()), 0)
        }
    };
    let management = management.and_then(|m| check_management(&mut d, &m, &options.base_dir));
    let known = super::vms::Known { unreadable: &unreadable, managed: management.is_some() };
    let (vms, links) = super::vms::check(&mut d, &vms, &links, &known, options.ram_bytes);
    if d.has_errors() {
        return Err(d.sorted());
    }
    let policy = Policy {
        version,
        issued_at: options.issued_at,
        expires_at: options.issued_at.saturating_add(valid_days.saturating_mul(86_400)),
        target,
        organisation,
        management,
        vms,
        links,
        hotkeys,
    };
    Ok(Compiled { policy, warnings: d.sorted() })
}

/// Reads one section into `T`, reporting why it does not fit.
fn read<T: for<'de> Deserialize<'de>>(d: &mut Diagnostics, value: Spanned<DeValue>, what: &str) -> Option<T> {
    let span = value.span();
    if !value.get_ref().is_table() {
        d.error(span, format!("{what} must be a table"));
        return None;
    }
    T::deserialize(ValueDeserializer::from(value))
        .map_err(|e| d.error(e.span().unwrap_or(span), explain(what, e.message())))
        .ok()
}

/// `[[vm]]` or `[[link]]`: each entry read on its own.
fn read_array<T: for<'de> Deserialize<'de>>(
    d: &mut Diagnostics,
    value: &Spanned<DeValue>,
    name: &str,
) -> Vec<(Range<usize>, T)> {
    let Some(array) = value.get_ref().as_array() else {
        d.error(value.span(), format!("`{name}` must be written as [[{name}]] tables"));
        return Vec::new();
    };
    let what = format!("[[{name}]]");
    array.iter().filter_map(|entry| Some((entry.span(), read::<T>(d, entry.clone(), &what)?))).collect()
}

/// The names of `[[vm]]` tables that could not be read (their error is reported): a
/// network or link naming one is not reported again as naming no VM.
fn unreadable_names(value: &Spanned<DeValue>, read: &[(Range<usize>, VmEntry)]) -> Vec<String> {
    let Some(array) = value.get_ref().as_array() else { return Vec::new() };
    array
        .iter()
        .filter(|entry| !read.iter().any(|(span, _)| *span == entry.span()))
        .filter_map(|entry| Some(entry.get_ref().as_table()?.get("name")?.get_ref().as_str()?.to_string()))
        .collect()
}

/// serde's message, said as what to change.
fn explain(what: &str, message: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (field, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        // The one nested table: a VM's network.
        let what = if expected.contains("`via`") { "network" } else { what };
        return format!(
            "{what} has no field {field}: remove it or use one of {}",
            expected.trim_start_matches("one of ")
        );
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("{what} needs the field {field}");
    }
    format!("{what}: {message}")
}

fn check_policy_section(d: &mut Diagnostics, p: &PolicySection) -> (u64, String, Target, u64) {
    let version = u64::try_from(*p.version.get_ref()).unwrap_or(0);
    if version == 0 {
        d.error(p.version.span(), "version must be a whole number from 1 up; raise it with every change");
    }
    if p.organisation.get_ref().trim().is_empty() {
        d.error(p.organisation.span(), "organisation is shown on the boot screen: give the organisation's name");
    }
    let target = match (&p.group, &p.device) {
        (Some(group), None) => {
            let g = group.get_ref();
            if g.is_empty() || g.len() > MAX_GROUP || g.chars().any(char::is_control) {
                d.error(group.span(), format!("group must be 1-{MAX_GROUP} characters, like \"staff\""));
            }
            Target::Group(g.clone())
        }
        (None, Some(device)) => match parse_hex::<16>(device.get_ref()) {
            Some(id) => Target::Device(id),
            None => {
                d.error(device.span(), "device is a laptop's id: 32 hex digits, as shown at enrolment");
                Target::Device([0; 16])
            }
        },
        (Some(_), Some(device)) => {
            d.error(device.span(), "give either group or device, not both");
            Target::Group(String::new())
        }
        (None, None) => {
            d.error(
                p.organisation.span(),
                "[policy] needs a target: group = \"staff\" or device = \"<32 hex digits>\"",
            );
            Target::Group(String::new())
        }
    };
    let days = *p.valid_for_days.get_ref();
    if !(1..=MAX_VALID_DAYS).contains(&days) {
        d.error(p.valid_for_days.span(), format!("valid_for_days must be 1 to {MAX_VALID_DAYS}, like 90"));
    }
    (version, p.organisation.get_ref().clone(), target, days.clamp(0, MAX_VALID_DAYS) as u64)
}

fn check_management(d: &mut Diagnostics, m: &ManagementSection, base_dir: &Path) -> Option<Management> {
    let server = m.server.get_ref();
    if !valid_server(server) {
        d.error(m.server.span(), "server is like \"http://10.0.2.2:8470\" (http, a host and a port)");
    }
    let interval = seconds(d, &m.checkin_interval, "checkin_interval", 10..=86_400);
    let lease = seconds(d, &m.offline_lease, "offline_lease", 60..=90 * 86_400);
    if let (Some(interval), Some(lease)) = (interval, lease)
        && lease < interval.saturating_mul(2)
    {
        d.error(
            m.offline_lease.span(),
            "offline_lease must be at least twice checkin_interval, or one missed check-in stops the VMs",
        );
    }
    let key = match (&m.server_key, &m.server_key_file) {
        (Some(hex), None) => parse_hex::<32>(hex.get_ref()).or_else(|| {
            d.error(hex.span(), "server_key is the server's public key: 64 hex digits");
            None
        }),
        (None, Some(file)) => {
            let path = base_dir.join(file.get_ref());
            super::keys::read_public(&path).map_err(|e| d.error(file.span(), e)).ok()
        }
        (Some(_), Some(file)) => {
            d.error(file.span(), "give either server_key or server_key_file, not both");
            None
        }
        (None, None) => {
            d.error(m.server.span(), "[management] needs server_key (64 hex digits) or server_key_file");
            None
        }
    };
    Some(Management {
        server: server.clone(),
        checkin_interval_s: interval?,
        offline_lease_s: lease?,
        server_key: key?,
    })
}

/// `http://HOST:PORT`.
fn valid_server(server: &str) -> bool {
    let Some(rest) = server.strip_prefix("http://") else { return false };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = rest.rsplit_once(':') else { return false };
    !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// A duration: seconds as a number, or `"30s"`, `"5m"`, `"8h"`, `"2d"`.
fn seconds(
    d: &mut Diagnostics,
    value: &Spanned<toml::Value>,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Option<u32> {
    let parsed = match value.get_ref() {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => parse_duration(s),
        _ => None,
    };
    match parsed {
        Some(s) if range.contains(&s) => u32::try_from(s).ok(),
        Some(_) => {
            d.error(value.span(), format!("{name} must be between {} and {} seconds", range.start(), range.end()));
            None
        }
        None => {
            d.error(value.span(), format!("{name} is a duration like \"5m\", \"8h\", \"2d\" or a number of seconds"));
            None
        }
    }
}

pub fn parse_duration(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// Exactly `2 * N` hex digits.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim();
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `[hotkeys]`: `ACTION = "COMBO"` lines.
fn read_hotkeys(d: &mut Diagnostics, value: &Spanned<DeValue>) -> Vec<Hotkey> {
    let Some(table) = value.get_ref().as_table() else {
        d.error(value.span(), "hotkeys is a table: [hotkeys] with lines like switch-1 = \"Ctrl+Alt+F1\"");
        return Vec::new();
    };
    let mut out: Vec<(Hotkey, KeyCombo, Range<usize>)> = Vec::new();
    // In the order of the file: the first binding of a combination wins.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (key, value) in entries {
        let action = key.get_ref().as_ref();
        if Action::parse(action).is_none() {
            d.error(key.span(), format!("unknown hotkey action `{action}`: the actions are {}", Action::NAMES));
        }
        let Some(text) = value.get_ref().as_str() else {
            d.error(value.span(), format!("{action} = takes a key combination in quotes, like \"Ctrl+Alt+F1\""));
            continue;
        };
        let combo = match KeyCombo::parse(text) {
            Ok(c) => c,
            Err(e) => {
                d.error(value.span(), format!("\"{text}\" cannot be a hotkey: {e}"));
                continue;
            }
        };
        if !combo.has_modifier() {
            d.error(
                value.span(),
                format!("\"{text}\" needs Ctrl, Alt or Meta, or guests could not type that key: add a modifier"),
            );
        }
        if let Some((first, _, span)) = out.iter().find(|(_, c, _)| *c == combo) {
            let line = d.line_of(span.start);
            d.error(
                value.span(),
                format!("\"{text}\" is already bound to {} on line {line}: choose another combination", first.action),
            );
        }
        out.push((Hotkey { action: action.to_string(), combo: text.to_string() }, combo, value.span()));
    }
    if out.len() >= syntax::MAX_HOTKEYS {
        d.error(value.span(), format!("at most {} hotkeys", syntax::MAX_HOTKEYS - 1));
    }
    out.into_iter().map(|(h, _, _)| h).collect()
}
