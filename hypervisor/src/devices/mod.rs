//! Device models the hypervisor offers to guests, and the buses that route port and
//! MMIO accesses to them. [`layout`] lists where the platform devices sit;
//! [`platform_irq`] bundles the interrupt controllers and the PIT for a VM.
#![forbid(unsafe_code)]

pub mod bus;
pub mod clock;
pub mod i8042;
pub mod ioapic;
pub mod ipi;
pub mod irq;
pub mod irq_line;
pub mod layout;
pub mod pic;
pub mod pit;
pub mod platform_irq;
pub mod power;
pub mod rtc;
pub mod scratch;
pub mod shared;
pub mod uart16550;
pub mod virtio;
pub mod vlapic;
pub mod vpci;
