//! The VM configuration the hypervisor runs: which VMs to create, from which boot
//! module, with how much memory, under which trust label, what to do when one stops,
//! their network links and the switcher's key map. It is made from IT's signed policy
//! (boot module `policy`, see `policy_source`) by [`Config::from_policy`], which checks
//! every value again: a signature says who wrote the policy, not that it is sane.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

pub use bulkhead_policy::syntax::{DeviceSelector, Expect, MAX_MEMORY, MAX_VMS, MIN_MEMORY};

use crate::switcher::hotkeys::{Action, Combo, ParseError};

mod from_policy;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;

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
    /// networks (a desktop's `network = { via = ... }` in the policy).
    Service,
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
    /// Virtual CPUs: 1 to `syntax::MAX_VCPUS` (Linux VMs), 1 for every other kind.
    pub vcpus: u8,
    pub label: String,
    /// Trust colour as 0xRRGGBB.
    pub colour: u32,
    pub restart: Restart,
    pub expect: Option<Expect>,
    /// Host PCI functions the VM owns (IOMMU-enforced).
    pub devices: Vec<DeviceSelector>,
    /// Starts only while the laptop's offline lease holds.
    pub needs_lease: bool,
    /// A virtual disk (virtio-blk, Linux VMs). The policy has no field for it yet.
    pub disk: Option<DiskConfig>,
}

/// A VM's virtual disk: for now a disk in host RAM of this size, zeroed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskConfig {
    pub size_bytes: u64,
    pub read_only: bool,
}

/// One entry of the key map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotkeyBinding {
    pub action: Action,
    pub combo: Combo,
}

/// A virtio-net device in each of two VMs, wired to each other. The VMs are given by
/// their index in [`Config::vms`]. A link from a desktop (`a`) to the service VM (`b`)
/// is the desktop's `network` and carries its rule; a link between two desktops is a
/// policy `[[link]]`.
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
pub const MAX_LINKS_PER_VM: usize = bulkhead_policy::syntax::MAX_LINKS_PER_VM;
/// Links the service VM may have: one per connected desktop.
pub const MAX_SERVICE_LINKS: usize = bulkhead_abi::hypercall::NET_STATUS_LINKS;

/// Everything the hypervisor runs, from the policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub vms: Vec<VmConfig>,
    /// The key map; empty means the built-in defaults.
    pub hotkeys: Vec<HotkeyBinding>,
    pub links: Vec<LinkConfig>,
}

impl Config {
    /// The links of VM `vm` in configuration order (the desktops' networks in slot
    /// order, then the policy's links), with the other end's index.
    pub fn links_of(&self, vm: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.links.iter().enumerate().filter_map(move |(i, l)| match (l.a == vm, l.b == vm) {
            (true, _) => Some((i, l.b)),
            (_, true) => Some((i, l.a)),
            _ => None,
        })
    }
}

/// A refused policy: what it is about (a VM, a link, a hotkey) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub subject: Subject,
    pub reason: ConfigReason,
}

/// The part of the policy an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Policy,
    /// A VM, by name (cut short if the name itself is the problem).
    Vm(String),
    /// A `[[link]]` by its two VM names.
    Link(String, String),
    /// A key-map entry, by action.
    Hotkey(String),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.subject {
            Subject::Policy => write!(f, "policy: {}", self.reason),
            Subject::Vm(name) => write!(f, "VM {name}: {}", self.reason),
            Subject::Link(a, b) => write!(f, "link {a}-{b}: {}", self.reason),
            Subject::Hotkey(action) => write!(f, "hotkey {action}: {}", self.reason),
        }
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigReason {
    /// A fixed reason, naming the field and what it should be.
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

/// Why a key-map entry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotkeyError {
    /// An unknown action.
    Usage,
    /// The combination does not parse.
    Combo { text: String, error: ParseError },
    /// Neither Ctrl, Alt nor Meta: it would take that key away from every guest.
    NoModifier { text: String },
}

impl core::fmt::Display for HotkeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HotkeyError::Usage => {
                f.write_str("unknown action (actions: switch-1 .. switch-9, next, overview, secure-attention)")
            }
            HotkeyError::Combo { text, error } => write!(f, "{text}: {error}"),
            HotkeyError::NoModifier { text } => {
                write!(f, "{text} needs Ctrl, Alt or Meta, or guests could not type that key")
            }
        }
    }
}
