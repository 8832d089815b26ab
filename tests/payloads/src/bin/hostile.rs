//! A hostile payload that attacks CPU state the world switch might not cover, and the
//! exception deliveries that hang a real CPU. Run two or more copies at once: each one
//! plants markers (breakpoint addresses, TSC_AUX, PKRU, the upper halves of the YMM
//! registers), lets the others run, and checks it finds its own values, never another
//! VM's or the host's. Then it checks that #DB from a data breakpoint reaches its own
//! handler with DR6 set, and last arms a breakpoint on its own #DB gate, so that each
//! #DB delivery raises the next (CVE-2015-8104): the hypervisor must stay up.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod hostile {
    use core::arch::asm;
    use core::arch::x86_64::{__cpuid, __cpuid_count, _rdtsc};

    use payloads::{check, println, traps};

    const TSC_AUX: u32 = 0xC000_0103;
    const CR4_OSXSAVE: u64 = 1 << 18;
    const CR4_PKE: u64 = 1 << 22;
    /// Rounds of plant, wait, check.
    const ROUNDS: u64 = 3;
    /// TSC ticks to spin per round, long enough for the scheduler to run other VMs.
    const WAIT_TICKS: u64 = 3_000_000_000;

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(_ram_bytes: u64) -> ! {
        // SAFETY: RDTSC has no side effects.
        let nonce = (unsafe { _rdtsc() } >> 8) & 0xfff_fff0;
        println!("hostile payload: nonce {nonce:#x}");
        cpuid_checks();
        let pke = enable_pke();
        let avx = enable_avx();
        let rdpid = has_rdpid();
        for round in 1..=ROUNDS {
            let before = Markers::planted(nonce, round - 1);
            let now = Markers::read(pke, avx, rdpid);
            check_round(round, &before, &now, pke, avx, rdpid);
            Markers::planted(nonce, round).plant(pke, avx);
            spin(WAIT_TICKS);
        }
        let after = Markers::read(pke, avx, rdpid);
        check_round(ROUNDS + 1, &Markers::planted(nonce, ROUNDS), &after, pke, avx, rdpid);
        clear_breakpoints();
        data_breakpoint_check();
        let (_, failed) = payloads::summary();
        db_gate_loop();
        println!("hostile payload: the #DB gate loop ended");
        payloads::hypercall::shutdown(u64::from(failed))
    }

    fn cpuid_checks() {
        let l7 = __cpuid_count(7, 0);
        check("hostile_cpuid_hides_pku", l7.ecx & (1 << 3) == 0, format_args!("7.ECX={:#x}", l7.ecx));
        check("hostile_cpuid_hides_ospke", l7.ecx & (1 << 4) == 0, format_args!("7.ECX={:#x}", l7.ecx));
    }

    /// What a copy expects to find: zeroes before it planted anything (its own reset
    /// state), then the values of its last round.
    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    struct Markers {
        dr: [u64; 4],
        tsc_aux: u64,
        pkru: u32,
        ymm_high: u64,
    }

    impl Markers {
        fn planted(nonce: u64, round: u64) -> Markers {
            if round == 0 {
                return Markers { dr: [0; 4], tsc_aux: 0, pkru: 0, ymm_high: 0 };
            }
            let m = nonce | round;
            Markers {
                // Canonical user addresses (a non-canonical DR0-3 write is a #GP).
                dr: [0x7000_0000_0000 | m, 0x7100_0000_0000 | m, 0x7200_0000_0000 | m, 0x7300_0000_0000 | m],
                tsc_aux: m,
                // Keys 1-15 only: key 0 (every page here) stays accessible.
                pkru: ((m as u32) << 2) | 0x4000_0000,
                ymm_high: 0x5a5a_0000_0000_0000 | m,
            }
        }

        fn read(pke: bool, avx: bool, rdpid: bool) -> Markers {
            // SAFETY: reads only; PKRU and YMM only where enabled (checked by the caller).
            unsafe {
                Markers {
                    dr: [read_dr::<0>(), read_dr::<1>(), read_dr::<2>(), read_dr::<3>()],
                    tsc_aux: if rdpid { rdpid_value() } else { rdtscp_aux() },
                    pkru: if pke { rdpkru() } else { 0 },
                    ymm_high: if avx { read_ymm0_high() } else { 0 },
                }
            }
        }

        fn plant(&self, pke: bool, avx: bool) {
            // SAFETY: DR7 enables no breakpoint, so these addresses never fire; TSC_AUX
            // takes 32 bits; PKRU leaves key 0 open; YMM0 is not used by this code.
            unsafe {
                write_dr::<0>(self.dr[0]);
                write_dr::<1>(self.dr[1]);
                write_dr::<2>(self.dr[2]);
                write_dr::<3>(self.dr[3]);
                wrmsr(TSC_AUX, self.tsc_aux);
                if pke {
                    wrpkru(self.pkru);
                }
                if avx {
                    write_ymm0_high(self.ymm_high);
                    // Disable AVX again: a world switch that saves only the guest's
                    // current XCR0 components loses the upper halves now.
                    set_xcr0(0b11);
                }
            }
        }
    }

    fn check_round(round: u64, want: &Markers, got: &Markers, pke: bool, avx: bool, rdpid: bool) {
        let tag = |what: &str| -> heapless_name::Name { heapless_name::Name::of(what, round) };
        check(tag("hostile_dr0_3_own").as_str(), got.dr == want.dr, format_args!("{:x?}, want {:x?}", got.dr, want.dr));
        let via = if rdpid { "rdpid" } else { "rdtscp" };
        check(
            tag("hostile_tsc_aux_own").as_str(),
            got.tsc_aux == want.tsc_aux,
            format_args!("{via} gave {:#x}, want {:#x}", got.tsc_aux, want.tsc_aux),
        );
        if rdpid {
            // SAFETY: RDTSCP only writes the named registers.
            let aux = unsafe { rdtscp_aux() };
            check(tag("hostile_rdtscp_own").as_str(), aux == want.tsc_aux, format_args!("{aux:#x}"));
        }
        if pke {
            check(
                tag("hostile_pkru_own").as_str(),
                got.pkru == want.pkru,
                format_args!("{:#x}, want {:#x}", got.pkru, want.pkru),
            );
        }
        if avx {
            check(
                tag("hostile_ymm_high_own").as_str(),
                got.ymm_high == want.ymm_high,
                format_args!("{:#x}, want {:#x}", got.ymm_high, want.ymm_high),
            );
        }
    }

    /// Check names with the round number, without an allocator.
    mod heapless_name {
        pub struct Name {
            buf: [u8; 48],
            len: usize,
        }
        impl Name {
            pub fn of(base: &str, round: u64) -> Name {
                let mut n = Name { buf: [0; 48], len: 0 };
                for &b in base.as_bytes().iter().chain(b"_r").chain(&[b'0' + (round % 10) as u8]) {
                    if n.len < n.buf.len() {
                        n.buf[n.len] = b;
                        n.len += 1;
                    }
                }
                n
            }
            pub fn as_str(&self) -> &str {
                core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
            }
        }
    }

    /// Sets CR4.PKE although CPUID hides PKU. The CPU (QEMU's) has it and CR4 writes do
    /// not exit, so the write may stick; then PKRU must be this VM's own.
    fn enable_pke() -> bool {
        let refused = traps::expect_fault(13, 3, || {
            // SAFETY: PKE only adds protection-key checks on user pages; PKRU is 0.
            unsafe { asm!("mov rax, cr4", "or rax, {pke}", "mov cr4, rax", pke = in(reg) CR4_PKE, out("rax") _) };
        });
        let cr4: u64;
        // SAFETY: reading CR4 has no side effects.
        unsafe { asm!("mov {}, cr4", out(reg) cr4) };
        let on = !refused && cr4 & CR4_PKE != 0;
        println!("hostile payload: CR4.PKE {}", if on { "set (PKRU must be this VM's own)" } else { "refused" });
        on
    }

    /// Enables AVX in XCR0 if the CPU has it (XSETBV exits or not, depending on the CPU).
    fn enable_avx() -> bool {
        if __cpuid(1).ecx & (1 << 28) == 0 || __cpuid_count(0xd, 0).eax & 0b110 != 0b110 {
            println!("hostile payload: no AVX, YMM isolation not checked");
            return false;
        }
        // SAFETY: OSXSAVE only allows XSAVE/XSETBV; the payload has no extended state.
        unsafe { asm!("mov rax, cr4", "or rax, {x}", "mov cr4, rax", x = in(reg) CR4_OSXSAVE, out("rax") _) };
        true
    }

    fn has_rdpid() -> bool {
        // RDPID is 4 bytes (F3 0F C7 F8); CPUID hides it, the CPU may still run it.
        let faulted = traps::expect_fault(6, 4, || {
            // SAFETY: RDPID only writes RAX, or is skipped after #UD.
            let _ = unsafe { rdpid_value() };
        });
        println!("hostile payload: RDPID {}", if faulted { "#UD (not checked)" } else { "runs" });
        !faulted
    }

    fn spin(ticks: u64) {
        // SAFETY: RDTSC has no side effects.
        let start = unsafe { _rdtsc() };
        // SAFETY: as above.
        while unsafe { _rdtsc() }.wrapping_sub(start) < ticks {
            core::hint::spin_loop();
        }
    }

    fn clear_breakpoints() {
        // SAFETY: clearing breakpoints.
        unsafe {
            write_dr7(0x400);
            for_each_dr_zero();
        }
    }

    unsafe fn for_each_dr_zero() {
        // SAFETY: guaranteed by the caller.
        unsafe {
            write_dr::<0>(0);
            write_dr::<1>(0);
            write_dr::<2>(0);
            write_dr::<3>(0);
        }
    }

    /// A write breakpoint on a stack slot: the #DB (a trap, after the write) must reach
    /// this VM's handler, with DR6.B0 saying which breakpoint hit.
    fn data_breakpoint_check() {
        let mut slot: u64 = 0;
        let addr = &raw mut slot as u64;
        // L0, R/W0 = 01 (writes), LEN0 = 10 (8 bytes).
        let dr7 = 0x400 | 1 | (0b01 << 16) | (0b10 << 18);
        // SAFETY: the breakpoint watches a local; DR6 is cleared first.
        unsafe {
            write_dr6(0xffff_0ff0);
            write_dr::<0>(addr);
            write_dr7(dr7);
        }
        let hit = traps::expect_fault(1, 0, || {
            // SAFETY: a write to a local.
            unsafe { core::ptr::write_volatile(&raw mut slot, 0x1234) };
        });
        // SAFETY: reading DR6 and clearing the breakpoint.
        let dr6 = unsafe {
            let dr6 = read_dr6();
            write_dr7(0x400);
            dr6
        };
        check("hostile_db_data_breakpoint_reflected", hit, format_args!("no #DB reached the guest"));
        check("hostile_db_dr6_b0", dr6 & 1 != 0, format_args!("DR6={dr6:#x}"));
    }

    /// A read/write breakpoint on this VM's own #DB gate, then a #DB: delivering each #DB
    /// reads the gate, which raises the next #DB before the handler's first instruction
    /// (CVE-2015-8104). On a CPU that models this, the deliveries walk down the stack
    /// until the VM faults beyond repair; each one must be an exit, not a CPU hang.
    fn db_gate_loop() {
        #[repr(C, packed)]
        struct Idtr {
            limit: u16,
            base: u64,
        }
        let mut idtr = Idtr { limit: 0, base: 0 };
        // SAFETY: SIDT writes 10 bytes into `idtr`.
        unsafe { asm!("sidt [{}]", in(reg) &raw mut idtr) };
        let gate = idtr.base + 16;
        println!("hostile payload: arming a breakpoint on the #DB gate at {gate:#x}");
        // L0, R/W0 = 11 (reads and writes), LEN0 = 10 (8 bytes); then a single-step #DB.
        let dr7 = 0x400 | 1 | (0b11 << 16) | (0b10 << 18);
        let mut slot: u64 = 0;
        // SAFETY: this is the attack; it only concerns this VM's own state.
        unsafe {
            write_dr::<0>(gate);
            write_dr7(dr7);
            write_dr::<1>(&raw mut slot as u64);
            // DR1: write breakpoint on a local, to raise the first #DB.
            write_dr7(dr7 | (1 << 2) | (0b01 << 20) | (0b10 << 22));
        }
        let hit = traps::expect_fault(1, 0, || {
            // SAFETY: a write to a local.
            unsafe { core::ptr::write_volatile(&raw mut slot, 1) };
        });
        // Only reached if delivery did not raise #DB again. Disarm at once: QEMU 7.2
        // keeps a guest's watchpoints armed across #VMEXIT, so the host would run with
        // them. A CPU that dropped the first #DB may still raise it late (QEMU 7.2 TCG
        // does, after the next exit): catch it here.
        let late = traps::expect_fault(1, 0, || {
            // SAFETY: clearing the breakpoints.
            unsafe { write_dr7(0x400) };
            println!("hostile payload: #DB gate loop not modelled by this CPU (#DB in time: {hit})");
        });
        println!("hostile payload: late #DB: {late}");
    }

    unsafe fn read_dr<const N: u8>() -> u64 {
        let v: u64;
        // SAFETY: CPL 0.
        unsafe {
            match N {
                0 => asm!("mov {}, dr0", out(reg) v),
                1 => asm!("mov {}, dr1", out(reg) v),
                2 => asm!("mov {}, dr2", out(reg) v),
                _ => asm!("mov {}, dr3", out(reg) v),
            }
        }
        v
    }

    unsafe fn write_dr<const N: u8>(v: u64) {
        // SAFETY: CPL 0, canonical value (the caller's).
        unsafe {
            match N {
                0 => asm!("mov dr0, {}", in(reg) v),
                1 => asm!("mov dr1, {}", in(reg) v),
                2 => asm!("mov dr2, {}", in(reg) v),
                _ => asm!("mov dr3, {}", in(reg) v),
            }
        }
    }

    unsafe fn read_dr6() -> u64 {
        let v: u64;
        // SAFETY: CPL 0.
        unsafe { asm!("mov {}, dr6", out(reg) v) };
        v
    }

    unsafe fn write_dr6(v: u64) {
        // SAFETY: CPL 0.
        unsafe { asm!("mov dr6, {}", in(reg) v) };
    }

    unsafe fn write_dr7(v: u64) {
        // SAFETY: CPL 0.
        unsafe { asm!("mov dr7, {}", in(reg) v) };
    }

    unsafe fn wrmsr(msr: u32, value: u64) {
        // SAFETY: the caller's.
        unsafe { asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32) };
    }

    unsafe fn rdpid_value() -> u64 {
        let v: u64;
        // SAFETY: RDPID RAX writes RAX only.
        unsafe { asm!(".byte 0xf3, 0x0f, 0xc7, 0xf8", out("rax") v) };
        v
    }

    unsafe fn rdtscp_aux() -> u64 {
        let aux: u32;
        // SAFETY: RDTSCP writes EAX, EDX, ECX.
        unsafe { asm!("rdtscp", out("eax") _, out("edx") _, out("ecx") aux) };
        u64::from(aux)
    }

    unsafe fn rdpkru() -> u32 {
        let v: u32;
        // SAFETY: CR4.PKE is set (checked by the caller).
        unsafe { asm!("rdpkru", in("ecx") 0, out("eax") v, out("edx") _) };
        v
    }

    unsafe fn wrpkru(v: u32) {
        // SAFETY: CR4.PKE is set; key 0 stays open (the caller's value).
        unsafe { asm!("wrpkru", in("eax") v, in("ecx") 0, in("edx") 0) };
    }

    unsafe fn set_xcr0(v: u64) {
        // SAFETY: CR4.OSXSAVE is set; `v` is x87|SSE or x87|SSE|AVX.
        unsafe { asm!("xsetbv", in("ecx") 0, in("eax") v as u32, in("edx") (v >> 32) as u32) };
    }

    /// Bits 191:128 of YMM0 (the low quadword of its upper half), with AVX enabled for
    /// the read.
    unsafe fn read_ymm0_high() -> u64 {
        let v: u64;
        // SAFETY: XCR0 = x87|SSE|AVX is valid on a CPU with AVX; YMM0/1 are not used by
        // the (soft-float) payload.
        unsafe {
            set_xcr0(0b111);
            asm!("vextractf128 xmm1, ymm0, 1", "vmovq {}, xmm1", out(reg) v);
        }
        v
    }

    unsafe fn write_ymm0_high(v: u64) {
        // SAFETY: as for `read_ymm0_high`.
        unsafe {
            set_xcr0(0b111);
            asm!("vmovq xmm1, {}", "vinsertf128 ymm0, ymm0, xmm1, 1", in(reg) v);
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a guest payload; it runs inside a Bulkhead VM (see tests/).");
}
