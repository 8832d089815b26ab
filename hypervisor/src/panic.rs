//! The panic path: a panic means a broken hypervisor invariant (guest input never
//! panics). Report it on serial, tell a test harness, and stop the CPU.

use crate::arch::x86::debug_exit;
use crate::arch::x86::instr;

pub fn report(info: &core::panic::PanicInfo<'_>) -> ! {
    x86_64::instructions::interrupts::disable();
    crate::logging::write_raw(format_args!("\nBULKHEAD PANIC on cpu{}: {}\n", instr::apic_id(), info));
    debug_exit::exit(debug_exit::ExitCode::Failure);
    instr::halt_forever()
}
