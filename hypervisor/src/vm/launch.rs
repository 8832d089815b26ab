//! From boot modules to running VMs: read the policy (boot module `policy`, a signed
//! bundle; an old image's `vms` text is not read), turn it into the VM configuration,
//! find each VM's boot image, turn on the virtualisation backend, create the VMs and hand them to the
//! scheduler. Any problem is reported before a single VM starts.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use bulkhead_abi::BootInfo;
use bulkhead_policy::Policy;
use log::info;

use crate::arch::backend::{self, Arch, NoUsableBackend, OnBackend, VendorError};
use crate::host::handoff::{self, module_data};
use crate::memory::phys::GlobalFrames;
use crate::switcher::hotkeys::Hotkeys;
use crate::vm::config::{self, Config, ConfigError};
use crate::vm::desktop::HostTime;
use crate::vm::instance::{Vm, VmError, VmResources};
use crate::vm::net_port::{self, NetPort, NetPortError};
use crate::vm::passthrough::PassthroughError;
use crate::vm::scheduler::Scheduler;
use crate::vm::service_net::ServiceLink;

/// Why no VM starts. Shown on the safe-mode screen and logged, both through
/// `Display`.
#[derive(Debug)]
pub enum LaunchError {
    /// The policy's content is refused.
    Config(ConfigError),
    NoVms,
    /// The key map's binding number `binding` (1-based) does not fit the table.
    KeyMap {
        binding: usize,
    },
    /// A `devices=` assignment is refused.
    Devices(PassthroughError),
    /// A link's virtio-net devices cannot be made.
    Net(NetPortError),
    /// No virtualisation backend can run VMs on this CPU.
    Backend(NoUsableBackend),
    /// The boot module a VM's `image=` names is missing.
    NoImage {
        vm: String,
        module: String,
    },
    /// A boot module a VM's `modules=` names is missing.
    NoModule {
        vm: String,
        module: String,
    },
    /// The boot module a VM's `initrd=` names is missing.
    NoInitrd {
        vm: String,
        module: String,
    },
    CreateVm {
        vm: String,
        error: VmError<VendorError>,
    },
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "the policy is refused: {e}"),
            Self::NoVms => f.write_str("the policy lists no VMs"),
            Self::KeyMap { binding } => write!(f, "the key map does not fit (binding {binding})"),
            Self::Devices(e) => write!(f, "{e}"),
            Self::Net(e) => write!(f, "{e}"),
            Self::Backend(e) => write!(f, "{e}"),
            Self::NoImage { vm, module } => write!(f, "VM {vm}: no boot module named `{module}`"),
            Self::NoInitrd { vm, module } => write!(f, "VM {vm}: no boot module named `{module}` (its initrd)"),
            Self::NoModule { vm, module } => write!(f, "VM {vm}: no boot module named `{module}` (in its modules=)"),
            Self::CreateVm { vm, error } => write!(f, "VM {vm}: {error}"),
        }
    }
}

/// Starts the VMs of `policy` (verified by the boot path) and never returns; returns
/// the reason when nothing can start (settings the hypervisor refuses, missing boot
/// modules, no usable virtualisation).
pub fn launch(
    boot_info: &BootInfo,
    policy: &Policy,
    selftest: bool,
    host_time: HostTime,
    display: (u32, u32),
) -> LaunchError {
    let modules = handoff::modules(boot_info);
    info!(target: "vm", "policy version {} of {}: {} VMs", policy.version, policy.organisation, policy.vms.len());
    let (configs, key_map, net_ports, service_links) = match Config::from_policy(policy) {
        Ok(c) if c.vms.is_empty() => return LaunchError::NoVms,
        Ok(c) => match net_ports(&c) {
            Ok(ports) => {
                let service = service_links(&c, &ports);
                (c.vms, c.hotkeys, ports, service)
            }
            Err(e) => return LaunchError::Net(e),
        },
        Err(e) => return LaunchError::Config(e),
    };
    let hotkeys = if key_map.is_empty() {
        info!(target: "switcher", "key map: the defaults (see README, Keyboard)");
        Hotkeys::default()
    } else {
        let bindings: Vec<_> = key_map.iter().map(|b| (b.combo, b.action)).collect();
        match Hotkeys::from_combos(&bindings) {
            Ok(h) => {
                info!(target: "switcher", "key map: {} bindings from the policy", bindings.len());
                h
            }
            Err(i) => return LaunchError::KeyMap { binding: i.saturating_add(1) },
        }
    };
    // Every device assignment is checked (assignable, IOMMU on) before any VM exists.
    let assigned = match crate::vm::passthrough::check(&configs) {
        Ok(a) => a,
        Err(e) => return LaunchError::Devices(e),
    };
    let start =
        StartVms { modules, configs, assigned, net_ports, service_links, hotkeys, selftest, host_time, display };
    match backend::on_backend(start, &mut GlobalFrames) {
        Ok(why) => why,
        Err(e) => LaunchError::Backend(e),
    }
}

/// The VMs to start once the backend is chosen: everything below is generic over it.
/// Each VM's ends of the configuration's links (by VM index; ids are the indices),
/// numbered in link order.
fn net_ports(config: &config::Config) -> Result<Vec<Vec<NetPort>>, NetPortError> {
    let mut ports: Vec<Vec<NetPort>> = (0..config.vms.len()).map(|_| Vec::new()).collect();
    let count = |ports: &[Vec<NetPort>], vm: usize| ports.get(vm).map_or(0, |p| p.len() as u8);
    for link in &config.links {
        let (port_a, port_b) = (count(&ports, link.a), count(&ports, link.b));
        // A link with a rule goes from a desktop (a) to the service VM (b).
        let (a, b) = net_port::connect(link.a as u32, port_a, link.b as u32, port_b, link.rule.is_some())?;
        info!(target: "vnet", "link: vm {} port {port_a} <-> vm {} port {port_b}", link.a, link.b);
        if let Some(p) = ports.get_mut(link.a) {
            p.push(a);
        }
        if let Some(p) = ports.get_mut(link.b) {
            p.push(b);
        }
    }
    Ok(ports)
}

/// Each VM's desktop links if it is the service VM (in its port order: link order),
/// with the desktop's name, MAC and rule.
fn service_links(config: &config::Config, ports: &[Vec<NetPort>]) -> Vec<Vec<ServiceLink>> {
    let mut links: Vec<Vec<ServiceLink>> = (0..config.vms.len()).map(|_| Vec::new()).collect();
    for (service, list) in links.iter_mut().enumerate() {
        for (i, desktop) in config.links_of(service) {
            let Some(rule) = config.links.get(i).and_then(|l| l.rule.clone()) else { continue };
            let Some(d) = config.vms.get(desktop) else { continue };
            // The desktop's port for link `i`: its how-many-th link that is.
            let port = config.links_of(desktop).position(|(j, _)| j == i);
            let Some(mac) = port.and_then(|p| ports.get(desktop)?.get(p)).map(|p| p.mac) else { continue };
            list.push(ServiceLink { desktop: d.name.clone(), desktop_mac: mac, rule });
        }
    }
    links
}

struct StartVms {
    modules: &'static [bulkhead_abi::Module],
    configs: Vec<config::VmConfig>,
    assigned: Vec<Vec<crate::hw::Bdf>>,
    net_ports: Vec<Vec<NetPort>>,
    service_links: Vec<Vec<ServiceLink>>,
    hotkeys: Hotkeys,
    selftest: bool,
    host_time: HostTime,
    display: (u32, u32),
}

impl OnBackend for StartVms {
    type Output = LaunchError;

    /// Finds every VM's images, creates the VMs and runs them; returns only when one
    /// cannot be created.
    fn run<A: Arch>(self, features: A::Features) -> LaunchError {
        let StartVms { modules, configs, assigned, net_ports, service_links, hotkeys, selftest, host_time, display } =
            self;
        let mut service_links = service_links.into_iter();
        let mut net_ports = net_ports.into_iter();
        let mut images = Vec::new();
        for c in &configs {
            let Some(image) = module_data(modules, &c.image) else {
                return LaunchError::NoImage { vm: c.name.clone(), module: c.image.clone() };
            };
            let initrd = match &c.initrd {
                Some(name) => match module_data(modules, name) {
                    Some(data) => Some(data),
                    None => return LaunchError::NoInitrd { vm: c.name.clone(), module: name.clone() },
                },
                None => None,
            };
            let mut boot_modules: Vec<(&'static str, &'static [u8])> = Vec::new();
            for name in &c.modules {
                let found = modules.iter().find(|m| m.name() == name.as_str());
                let (Some(module), Some(data)) = (found, module_data(modules, name)) else {
                    return LaunchError::NoModule { vm: c.name.clone(), module: name.clone() };
                };
                // The module's own name, borrowed for as long as the boot modules live.
                boot_modules.push((module.name(), data));
            }
            images.push((image, initrd, boot_modules));
        }
        let mut vms = Vec::new();
        let setups = images.into_iter().zip(assigned);
        for (id, (config, ((image, initrd, boot_modules), devices))) in (0u32..).zip(configs.into_iter().zip(setups)) {
            let kind = config.kind;
            let name = config.name.clone();
            let memory = config.memory_bytes;
            let resources = VmResources {
                initrd,
                host_time,
                display,
                devices: devices.leak(),
                modules: boot_modules.leak(),
                net_ports: net_ports.next().unwrap_or_default().leak(),
                service_links: service_links.next().unwrap_or_default().leak(),
            };
            match Vm::<A>::create(id, config, image, resources, &features) {
                Ok(vm) => {
                    info!(target: "vm", "vm {id} ({name}) created: {} MiB, {kind:?}", memory >> 20);
                    vms.push(vm);
                }
                Err(error) => return LaunchError::CreateVm { vm: name, error: error.into_vendor() },
            }
        }
        Scheduler::new(vms, features, hotkeys).run(selftest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn texts_on_the_safe_mode_screen() {
        assert_eq!(LaunchError::KeyMap { binding: 3 }.to_string(), "the key map does not fit (binding 3)");
        let e = LaunchError::NoInitrd { vm: "corporate".into(), module: "initrd".into() };
        assert_eq!(e.to_string(), "VM corporate: no boot module named `initrd` (its initrd)");
        assert_eq!(
            LaunchError::Backend(NoUsableBackend::SvmEnable(crate::arch::svm::SvmError::DisabledByFirmware))
                .to_string(),
            "cannot enable SVM: DisabledByFirmware"
        );
        let e = LaunchError::CreateVm { vm: "n".into(), error: VmError::Devices(PassthroughError::NoIommu) };
        assert_eq!(e.to_string(), "VM n: the virtualisation backend refused: no IOMMU");
        let unsupported = LaunchError::Backend(NoUsableBackend::Unsupported).to_string();
        assert_eq!(unsupported, "this CPU has neither AMD SVM with nested paging nor Intel VMX");
        let locked = LaunchError::Backend(NoUsableBackend::VmxEnable(crate::arch::vmx::VmxError::DisabledByFirmware));
        assert!(locked.to_string().contains("enable Intel Virtualization Technology (VT-x) in the firmware setup"));
    }

    #[test]
    fn configuration_and_device_errors_pass_through_unchanged() {
        use crate::vm::config::testing;
        use bulkhead_policy::model::VmKind;
        let p = testing::policy(vec![testing::vm("a", VmKind::Payload, 16)], &[], &[("next", "Shift+Tab")]);
        let bad = Config::from_policy(&p).unwrap_err();
        let e = LaunchError::Config(bad.clone());
        assert_eq!(e.to_string(), alloc::format!("the policy is refused: {bad}"));
        assert!(e.to_string().starts_with("the policy is refused: hotkey next: Shift+Tab needs Ctrl"), "{e}");
        let vms = testing::vm_configs(vec![testing::with_devices("dma", &["00:03.0"])]);
        let refused = crate::vm::passthrough::resolve(&vms, &[], false).unwrap_err();
        let e = LaunchError::Devices(refused);
        assert!(matches!(&e, LaunchError::Devices(PassthroughError::NeedsIommu { vm }) if vm == "dma"), "{e:?}");
        assert!(e.to_string().starts_with("VM dma: devices= needs an IOMMU"), "{e}");
    }
}
