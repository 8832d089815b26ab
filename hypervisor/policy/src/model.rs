//! The policy model: everything a laptop runs. The host tool compiles IT's TOML into
//! this; the hypervisor turns it into its VM configuration after the bundle verified.
//! Field values are kept close to what IT wrote (device selectors, key combinations and
//! allow-list entries as text) and are checked on both sides: by `cargo xtask policy
//! check` with line and column, and again by the hypervisor, which trusts nothing.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::device::DeviceId;

/// Bumped when the meaning of [`Policy`]'s encoding changes; a device refuses a format
/// it does not know.
pub const MODEL_FORMAT: u16 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Monotonic: a laptop never accepts a version lower than the highest it accepted.
    pub version: u64,
    /// Unix seconds (UTC) when the bundle was signed.
    pub issued_at: u64,
    /// Unix seconds (UTC) after which the bundle is refused.
    pub expires_at: u64,
    /// Which laptops this bundle is for.
    pub target: Target,
    /// The organisation's name, shown on the boot screen ("Example Corp IT").
    pub organisation: String,
    /// Where updates come from; `None`: this laptop is managed by stick only.
    pub management: Option<Management>,
    /// In switcher slot order (slot 1 first).
    pub vms: Vec<Vm>,
    /// Desktop-to-desktop links (a desktop's link to the service VM is its `network`).
    pub links: Vec<Link>,
    /// The switcher's key map; empty means the built-in defaults.
    pub hotkeys: Vec<Hotkey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Every laptop enrolled in this group (the group a laptop joins at enrolment).
    Group(String),
    /// Exactly one laptop.
    Device(DeviceId),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Management {
    /// `http://HOST:PORT` of the management server, as the service VM reaches it.
    pub server: String,
    /// Seconds between check-ins.
    pub checkin_interval_s: u32,
    /// Seconds a VM with `needs_lease` may run without a successful check-in.
    pub offline_lease_s: u32,
    /// The server's own Ed25519 key, which signs check-in answers ([`crate::heartbeat`]).
    pub server_key: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmKind {
    /// An unmodified Linux desktop (bzImage + initrd).
    Linux,
    /// A bare-metal ELF payload (self-tests, test equipment).
    Payload,
    /// A Multiboot (v1) kernel with its modules.
    Multiboot,
    /// The networking service VM.
    Service,
}

impl VmKind {
    /// Whether a VM of this kind may have a virtio-blk disk: Linux desktops, and
    /// payloads (test equipment that drives the device itself).
    pub fn takes_disk(self) -> bool {
        matches!(self, VmKind::Linux | VmKind::Payload)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    Never,
    /// Restart after a crash up to N times.
    Times(u32),
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetRule {
    Internet,
    CorporateOnly,
    Isolated,
}

/// A desktop's network: its link to the service VM and what it may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The service VM's name.
    pub via: String,
    pub rule: NetRule,
    /// `CIDR[:port]` destinations for `CorporateOnly`.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub name: String,
    pub kind: VmKind,
    /// Boot module names (files the image carries).
    pub image: String,
    pub initrd: Option<String>,
    pub modules: Vec<String>,
    pub cmdline: String,
    pub memory_mib: u32,
    /// Virtual CPUs (1 to [`crate::syntax::MAX_VCPUS`]; more than one only for Linux VMs).
    pub vcpus: u8,
    pub label: String,
    /// 0xRRGGBB.
    pub colour: u32,
    pub restart: Restart,
    /// Host PCI functions owned by this VM: `BB:DD.F` or `VVVV:DDDD`.
    pub devices: Vec<String>,
    pub network: Option<Network>,
    /// Starts only while the laptop's offline lease holds (see [`Management`]).
    pub needs_lease: bool,
    /// Its virtual disk (a virtio-blk device; Linux VMs).
    pub disk: Option<Disk>,
    /// Self-test VMs only: how the VM is expected to end (`triple-fault`, `npf`,
    /// `bad-hypercall`, `shutdown`, `dma-fault`).
    pub expect: Option<String>,
}

/// What happens to a VM disk's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskMode {
    /// Kept.
    Persistent,
    /// Discarded whenever the VM starts (a disposable desktop).
    ResetOnBoot,
    /// Refused: the guest sees a read-only disk.
    ReadOnly,
}

/// A VM's virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub size_mib: u32,
    pub mode: DiskMode,
}

/// Largest VM disk a policy may give (MiB).
pub const MAX_DISK_MIB: u32 = 1 << 20;

/// A link between two desktops' virtio-net devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub a: String,
    pub b: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hotkey {
    /// `switch-1` .. `switch-9`, `next`, `overview`, `secure-attention`.
    pub action: String,
    /// Like `Ctrl+Alt+F1`.
    pub combo: String,
}
