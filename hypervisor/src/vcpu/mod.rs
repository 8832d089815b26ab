//! Arch-neutral vCPU logic: exit reasons and actions, the vendor seam, guest register
//! access, CPUID/MSR policy, the instruction decoder and the exit decision function.
//! Nothing here touches hardware; everything is unit-tested on the host.
#![forbid(unsafe_code)]

pub mod cpuid;
pub mod dispatch;
pub mod insn;
pub mod msr;
pub mod pv_eoi;
pub mod pvclock;
