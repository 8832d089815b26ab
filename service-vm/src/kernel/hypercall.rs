//! Hypercalls (VMMCALL; RAX = number, RBX/RCX/RDX/RSI = arguments, RAX = result).

use bulkhead_abi::hypercall as abi;

fn call(nr: u64, a: u64, b: u64) -> u64 {
    let ret: u64;
    // SAFETY: VMMCALL traps to the hypervisor, which only reads and writes the registers
    // named here and the memory the arguments point at (ours, and valid for the call).
    // RBX is reserved by LLVM, so it is swapped in and out around the instruction.
    unsafe {
        core::arch::asm!(
            "xchg {a}, rbx",
            "vmmcall",
            "xchg {a}, rbx",
            a = inout(reg) a => _,
            inout("rax") nr => ret,
            in("rcx") b,
        );
    }
    ret
}

pub fn console_write(bytes: &[u8]) {
    call(abi::CONSOLE_WRITE, bytes.as_ptr() as u64, bytes.len() as u64);
}

/// The network configuration text, copied into `buf`; `None` when the hypervisor has
/// none for this VM or it does not fit.
pub fn net_config(buf: &mut [u8]) -> Option<&str> {
    let ret = call(abi::NET_CONFIG, buf.as_mut_ptr() as u64, buf.len() as u64);
    let len = usize::try_from(ret).ok().filter(|n| *n <= buf.len())?;
    core::str::from_utf8(buf.get(..len)?).ok()
}

pub fn net_status(status: &abi::NetStatus) {
    call(abi::NET_STATUS, core::ptr::from_ref(status) as u64, 0);
}

/// Halts until an interrupt or `micros` microseconds (0: only an interrupt).
pub fn sleep(micros: u64) {
    call(abi::SLEEP, micros, 0);
}

pub fn shutdown(status: u64) -> ! {
    call(abi::SHUTDOWN, status, 0);
    // The hypervisor never resumes a VM after SHUTDOWN.
    loop {
        core::hint::spin_loop();
    }
}
