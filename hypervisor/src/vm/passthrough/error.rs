//! Why host PCI functions cannot be given to a VM, and why an assigned function's
//! INTx line is not routed. The texts are what the log and the safe-mode screen show.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use crate::devices::bus::BusError;
use crate::devices::vpci::config_space::VpciError;
use crate::host::ioapic::IoapicRouteError;
use crate::host::iommu::IommuError;
use crate::host::pci::PciError;
use crate::hw::Bdf;
use crate::vm::config::DeviceSelector;
use crate::vm::passthrough::placement::{BarWindow, PlacementRefusal};

/// Why a VM's `devices=` cannot be honoured, found before any VM starts or while
/// its devices are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassthroughError {
    /// The VM names devices and no IOMMU is on.
    NeedsIommu {
        vm: String,
    },
    /// No function matches the selector (or every match is already taken).
    NotPresent {
        vm: String,
        device: DeviceSelector,
    },
    /// The function exists but the assignability report refuses it.
    NotAssignable {
        vm: String,
        device: DeviceSelector,
        bdf: Bdf,
        why: &'static str,
    },
    /// Boot found no PCI or IOMMU (no ACPI tables).
    NoDiscovery,
    /// The VM's RAM `[ram.0, ram.1)` reaches a PCI window where its BARs go.
    RamInWindow {
        vm: String,
        ram: (u64, u64),
        window: BarWindow,
    },
    /// `error`, in VM `vm`.
    InVm {
        vm: String,
        error: Box<PassthroughError>,
    },
    /// The function was in the inventory at boot and is not now.
    Vanished(Bdf),
    /// The same, where the function is not named.
    DeviceVanished,
    /// A function's BARs cannot be placed in the VM's windows.
    Unplaceable {
        bdf: Bdf,
        refusal: PlacementRefusal,
    },
    /// A placement refusal naming no function of the request.
    Placement(PlacementRefusal),
    /// The host's IOMMU (or configuration space) is not there.
    NoIommu,
    NoConfigSpace,
    CreateDomain(IommuError),
    /// More functions than the VM's bus has device numbers for.
    TooManyDevices,
    Reset {
        bdf: Bdf,
        error: PciError,
    },
    Attach {
        bdf: Bdf,
        error: IommuError,
    },
    /// The function's filtered view cannot be built.
    View {
        bdf: Bdf,
        error: PciError,
    },
    /// The ROM copy's guest range is not a valid bus range.
    RomRange,
    RomWindow {
        bdf: Bdf,
        error: BusError,
    },
    /// The placed address does not fit the BAR.
    BarAddress {
        bdf: Bdf,
        bar: u8,
        guest_addr: u64,
    },
    MsixWindow {
        bdf: Bdf,
        error: BusError,
    },
    /// The VM's PCI bus refused the function.
    AddFunction(VpciError),
}

impl fmt::Display for PassthroughError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NeedsIommu { vm } => write!(
                f,
                "VM {vm}: devices= needs an IOMMU (VT-d or AMD-Vi) and none is on; devices are never given unprotected"
            ),
            Self::NotPresent { vm, device } => {
                write!(f, "VM {vm}: device {device} is not in this machine (or already given to a VM)")
            }
            Self::NotAssignable { vm, device, bdf, why } => {
                write!(f, "VM {vm}: device {device} ({bdf}) cannot be assigned: {why}")
            }
            Self::NoDiscovery => {
                f.write_str("devices= needs PCI and IOMMU discovery, which found nothing (no ACPI tables)")
            }
            Self::RamInWindow { vm, ram: (start, end), window } => write!(
                f,
                "VM {vm}: its RAM ({start:#x}-{end:#x}) overlaps the PCI window {:#x}-{:#x} where its devices' \
                 BARs go; give it less memory or no devices",
                window.start, window.end
            ),
            Self::InVm { vm, error } => write!(f, "VM {vm}: {error}"),
            Self::Vanished(bdf) => write!(f, "device {bdf} vanished"),
            Self::DeviceVanished => f.write_str("device vanished"),
            Self::Unplaceable { bdf, refusal } => write!(f, "device {bdf} cannot be mapped into a VM: {refusal}"),
            Self::Placement(refusal) => write!(f, "{refusal}"),
            Self::NoIommu => f.write_str("no IOMMU"),
            Self::NoConfigSpace => f.write_str("no config space"),
            Self::CreateDomain(e) => write!(f, "cannot create its IOMMU domain: {e}"),
            Self::TooManyDevices => f.write_str("too many devices"),
            Self::Reset { bdf, error } => write!(f, "cannot reset {bdf}: {error:?}"),
            Self::Attach { bdf, error } => write!(f, "cannot attach {bdf}: {error}"),
            Self::View { bdf, error } => write!(f, "{bdf}: {error:?}"),
            Self::RomRange => f.write_str("ROM range"),
            Self::RomWindow { bdf, error } => write!(f, "{bdf}: ROM window: {error:?}"),
            Self::BarAddress { bdf, bar, guest_addr } => {
                write!(f, "{bdf}: BAR{bar} cannot hold guest address {guest_addr:#x}")
            }
            Self::MsixWindow { bdf, error } => write!(f, "{bdf}: MSI-X table window: {error:?}"),
            Self::AddFunction(e) => write!(f, "{e:?}"),
        }
    }
}

/// Why an assigned function's INTx line is not routed into its VM (it still has MSI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntxRouteError {
    /// The firmware's `_PRT` says nothing about the function's pin.
    NotDescribed,
    /// The VM's I/O APIC inputs for device lines (GSI 16-23) are all in use.
    GuestInputsFull,
    /// Another VM's device is on the same host line.
    LineTaken {
        gsi: u32,
        other: Bdf,
    },
    /// The host vector table is full.
    NoVector,
    /// The host I/O APIC cannot route the line.
    Ioapic {
        gsi: u32,
        error: IoapicRouteError,
    },
    NoIommu,
    NoIoapic,
}

impl fmt::Display for IntxRouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDescribed => f.write_str("the firmware's _PRT does not describe its pin"),
            Self::GuestInputsFull => f.write_str("the VM's INTx inputs (GSI 16-23) are all taken"),
            Self::LineTaken { gsi, other } => {
                write!(f, "its INTx line (GSI {gsi}) already carries {other} of another VM; it gets MSI only")
            }
            Self::NoVector => f.write_str("no free host vector for its INTx line"),
            Self::Ioapic { gsi, error } => write!(f, "its INTx line (GSI {gsi}) cannot be routed: {error}"),
            Self::NoIommu => f.write_str("no IOMMU"),
            Self::NoIoapic => f.write_str("no I/O APIC"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn texts_name_the_vm_the_device_and_the_reason() {
        let nic = DeviceSelector::Id { vendor: 0x8086, device: 0x10d3 };
        let bdf = Bdf::new(0, 0, 3, 0);
        assert_eq!(
            PassthroughError::NeedsIommu { vm: "dma".into() }.to_string(),
            "VM dma: devices= needs an IOMMU (VT-d or AMD-Vi) and none is on; devices are never given unprotected"
        );
        assert_eq!(
            PassthroughError::NotAssignable { vm: "n".into(), device: nic, bdf, why: "a bridge" }.to_string(),
            "VM n: device 8086:10d3 (00:03.0) cannot be assigned: a bridge"
        );
        let unplaceable =
            PassthroughError::Unplaceable { bdf, refusal: PlacementRefusal::TooLarge { bar: 2, size: 0x10 } };
        assert_eq!(
            PassthroughError::InVm { vm: "n".into(), error: Box::new(unplaceable) }.to_string(),
            "VM n: device 00:03.0 cannot be mapped into a VM: BAR2 is too large (0x10 bytes)"
        );
        assert_eq!(
            PassthroughError::RamInWindow {
                vm: "big".into(),
                ram: (0, 0xd000_0000),
                window: BarWindow { start: 0xc000_0000, end: 0xe000_0000 }
            }
            .to_string(),
            "VM big: its RAM (0x0-0xd0000000) overlaps the PCI window 0xc0000000-0xe0000000 where its devices' BARs \
             go; give it less memory or no devices"
        );
        assert_eq!(
            PassthroughError::BarAddress { bdf, bar: 1, guest_addr: 0xc000_0000 }.to_string(),
            "00:03.0: BAR1 cannot hold guest address 0xc0000000"
        );
    }

    #[test]
    fn intx_texts_carry_the_lower_layers_reason() {
        let e = IntxRouteError::Ioapic { gsi: 40, error: IoapicRouteError::NoIoapic { gsi: 40 } };
        assert_eq!(e.to_string(), "its INTx line (GSI 40) cannot be routed: no I/O APIC serves GSI 40");
        let taken = IntxRouteError::LineTaken { gsi: 22, other: Bdf::new(0, 0, 6, 0) };
        assert_eq!(taken.to_string(), "its INTx line (GSI 22) already carries 00:06.0 of another VM; it gets MSI only");
    }
}
