//! Runtime for Bulkhead's self-test payloads: the entry point, hypercalls, a console, an
//! IDT that can expect and survive a #GP, and `CHECK <name> PASS|FAIL` reporting.
//! Payloads run as the only code in their VM, in 64-bit mode (see
//! `bulkhead_abi::payload`); they are test equipment, so unsafe stays close to the
//! instructions it wraps.
#![cfg_attr(target_os = "none", no_std)]

pub mod console;
pub mod hypercall;
pub mod traps;

/// Gives the payload a global allocator over a static heap of `$bytes` bytes
/// (virtio-drivers allocates a little while it sets a device up). The allocator
/// crates (`talc`, `spin`) are the package's own dependencies, named from the payload.
#[macro_export]
macro_rules! global_heap {
    ($bytes:expr) => {
        mod heap {
            use talc::{TalcLock, source::Claim};

            #[global_allocator]
            static ALLOCATOR: TalcLock<spin::Mutex<()>, Claim> = TalcLock::new({
                static mut HEAP: [u8; $bytes] = [0; $bytes];
                // SAFETY: HEAP is only ever reached through this allocator.
                unsafe { Claim::array(&raw mut HEAP) }
            });
        }
    };
}

use core::sync::atomic::{AtomicU32, Ordering};

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Reports one check on the console: `CHECK <name> PASS` or `CHECK <name> FAIL (<why>)`.
pub fn check(name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
    if ok {
        PASSED.fetch_add(1, Ordering::Relaxed);
        println!("CHECK {name} PASS");
    } else {
        FAILED.fetch_add(1, Ordering::Relaxed);
        println!("CHECK {name} FAIL ({detail})");
    }
}

/// Prints the summary line the hypervisor's test verdict looks for.
pub fn summary() -> (u32, u32) {
    let (passed, failed) = (PASSED.load(Ordering::Relaxed), FAILED.load(Ordering::Relaxed));
    println!("CHECKS DONE passed={passed} failed={failed}");
    (passed, failed)
}

#[cfg(target_os = "none")]
mod entry {
    /// Flat GDT matching the selectors the hypervisor's 64-bit entry state uses:
    /// 0x10 = 64-bit code, 0x18 = data.
    static GDT: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

    #[repr(C, packed)]
    struct GdtPointer {
        limit: u16,
        base: &'static [u64; 4],
    }

    static GDT_POINTER: GdtPointer = GdtPointer { limit: 4 * 8 - 1, base: &GDT };

    /// The hypervisor enters here in 64-bit mode with RSP set and RSI = RAM size. The
    /// entry state's selectors have no GDT behind them yet, so load ours before any
    /// interrupt can reload a selector.
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
        crate::traps::init();
        unsafe extern "Rust" {
            fn payload_main(ram_bytes: u64) -> !;
        }
        // SAFETY: every payload binary defines `payload_main` with this signature.
        unsafe { payload_main(ram_bytes) }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        crate::println!("PAYLOAD PANIC: {info}");
        crate::hypercall::shutdown(1)
    }
}
