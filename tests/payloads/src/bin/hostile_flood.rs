//! A payload that floods everything a guest can make the hypervisor buffer, log or loop
//! over: the i8042 with command bytes it never reads the answers to, the console with
//! thousands of lines, port string instructions far longer than one exit may run, and
//! one interrupt raised 100,000 times.
//! It checks from inside that each is contained (bounded replies, still answering);
//! the test checks the hypervisor's side (log rate-limited, no panic, verdict).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod flood {
    use core::arch::asm;

    use bulkhead_abi::payload::I8042_PORTS;
    use payloads::traps::{self, TEST_VECTOR};
    use payloads::{check, hypercall, println};

    const DATA: u16 = I8042_PORTS[0];
    const STATUS: u16 = I8042_PORTS[1];
    const SELF_TEST: u8 = 0xAA;
    const SELF_TEST_OK: u8 = 0x55;
    const KBD_IDENTIFY: u8 = 0xF2;
    const COMMANDS: usize = 200_000;
    /// Console lines sent in the flood (far past the log's burst).
    pub const SPAM_LINES: u32 = 5_000;

    fn outb(port: u16, value: u8) {
        // SAFETY: port I/O to the VM's own (emulated) devices; no memory is touched.
        unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) }
    }

    fn inb(port: u16) -> u8 {
        let value: u8;
        // SAFETY: as above.
        unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
        value
    }

    /// `REP OUTSB` of `bytes` to `port`: one instruction, many exits' worth of elements.
    fn rep_outsb(port: u16, bytes: &[u8]) {
        // SAFETY: OUTSB reads `bytes` (which we own) and writes a port; RSI and RCX are
        // clobbered as declared.
        unsafe {
            asm!("rep outsb", in("dx") port, inout("rsi") bytes.as_ptr() => _, inout("rcx") bytes.len() => _,
                 options(nostack, readonly))
        }
    }

    /// Reads the output buffer until it is empty; returns how many bytes and the first.
    fn drain() -> (usize, Option<u8>) {
        let mut n = 0;
        let mut first = None;
        // More than the model may hold, so a missing bound shows as `n` hitting it.
        while inb(STATUS) & 1 != 0 && n < 100_000 {
            let byte = inb(DATA);
            first.get_or_insert(byte);
            n += 1;
        }
        (n, first)
    }

    fn i8042_flood() {
        // Controller self-tests and keyboard identifies, none answer read.
        let commands = [SELF_TEST; 4096];
        let mut sent = 0;
        while sent < COMMANDS {
            rep_outsb(STATUS, &commands);
            outb(DATA, KBD_IDENTIFY);
            sent += commands.len() + 1;
        }
        let (queued, first) = drain();
        // One output buffer plus 16 controller and 16 keyboard replies.
        check(
            "i8042_flood_replies_bounded",
            queued <= 33 && queued > 0,
            format_args!("{queued} bytes queued after {sent} unread commands"),
        );
        check(
            "i8042_flood_keeps_the_oldest_reply",
            first == Some(SELF_TEST_OK),
            format_args!("first byte {first:02x?}"),
        );
        outb(STATUS, SELF_TEST);
        let (n, answer) = drain();
        check(
            "i8042_answers_after_flood",
            n == 1 && answer == Some(SELF_TEST_OK),
            format_args!("{n} bytes, {answer:02x?}"),
        );
    }

    fn console_flood() {
        for i in 0..SPAM_LINES {
            println!("hostile-flood spam line {i}");
        }
        // Long writes too: the hypercall takes at most its limit per call.
        let long = [b'x'; 4096];
        for _ in 0..64 {
            hypercall::console_write(&long);
        }
        println!(" (end of long writes)");
    }

    fn port_string_flood() {
        // 1 MiB through an unclaimed port in one REP INSB: the hypervisor runs it in
        // bounded pieces, re-entering the guest between them.
        static mut BUF: [u8; 1 << 20] = [0; 1 << 20];
        // SAFETY: INSB writes BUF, which only this function uses; RDI/RCX clobbered.
        let ones = unsafe {
            let buf = &raw mut BUF;
            asm!("rep insb", in("dx") 0x1234u16, inout("rdi") buf.cast::<u8>() => _, inout("rcx") 1usize << 20 => _,
                 options(nostack));
            (*buf).iter().all(|&b| b == 0xFF)
        };
        check("port_string_flood_completes", ones, format_args!("unclaimed port did not read all-ones"));
    }

    fn interrupt_flood() {
        // 100,000 raises of one vector while interrupts are off: one pending bit, one
        // interrupt, however often it was raised.
        let before = traps::test_irqs();
        // SAFETY: the IDT has a handler for TEST_VECTOR; the pending interrupt ends the HLT.
        unsafe {
            asm!("cli");
            for _ in 0..100_000 {
                hypercall::raise_interrupt(TEST_VECTOR);
            }
            asm!("sti", "hlt");
        }
        let got = traps::test_irqs().wrapping_sub(before);
        check("interrupt_flood_coalesces", got == 1, format_args!("{got} interrupts taken"));
    }

    /// Spins for about `cycles` TSC ticks, so the console's log budget refills before
    /// the results are printed.
    fn pause(cycles: u64) {
        // SAFETY: RDTSC has no side effects.
        let start = unsafe { core::arch::x86_64::_rdtsc() };
        // SAFETY: as above.
        while unsafe { core::arch::x86_64::_rdtsc() }.wrapping_sub(start) < cycles {
            core::hint::spin_loop();
        }
    }

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(_ram_bytes: u64) -> ! {
        println!("hostile-flood payload: flooding the i8042, the console and port strings");
        i8042_flood();
        port_string_flood();
        interrupt_flood();
        console_flood();
        // About a second at a few GHz: enough tokens for the lines below.
        pause(4_000_000_000);
        check("still_running_after_floods", true, format_args!(""));
        let (_, failed) = payloads::summary();
        hypercall::shutdown(u64::from(failed))
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a guest payload; it runs inside a Bulkhead VM (see tests/).");
}
