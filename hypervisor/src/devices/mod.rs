//! Device models the hypervisor offers to guests, and the buses that route port and
//! MMIO accesses to them.
#![forbid(unsafe_code)]

pub mod bus;
pub mod host_rtc;
pub mod i8042;
pub mod irq_line;
pub mod layout;
pub mod pci_config;
pub mod pci_host;
pub mod power;
pub mod rtc;
pub mod scratch;
pub mod shared;
pub mod uart16550;
