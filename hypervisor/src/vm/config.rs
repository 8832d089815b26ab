//! The static VM configuration (boot module `vms`): which VMs to create, from which boot
//! module, with how much memory, under which trust label, and what to do when one stops.
//! IT's signed policy will produce the same structure; this text form is what the image
//! builder writes today.
//!
//! ```text
//! # name      key=value ...
//! vm corporate image=linux-cloud memory=384M label="CORPORATE · secure" colour=#c0392b restart=always
//! vm checks    image=checks memory=16M kind=payload restart=never
//! vm dma       image=dma-attack memory=16M devices=00:03.0,8086:10d3 expect=dma-fault
//!
//! # A network link between two desktops' virtio-net devices (see docs/virtio-net.md).
//! link corporate personal
//!
//! # The switcher's key map (optional; replaces the defaults when present).
//! # Actions: switch-1 .. switch-9, next, overview, secure-attention.
//! hotkey switch-1         Ctrl+Alt+F1
//! hotkey overview         Meta+Space
//! hotkey secure-attention Ctrl+Alt+Home
//! ```
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use crate::switcher::hotkeys::{Action, Combo, MAX_HOTKEYS, ParseError};

/// How a VM's boot module is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A bare-metal ELF payload (self-tests, the service VM).
    Payload,
    /// A Linux bzImage (with an `initrd` module).
    Linux,
    /// A Multiboot (version 1) kernel, with its `modules`.
    Multiboot,
    /// The networking service VM: a payload-style kernel whose links are desktops'
    /// networks (`link DESKTOP SERVICE rule=...`).
    Service,
}

/// How a self-test VM is expected to end (checked by the self-test verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    TripleFault,
    /// Stopped by nested paging: it touched memory outside its map.
    NestedPageFault,
    BadHypercall,
    Shutdown,
    /// Stopped because a device it owns did DMA the IOMMU blocked.
    DmaFault,
}

/// A host PCI function given to a VM: by address (`00:03.0`, segment 0) or by
/// vendor:device id (`8086:10d3`, the first such function not given to another VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSelector {
    Address { bus: u8, device: u8, function: u8 },
    Id { vendor: u16, device: u16 },
}

impl DeviceSelector {
    /// Parses `BB:DD.F` or `VVVV:DDDD` (hexadecimal).
    pub fn parse(text: &str) -> Option<DeviceSelector> {
        let (left, right) = text.split_once(':')?;
        let hex = |s: &str, max_len: usize| {
            (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        if let Some((dev, func)) = right.split_once('.') {
            let (bus, device, function) = (hex(left, 2)?, hex(dev, 2)?, hex(func, 1)?);
            if device > 0x1f || function > 7 {
                return None;
            }
            return Some(DeviceSelector::Address { bus: bus as u8, device: device as u8, function: function as u8 });
        }
        if left.len() != 4 || right.len() != 4 {
            return None;
        }
        Some(DeviceSelector::Id { vendor: hex(left, 4)? as u16, device: hex(right, 4)? as u16 })
    }
}

impl core::fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeviceSelector::Address { bus, device, function } => write!(f, "{bus:02x}:{device:02x}.{function}"),
            DeviceSelector::Id { vendor, device } => write!(f, "{vendor:04x}:{device:04x}"),
        }
    }
}

/// What to do when a VM stops on its own (crash, triple fault, guest shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Never,
    /// Restart after a crash up to N times.
    Times(u32),
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    pub kind: Kind,
    pub image: String,
    pub initrd: Option<String>,
    /// Boot modules of a Multiboot kernel, in order (names of boot modules).
    pub modules: Vec<String>,
    pub cmdline: String,
    pub memory_bytes: u64,
    pub label: String,
    /// Trust colour as 0xRRGGBB.
    pub colour: u32,
    pub restart: Restart,
    pub expect: Option<Expect>,
    /// Host PCI functions the VM owns (IOMMU-enforced).
    pub devices: Vec<DeviceSelector>,
    /// A virtual disk (virtio-blk, Linux VMs). No configuration line sets it yet.
    pub disk: Option<DiskConfig>,
}

/// A VM's virtual disk: for now a disk in host RAM of this size, zeroed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskConfig {
    pub size_bytes: u64,
    pub read_only: bool,
}

/// One line of the key map: `hotkey ACTION COMBO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotkeyBinding {
    pub action: Action,
    pub combo: Combo,
}

/// One `link A B` line: a virtio-net device in each VM, wired to each other. The VMs
/// are given by their index in [`Config::vms`]. A link from a desktop (`a`) to the
/// service VM (`b`) carries the desktop's network rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    pub a: usize,
    pub b: usize,
    pub rule: Option<NetRule>,
}

/// What a desktop linked to the service VM may reach (checked here, enforced there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetRule {
    /// Everything outbound.
    Internet,
    /// Only these `CIDR[:port]` destinations (checked syntax, kept as text).
    CorporateOnly(Vec<String>),
    /// Nothing beyond the link.
    Isolated,
}

/// Links a desktop may have (one virtio-net device each).
pub const MAX_LINKS_PER_VM: usize = 4;
/// Links the service VM may have: one per connected desktop.
pub const MAX_SERVICE_LINKS: usize = bulkhead_abi::hypercall::NET_STATUS_LINKS;

/// Everything the configuration text holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub vms: Vec<VmConfig>,
    /// The key map; empty means the built-in defaults.
    pub hotkeys: Vec<HotkeyBinding>,
    pub links: Vec<LinkConfig>,
}

impl Config {
    /// The links of VM `vm` in configuration order, with the other end's index.
    pub fn links_of(&self, vm: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.links.iter().enumerate().filter_map(move |(i, l)| match (l.a == vm, l.b == vm) {
            (true, _) => Some((i, l.b)),
            (_, true) => Some((i, l.a)),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub reason: ConfigReason,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "VM configuration line {}: {}", self.line, self.reason)
    }
}

/// What is wrong with a configuration line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigReason {
    /// A fixed reason, saying what the line should look like.
    Invalid(&'static str),
    Hotkey(HotkeyError),
}

impl core::fmt::Display for ConfigReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigReason::Invalid(why) => f.write_str(why),
            ConfigReason::Hotkey(e) => write!(f, "{e}"),
        }
    }
}

/// Why a `hotkey` line's `ACTION COMBO` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotkeyError {
    /// Not two words, or an unknown action.
    Usage,
    /// The combination does not parse.
    Combo { text: String, error: ParseError },
    /// Neither Ctrl, Alt nor Meta: it would take that key away from every guest.
    NoModifier { text: String },
}

impl core::fmt::Display for HotkeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HotkeyError::Usage => f.write_str(
                "hotkey lines are `hotkey ACTION COMBO`, e.g. `hotkey switch-1 Ctrl+Alt+1` (actions: switch-1 .. \
                 switch-9, next, overview, secure-attention)",
            ),
            HotkeyError::Combo { text, error } => write!(f, "{text}: {error}"),
            HotkeyError::NoModifier { text } => {
                write!(f, "{text} needs Ctrl, Alt or Meta, or guests could not type that key")
            }
        }
    }
}

/// Smallest and largest VM sizes the hypervisor accepts.
pub const MIN_MEMORY: u64 = 2 * 1024 * 1024;
pub const MAX_MEMORY: u64 = 64 * 1024 * 1024 * 1024;
pub const MAX_VMS: usize = 16;

/// The VMs of a configuration (its key map, if any, ignored).
pub fn parse(text: &str) -> Result<Vec<VmConfig>, ConfigError> {
    parse_config(text).map(|c| c.vms)
}

/// Parses a whole configuration: `vm` and `hotkey` lines.
pub fn parse_config(text: &str) -> Result<Config, ConfigError> {
    let mut vms: Vec<VmConfig> = Vec::new();
    let mut hotkeys: Vec<HotkeyBinding> = Vec::new();
    let mut links: Vec<LinkConfig> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i.saturating_add(1);
        let err = |reason: &'static str| ConfigError { line, reason: ConfigReason::Invalid(reason) };
        let words = split_words(raw).map_err(|reason| ConfigError { line, reason })?;
        let Some((first, rest)) = words.split_first() else { continue };
        if first == "hotkey" {
            let binding = parse_hotkey(rest).map_err(|e| ConfigError { line, reason: ConfigReason::Hotkey(e) })?;
            if hotkeys.iter().any(|h| h.combo == binding.combo) {
                return Err(err("this key combination is bound twice"));
            }
            // One entry stays free for the secure-attention default.
            if hotkeys.len().saturating_add(1) >= MAX_HOTKEYS {
                return Err(err("too many hotkeys"));
            }
            hotkeys.push(binding);
            continue;
        }
        if first == "link" {
            let link = parse_link(rest, &vms).map_err(err)?;
            if links.iter().any(|l| (l.a, l.b) == (link.a, link.b) || (l.a, l.b) == (link.b, link.a)) {
                return Err(err("these two VMs are linked twice"));
            }
            let ports = |vm: usize| links.iter().filter(|l| l.a == vm || l.b == vm).count();
            let limit = |vm: usize| {
                if vms.get(vm).is_some_and(|v| v.kind == Kind::Service) { MAX_SERVICE_LINKS } else { MAX_LINKS_PER_VM }
            };
            if ports(link.a) >= limit(link.a) || ports(link.b) >= limit(link.b) {
                return Err(err("a desktop has at most 4 links, the service VM at most 8"));
            }
            links.push(link);
            continue;
        }
        if first != "vm" {
            return Err(err("lines start with `vm NAME`, `link VM VM` or `hotkey ACTION COMBO`"));
        }
        let (name, pairs) = rest.split_first().ok_or_else(|| err("missing VM name"))?;
        if name.is_empty() || name.len() > 31 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(err("VM names are 1-31 letters, digits or '-'"));
        }
        if vms.iter().any(|v| v.name == *name) {
            return Err(err("duplicate VM name"));
        }
        let mut vm = VmConfig {
            name: name.clone(),
            kind: Kind::Payload,
            image: String::new(),
            initrd: None,
            modules: Vec::new(),
            cmdline: String::new(),
            memory_bytes: 0,
            label: name.clone(),
            colour: 0x7f8c8d,
            restart: Restart::Never,
            expect: None,
            devices: Vec::new(),
            disk: None,
        };
        for pair in pairs {
            let (key, value) = pair.split_once('=').ok_or_else(|| err("expected key=value"))?;
            match key {
                "image" => vm.image = value.into(),
                "initrd" => vm.initrd = Some(value.into()),
                "modules" => {
                    for name in value.split(',') {
                        if name.is_empty() {
                            return Err(err("modules is a list of boot module names like a,b"));
                        }
                        if vm.modules.len() == crate::vm::multiboot::MAX_MODULES {
                            return Err(err("too many modules (at most 16)"));
                        }
                        vm.modules.push(name.into());
                    }
                }
                "cmdline" => vm.cmdline = value.into(),
                "label" => vm.label = value.into(),
                "memory" => vm.memory_bytes = parse_size(value).ok_or_else(|| err("memory is like 256M or 1G"))?,
                "colour" | "color" => {
                    vm.colour = value
                        .strip_prefix('#')
                        .filter(|h| h.len() == 6)
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .ok_or_else(|| err("colour is like #c0392b"))?
                }
                "kind" => {
                    vm.kind = match value {
                        "payload" => Kind::Payload,
                        "linux" => Kind::Linux,
                        "multiboot" => Kind::Multiboot,
                        "service" => Kind::Service,
                        _ => return Err(err("kind is payload, linux, multiboot or service")),
                    }
                }
                "restart" => {
                    vm.restart = match value {
                        "never" => Restart::Never,
                        "always" => Restart::Always,
                        n => Restart::Times(n.parse().map_err(|_| err("restart is never, always or a count"))?),
                    }
                }
                "expect" => {
                    vm.expect = Some(match value {
                        "triple-fault" => Expect::TripleFault,
                        "npf" => Expect::NestedPageFault,
                        "bad-hypercall" => Expect::BadHypercall,
                        "shutdown" => Expect::Shutdown,
                        "dma-fault" => Expect::DmaFault,
                        _ => return Err(err("expect is triple-fault, npf, bad-hypercall, shutdown or dma-fault")),
                    })
                }
                "devices" => {
                    for item in value.split(',') {
                        let d = DeviceSelector::parse(item)
                            .ok_or_else(|| err("devices is a list like 00:03.0 (bus:device.function) or 8086:10d3"))?;
                        // An address names one function; the same vendor:device again
                        // names the next such function (two identical NICs).
                        if matches!(d, DeviceSelector::Address { .. }) && vm.devices.contains(&d) {
                            return Err(err("a device address is listed twice"));
                        }
                        vm.devices.push(d);
                    }
                }
                _ => {
                    return Err(err(
                        "unknown key (image, initrd, modules, cmdline, label, memory, colour, kind, restart, expect, \
                         devices)",
                    ));
                }
            }
        }
        if vm.image.is_empty() {
            return Err(err("image= is required"));
        }
        if !vm.modules.is_empty() && vm.kind != Kind::Multiboot {
            return Err(err("modules= is for kind=multiboot"));
        }
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&vm.memory_bytes) || !vm.memory_bytes.is_multiple_of(2 * 1024 * 1024) {
            return Err(err("memory must be a multiple of 2M between 2M and 64G"));
        }
        if vms.len() == MAX_VMS {
            return Err(err("too many VMs"));
        }
        vms.push(vm);
    }
    Ok(Config { vms, hotkeys, links })
}

/// `VM VM [rule=...] [allow=...]` of a `link` line: two different VMs defined above
/// it, both Linux desktops, or a desktop and the service VM with the desktop's rule.
fn parse_link(words: &[String], vms: &[VmConfig]) -> Result<LinkConfig, &'static str> {
    let [a, b, options @ ..] = words else {
        return Err("link lines are `link VM VM`, e.g. `link corporate personal`");
    };
    let find = |name: &String| vms.iter().position(|v| v.name == *name);
    let (Some(a), Some(b)) = (find(a), find(b)) else {
        return Err("a link names two VMs defined above it");
    };
    if a == b {
        return Err("a link joins two different VMs");
    }
    let kind = |i: usize| vms.get(i).map(|v| v.kind);
    match (kind(a), kind(b)) {
        (Some(Kind::Linux), Some(Kind::Linux)) => {
            if !options.is_empty() {
                return Err("rule= and allow= belong on links to the service VM");
            }
            Ok(LinkConfig { a, b, rule: None })
        }
        // A payload VM on a service link is test equipment (a desktop that misbehaves).
        (Some(Kind::Linux | Kind::Payload), Some(Kind::Service)) => {
            Ok(LinkConfig { a, b, rule: Some(parse_rule(options)?) })
        }
        (Some(Kind::Service), Some(Kind::Linux | Kind::Payload)) => {
            Ok(LinkConfig { a: b, b: a, rule: Some(parse_rule(options)?) })
        }
        _ => Err("links join two kind=linux VMs, or a kind=linux (or payload) VM and the kind=service VM"),
    }
}

/// `rule=internet|corporate-only|isolated [allow=CIDR[:port],...]`.
fn parse_rule(options: &[String]) -> Result<NetRule, &'static str> {
    let (mut rule, mut allow) = (None, None);
    for option in options {
        match option.split_once('=') {
            Some(("rule", value)) => rule = Some(value),
            Some(("allow", value)) => allow = Some(value),
            _ => return Err("a link to the service VM takes rule= and allow= only"),
        }
    }
    let allowed = |text: &str| -> Result<Vec<String>, &'static str> {
        text.split(',')
            .map(|entry| {
                if valid_destination(entry) {
                    Ok(String::from(entry))
                } else {
                    Err("allow= entries are like 10.0.2.2/32:8080 or 192.168.0.0/16")
                }
            })
            .collect()
    };
    match (rule, allow) {
        (None, _) => Err("a link to the service VM needs rule=internet, corporate-only or isolated"),
        (Some("internet"), None) => Ok(NetRule::Internet),
        (Some("isolated"), None) => Ok(NetRule::Isolated),
        (Some("corporate-only"), Some(list)) => Ok(NetRule::CorporateOnly(allowed(list)?)),
        (Some("corporate-only"), None) => Err("rule=corporate-only needs allow=, the destinations it allows"),
        (Some("internet" | "isolated"), Some(_)) => Err("allow= goes with rule=corporate-only only"),
        (Some(_), _) => Err("rule is internet, corporate-only or isolated"),
    }
}

/// `A.B.C.D[/len][:port]` with len ≤ 32 and port 1..=65535.
fn valid_destination(entry: &str) -> bool {
    let (net, port) = match entry.rsplit_once(':') {
        Some((net, port)) => (net, Some(port)),
        None => (entry, None),
    };
    let (addr, len) = net.split_once('/').unwrap_or((net, "32"));
    let octets: Vec<&str> = addr.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|o| o.parse::<u8>().is_ok())
        && len.parse::<u8>().is_ok_and(|l| l <= 32)
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0))
}

/// `ACTION COMBO` of a `hotkey` line.
fn parse_hotkey(words: &[String]) -> Result<HotkeyBinding, HotkeyError> {
    let [action, text] = words else { return Err(HotkeyError::Usage) };
    let action = match action.as_str() {
        "next" => Action::Next,
        "overview" => Action::Overview,
        "secure-attention" => Action::SecureAttention,
        other => match other.strip_prefix("switch-").and_then(|n| n.parse::<u8>().ok()) {
            Some(n @ 1..=9) => Action::SwitchTo(n),
            _ => return Err(HotkeyError::Usage),
        },
    };
    let combo = Combo::parse(text).map_err(|error| HotkeyError::Combo { text: text.clone(), error })?;
    // A combination without Ctrl, Alt or Meta would take ordinary typing away from
    // every guest.
    if !(combo.mods.ctrl || combo.mods.alt || combo.mods.meta) {
        return Err(HotkeyError::NoModifier { text: text.clone() });
    }
    Ok(HotkeyBinding { action, combo })
}

/// Splits on whitespace, keeping `"quoted strings"` (after `=`) together.
fn split_words(raw: &str) -> Result<Vec<String>, ConfigReason> {
    let text = match raw.find('#') {
        // A '#' inside a value (colour=#...) is not a comment.
        Some(i) if i == 0 || raw[..i].ends_with(char::is_whitespace) => &raw[..i],
        _ => raw,
    };
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(core::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err(ConfigReason::Invalid("unterminated quote"));
    }
    if !current.is_empty() {
        words.push(current);
    }
    Ok(words)
}

fn parse_size(value: &str) -> Option<u64> {
    let (digits, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = digits.parse().ok()?;
    let shift = match unit {
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_fleet() {
        let text = "# desktops\nvm corporate kind=linux image=linux initrd=initrd memory=384M label=\"CORPORATE · secure\" colour=#c0392b restart=always\n\nvm checks image=checks memory=16M restart=2 expect=npf # self-test\n";
        let vms = parse(text).unwrap();
        assert_eq!(vms.len(), 2);
        assert_eq!(vms[0].label, "CORPORATE · secure");
        assert_eq!(vms[0].colour, 0xc0392b);
        assert_eq!(vms[0].kind, Kind::Linux);
        assert_eq!(vms[0].memory_bytes, 384 << 20);
        assert_eq!(vms[0].restart, Restart::Always);
        assert_eq!(vms[1].restart, Restart::Times(2));
        assert_eq!(vms[1].label, "checks");
        assert_eq!(vms[1].expect, Some(Expect::NestedPageFault));
    }

    #[test]
    fn multiboot_kernels_with_modules() {
        let vms = parse("vm mb kind=multiboot image=kernel memory=16M cmdline=\"a b\" modules=vms,checks").unwrap();
        assert_eq!((vms[0].kind, vms[0].cmdline.as_str()), (Kind::Multiboot, "a b"));
        assert_eq!(vms[0].modules, ["vms", "checks"]);
        assert!(parse("vm mb kind=multiboot image=k memory=16M modules=a,,b").is_err());
        let many = alloc::format!("vm mb kind=multiboot image=k memory=16M modules=m{}", ",m".repeat(16));
        assert!(parse(&many).unwrap_err().reason.to_string().contains("too many modules"));
        let e = parse("vm p image=k memory=16M modules=a").unwrap_err();
        assert_eq!(e.reason, ConfigReason::Invalid("modules= is for kind=multiboot"));
        assert!(parse("vm p kind=mb image=k memory=16M").unwrap_err().reason.to_string().contains("multiboot"));
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e = parse("vm a image=x memory=16M\nvm a image=y memory=16M").unwrap_err();
        assert_eq!((e.line, &e.reason), (2, &ConfigReason::Invalid("duplicate VM name")));
        assert_eq!(e.to_string(), "VM configuration line 2: duplicate VM name");
        assert!(parse("vm b memory=16M").unwrap_err().reason.to_string().contains("image="));
        assert!(parse("vm b image=x memory=3M").unwrap_err().reason.to_string().contains("multiple of 2M"));
        assert!(parse("vm b image=x memory=99999999999G").is_err());
        let open = parse("vm b image=x memory=16M label=\"open").unwrap_err();
        assert_eq!(open.reason, ConfigReason::Invalid("unterminated quote"));
        assert!(parse("vm bad_name image=x memory=16M").is_err());
        assert!(parse("vm c image=x memory=16M colour=red").is_err());
    }

    #[test]
    fn key_map_lines() {
        let text = "hotkey switch-2 Ctrl+Alt+F2\nvm a image=x memory=16M\nhotkey overview meta+space # comment\n";
        let c = parse_config(text).unwrap();
        assert_eq!(c.vms.len(), 1);
        assert_eq!(c.hotkeys.len(), 2);
        assert_eq!(c.hotkeys[0].action, Action::SwitchTo(2));
        assert_eq!(c.hotkeys[0].combo, Combo::parse("ctrl+alt+f2").unwrap());
        assert_eq!(c.hotkeys[1].action, Action::Overview);
        assert!(parse_config("vm a image=x memory=16M").unwrap().hotkeys.is_empty());
        for (bad, why) in [
            ("hotkey switch-0 Ctrl+Alt+0", "actions"),
            ("hotkey switch-10 Ctrl+Alt+0", "actions"),
            ("hotkey jump Ctrl+Alt+J", "actions"),
            ("hotkey next", "actions"),
            ("hotkey next Ctrl+Alt+Nope", "unknown key name"),
            ("hotkey next Shift+Tab", "needs Ctrl, Alt or Meta"),
            ("hotkey next Ctrl+Alt+Tab\nhotkey overview ctrl+alt+tab", "bound twice"),
        ] {
            let e = parse_config(bad).unwrap_err();
            assert!(e.reason.to_string().contains(why), "{bad}: {}", e.reason);
        }
        let e = parse_config("vm a image=x memory=16M\nhotkey next Shift+Tab").unwrap_err();
        assert_eq!(e.reason, ConfigReason::Hotkey(HotkeyError::NoModifier { text: "Shift+Tab".into() }));
        assert_eq!(
            e.to_string(),
            "VM configuration line 2: Shift+Tab needs Ctrl, Alt or Meta, or guests could not type that key"
        );
        let e = parse_config("hotkey next Ctrl+Alt+Nope").unwrap_err();
        assert_eq!(
            e.reason,
            ConfigReason::Hotkey(HotkeyError::Combo { text: "Ctrl+Alt+Nope".into(), error: ParseError::UnknownKey })
        );
        assert_eq!(
            parse_config("hotkey jump Ctrl+Alt+J").unwrap_err().to_string(),
            "VM configuration line 1: hotkey lines are `hotkey ACTION COMBO`, e.g. `hotkey switch-1 Ctrl+Alt+1` \
             (actions: switch-1 .. switch-9, next, overview, secure-attention)"
        );
        let many: String =
            (0..MAX_HOTKEYS).map(|i| alloc::format!("hotkey next Ctrl+Alt+{}\n", (b'a' + i as u8) as char)).collect();
        assert!(parse_config(&many).unwrap_err().reason.to_string().contains("too many"));
    }

    #[test]
    fn links_to_the_service_vm_carry_the_desktops_rule() {
        let vms = "vm net kind=service image=service-vm memory=32M\nvm a kind=linux image=l memory=64M\nvm b kind=linux image=l memory=64M\nvm p image=p memory=16M\n";
        let config = parse_config(&alloc::format!(
            "{vms}link a net rule=internet\nlink net b rule=corporate-only allow=10.0.2.2/32:8080,192.168.0.0/16\n"
        ))
        .unwrap();
        assert_eq!(config.vms[0].kind, Kind::Service);
        assert_eq!(
            config.links,
            [
                LinkConfig { a: 1, b: 0, rule: Some(NetRule::Internet) },
                // Written service-first, stored desktop-first.
                LinkConfig {
                    a: 2,
                    b: 0,
                    rule: Some(NetRule::CorporateOnly(vec!["10.0.2.2/32:8080".into(), "192.168.0.0/16".into()]))
                },
            ]
        );
        let reason = |extra: &str| parse_config(&alloc::format!("{vms}{extra}")).unwrap_err().reason.to_string();
        assert!(reason("link a net\n").contains("needs rule="), "{}", reason("link a net\n"));
        assert!(reason("link a net rule=open\n").contains("rule is internet"));
        assert!(reason("link a net rule=corporate-only\n").contains("needs allow="));
        assert!(reason("link a net rule=internet allow=10.0.0.0/8\n").contains("corporate-only only"));
        for bad in ["10.0.0.0/33", "10.0.0.1:0", "10.0.0:80", "10.0.0.256", "ten"] {
            assert!(
                reason(&alloc::format!("link a net rule=corporate-only allow={bad}\n")).contains("allow= entries"),
                "{bad}"
            );
        }
        assert!(reason("link a b rule=internet\n").contains("belong on links to the service VM"));
        assert!(reason("link a p\n").contains("and the kind=service VM"), "a payload links only to the service VM");
        assert!(
            parse_config(&alloc::format!("{vms}link net p rule=isolated\n")).is_ok(),
            "a payload may be a desktop end"
        );
        // The service VM takes up to 8 links, a desktop 4.
        let desktops: alloc::string::String = (0..9)
            .map(|i| alloc::format!("vm d{i} kind=linux image=l memory=64M\nlink d{i} net rule=isolated\n"))
            .collect();
        let e = parse_config(&alloc::format!("{vms}{desktops}")).unwrap_err();
        assert_eq!(e.line, 4 + 18, "the ninth link is refused");
    }

    #[test]
    fn links_join_two_linux_vms_defined_above() {
        let vms = "vm a kind=linux image=l memory=64M\nvm b kind=linux image=l memory=64M\nvm c kind=linux image=l memory=64M\nvm p image=p memory=16M\n";
        let config = parse_config(&alloc::format!("{vms}link a b\nlink c a\n")).unwrap();
        assert_eq!(config.links, [LinkConfig { a: 0, b: 1, rule: None }, LinkConfig { a: 2, b: 0, rule: None }]);
        assert_eq!(config.links_of(0).collect::<Vec<_>>(), [(0, 1), (1, 2)]);
        assert_eq!(config.links_of(2).collect::<Vec<_>>(), [(1, 0)]);
        assert_eq!(config.links_of(3).count(), 0);
        let line_of = |extra: &str| parse_config(&alloc::format!("{vms}{extra}")).unwrap_err().line;
        for bad in ["link a\n", "link a b c\n", "link a z\n", "link a a\n", "link a p\n", "link a b\nlink b a\n"] {
            let lines = bad.lines().count();
            assert_eq!(line_of(bad), 4 + lines, "{bad:?}");
        }
        // A link before its VMs are defined is refused too.
        assert_eq!(parse_config("link a b\nvm a kind=linux image=l memory=64M\n").unwrap_err().line, 1);
        let many: alloc::string::String =
            (0..5).map(|i| alloc::format!("vm x{i} kind=linux image=l memory=64M\nlink a x{i}\n")).collect();
        assert_eq!(parse_config(&alloc::format!("{vms}{many}")).unwrap_err().line, 14, "a's fifth link");
    }

    #[test]
    fn devices_by_address_or_id() {
        let vms = parse("vm n image=x memory=16M devices=00:03.0,8086:10D3,1a:1f.7 expect=dma-fault").unwrap();
        assert_eq!(
            vms[0].devices,
            [
                DeviceSelector::Address { bus: 0, device: 3, function: 0 },
                DeviceSelector::Id { vendor: 0x8086, device: 0x10d3 },
                DeviceSelector::Address { bus: 0x1a, device: 0x1f, function: 7 },
            ]
        );
        assert_eq!(vms[0].expect, Some(Expect::DmaFault));
        assert_eq!(vms[0].devices[1].to_string(), "8086:10d3");
        assert_eq!(vms[0].devices[0].to_string(), "00:03.0");
        for bad in ["00:20.0", "00:03.8", "0:3", "8086:10d", "xx:03.0", "00:03.0,00:03.0", "", "00:03.0,"] {
            assert!(parse(&alloc::format!("vm n image=x memory=16M devices={bad}")).is_err(), "{bad}");
        }
        assert!(parse("vm n image=x memory=16M").unwrap()[0].devices.is_empty());
        let two = parse("vm n image=x memory=16M devices=8086:10d3,8086:10d3").unwrap();
        assert_eq!(two[0].devices.len(), 2, "two functions with the same ids");
    }
}
