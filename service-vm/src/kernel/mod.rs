//! The kernel around the router: entry, heap, console, hypercalls, PCI, the link ports
//! and the uplink, and the loop that moves frames between them.

mod agent;
mod console;
mod hal;
mod heap;
mod hypercall;
mod link_port;
mod pci;
mod ports;
mod run;
mod uplink;

/// Flat GDT matching the selectors the hypervisor's 64-bit entry state uses:
/// 0x10 = 64-bit code, 0x18 = data (`bulkhead_abi::payload`).
static GDT: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

#[repr(C, packed)]
struct GdtPointer {
    limit: u16,
    base: &'static [u64; 4],
}

static GDT_POINTER: GdtPointer = GdtPointer { limit: 4 * 8 - 1, base: &GDT };

/// The hypervisor enters here in 64-bit mode with RSP set and RSI = RAM size. The entry
/// state's selectors have no GDT behind them yet, so ours is loaded first.
#[unsafe(no_mangle)]
#[unsafe(naked)]
#[unsafe(link_section = ".text._start")]
extern "sysv64" fn _start() -> ! {
    core::arch::naked_asm!(
        "cld",
        "lgdt [rip + {gdtp}]",
        "mov rdi, rsi",
        "call {start}",
        "ud2",
        gdtp = sym GDT_POINTER,
        start = sym start,
    )
}

extern "sysv64" fn start(ram_bytes: u64) -> ! {
    console::init();
    log::info!(target: "service", "service VM kernel {}: {} MiB of RAM", env!("CARGO_PKG_VERSION"), ram_bytes >> 20);
    run::run()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::write_line(format_args!("SERVICE VM PANIC: {info}"));
    hypercall::shutdown(1)
}
