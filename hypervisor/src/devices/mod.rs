//! Device models the hypervisor offers to guests, and the buses that route port and
//! MMIO accesses to them.
#![forbid(unsafe_code)]

pub mod bus;
pub mod i8042;
pub mod irq_line;
pub mod layout;
pub mod power;
pub mod rtc;
pub mod uart16550;
pub mod host_rtc;
