//! The bare-metal entry point. Everything else lives in the `hypervisor` library so that
//! it can be unit-tested on the host; on the host this binary is only a stub.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod bare_metal {
    /// Stack for the boot CPU until the hypervisor has its own per-CPU stacks.
    const BOOT_STACK_BYTES: usize = 256 * 1024;

    #[repr(C, align(4096))]
    struct BootStack([u8; BOOT_STACK_BYTES]);

    #[unsafe(no_mangle)]
    static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_BYTES]);

    /// Entered from the UEFI loader with RDI = physical address of the `BootInfo`,
    /// interrupts off, on the loader's identity-mapped page tables.
    #[unsafe(no_mangle)]
    #[unsafe(naked)]
    #[unsafe(link_section = ".text._start")]
    pub extern "sysv64" fn _start() -> ! {
        core::arch::naked_asm!(
            "cli",
            "lea rsp, [rip + BOOT_STACK + {size}]",
            "xor rbp, rbp",
            "call {main}",
            "2: hlt",
            "jmp 2b",
            size = const BOOT_STACK_BYTES,
            main = sym hypervisor::boot::main,
        )
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        hypervisor::panic::report(info)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "The Bulkhead hypervisor runs on bare metal. Build the bootable image with \
         `cargo xtask image` and boot it with `cargo xtask run`."
    );
    std::process::exit(2);
}
