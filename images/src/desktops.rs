//! The desktops a default image carries: two unmodified Debian Linux VMs, a secure
//! "Corporate" one and a "Personal" one, each with its label and trust colour. IT's
//! signed policy will replace this; until then it is the product's default fleet.

use std::path::Path;

use crate::disk::{BootModule, FileSource};
use crate::guest::{self, Flavour, GuestError, GuestImage};

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

/// The `vms` configuration text for these desktops.
pub fn vms_config(desktops: &[Desktop]) -> String {
    desktops.iter().map(|d| vm_line(d, GUEST_CMDLINE, "")).collect()
}

/// The guests' kernel command line on a network link: DHCP on eth0 at boot.
pub const NETWORKED_CMDLINE: &str =
    "console=tty0 console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 quiet loglevel=4 bulkhead.dhcp=eth0";

/// PCI IDs of the uplink NIC the default configuration gives the service VM: QEMU's
/// `e1000e` (Intel 82574L).
pub const UPLINK_NIC: &str = "8086:10d3";

/// The default machine: these desktops, each on a link to the networking service VM
/// (which owns the uplink NIC). The first desktop may reach only the host
/// (`corporate-only`, 10.0.2.2 on QEMU's user network), the others everything
/// (`internet`). The service VM comes last, so the desktops keep slots 1, 2, ...
pub fn networked_config(desktops: &[Desktop]) -> String {
    let mut text: String = desktops.iter().map(|d| vm_line(d, NETWORKED_CMDLINE, "")).collect();
    text.push_str(&format!(
        "vm net kind=service image={} memory=64M devices={UPLINK_NIC} restart=always label=\"Network\"\n",
        crate::build::SERVICE_VM_MODULE
    ));
    for (i, d) in desktops.iter().enumerate() {
        let rule = if i == 0 { "rule=corporate-only allow=10.0.2.2/32" } else { "rule=internet" };
        text.push_str(&format!("link {} net {rule}\n", d.name));
    }
    text
}

/// Modules every desktop loads: `evdev`, the `/dev/input/event*` devices through which
/// a desktop's display server (and a test) reads the keyboard, `virtio_pci` and
/// `virtio_net` for the virtio-net device a `link` line gives it, and `virtio_blk` for
/// its virtual disk (`/dev/vda`).
pub const DESKTOP_MODULES: &[&str] = &["evdev", "virtio_pci", "virtio_net", "virtio_blk"];

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

/// One `vm` line for a Linux VM (kernel and initrd as [`modules_with_config`] names
/// them) with the kernel command line `cmdline` and extra `key=value` pairs (for
/// example `devices=01:00.0`).
pub fn vm_line(d: &Desktop, cmdline: &str, extra: &str) -> String {
    let mut line = format!(
        "vm {} kind=linux image={KERNEL_MODULE} initrd={INITRD_MODULE} memory={}M label=\"{}\" colour={} restart=always cmdline=\"{cmdline}\"",
        d.name, d.memory_mib, d.label, d.colour
    );
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    line.push('\n');
    line
}

/// Boot modules for Linux VMs configured by the `vms` text `vms` (lines naming
/// [`KERNEL_MODULE`] and [`INITRD_MODULE`]), booting `guest`.
pub fn modules_with_config(guest: &GuestImage, vms: &str) -> Vec<BootModule> {
    vec![
        BootModule { name: "vms".into(), source: FileSource::Bytes(vms.as_bytes().to_vec()) },
        BootModule { name: KERNEL_MODULE.into(), source: FileSource::Host(guest.kernel_path.clone()) },
        BootModule { name: INITRD_MODULE.into(), source: FileSource::Host(guest.initramfs_path.clone()) },
    ]
}

/// Boot modules for Linux desktops: the kernel, the initramfs and the VM configuration.
pub fn modules(guest: &GuestImage, desktops: &[Desktop]) -> Vec<BootModule> {
    modules_with_config(guest, &vms_config(desktops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_desktop_with_its_label() {
        let text = vms_config(DEFAULT_DESKTOPS);
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains(
            "vm corporate kind=linux image=linux initrd=initrd memory=384M label=\"CORPORATE · secure\" colour=#c0392b"
        ));
        assert!(text.contains("cmdline=\"console=tty0 console=ttyS0"));
    }

    #[test]
    fn the_networked_config_links_every_desktop_to_the_service_vm() {
        let text = networked_config(DEFAULT_DESKTOPS);
        assert_eq!(text.lines().filter(|l| l.starts_with("vm ")).count(), 3);
        assert!(text.contains("vm net kind=service image=service-vm memory=64M devices=8086:10d3"));
        assert!(text.contains("link corporate net rule=corporate-only allow=10.0.2.2/32\n"));
        assert!(text.contains("link personal net rule=internet\n"));
        assert_eq!(text.matches("bulkhead.dhcp=eth0").count(), 2);
    }

    #[test]
    fn vm_line_appends_keys_to_one_line() {
        let line = vm_line(&DEFAULT_DESKTOPS[1], "console=ttyS0 fbcon=map:1", "devices=01:00.0");
        assert!(line.starts_with("vm personal kind=linux image=linux initrd=initrd memory=256M"));
        assert!(line.ends_with("cmdline=\"console=ttyS0 fbcon=map:1\" devices=01:00.0\n"), "{line}");
        assert_eq!(line.lines().count(), 1);
        assert_eq!(vm_line(&DEFAULT_DESKTOPS[1], GUEST_CMDLINE, ""), vms_config(&DEFAULT_DESKTOPS[1..]));
    }
}
