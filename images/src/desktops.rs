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
    desktops
        .iter()
        .map(|d| {
            format!(
                "vm {} kind=linux image={KERNEL_MODULE} initrd={INITRD_MODULE} memory={}M label=\"{}\" colour={} restart=always cmdline=\"{GUEST_CMDLINE}\"\n",
                d.name, d.memory_mib, d.label, d.colour
            )
        })
        .collect()
}

/// Fetches (or takes from the cache) the guest kernel and builds its initramfs.
pub fn build_guest(cache: &Path) -> Result<GuestImage, GuestError> {
    guest::build_linux_guest(cache, Flavour::Cloud, &[])
}

/// Boot modules for Linux desktops: the kernel, the initramfs and the VM configuration.
pub fn modules(guest: &GuestImage, desktops: &[Desktop]) -> Vec<BootModule> {
    vec![
        BootModule { name: "vms".into(), source: FileSource::Bytes(vms_config(desktops).into_bytes()) },
        BootModule { name: KERNEL_MODULE.into(), source: FileSource::Host(guest.kernel_path.clone()) },
        BootModule { name: INITRD_MODULE.into(), source: FileSource::Host(guest.initramfs_path.clone()) },
    ]
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
}
