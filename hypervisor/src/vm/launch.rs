//! From boot modules to running VMs: read the VM configuration, find each VM's boot
//! image, turn on the virtualisation backend, create the VMs and hand them to the
//! scheduler. Any problem is reported before a single VM starts.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_abi::BootInfo;
use log::info;

use crate::arch::backend::Arch;
use crate::arch::svm::Svm;
use crate::host::handoff::{self, module_data};
use crate::memory::phys::GlobalFrames;
use crate::switcher::hotkeys::Hotkeys;
use crate::vm::config;
use crate::vm::desktop::HostTime;
use crate::vm::instance::{Vm, VmResources};
use crate::vm::scheduler::Scheduler;

/// The boot module holding the VM configuration.
pub const CONFIG_MODULE: &str = "vms";

/// Starts the configured VMs and never returns; returns the reason when nothing can
/// start (no configuration, a bad one, no usable virtualisation).
pub fn launch(boot_info: &BootInfo, selftest: bool, host_time: HostTime, display: (u32, u32)) -> String {
    let modules = handoff::modules(boot_info);
    let Some(text) = module_data(modules, CONFIG_MODULE) else {
        return "the image has no VM configuration (boot module `vms`)".into();
    };
    let Ok(text) = core::str::from_utf8(text) else {
        return "the VM configuration is not UTF-8 text".into();
    };
    let (configs, key_map) = match config::parse_config(text) {
        Ok(c) if c.vms.is_empty() => return "the VM configuration lists no VMs".into(),
        Ok(c) => (c.vms, c.hotkeys),
        Err(e) => return format!("{e}"),
    };
    let hotkeys = if key_map.is_empty() {
        info!(target: "switcher", "key map: the defaults (see README, Keyboard)");
        Hotkeys::default()
    } else {
        let bindings: Vec<_> = key_map.iter().map(|b| (b.combo, b.action)).collect();
        match Hotkeys::from_combos(&bindings) {
            Ok(h) => {
                info!(target: "switcher", "key map: {} bindings from the configuration", bindings.len());
                h
            }
            Err(i) => return format!("the key map does not fit (binding {})", i + 1),
        }
    };
    // Every device assignment is checked (assignable, IOMMU on) before any VM exists.
    let assigned = match crate::vm::passthrough::check(&configs) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let Some(features) = Svm::probe() else {
        return "this CPU has no usable AMD SVM with nested paging (and VMX is not supported yet)".into();
    };
    if let Err(e) = Svm::enable_cpu(&features, &mut GlobalFrames) {
        return format!("cannot enable SVM: {e:?}");
    }
    info!(target: "vm", "SVM enabled: {features:?}");
    let mut images = Vec::new();
    for c in &configs {
        let Some(image) = module_data(modules, &c.image) else {
            return format!("VM {}: no boot module named `{}`", c.name, c.image);
        };
        let initrd = match &c.initrd {
            Some(name) => match module_data(modules, name) {
                Some(data) => Some(data),
                None => return format!("VM {}: no boot module named `{name}` (its initrd)", c.name),
            },
            None => None,
        };
        images.push((image, initrd));
    }
    let mut vms = Vec::new();
    let setups = images.into_iter().zip(assigned);
    for (id, (config, ((image, initrd), devices))) in (0u32..).zip(configs.into_iter().zip(setups)) {
        let kind = config.kind;
        let name = config.name.clone();
        let memory = config.memory_bytes;
        let resources = VmResources { initrd, host_time, display, devices: devices.leak() };
        let vm = Vm::<Svm>::create(id, config, image, resources, &features);
        match vm {
            Ok(vm) => {
                info!(target: "vm", "vm {id} ({name}) created: {} MiB, {kind:?}", memory >> 20);
                vms.push(vm);
            }
            Err(e) => return format!("VM {name}: {e}"),
        }
    }
    Scheduler::new(vms, features, hotkeys).run(selftest)
}
