//! Function reset before and after assignment: which method a device supports
//! (detection), the register steps and delays for it (pure planning), and a small
//! executor over [`ConfigAccess`] and a [`Delay`].
//!
//! Methods, preferred in this order (as Linux `pci_reset_function` does):
//! * FLR (PCIe 6.0 §6.6.2): Device Capabilities bit 28, Initiate FLR in Device
//!   Control bit 15; wait for Transactions Pending to clear first, 100 ms after.
//! * Advanced Features FLR (PCI AF ECN, capability 13h): TP/FLR capability bits,
//!   Initiate FLR in AF Control bit 0.
//! * PM reset (PCI PM 1.2 §5.6.1): D0 → D3hot → D0 resets the function when PMCSR
//!   No_Soft_Reset (bit 3) is 0; 10 ms after each transition.
//! * Secondary bus reset (PCI-PCI Bridge 1.2 §3.2.5.17): only when the device is
//!   alone below its bridge, since every function on that bus is reset.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::host::pci::PciDevice;
use crate::host::pci::PciInventory;
use crate::host::pci::{ConfigAccess, PciError};
use crate::hw::Bdf;
use crate::hw::pci::cap_id;
use crate::hw::pci::{BCTL_SBR, BRIDGE_CONTROL, COMMAND};

/// Advanced Features capability id (PCI Code and ID Assignment Spec §2).
pub const CAP_AF: u8 = 0x13;

/// How a function can be reset, with the register offsets the plan needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetMethod {
    /// PCIe FLR through the PCI Express capability at this offset.
    Flr {
        pcie: u16,
    },
    /// FLR through the Advanced Features capability at this offset.
    AfFlr {
        af: u16,
    },
    /// D3hot round trip through the PM capability at this offset.
    PmReset {
        pm: u16,
    },
    /// Secondary bus reset of the bridge above the device.
    SecondaryBus {
        bridge: Bdf,
    },
    None,
}

impl fmt::Display for ResetMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flr { .. } => write!(f, "flr"),
            Self::AfFlr { .. } => write!(f, "af-flr"),
            Self::PmReset { .. } => write!(f, "pm"),
            Self::SecondaryBus { bridge } => write!(f, "bus({bridge})"),
            Self::None => write!(f, "none"),
        }
    }
}

/// PCIe Device Capabilities: Function Level Reset Capability.
const DEVCAP_FLR: u32 = 1 << 28;
/// PMCSR: No_Soft_Reset.
const PMCSR_NO_SOFT_RESET: u16 = 1 << 3;
/// PMCSR: PME_Status (write-1-to-clear) and PowerState.
const PMCSR_PME_STATUS: u16 = 1 << 15;
const PMCSR_STATE: u16 = 0b11;

/// Picks the best reset method `device` offers.
pub fn detect_reset(device: &PciDevice, inventory: &PciInventory, access: &impl ConfigAccess) -> ResetMethod {
    let bdf = device.bdf;
    if let Some(cap) = device.capability(cap_id::PCI_EXPRESS) {
        let pcie = u16::from(cap.offset);
        if access.read32(bdf, pcie.saturating_add(4)) & DEVCAP_FLR != 0 {
            return ResetMethod::Flr { pcie };
        }
    }
    if let Some(cap) = device.capability(CAP_AF) {
        let af = u16::from(cap.offset);
        // AF Capabilities (byte 3): TP_CAP bit 0, FLR_CAP bit 1; both needed.
        if access.read8(bdf, af.saturating_add(3)) & 0b11 == 0b11 {
            return ResetMethod::AfFlr { af };
        }
    }
    if let Some(cap) = device.capability(cap_id::POWER_MANAGEMENT) {
        let pm = u16::from(cap.offset);
        if access.read16(bdf, pm.saturating_add(4)) & PMCSR_NO_SOFT_RESET == 0 {
            return ResetMethod::PmReset { pm };
        }
    }
    if let Some(bridge) = parent_bridge(device, inventory)
        && inventory.devices().iter().filter(|d| d.bdf.bus == bdf.bus).all(|d| d.bdf.device == bdf.device)
    {
        return ResetMethod::SecondaryBus { bridge: bridge.bdf };
    }
    ResetMethod::None
}

/// The bridge whose secondary bus `device` sits on.
pub fn parent_bridge<'a>(device: &PciDevice, inventory: &'a PciInventory) -> Option<&'a PciDevice> {
    inventory.devices().iter().find(|d| {
        d.bdf.segment == device.bdf.segment
            && d.bdf != device.bdf
            && d.bridge.is_some_and(|b| b.secondary == device.bdf.bus)
    })
}

/// One step of a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetStep {
    /// Saves the function's header and PCIe control registers.
    Save {
        bdf: Bdf,
    },
    /// Polls a 16-bit register until `mask` clears (warns and goes on at timeout).
    WaitClear {
        bdf: Bdf,
        offset: u16,
        mask: u16,
        timeout_ms: u32,
    },
    /// Read-modify-write of a 16-bit register; `other_w1c` as in `write16`.
    Modify {
        bdf: Bdf,
        offset: u16,
        clear: u16,
        set: u16,
        other_w1c: u16,
    },
    Delay {
        ms: u32,
    },
    /// Polls until the function answers config reads again (fails at timeout).
    WaitReady {
        bdf: Bdf,
        timeout_ms: u32,
    },
    /// Writes the saved registers back, command register last.
    Restore {
        bdf: Bdf,
    },
}

/// The steps to reset `bdf` with `method`.
pub fn plan_reset(bdf: Bdf, method: ResetMethod) -> Result<Vec<ResetStep>, PciError> {
    use ResetStep::*;
    let body = match method {
        ResetMethod::Flr { pcie } => vec![
            WaitClear { bdf, offset: pcie.saturating_add(0x0a), mask: 1 << 5, timeout_ms: 100 },
            Modify { bdf, offset: pcie.saturating_add(0x08), clear: 0, set: 1 << 15, other_w1c: 0xffff },
            Delay { ms: 100 },
        ],
        ResetMethod::AfFlr { af } => vec![
            // AF Status (byte 5) TP bit 0 = bit 8 of the control/status word.
            WaitClear { bdf, offset: af.saturating_add(4), mask: 1 << 8, timeout_ms: 100 },
            Modify { bdf, offset: af.saturating_add(4), clear: 0, set: 1, other_w1c: 0 },
            Delay { ms: 100 },
        ],
        ResetMethod::PmReset { pm } => vec![
            Modify { bdf, offset: pm.saturating_add(4), clear: PMCSR_PME_STATUS | PMCSR_STATE, set: 3, other_w1c: 0 },
            Delay { ms: 10 },
            Modify { bdf, offset: pm.saturating_add(4), clear: PMCSR_PME_STATUS | PMCSR_STATE, set: 0, other_w1c: 0 },
            Delay { ms: 10 },
        ],
        ResetMethod::SecondaryBus { bridge } => vec![
            Modify { bdf: bridge, offset: BRIDGE_CONTROL, clear: 0, set: BCTL_SBR, other_w1c: 0 },
            // Trst: at least 1 ms asserted (PCI 3.0 §4.3.2); Linux uses 2 ms.
            Delay { ms: 2 },
            Modify { bdf: bridge, offset: BRIDGE_CONTROL, clear: BCTL_SBR, set: 0, other_w1c: 0 },
            // Devices need up to 1 s before they answer after a bus reset.
            Delay { ms: 1000 },
        ],
        ResetMethod::None => return Err(PciError::NoReset(bdf)),
    };
    let mut steps = vec![Save { bdf }];
    steps.extend(body);
    steps.push(WaitReady { bdf, timeout_ms: 1000 });
    steps.push(Restore { bdf });
    Ok(steps)
}

/// Sleeping, for the executor.
pub trait Delay {
    fn delay_us(&mut self, us: u64);
}

/// Registers saved across a reset.
#[derive(Debug, Clone, Default)]
struct Saved {
    header: [u32; 16],
    /// (offset, value) of 16-bit PCIe control registers.
    pcie: Vec<(u16, u16)>,
}

/// Runs a plan. `pcie` is the function's PCI Express capability offset, if any,
/// so that Device Control (MPS/MRRS), Link Control and Device Control 2 come back.
pub fn execute_reset(
    plan: &[ResetStep],
    access: &impl ConfigAccess,
    delay: &mut impl Delay,
    pcie: Option<u16>,
) -> Result<(), PciError> {
    let mut saved = Saved::default();
    for step in plan {
        match *step {
            ResetStep::Save { bdf } => {
                for (i, slot) in saved.header.iter_mut().enumerate() {
                    *slot = access.read32(bdf, (i as u16).saturating_mul(4));
                }
                if let Some(p) = pcie {
                    saved.pcie = [0x08u16, 0x10, 0x28]
                        .iter()
                        .map(|o| (p.saturating_add(*o), access.read16(bdf, p.saturating_add(*o))))
                        .collect();
                }
            }
            ResetStep::WaitClear { bdf, offset, mask, timeout_ms } => {
                let mut waited = 0;
                while access.read16(bdf, offset) & mask != 0 {
                    if waited >= timeout_ms {
                        log::warn!(target: "pci", "{bdf}: bits {mask:#x} at {offset:#x} still set; resetting anyway");
                        break;
                    }
                    delay.delay_us(1000);
                    waited = waited.saturating_add(1);
                }
            }
            ResetStep::Modify { bdf, offset, clear, set, other_w1c } => {
                let value = (access.read16(bdf, offset) & !clear) | set;
                access.write16(bdf, offset, value, other_w1c);
            }
            ResetStep::Delay { ms } => delay.delay_us(u64::from(ms).saturating_mul(1000)),
            ResetStep::WaitReady { bdf, timeout_ms } => {
                let mut waited = 0u32;
                // 0xffff: not answering; 0x0001: configuration request retry status.
                while matches!(access.read16(bdf, 0), 0xffff | 0x0001) {
                    if waited >= timeout_ms {
                        return Err(PciError::NotReady(bdf));
                    }
                    delay.delay_us(10_000);
                    waited = waited.saturating_add(10);
                }
            }
            ResetStep::Restore { bdf } => {
                for (offset, value) in &saved.pcie {
                    access.write16(bdf, *offset, *value, 0xffff);
                }
                // BARs, cache line/latency, interrupt line; then the command register
                // with a zero status half (its error bits are write-1-to-clear).
                for i in 3..16u16 {
                    if let Some(v) = saved.header.get(usize::from(i)) {
                        access.write32(bdf, i.saturating_mul(4), *v);
                    }
                }
                if let Some(v) = saved.header.get(1) {
                    access.write32(bdf, COMMAND, v & 0xffff);
                }
                log::info!(target: "pci", "{bdf}: reset done, configuration restored");
            }
        }
    }
    Ok(())
}

/// Detects, plans and runs a reset of `device`.
pub fn reset_function(
    device: &PciDevice,
    inventory: &PciInventory,
    access: &impl ConfigAccess,
    delay: &mut impl Delay,
) -> Result<ResetMethod, PciError> {
    let method = detect_reset(device, inventory, access);
    let plan = plan_reset(device.bdf, method)?;
    let pcie = device.capability(cap_id::PCI_EXPRESS).map(|c| u16::from(c.offset));
    execute_reset(&plan, access, delay, pcie)?;
    Ok(method)
}

#[cfg(test)]
mod tests;
