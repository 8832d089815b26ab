//! Message-signalled interrupts as a device sends them (PCI Local Bus Spec 3.0 §6.8).

/// An MSI message: a write of `data` to `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}
