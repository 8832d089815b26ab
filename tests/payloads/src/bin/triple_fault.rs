//! A payload that triple-faults on purpose: it loads an empty IDT and raises an
//! exception. The hypervisor must stop (and, by policy, restart) only this VM.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod payload {
    use payloads::{hypercall, println};

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(_ram_bytes: u64) -> ! {
        let run = hypercall::vm_info().map_or(0, |i| i.vm_id);
        println!("triple-fault payload (vm {run}): loading an empty IDT and faulting");
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let empty = Pointer { limit: 0, base: 0 };
        // SAFETY: deliberately broken: with a zero-limit IDT, int3 raises #GP, then #DF,
        // then shutdown — exactly what this payload exists to do.
        unsafe { core::arch::asm!("lidt [{}]", "int3", in(reg) &empty, options(noreturn)) }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a guest payload; it runs inside a Bulkhead VM (see tests/).");
}
