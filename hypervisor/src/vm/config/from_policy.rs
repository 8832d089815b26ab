//! [`Config::from_policy`]: the policy's VMs, networks, links and key map, checked one
//! value at a time with the same rules the host tool applies (`bulkhead_policy::syntax`),
//! because the hypervisor trusts nothing it is given, signed or not.

use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_policy::model::{self, Policy, VmKind};
use bulkhead_policy::syntax::{self, DeviceSelector, Expect, MAX_HOTKEYS};

use super::{
    Config, ConfigError, ConfigReason, DiskConfig, HotkeyBinding, HotkeyError, Kind, LinkConfig, MAX_LINKS_PER_VM,
    MAX_SERVICE_LINKS, NetRule, Restart, Subject, VmConfig,
};
use crate::switcher::hotkeys::{Action, Combo};

/// Longest VM name kept in an error about the name itself.
const SHOWN_NAME: usize = 32;

impl Config {
    /// The configuration a verified policy describes, or the first value the
    /// hypervisor refuses, named by VM and field.
    pub fn from_policy(policy: &Policy) -> Result<Config, ConfigError> {
        let policy_err = |why| ConfigError { subject: Subject::Policy, reason: ConfigReason::Invalid(why) };
        if policy.vms.len() > syntax::MAX_VMS {
            return Err(policy_err("too many VMs (at most 16)"));
        }
        let mut vms: Vec<VmConfig> = Vec::new();
        for vm in &policy.vms {
            let err = |why| ConfigError { subject: Subject::Vm(shown(&vm.name)), reason: ConfigReason::Invalid(why) };
            if vms.iter().any(|v| v.name == vm.name) {
                return Err(err("the name is used by two VMs"));
            }
            vms.push(vm_config(vm).map_err(err)?);
        }
        let mut links: Vec<LinkConfig> = Vec::new();
        // The desktops' networks first, in slot order: link order fixes the service VM's
        // port numbers and so the desktops' addresses.
        for (index, vm) in policy.vms.iter().enumerate() {
            let Some(network) = &vm.network else { continue };
            let err = |why| ConfigError { subject: Subject::Vm(vm.name.clone()), reason: ConfigReason::Invalid(why) };
            let link = network_link(index, network, &vms).map_err(err)?;
            add_link(&mut links, link, &vms).map_err(err)?;
        }
        for link in &policy.links {
            let err = |why| ConfigError {
                subject: Subject::Link(shown(&link.a), shown(&link.b)),
                reason: ConfigReason::Invalid(why),
            };
            let find = |name: &String| vms.iter().position(|v| v.name == *name);
            let (Some(a), Some(b)) = (find(&link.a), find(&link.b)) else {
                return Err(err("a link names two VMs of the policy"));
            };
            if a == b {
                return Err(err("a link joins two different VMs"));
            }
            if vms.get(a).map(|v| v.kind) != Some(Kind::Linux) || vms.get(b).map(|v| v.kind) != Some(Kind::Linux) {
                return Err(err(
                    "links join two kind=linux VMs (a desktop reaches the service VM through its network)",
                ));
            }
            add_link(&mut links, LinkConfig { a, b, rule: None }, &vms).map_err(err)?;
        }
        let mut hotkeys: Vec<HotkeyBinding> = Vec::new();
        for hotkey in &policy.hotkeys {
            let err = |reason| ConfigError { subject: Subject::Hotkey(shown(&hotkey.action)), reason };
            let binding = parse_hotkey(&hotkey.action, &hotkey.combo).map_err(|e| err(ConfigReason::Hotkey(e)))?;
            if hotkeys.iter().any(|h| h.combo == binding.combo) {
                return Err(err(ConfigReason::Invalid("this key combination is bound twice")));
            }
            if hotkeys.iter().any(|h| h.action == binding.action) {
                return Err(err(ConfigReason::Invalid("this action is bound twice")));
            }
            // One entry stays free for the secure-attention default.
            if hotkeys.len().saturating_add(1) >= MAX_HOTKEYS {
                return Err(err(ConfigReason::Invalid("too many hotkeys (at most 15)")));
            }
            hotkeys.push(binding);
        }
        Ok(Config { vms, hotkeys, links })
    }
}

/// A name as shown in an error: at most [`SHOWN_NAME`] characters.
fn shown(name: &str) -> String {
    name.chars().take(SHOWN_NAME).collect()
}

fn vm_config(vm: &model::Vm) -> Result<VmConfig, &'static str> {
    if !syntax::valid_vm_name(&vm.name) {
        return Err("name: VM names are 1-31 letters, digits or '-'");
    }
    if vm.image.is_empty() {
        return Err("image: names the boot module the VM starts from, and is empty");
    }
    let kind = match vm.kind {
        VmKind::Linux => Kind::Linux,
        VmKind::Payload => Kind::Payload,
        VmKind::Multiboot => Kind::Multiboot,
        VmKind::Service => Kind::Service,
    };
    if vm.initrd.as_ref().is_some_and(String::is_empty) {
        return Err("initrd: names a boot module, and is empty");
    }
    if !vm.modules.is_empty() && kind != Kind::Multiboot {
        return Err("modules: only a kind=multiboot VM takes modules");
    }
    if vm.modules.len() > crate::vm::multiboot::MAX_MODULES {
        return Err("modules: too many (at most 16)");
    }
    if vm.modules.iter().any(String::is_empty) {
        return Err("modules: a module name is empty");
    }
    let memory_bytes = u64::from(vm.memory_mib) << 20;
    if !syntax::valid_memory(memory_bytes) {
        return Err("memory must be a multiple of 2 MiB between 2 MiB and 64 GiB");
    }
    if !syntax::valid_vcpus(vm.vcpus, kind == Kind::Linux) {
        return Err("vcpus: 1 to 8, and more than 1 only for a kind=linux VM");
    }
    if vm.colour > 0xff_ffff {
        return Err("colour: must be 0xRRGGBB");
    }
    let expect = match &vm.expect {
        Some(text) => {
            Some(Expect::parse(text).ok_or("expect: is triple-fault, npf, bad-hypercall, shutdown or dma-fault")?)
        }
        None => None,
    };
    let mut devices: Vec<DeviceSelector> = Vec::new();
    for text in &vm.devices {
        let d = DeviceSelector::parse(text)
            .ok_or("devices: entries are like 00:03.0 (bus:device.function) or 8086:10d3 (vendor:device)")?;
        // An address names one function; the same vendor:device again names the next
        // such function (two identical NICs).
        if matches!(d, DeviceSelector::Address { .. }) && devices.contains(&d) {
            return Err("devices: an address is listed twice");
        }
        devices.push(d);
    }
    Ok(VmConfig {
        name: vm.name.clone(),
        kind,
        image: vm.image.clone(),
        initrd: vm.initrd.clone(),
        modules: vm.modules.clone(),
        cmdline: vm.cmdline.clone(),
        memory_bytes,
        vcpus: vm.vcpus,
        label: vm.label.clone(),
        colour: vm.colour,
        restart: match vm.restart {
            model::Restart::Never => Restart::Never,
            model::Restart::Times(n) => Restart::Times(n),
            model::Restart::Always => Restart::Always,
        },
        expect,
        devices,
        needs_lease: vm.needs_lease,
        disk: disk_config(vm)?,
    })
}

/// A VM's virtio-blk disk: an encrypted volume on the data partition, or in host RAM
/// on a machine without one (`vm::disk_port`). A payload VM with a disk is test
/// equipment (a guest whose virtio-blk driver misbehaves).
fn disk_config(vm: &model::Vm) -> Result<Option<DiskConfig>, &'static str> {
    let Some(disk) = vm.disk else { return Ok(None) };
    if !vm.kind.takes_disk() {
        return Err("a disk is for kind = linux (or payload) VMs");
    }
    if disk.size_mib == 0 || disk.size_mib > model::MAX_DISK_MIB {
        return Err("disk size must be between 1 MiB and 1 TiB");
    }
    Ok(Some(DiskConfig {
        size_bytes: u64::from(disk.size_mib) << 20,
        read_only: disk.mode == model::DiskMode::ReadOnly,
    }))
}

/// VM `index`'s network: a link to the service VM `via` names, with its rule.
fn network_link(index: usize, network: &model::Network, vms: &[VmConfig]) -> Result<LinkConfig, &'static str> {
    // A payload VM on a service link is test equipment (a desktop that misbehaves).
    if !matches!(vms.get(index).map(|v| v.kind), Some(Kind::Linux | Kind::Payload)) {
        return Err("network: only a kind=linux (or payload) VM has a network");
    }
    let Some(service) = vms.iter().position(|v| v.name == network.via) else {
        return Err("network: via names no VM of the policy");
    };
    if vms.get(service).map(|v| v.kind) != Some(Kind::Service) {
        return Err("network: via must name the kind=service VM");
    }
    if !network.allow.iter().all(|e| syntax::valid_destination(e)) {
        return Err("network: allow entries are like 10.0.2.2/32:8080 or 192.168.0.0/16");
    }
    let rule = match (network.rule, network.allow.is_empty()) {
        (model::NetRule::Internet, true) => NetRule::Internet,
        (model::NetRule::Isolated, true) => NetRule::Isolated,
        (model::NetRule::CorporateOnly, false) => NetRule::CorporateOnly(network.allow.clone()),
        (model::NetRule::CorporateOnly, true) => {
            return Err("network: rule corporate-only needs allow, the destinations it allows");
        }
        (_, false) => return Err("network: allow goes with rule corporate-only only"),
    };
    Ok(LinkConfig { a: index, b: service, rule: Some(rule) })
}

/// Adds `link` unless it repeats one or a VM has no port left.
fn add_link(links: &mut Vec<LinkConfig>, link: LinkConfig, vms: &[VmConfig]) -> Result<(), &'static str> {
    if links.iter().any(|l| (l.a, l.b) == (link.a, link.b) || (l.a, l.b) == (link.b, link.a)) {
        return Err("these two VMs are linked twice");
    }
    let ports = |vm: usize| links.iter().filter(|l| l.a == vm || l.b == vm).count();
    let limit = |vm: usize| {
        if vms.get(vm).is_some_and(|v| v.kind == Kind::Service) { MAX_SERVICE_LINKS } else { MAX_LINKS_PER_VM }
    };
    if ports(link.a) >= limit(link.a) || ports(link.b) >= limit(link.b) {
        return Err("a desktop has at most 4 links, the service VM at most 8");
    }
    links.push(link);
    Ok(())
}

/// One key-map entry: its action and combination.
fn parse_hotkey(action: &str, text: &str) -> Result<HotkeyBinding, HotkeyError> {
    let action: Action = syntax::Action::parse(action).ok_or(HotkeyError::Usage)?;
    let combo = Combo::parse(text).map_err(|error| HotkeyError::Combo { text: shown(text), error })?;
    // A combination without Ctrl, Alt or Meta would take ordinary typing away from
    // every guest.
    if !(combo.mods.ctrl || combo.mods.alt || combo.mods.meta) {
        return Err(HotkeyError::NoModifier { text: shown(text) });
    }
    Ok(HotkeyBinding { action, combo })
}
