//! `[[vm]]` and `[[link]]`: names, slots, kinds, memory against the laptop's RAM,
//! devices, and the links between desktops. Networks are in `network.rs`.

use std::collections::HashMap;
use std::ops::Range;

use bulkhead_policy::model::{Disk, DiskMode, Link, MAX_DISK_MIB, Restart, Vm, VmKind};
use bulkhead_policy::syntax::{self, DeviceSelector, Expect};

use super::diagnostics::Diagnostics;
use super::source::{LinkEntry, VmEntry};

const KINDS: &str = "\"linux\", \"payload\", \"multiboot\" or \"service\"";

/// What the VM checks need to know about the rest of the file.
#[derive(Debug)]
pub struct Known<'a> {
    /// Names of `[[vm]]` tables with errors of their own.
    pub unreadable: &'a [String],
    /// The policy has a `[management]` section.
    pub managed: bool,
}

/// The checked VMs in slot order and the links, or as much as could be read.
pub fn check(
    d: &mut Diagnostics,
    entries: &[(Range<usize>, VmEntry)],
    links: &[(Range<usize>, LinkEntry)],
    known: &Known,
    ram_bytes: u64,
) -> (Vec<Vm>, Vec<Link>) {
    if entries.is_empty() && known.unreadable.is_empty() {
        d.error(0..0, "the policy runs no VM: add a [[vm]] table");
    }
    if entries.len() > syntax::MAX_VMS {
        let span = entries.get(syntax::MAX_VMS).map_or(0..0, |(s, _)| s.clone());
        d.error(span, format!("too many VMs: a policy runs at most {}", syntax::MAX_VMS));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut slots: HashMap<i64, usize> = HashMap::new();
    let mut addresses: HashMap<DeviceSelector, (&str, usize)> = HashMap::new();
    let mut vms: Vec<(i64, Vm)> = Vec::new();
    let mut total_memory: u64 = 0;
    for (_, e) in entries {
        let name = e.name.get_ref().as_str();
        if !syntax::valid_vm_name(name) {
            d.error(e.name.span(), format!("VM name \"{name}\" must be 1-31 letters, digits or '-'"));
        }
        if let Some(line) = names.insert(name, d.line_of(e.name.span().start)) {
            d.error(
                e.name.span(),
                format!("VM name \"{name}\" is already used on line {line}: give each VM its own name"),
            );
        }
        let slot = *e.slot.get_ref();
        if !(1..=syntax::MAX_VMS as i64).contains(&slot) {
            d.error(e.slot.span(), format!("slot must be 1 to {}: the VM's place in the switcher", syntax::MAX_VMS));
        } else if let Some(line) = slots.insert(slot, d.line_of(e.slot.span().start)) {
            d.error(e.slot.span(), format!("slot {slot} is already taken on line {line}: give each VM its own slot"));
        }
        let kind = match e.kind.get_ref().as_str() {
            "linux" => VmKind::Linux,
            "payload" => VmKind::Payload,
            "multiboot" => VmKind::Multiboot,
            "service" => VmKind::Service,
            other => {
                d.error(e.kind.span(), format!("kind \"{other}\" is unknown: use {KINDS}"));
                VmKind::Payload
            }
        };
        if e.image.get_ref().is_empty() {
            d.error(e.image.span(), "image names the boot module the VM starts from; it cannot be empty");
        }
        if let Some(initrd) = &e.initrd
            && (kind != VmKind::Linux || initrd.get_ref().is_empty())
        {
            d.error(initrd.span(), "initrd names the initramfs module of a kind = \"linux\" VM: remove it or fix it");
        }
        if let Some(first) = e.modules.first()
            && kind != VmKind::Multiboot
        {
            d.error(first.span(), "modules are for kind = \"multiboot\" VMs: remove them");
        }
        if e.modules.len() > syntax::MAX_MODULES {
            d.error(e.modules[syntax::MAX_MODULES].span(), format!("at most {} modules", syntax::MAX_MODULES));
        }
        for m in e.modules.iter().filter(|m| m.get_ref().is_empty()) {
            d.error(m.span(), "a module name cannot be empty");
        }
        let memory = check_memory(d, e);
        total_memory = total_memory.saturating_add(memory);
        let colour = match &e.colour {
            None => 0x7f8c8d,
            Some(c) => parse_colour(c.get_ref()).unwrap_or_else(|| {
                d.error(c.span(), format!("colour \"{}\" is not like \"#c0392b\" (#RRGGBB)", c.get_ref()));
                0
            }),
        };
        let restart = check_restart(d, e);
        let devices = check_devices(d, e, &mut addresses);
        let expect = e.expect.as_ref().map(|x| {
            if Expect::parse(x.get_ref()).is_none() {
                d.error(x.span(), format!("expect \"{}\" is unknown: use {}", x.get_ref(), Expect::NAMES));
            }
            x.get_ref().clone()
        });
        let needs_lease = e.needs_lease.as_ref().is_some_and(|n| *n.get_ref());
        if let Some(n) = &e.needs_lease
            && *n.get_ref()
            && !known.managed
        {
            d.error(n.span(), "needs_lease needs a [management] section: the lease comes from its check-ins");
        }
        let disk = check_disk(d, e, kind);
        let vcpus = check_vcpus(d, e, kind);
        let vm = Vm {
            name: name.to_string(),
            kind,
            image: e.image.get_ref().clone(),
            initrd: e.initrd.as_ref().map(|i| i.get_ref().clone()),
            modules: e.modules.iter().map(|m| m.get_ref().clone()).collect(),
            cmdline: e.cmdline.clone(),
            memory_mib: u32::try_from(memory >> 20).unwrap_or(0),
            vcpus,
            label: e.label.clone().unwrap_or_else(|| name.to_string()),
            colour,
            restart,
            devices,
            network: None,
            needs_lease,
            expect,
            disk,
        };
        vms.push((slot, vm));
    }
    check_total_memory(d, entries, total_memory, ram_bytes);
    super::network::check(d, entries, &mut vms, known.unreadable);
    let links = check_links(d, links, &vms, known.unreadable);
    vms.sort_by_key(|(slot, _)| *slot);
    (vms.into_iter().map(|(_, vm)| vm).collect(), links)
}

/// `disk = { size, mode }`: whole MiB up to 1 TiB, on a Linux VM (or a payload VM,
/// whose virtio-blk driver is its own).
fn check_disk(d: &mut Diagnostics, e: &VmEntry, kind: VmKind) -> Option<Disk> {
    let entry = e.disk.as_ref()?;
    if !kind.takes_disk() {
        d.error(entry.span(), "a disk is a virtio-blk device for kind = \"linux\" or \"payload\" VMs: remove it");
        return None;
    }
    let disk = entry.get_ref();
    let text = disk.size.get_ref();
    let size_mib = match syntax::parse_size(text) {
        Some(bytes) if bytes.is_multiple_of(1 << 20) && (1..=u64::from(MAX_DISK_MIB)).contains(&(bytes >> 20)) => {
            u32::try_from(bytes >> 20).unwrap_or(0)
        }
        Some(_) => {
            d.error(disk.size.span(), format!("disk size \"{text}\" must be whole MiB between 1M and 1024G"));
            return None;
        }
        None => {
            d.error(disk.size.span(), format!("disk size \"{text}\" is not a size: write it like \"512M\" or \"8G\""));
            return None;
        }
    };
    let mode = match disk.mode.as_ref().map(|m| m.get_ref().as_str()) {
        None | Some("persistent") => DiskMode::Persistent,
        Some("reset-on-boot") => DiskMode::ResetOnBoot,
        Some("read-only") => DiskMode::ReadOnly,
        Some(other) => {
            let span = disk.mode.as_ref().map_or(entry.span(), |m| m.span());
            d.error(span, format!("disk mode \"{other}\" is unknown: use persistent, reset-on-boot or read-only"));
            return None;
        }
    };
    Some(Disk { size_mib, mode })
}

/// `vcpus = N`: 1 to `MAX_VCPUS`, more than one only on a Linux VM.
fn check_vcpus(d: &mut Diagnostics, e: &VmEntry, kind: VmKind) -> u8 {
    let Some(entry) = &e.vcpus else { return 1 };
    let n = *entry.get_ref();
    let max = syntax::MAX_VCPUS;
    match u8::try_from(n) {
        Ok(v) if syntax::valid_vcpus(v, kind == VmKind::Linux) => v,
        Ok(v) if (2..=max).contains(&v) => {
            d.error(entry.span(), "vcpus above 1 are for kind = \"linux\" VMs (the others have one CPU)");
            1
        }
        _ => {
            d.error(entry.span(), format!("vcpus must be 1 to {max}"));
            1
        }
    }
}

fn check_memory(d: &mut Diagnostics, e: &VmEntry) -> u64 {
    let text = e.memory.get_ref();
    let Some(bytes) = syntax::parse_size(text) else {
        d.error(e.memory.span(), format!("memory \"{text}\" is not a size: write it like \"384M\" or \"2G\""));
        return 0;
    };
    if !bytes.is_multiple_of(syntax::MEMORY_GRANULE) {
        let up = bytes.div_ceil(syntax::MEMORY_GRANULE) * 2;
        d.error(e.memory.span(), format!("memory \"{text}\" is not a multiple of 2 MiB: use e.g. \"{up}M\""));
    } else if !syntax::valid_memory(bytes) {
        d.error(e.memory.span(), format!("memory \"{text}\" is outside 2M..64G, the sizes a VM can have"));
    } else {
        return bytes;
    }
    0
}

fn check_total_memory(d: &mut Diagnostics, entries: &[(Range<usize>, VmEntry)], total: u64, ram: u64) {
    let Some((_, last)) = entries.last() else { return };
    let mib = |b: u64| b >> 20;
    if total > ram {
        d.error(
            last.memory.span(),
            format!(
                "the VMs need {} MiB together, more than the laptop's {} MiB (--ram): make them smaller or run fewer",
                mib(total),
                mib(ram)
            ),
        );
    } else if total > ram / 8 * 7 {
        d.warning(
            last.memory.span(),
            format!(
                "the VMs need {} MiB together, leaving less than an eighth of the laptop's {} MiB to the hypervisor \
                 and firmware; they may not all start",
                mib(total),
                mib(ram)
            ),
        );
    }
}

fn check_restart(d: &mut Diagnostics, e: &VmEntry) -> Restart {
    let Some(value) = &e.restart else { return Restart::Never };
    match value.get_ref() {
        toml::Value::String(s) if s == "never" => Restart::Never,
        toml::Value::String(s) if s == "always" => Restart::Always,
        toml::Value::Integer(n) if (0..=i64::from(u32::MAX)).contains(n) => Restart::Times(*n as u32),
        _ => {
            d.error(value.span(), "restart is \"never\", \"always\" or a number of restarts after crashes, like 3");
            Restart::Never
        }
    }
}

fn check_devices<'e>(
    d: &mut Diagnostics,
    e: &'e VmEntry,
    addresses: &mut HashMap<DeviceSelector, (&'e str, usize)>,
) -> Vec<String> {
    let name = e.name.get_ref().as_str();
    let mut mine = Vec::new();
    for device in &e.devices {
        let text = device.get_ref();
        let Some(selector) = DeviceSelector::parse(text) else {
            d.error(
                device.span(),
                format!(
                    "device \"{text}\" is neither an address like \"00:03.0\" (bus:device.function, hex) nor an id \
                     like \"8086:10d3\" (vendor:device, hex)"
                ),
            );
            continue;
        };
        if matches!(selector, DeviceSelector::Address { .. }) {
            if mine.contains(&selector) {
                d.error(device.span(), format!("device {selector} is listed twice in this VM: remove one"));
            } else if let Some((other, line)) = addresses.get(&selector) {
                d.error(
                    device.span(),
                    format!("device {selector} is already given to VM {other} on line {line}: a device has one owner"),
                );
            } else {
                addresses.insert(selector, (name, d.line_of(device.span().start)));
            }
        }
        mine.push(selector);
    }
    e.devices.iter().map(|s| s.get_ref().clone()).collect()
}

fn parse_colour(text: &str) -> Option<u32> {
    let hex = text.strip_prefix('#').filter(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()))?;
    u32::from_str_radix(hex, 16).ok()
}

fn check_links(
    d: &mut Diagnostics,
    links: &[(Range<usize>, LinkEntry)],
    vms: &[(i64, Vm)],
    unreadable: &[String],
) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    let mut ports: HashMap<String, usize> = HashMap::new();
    for (_, vm) in vms.iter().filter(|(_, vm)| vm.network.is_some()) {
        *ports.entry(vm.name.clone()).or_default() += 1;
    }
    for (_, entry) in links {
        let names = entry.between.get_ref();
        let [a, b] = names.as_slice() else {
            d.error(entry.between.span(), "between names exactly two VMs, like [\"corporate\", \"personal\"]");
            continue;
        };
        let mut ok = true;
        for end in [a, b] {
            match vms.iter().find(|(_, v)| v.name == *end.get_ref()) {
                None if unreadable.contains(end.get_ref()) => ok = false,
                None => {
                    d.error(
                        end.span(),
                        format!("no VM is named \"{}\": a link joins two VMs of this policy", end.get_ref()),
                    );
                    ok = false;
                }
                Some((_, v)) if v.kind != VmKind::Linux => {
                    d.error(
                        end.span(),
                        format!(
                            "VM {} is not kind = \"linux\": links join two desktops (a desktop reaches the service VM \
                             through its network)",
                            v.name
                        ),
                    );
                    ok = false;
                }
                Some(_) => {}
            }
        }
        if !ok {
            continue;
        }
        let (a, b) = (a.get_ref().clone(), b.get_ref().clone());
        if a == b {
            d.error(entry.between.span(), "a link joins two different VMs");
            continue;
        }
        if out.iter().any(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a)) {
            d.error(entry.between.span(), format!("{a} and {b} are already linked: remove this [[link]]"));
            continue;
        }
        for end in [&a, &b] {
            let n = ports.entry(end.clone()).or_default();
            *n += 1;
            if *n == syntax::MAX_LINKS_PER_VM + 1 {
                d.error(
                    entry.between.span(),
                    format!("VM {end} has more than {} links (its network counts as one)", syntax::MAX_LINKS_PER_VM),
                );
            }
        }
        out.push(Link { a, b });
    }
    out
}
