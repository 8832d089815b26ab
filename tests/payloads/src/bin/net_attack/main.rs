//! A desktop that attacks the networking service VM over its link: it finds its
//! virtio-net device (driven by virtio-drivers, like the service VM's own ports) and,
//! round after round until the VM is stopped, sends frames a real desktop never sends:
//! a runt, an oversized frame, an IPv4 packet with a bad header checksum, a packet
//! from another desktop's address, one from another MAC, an IPv6 frame, and a DHCP
//! request with garbage options. The test checks that the other desktops' traffic is
//! undisturbed and that the router counted the drops by reason.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
payloads::global_heap!(256 * 1024);

#[cfg(target_os = "none")]
#[path = "../../virtio_pci.rs"]
mod virtio_pci;

#[cfg(target_os = "none")]
mod frames;
#[cfg(target_os = "none")]
mod port;

#[cfg(target_os = "none")]
mod attack {
    use payloads::{hypercall, println};

    use super::{frames, port};

    /// Pause between rounds: the attack goes on through the whole test without
    /// taking the CPU from the VMs it tries to disturb more than a real desktop would.
    const ROUND_PAUSE_US: u64 = 2_000;

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(_ram_bytes: u64) -> ! {
        let Some(mut net) = port::open() else {
            println!("net-attack: no virtio-net device");
            hypercall::shutdown(1)
        };
        let mac = net.mac_address();
        println!("net-attack: link up, MAC {mac:02x?}; attacking");
        let mut buf = [0u8; 1600];
        let mut rounds = 0u64;
        loop {
            for kind in frames::KINDS {
                let len = frames::build(kind, mac, &mut buf);
                if net.send(&buf[..len]).is_err() {
                    println!("net-attack: the device refused a frame ({kind:?})");
                }
            }
            rounds += 1;
            if rounds.is_power_of_two() {
                println!("net-attack: {rounds} rounds sent");
            }
            hypercall::call(bulkhead_abi::hypercall::SLEEP, ROUND_PAUSE_US, 0, 0, 0);
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a guest payload; it runs inside a Bulkhead VM (see tests/).");
}
