//! x86-64 primitives: the few instructions the hypervisor needs, CPU tables and
//! feature detection.
pub mod closed_stretches;
pub mod cpu;
pub mod cpuid;
pub mod debug_exit;
pub mod device_vectors;
pub mod exit_stages;
pub mod ext_state;
pub mod gdt;
pub mod idt;
pub mod instr;
pub mod lapic;
pub mod smp;
pub mod switched;
pub mod tsc;
