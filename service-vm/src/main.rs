//! The networking service VM's kernel: booted by the hypervisor as a VM (the payload
//! boot protocol: 64-bit, identity-mapped), it finds its link ports (one virtio-net
//! device per connected desktop) and the uplink NIC on its PCI bus, and runs the
//! [`service_vm::Router`] between them. On the host it builds to a stub.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod kernel;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is the networking service VM's kernel; it runs inside a Bulkhead VM (`cargo xtask run`).");
}
