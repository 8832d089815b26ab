//! QEMU's `isa-debug-exit` device at port 0xf4: how a test run reports its verdict.
//! QEMU exits with status `(value << 1) | 1`: 0x10 → 33 (pass), 0x11 → 35 (fail). On
//! real hardware nothing decodes the port and the write is harmless.

const DEBUG_EXIT_PORT: u16 = 0xf4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0x10,
    Failure = 0x11,
}

pub fn exit(code: ExitCode) {
    // The log's last lines (the verdict) must be out before QEMU goes.
    crate::logging::flush();
    // SAFETY: port 0xf4 is not used by any chipset device Bulkhead drives; on QEMU it is
    // isa-debug-exit (when configured), elsewhere the write goes nowhere.
    unsafe { crate::arch::x86::instr::outl(DEBUG_EXIT_PORT, code as u32) }
}
