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

/// Reports the network's state; returns the configuration's generation (it moves when
/// a policy update changed the rules: fetch the configuration again).
pub fn net_status(status: &abi::NetStatus) -> u64 {
    call(abi::NET_STATUS, core::ptr::from_ref(status) as u64, 0)
}

/// The check-in request's contents; `None` when the laptop has no management server.
pub fn policy_checkin() -> Option<abi::PolicyCheckin> {
    let mut raw = [0u8; abi::POLICY_CHECKIN_SIZE];
    let ret = call(abi::POLICY_CHECKIN, raw.as_mut_ptr() as u64, 0);
    (ret == 0).then(|| abi::PolicyCheckin::from_bytes(&raw))
}

/// Hands the server's answer to the hypervisor; its verdict, `None` if it refused the
/// call.
pub fn policy_answer(answer: &[u8]) -> Option<abi::PolicyAnswer> {
    if answer.len() as u64 > abi::POLICY_ANSWER_MAX {
        return None;
    }
    abi::decode_answer_status(call(abi::POLICY_ANSWER, answer.as_ptr() as u64, answer.len() as u64))
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
