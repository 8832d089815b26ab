//! Device models the hypervisor offers to guests, and the buses that route port and
//! MMIO accesses to them. [`layout`] lists where the platform devices sit.
#![forbid(unsafe_code)]

pub mod bus;
pub mod clock;
pub mod irq;
pub mod layout;
pub mod vlapic;
