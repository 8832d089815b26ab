//! BOOTX64.EFI: reads the Bulkhead manifest, the hypervisor and its modules from the
//! ESP, sets a GOP mode, exits boot services and jumps to the hypervisor. Started from a
//! stick that carries an answer file, it installs Bulkhead on an internal disk instead.
#![cfg_attr(target_os = "uefi", no_std, no_main)]

#[cfg(target_os = "uefi")]
extern crate alloc;

#[cfg(target_os = "uefi")]
mod installer;
#[cfg(target_os = "uefi")]
mod loader;

#[cfg(not(target_os = "uefi"))]
fn main() {
    eprintln!("BOOTX64.EFI runs under UEFI firmware; build the image with `cargo xtask image`.");
    std::process::exit(2);
}
