//! The desktops a default image carries: two unmodified Debian Linux VMs, a secure
//! "Corporate" one and a "Personal" one, each with its label and trust colour, as
//! policies built in Rust (the same as `images/policies/demo.toml`) for benchmarks and
//! tests. An image carries IT's signed policy; without one, the demo policy.

use std::path::Path;

use bulkhead_policy::model::{Disk, DiskMode, NetRule, Policy, Restart, Vm, VmKind};

use crate::disk::{BootModule, FileSource};
use crate::guest::{self, Flavour, GuestError, GuestImage};
use crate::policy::fleet;

/// One desktop VM.
#[derive(Debug, Clone)]
pub struct Desktop {
    pub name: &'static str,
    pub label: &'static str,
    pub colour: &'static str,
    pub memory_mib: u32,
}

pub const DEFAULT_DESKTOPS: &[Desktop] = &[
    Desktop { name: "corporate", label: "CORPORATE · secure", colour: "#c0392b", memory_mib: 384 },
    Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 },
];

/// The kernel command line for desktop VMs: serial console for logs and tests, the
/// framebuffer console on screen.
pub const GUEST_CMDLINE: &str = "console=tty0 console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 quiet loglevel=4";

/// Module names the Linux desktops boot from.
pub const KERNEL_MODULE: &str = "linux";
pub const INITRD_MODULE: &str = "initrd";

/// A demo policy running these desktops in this order (slot 1 first).
pub fn desktops_policy(desktops: &[Desktop]) -> Policy {
    fleet::demo_policy(desktops.iter().map(|d| desktop_vm(d, GUEST_CMDLINE)).collect())
}

/// The guests' kernel command line on a network link: DHCP on eth0 at boot.
pub const NETWORKED_CMDLINE: &str =
    "console=tty0 console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 quiet loglevel=4 bulkhead.dhcp=eth0";

/// PCI IDs of the uplink NIC the default configuration gives the service VM: QEMU's
/// `e1000e` (Intel 82574L).
pub const UPLINK_NIC: &str = "8086:10d3";

/// The default machine: these desktops, each with a network through the networking
/// service VM (which owns the uplink NIC). The first desktop may reach only the host
/// (`corporate-only`, 10.0.2.2 on QEMU's user network), the others everything
/// (`internet`). The service VM comes last, so the desktops keep slots 1, 2, ...
pub fn networked_policy(desktops: &[Desktop]) -> Policy {
    let mut vms: Vec<Vm> = desktops
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let network = if i == 0 {
                fleet::network(SERVICE_VM, NetRule::CorporateOnly, &["10.0.2.2/32"])
            } else {
                fleet::network(SERVICE_VM, NetRule::Internet, &[])
            };
            Vm { network, ..desktop_vm(d, NETWORKED_CMDLINE) }
        })
        .collect();
    vms.push(service_vm());
    fleet::demo_policy(vms)
}

/// The demo image's policy (images/policies/demo.toml): the networked machine, with a
/// persistent encrypted disk for each desktop, 256 MiB for the first and 128 MiB for
/// the others, so they fit the stick's default 512 MiB data partition.
pub fn demo_image_policy(desktops: &[Desktop]) -> Policy {
    let mut policy = networked_policy(desktops);
    for (i, vm) in policy.vms.iter_mut().filter(|v| v.kind == VmKind::Linux).enumerate() {
        vm.disk = Some(Disk { size_mib: if i == 0 { 256 } else { 128 }, mode: DiskMode::Persistent });
    }
    policy
}

/// The networking service VM's name in the default machine.
pub const SERVICE_VM: &str = "net";

/// The networking service VM owning the uplink NIC, restarted whenever it stops.
pub fn service_vm() -> Vm {
    Vm {
        label: "Network".into(),
        restart: Restart::Always,
        devices: vec![UPLINK_NIC.into()],
        ..fleet::vm(SERVICE_VM, VmKind::Service, crate::build::SERVICE_VM_MODULE, 64)
    }
}

/// Modules every desktop loads: `evdev`, the `/dev/input/event*` devices through which
/// a desktop's display server (and a test) reads the keyboard, `virtio_pci` and
/// `virtio_net` for the virtio-net device a `link` line gives it, `virtio_blk` for
/// its virtual disk (`/dev/vda`) and `ext4` for the filesystem on it (built into
/// Debian's kernels, where it needs no loading).
pub const DESKTOP_MODULES: &[&str] = &["evdev", "virtio_pci", "virtio_net", "virtio_blk", "ext4"];

/// Fetches (or takes from the cache) the guest kernel and builds its initramfs.
pub fn build_guest(cache: &Path) -> Result<GuestImage, GuestError> {
    guest::build_linux_guest(cache, Flavour::Cloud, DESKTOP_MODULES)
}

/// Drivers (and, resolved from their `.modinfo`, what they depend on) the generic guest
/// loads at boot for devices assigned to it: the DRM driver of QEMU's `bochs-display`
/// (and its VGA), the Intel 82574 NIC (`e1000e`) and the older 82540EM (`e1000`), which
/// has no MSI and interrupts through its INTx line; and `evdev`, as every desktop.
pub const PASSTHROUGH_MODULES: &[&str] = &["bochs", "e1000e", "e1000", "evdev"];

/// A guest for VMs that own real devices: Debian's generic kernel (`linux-image-amd64`,
/// which ships the drivers the cloud flavour lacks) with [`PASSTHROUGH_MODULES`].
pub fn build_passthrough_guest(cache: &Path) -> Result<GuestImage, GuestError> {
    guest::build_linux_guest(cache, Flavour::Generic, PASSTHROUGH_MODULES)
}

/// A Linux desktop VM (kernel and initrd as [`modules_with_policy`] names them) with
/// the kernel command line `cmdline`, restarted whenever it stops. Add devices or a
/// network with struct update syntax.
pub fn desktop_vm(d: &Desktop, cmdline: &str) -> Vm {
    Vm {
        initrd: Some(INITRD_MODULE.into()),
        cmdline: cmdline.into(),
        label: d.label.into(),
        colour: u32::from_str_radix(d.colour.trim_start_matches('#'), 16).expect("a desktop colour is #RRGGBB"),
        restart: Restart::Always,
        ..fleet::vm(d.name, VmKind::Linux, KERNEL_MODULE, d.memory_mib)
    }
}

/// Boot modules for Linux VMs run by `policy` (naming [`KERNEL_MODULE`] and
/// [`INITRD_MODULE`]), booting `guest`: the policy signed with the demo key first.
pub fn modules_with_policy(guest: &GuestImage, policy: &Policy) -> Vec<BootModule> {
    modules_with_bundle(guest, crate::policy::tools::sign_demo(policy))
}

/// Boot modules for Linux VMs run by the signed policy `bundle`, booting `guest`.
pub fn modules_with_bundle(guest: &GuestImage, bundle: Vec<u8>) -> Vec<BootModule> {
    vec![
        fleet::bundle_module(bundle),
        BootModule { name: KERNEL_MODULE.into(), source: FileSource::Host(guest.kernel_path.clone()) },
        BootModule { name: INITRD_MODULE.into(), source: FileSource::Host(guest.initramfs_path.clone()) },
    ]
}

/// Boot modules for Linux desktops: the demo policy running them, the kernel and the
/// initramfs.
pub fn modules(guest: &GuestImage, desktops: &[Desktop]) -> Vec<BootModule> {
    modules_with_policy(guest, &desktops_policy(desktops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_desktops_policy_lists_every_desktop_with_its_label() {
        let p = desktops_policy(DEFAULT_DESKTOPS);
        assert_eq!(p.vms.len(), 2);
        let corporate = &p.vms[0];
        assert_eq!((corporate.name.as_str(), corporate.label.as_str()), ("corporate", "CORPORATE · secure"));
        assert_eq!((corporate.colour, corporate.memory_mib, corporate.kind), (0xc0392b, 384, VmKind::Linux));
        assert_eq!((corporate.image.as_str(), corporate.initrd.as_deref()), ("linux", Some("initrd")));
        assert!(corporate.cmdline.starts_with("console=tty0 console=ttyS0"));
    }

    #[test]
    fn the_demo_toml_is_the_networked_default_machine_with_disks() {
        let toml = std::fs::read_to_string(crate::policy::demo_policy_path()).unwrap();
        let options = crate::policy::CompileOptions { issued_at: 0, ..Default::default() };
        let mut from_toml = crate::policy::compile(&toml, &options).unwrap().policy;
        let mut built = demo_image_policy(DEFAULT_DESKTOPS);
        let sizes: Vec<_> = built.vms.iter().map(|v| v.disk.map(|d| d.size_mib)).collect();
        assert_eq!(sizes, [Some(256), Some(128), None]);
        (from_toml.issued_at, from_toml.expires_at) = (built.issued_at, built.expires_at);
        built.organisation = from_toml.organisation.clone();
        assert_eq!(from_toml, built);
    }

    #[test]
    fn the_networked_policy_gives_every_desktop_a_network_through_the_service_vm() {
        let p = networked_policy(DEFAULT_DESKTOPS);
        assert_eq!(p.vms.len(), 3);
        let net = &p.vms[2];
        assert_eq!((net.kind, net.image.as_str(), net.memory_mib), (VmKind::Service, "service-vm", 64));
        assert_eq!(net.devices, ["8086:10d3"]);
        let rules: Vec<_> = p.vms[..2].iter().map(|v| v.network.clone().unwrap()).collect();
        assert_eq!(
            (rules[0].rule, rules[0].allow.as_slice()),
            (NetRule::CorporateOnly, &["10.0.2.2/32".to_string()][..])
        );
        assert_eq!((rules[1].via.as_str(), rules[1].rule), ("net", NetRule::Internet));
        assert!(p.vms[..2].iter().all(|v| v.cmdline.contains("bulkhead.dhcp=eth0")));
    }

    #[test]
    fn modules_carry_a_bundle_signed_with_the_demo_key() {
        let guest = GuestImage {
            kernel_path: "vmlinuz".into(),
            initramfs_path: "initramfs".into(),
            kernel_version: String::new(),
            kernel_package: String::new(),
            package_version: String::new(),
            busybox_version: String::new(),
        };
        let modules = modules(&guest, DEFAULT_DESKTOPS);
        assert_eq!(modules[0].name, bulkhead_policy::POLICY_MODULE);
        let FileSource::Bytes(bytes) = &modules[0].source else { panic!("the policy is built in memory") };
        let bundle = bulkhead_policy::Bundle::decode(bytes).unwrap();
        assert!(bundle.signature_valid());
        assert_eq!(bundle.signer, bulkhead_policy::DEMO_PUBLIC_KEY);
        assert_eq!(bundle.policy().unwrap().vms, desktops_policy(DEFAULT_DESKTOPS).vms);
    }
}
