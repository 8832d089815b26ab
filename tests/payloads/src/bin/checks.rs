//! The self-test payload: exercises every virtualisation path a guest can reach and
//! reports `CHECK <name> PASS|FAIL`, then ends with a deliberately bad hypercall
//! argument, which must stop this VM (and only this VM).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod checks {
    use core::arch::asm;
    use core::arch::x86_64::__cpuid;

    use bulkhead_abi::hypercall as abi;
    use bulkhead_abi::payload::SCRATCH_MMIO;
    use payloads::traps::{self, TEST_VECTOR};
    use payloads::{check, hypercall, println};

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(ram_bytes: u64) -> ! {
        println!("checks payload: {} MiB of RAM", ram_bytes >> 20);
        cpuid_checks();
        msr_checks();
        port_checks();
        mmio_checks();
        interrupt_checks();
        hypercall_checks(ram_bytes);
        let (_, failed) = payloads::summary();
        // Last: a console write from an address outside this VM's memory. The hypervisor
        // must stop this VM for it; nothing after this line may run.
        println!("checks payload: sending a bad hypercall argument");
        hypercall::call(abi::CONSOLE_WRITE, 0xFFFF_FFFF_0000, 16, 0, 0);
        println!("CHECK bad_hypercall_stops_vm FAIL (still running)");
        hypercall::shutdown(u64::from(failed))
    }

    fn cpuid_checks() {
        let leaf1 = __cpuid(1);
        check("cpuid_hypervisor_bit", leaf1.ecx & (1 << 31) != 0, format_args!("ecx={:#x}", leaf1.ecx));
        check("cpuid_hides_vmx", leaf1.ecx & (1 << 5) == 0, format_args!("ecx={:#x}", leaf1.ecx));
        let ext = __cpuid(0x8000_0001);
        check("cpuid_hides_svm", ext.ecx & (1 << 2) == 0, format_args!("ecx={:#x}", ext.ecx));
        let hv = __cpuid(0x4000_0000);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&hv.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&hv.ecx.to_le_bytes());
        sig[8..].copy_from_slice(&hv.edx.to_le_bytes());
        check("cpuid_signature", sig.starts_with(b"Bulkhead"), format_args!("{sig:?}"));
        // A REX-prefixed CPUID is 3 bytes long: the hypervisor must skip exactly that.
        let (eax, ebx): (u64, u64);
        // SAFETY: CPUID only writes the named registers; RBX is saved around it.
        unsafe {
            asm!("mov {tmp}, rbx", ".byte 0x48, 0x0f, 0xa2", "xchg {tmp}, rbx", tmp = out(reg) ebx,
                 inout("rax") 0u64 => eax, out("rcx") _, out("rdx") _);
        }
        check("cpuid_rex_prefixed_length", eax >= 1 && ebx != 0, format_args!("eax={eax:#x}"));
    }

    fn msr_checks() {
        const LSTAR: u32 = 0xC000_0082;
        const VM_HSAVE_PA: u32 = 0xC001_0117;
        let value = 0xFFFF_8000_1234_5000u64;
        // SAFETY: LSTAR is only used by SYSCALL, which payloads never execute.
        let back = unsafe {
            wrmsr(LSTAR, value);
            rdmsr(LSTAR)
        };
        check("msr_allowed_roundtrip", back == value, format_args!("read {back:#x}"));
        // The hypervisor must refuse these with #GP, which expect_fault catches and skips
        // (rdmsr/wrmsr are 2 bytes).
        let denied_read = traps::expect_fault(13, 2, || {
            // SAFETY: a refused read faults and is skipped; it has no side effect.
            let _ = unsafe { rdmsr(VM_HSAVE_PA) };
        });
        check("msr_denied_read_gp", denied_read, format_args!("no #GP"));
        let denied_write = traps::expect_fault(13, 2, || {
            // SAFETY: the write is refused with #GP and skipped.
            unsafe { wrmsr(VM_HSAVE_PA, 0x1000) }
        });
        check("msr_denied_write_gp", denied_write, format_args!("no #GP"));
    }

    fn port_checks() {
        let value: u32;
        // SAFETY: port 0x1234 belongs to no device; the hypervisor answers all-ones.
        unsafe { asm!("in eax, dx", in("dx") 0x1234u16, out("eax") value) };
        check("port_unknown_reads_ones", value == 0xFFFF_FFFF, format_args!("read {value:#x}"));
        let byte: u8;
        // SAFETY: as above; an OUT to an unknown port is dropped.
        unsafe {
            asm!("out dx, al", in("dx") 0x1234u16, in("al") 0x5au8);
            asm!("in al, dx", in("dx") 0x1234u16, out("al") byte);
        }
        check("port_unknown_write_dropped", byte == 0xFF, format_args!("read {byte:#x}"));
    }

    fn mmio_checks() {
        let base = SCRATCH_MMIO as *mut u8;
        // SAFETY: SCRATCH_MMIO is a 4 KiB device window the hypervisor
        // emulates for this VM; every access below stays inside it or in local buffers.
        unsafe {
            let r32: u32;
            asm!("mov dword ptr [{b}], {v:e}", "mov {r:e}, dword ptr [{b}]", b = in(reg) base, v = in(reg) 0xDEAD_BEEFu32, r = out(reg) r32);
            check("mmio_mov32", r32 == 0xDEAD_BEEF, format_args!("{r32:#x}"));
            let r64: u64;
            asm!("mov qword ptr [{b} + 8], {v}", "mov {r}, qword ptr [{b} + 8]", b = in(reg) base, v = in(reg) 0x0123_4567_89AB_CDEFu64, r = out(reg) r64);
            check("mmio_mov64", r64 == 0x0123_4567_89AB_CDEF, format_args!("{r64:#x}"));
            let r8: u8;
            asm!("mov byte ptr [{b} + 16], 0x7e", "mov {r}, byte ptr [{b} + 16]", b = in(reg) base, r = out(reg_byte) r8);
            check("mmio_mov8_imm", r8 == 0x7e, format_args!("{r8:#x}"));
            let rz: u64;
            asm!("mov word ptr [{b} + 24], 0x8001", "movzx {r:e}, word ptr [{b} + 24]", b = in(reg) base, r = out(reg) rz);
            check("mmio_movzx16", rz == 0x8001, format_args!("{rz:#x}"));
            let rs: i64;
            asm!("movsx {r}, byte ptr [{b} + 16]", b = in(reg) base, r = out(reg) rs);
            check("mmio_movsx8", rs == 0x7e, format_args!("{rs:#x}"));
            asm!("mov dword ptr [{b} + 32], 0xf0f0", "or dword ptr [{b} + 32], 0x0f", "and dword ptr [{b} + 32], 0xff", b = in(reg) base);
            let rmw = core::ptr::read_volatile(base.add(32).cast::<u32>());
            check("mmio_read_modify_write", rmw == 0xff, format_args!("{rmw:#x}"));
            let src: [u8; 16] = *b"Bulkhead MMIO ok";
            asm!("rep movsb", inout("rsi") src.as_ptr() => _, inout("rdi") base.add(64) => _, inout("rcx") 16usize => _);
            let mut dst = [0u8; 16];
            asm!("rep movsb", inout("rsi") base.add(64).cast_const() => _, inout("rdi") dst.as_mut_ptr() => _, inout("rcx") 16usize => _);
            check("mmio_rep_movs", dst == src, format_args!("{dst:?}"));
            asm!("rep stosd", inout("rdi") base.add(128) => _, inout("rcx") 8usize => _, in("eax") 0x5555_AAAAu32);
            let words = core::ptr::read_volatile(base.add(128 + 7 * 4).cast::<u32>());
            check("mmio_rep_stos", words == 0x5555_AAAA, format_args!("{words:#x}"));
            let old: u32;
            asm!("mov dword ptr [{b} + 256], 11", "xchg {v:e}, dword ptr [{b} + 256]", b = in(reg) base, v = inout(reg) 22u32 => old);
            let new = core::ptr::read_volatile(base.add(256).cast::<u32>());
            check("mmio_xchg", old == 11 && new == 22, format_args!("old={old} new={new}"));
            let cmp_equal: u8;
            asm!("cmp dword ptr [{b} + 256], 22", "sete {r}", b = in(reg) base, r = out(reg_byte) cmp_equal);
            check("mmio_cmp", cmp_equal == 1, format_args!("sete={cmp_equal}"));
        }
    }

    fn interrupt_checks() {
        let before = traps::test_irqs();
        // SAFETY: the IDT has a handler for TEST_VECTOR.
        unsafe { asm!("sti") };
        hypercall::raise_interrupt(TEST_VECTOR);
        for _ in 0..1000 {
            if traps::test_irqs() > before {
                break;
            }
            core::hint::spin_loop();
        }
        check("interrupt_injection", traps::test_irqs() > before, format_args!("no interrupt"));
        // With interrupts off the interrupt must wait; `sti; hlt` must then wake on it.
        let before = traps::test_irqs();
        // SAFETY: as above; the pending interrupt ends the HLT.
        unsafe {
            asm!("cli");
            hypercall::raise_interrupt(TEST_VECTOR);
            let held = traps::test_irqs() == before;
            asm!("sti", "hlt");
            check("interrupt_held_while_masked", held, format_args!("delivered with IF=0"));
        }
        check("hlt_wakes_on_interrupt", traps::test_irqs() > before, format_args!("woke without it"));
    }

    fn hypercall_checks(ram_bytes: u64) {
        match hypercall::vm_info() {
            Some(info) => {
                let name_len = info.name.iter().position(|&b| b == 0).unwrap_or(32);
                let name = core::str::from_utf8(&info.name[..name_len]).unwrap_or("?");
                check(
                    "hypercall_vm_info",
                    info.memory_bytes == ram_bytes && !name.is_empty(),
                    format_args!("{name} {:#x}", info.memory_bytes),
                );
            }
            None => check("hypercall_vm_info", false, format_args!("call failed")),
        }
        let unknown = hypercall::call(0xdead, 0, 0, 0, 0);
        check("hypercall_unknown_number", unknown == abi::Error::UnknownCall.to_rax(), format_args!("{unknown:#x}"));
        hypercall::yield_now();
        check("hypercall_yield", true, format_args!(""));
    }

    /// # Safety
    /// The MSR write must not break the payload.
    unsafe fn wrmsr(msr: u32, value: u64) {
        // SAFETY: per the function contract.
        unsafe { asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32) }
    }

    /// # Safety
    /// Reading the MSR must have no side effects the payload cares about.
    unsafe fn rdmsr(msr: u32) -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: per the function contract.
        unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi) };
        u64::from(hi) << 32 | u64::from(lo)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a guest payload; it runs inside a Bulkhead VM (see tests/).");
}
