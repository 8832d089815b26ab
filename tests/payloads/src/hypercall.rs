//! Hypercalls (VMMCALL; RAX = number, RBX/RCX/RDX/RSI = arguments, RAX = result).

use bulkhead_abi::hypercall as abi;

/// Raw hypercall. RBX is reserved by LLVM, so it is swapped in and out around VMMCALL.
pub fn call(nr: u64, a: u64, b: u64, c: u64, d: u64) -> u64 {
    let ret: u64;
    // SAFETY: VMMCALL traps to the hypervisor, which only reads and writes the registers
    // named here and memory the arguments point at.
    unsafe {
        core::arch::asm!(
            "xchg {a}, rbx",
            "vmmcall",
            "xchg {a}, rbx",
            a = inout(reg) a => _,
            inout("rax") nr => ret,
            in("rcx") b,
            in("rdx") c,
            in("rsi") d,
        );
    }
    ret
}

pub fn console_write(bytes: &[u8]) -> u64 {
    call(abi::CONSOLE_WRITE, bytes.as_ptr() as u64, bytes.len() as u64, 0, 0)
}

pub fn vm_info() -> Option<abi::VmInfo> {
    let mut info = abi::VmInfo { abi_version: 0, vm_id: 0, memory_bytes: 0, name: [0; 32] };
    let ret = call(abi::VM_INFO, &raw mut info as u64, 0, 0, 0);
    (ret == 0).then_some(info)
}

pub fn raise_interrupt(vector: u8) -> u64 {
    call(abi::RAISE_INTERRUPT, u64::from(vector), 0, 0, 0)
}

pub fn yield_now() {
    call(abi::YIELD, 0, 0, 0, 0);
}

pub fn shutdown(status: u64) -> ! {
    call(abi::SHUTDOWN, status, 0, 0, 0);
    // The hypervisor never resumes a VM after SHUTDOWN; spin if it somehow does.
    loop {
        core::hint::spin_loop();
    }
}
