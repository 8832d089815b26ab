//! A hostile payload: it tries to read and write memory outside its VM — the
//! hypervisor's own image, another VM's memory, and addresses above its RAM. Nested
//! paging must stop it at the first access, with an NPF reason.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod payload {
    use payloads::println;

    /// Physical address the hypervisor is linked at (see hypervisor/linker.ld).
    const HYPERVISOR_IMAGE: u64 = 0x400_0000;

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(ram_bytes: u64) -> ! {
        println!("attack payload: RAM is {:#x} bytes; reading the hypervisor at {HYPERVISOR_IMAGE:#x}", ram_bytes);
        // Guest-physical == guest-virtual here; anything at or above `ram_bytes` is not
        // this VM's memory. The hypervisor image's host address is the first target.
        let targets = [HYPERVISOR_IMAGE, ram_bytes, 0x1_0000_0000 - 0x1000, 0x7F_FFFF_F000];
        for target in targets {
            println!("attack payload: writing to {target:#x}");
            // SAFETY: none — this is the attack. The hypervisor must stop the VM here.
            unsafe {
                let p = target as *mut u64;
                let old = core::ptr::read_volatile(p);
                core::ptr::write_volatile(p, old ^ 0xFFFF_FFFF_FFFF_FFFF);
            }
            println!("ATTACK SUCCEEDED at {target:#x}");
        }
        payloads::hypercall::shutdown(0)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a guest payload; it runs inside a Bulkhead VM (see tests/).");
}
