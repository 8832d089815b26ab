//! The boot sequence of the bootstrap CPU, from the loader's handoff to the ready marker.

use bulkhead_abi::BootInfo;
use log::{LevelFilter, error, info};

use crate::arch::x86::{cpu, instr};
use crate::platform::qemu;

/// Printed when the hypervisor has brought the machine up; test harnesses wait for it.
pub const READY_MARKER: &str = "BULKHEAD READY";

/// Called from `_start` with the physical address of the loader's `BootInfo`.
pub extern "sysv64" fn main(boot_info_addr: u64) -> ! {
    crate::logging::init(LevelFilter::Info);
    info!(target: "boot", "{} {} starting", crate::PRODUCT, crate::VERSION);
    // SAFETY: the loader passes the physical address of a BootInfo in loader memory, which
    // is identity mapped and never reused; the magic/version check below catches a
    // mismatched loader before any other field is trusted.
    let boot_info: &BootInfo = unsafe { &*(boot_info_addr as *const BootInfo) };
    if !boot_info.is_valid() {
        error!(target: "boot", "bad BootInfo at {boot_info_addr:#x} (loader and hypervisor versions differ?)");
        qemu::exit(qemu::ExitCode::Failure);
        instr::halt_forever();
    }
    let cpu = cpu::identify();
    info!(target: "boot", "cpu: {} {:?}, virtualisation: {}", cpu.vendor, cpu.brand, cpu.virt.label());
    info!(target: "boot", "{READY_MARKER}");
    instr::halt_forever()
}
