//! The exit benchmark payload (`cargo xtask bench exits`): times one round trip of
//! each kind of exit with RDTSC, next to a baseline loop in which the exiting
//! instruction is replaced by one that does not exit, and prints one line per kind:
//!
//! `EXITS-BENCH kind=cpuid iters=1000 op_min=.. op_median=.. op_max=.. op_total=..
//!  base_min=.. base_median=.. base_max=.. base_total=..`
//!
//! Under QEMU's `-icount shift=0,sleep=off` the TSC advances exactly one tick per
//! instruction retired, in the guest and in the hypervisor alike, so a delta is the
//! number of instructions between the two RDTSCs. The payload checks that first
//! (`kind=tsc-check`: 100 NOPs more must be exactly 100 ticks more). Before and after
//! each timed loop it asks for VM_INFO, which makes the hypervisor log the VM's exit
//! counters, so the host side can tell how many exits each iteration took.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod bench {
    use core::arch::asm;

    use bulkhead_abi::payload::SCRATCH_MMIO;
    use payloads::{hypercall, println, traps};

    /// Timed iterations per kind (and as many for its baseline).
    const ITERS: usize = 1000;

    /// One timed run of the instructions given: the TSC delta between an RDTSC
    /// before them and one after. R10 holds `ptr` (an address the instructions may
    /// load from); RBX may be used and is restored outside the timed span.
    macro_rules! timed {
        ($name:ident, $($insn:literal),*) => {
            #[inline(never)]
            fn $name(ptr: u64) -> u64 {
                let (lo, hi, lo0, hi0): (u64, u64, u64, u64);
                // SAFETY: the instructions are the benchmark's own: CPUID, a harmless
                // hypercall, a read of an unclaimed port, a load from the scratch
                // device or RAM, a TSC_AUX write, HLT with an interrupt the IDT
                // handles (its handler preserves every register), or their
                // non-exiting stand-ins. Every register they write is declared or
                // restored (RBX from R11).
                unsafe {
                    asm!(
                        "mov r11, rbx",
                        "rdtsc",
                        "mov r8d, eax",
                        "mov r9d, edx",
                        $($insn,)*
                        "rdtsc",
                        "mov rbx, r11",
                        in("r10") ptr,
                        out("rax") lo,
                        out("rdx") hi,
                        out("r8") lo0,
                        out("r9") hi0,
                        out("r11") _,
                        out("rcx") _,
                    );
                }
                ((hi << 32) | lo).wrapping_sub((hi0 << 32) | lo0)
            }
        };
    }

    // The TSC check: the same span with and without 100 NOPs.
    timed!(empty,);
    timed!(hundred_nops, ".rept 100", "nop", ".endr");

    // Each kind: the exiting form, then the baseline with the exiting instruction(s)
    // replaced one for one by instructions that do not exit. VMMCALL uses hypercall
    // 0xb0, which the ABI does not define: the hypervisor answers `UnknownCall` in RAX
    // and changes nothing (how a guest probes the ABI). Port 0x80 belongs to no device
    // of a payload VM: the port bus answers all-ones. The MSR is IA32_TSC_AUX
    // (0xc0000103), which the hypervisor keeps itself (RDTSCP returns it).
    timed!(cpuid, "xor eax, eax", "xor ecx, ecx", "cpuid");
    timed!(cpuid_base, "xor eax, eax", "xor ecx, ecx", "nop");
    timed!(vmmcall, "mov eax, 0xb0", "vmmcall");
    timed!(vmmcall_base, "mov eax, 0xb0", "nop");
    timed!(port_in, "mov edx, 0x80", "in al, dx");
    timed!(port_in_base, "mov edx, 0x80", "nop");
    // MMIO: the same load, from the scratch device (`ptr` = SCRATCH_MMIO) or from RAM.
    timed!(mmio_load, "mov eax, dword ptr [r10]");
    timed!(wrmsr, "mov ecx, 0xc0000103", "xor eax, eax", "xor edx, edx", "wrmsr");
    timed!(wrmsr_base, "mov ecx, 0xc0000103", "xor eax, eax", "xor edx, edx", "nop");
    // HLT-wake: with interrupts off, the guest raises an interrupt at itself
    // (RAISE_INTERRUPT, the payload VM's self-IPI), then `sti; hlt`; the interrupt
    // wakes the HLT and its handler runs. The baseline raises nothing and runs the
    // same handler through `int`, so only the hypervisor's part differs.
    timed!(hlt_wake, "mov eax, 16", "mov ebx, 0x40", "cli", "vmmcall", "sti", "hlt");
    timed!(hlt_wake_base, "mov eax, 16", "mov ebx, 0x40", "cli", "nop", "sti", "int 0x40");

    #[derive(Clone, Copy)]
    struct Stats {
        min: u64,
        median: u64,
        max: u64,
        total: u64,
    }

    fn stats(samples: &mut [u64; ITERS]) -> Stats {
        let total = samples.iter().sum();
        samples.sort_unstable();
        Stats { min: samples[0], median: samples[ITERS / 2], max: samples[ITERS - 1], total }
    }

    fn run(f: fn(u64) -> u64, ptr: u64) -> Stats {
        let mut samples = [0u64; ITERS];
        for s in samples.iter_mut() {
            *s = f(ptr);
        }
        stats(&mut samples)
    }

    /// Times `op` and `base`, the exiting loop between two VM_INFO calls (which log
    /// the exit counters), and prints the result line.
    /// `irqs` is the number of interrupts the payload handled during the timed loop.
    fn measure(kind: &str, op: fn(u64) -> u64, op_ptr: u64, base: fn(u64) -> u64, base_ptr: u64) {
        let b = run(base, base_ptr);
        let _ = hypercall::vm_info();
        let irqs = traps::test_irqs();
        let o = run(op, op_ptr);
        let irqs = traps::test_irqs().wrapping_sub(irqs);
        let _ = hypercall::vm_info();
        println!(
            "EXITS-BENCH kind={kind} iters={ITERS} irqs={irqs} op_min={} op_median={} op_max={} op_total={} base_min={} base_median={} base_max={} base_total={}",
            o.min, o.median, o.max, o.total, b.min, b.median, b.max, b.total
        );
    }

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(_ram_bytes: u64) -> ! {
        println!("EXITS-BENCH start");
        let (e, n) = (run(empty, 0), run(hundred_nops, 0));
        println!(
            "EXITS-BENCH kind=tsc-check nops=100 empty_min={} empty_max={} nops_min={} nops_max={}",
            e.min, e.max, n.min, n.max
        );
        let ram = core::hint::black_box(&0u32) as *const u32 as u64;
        measure("cpuid", cpuid, 0, cpuid_base, 0);
        measure("vmmcall", vmmcall, 0, vmmcall_base, 0);
        measure("pio-in", port_in, 0, port_in_base, 0);
        measure("mmio-load", mmio_load, SCRATCH_MMIO, mmio_load, ram);
        measure("wrmsr", wrmsr, 0, wrmsr_base, 0);
        measure("hlt-wake", hlt_wake, 0, hlt_wake_base, 0);
        println!("EXITS-BENCH done");
        hypercall::shutdown(0)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a guest payload; it runs inside a Bulkhead VM (see `cargo xtask bench exits`).");
}
