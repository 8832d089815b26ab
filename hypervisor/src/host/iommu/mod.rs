//! DMA and interrupt isolation for assigned PCI devices: Intel VT-d and AMD-Vi behind
//! one [`Iommu`] trait.
//!
//! Model: every VM that owns a device gets one *domain*, whose I/O page tables map
//! exactly the VM's guest-physical memory (its [`GuestMemoryMap`]) onto the host
//! frames backing it. A device is *attached* to at most one domain; a device attached
//! to none is **blocked**: its DMA reaches no memory and its MSIs are rejected (VT-d:
//! no present context entry; AMD-Vi: a valid device table entry with translation
//! disabled and no read/write permission, and interrupts aborted). Interrupts of an
//! attached device go through remapping entries that only that device may use and
//! that the VM layer fills with vectors it has given to the owning VM.
//!
//! The drivers are plain logic over [`IommuHw`] (register access plus the frames the
//! tables live in); the one implementation that touches hardware is in `mmio.rs`.
//! See `docs/iommu.md`.
#![deny(unsafe_code)]

pub mod amdvi;
mod domains;
mod hw;
// The register blocks, contiguous table memory and cache write-back.
#[allow(unsafe_code)]
mod mmio;
pub mod scope;
pub mod shared;
pub mod vtd;

#[cfg(test)]
pub(crate) mod fake_mem;

use crate::hw::MsiMessage;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

pub use hw::IommuHw;
pub use mmio::{HostIommuHw, from_platform};

use crate::hw::Bdf;
use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::GuestMemoryMap;
use crate::memory::page_table::MapError;

/// A DMA domain: one VM's I/O address space. Ids are hardware domain ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}", self.0)
    }
}

/// An I/O APIC input whose interrupts are to be remapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoapicPin {
    /// The I/O APIC's id (MADT; the DMAR/IVRS scope names it).
    pub ioapic_id: u8,
    pub pin: u8,
    /// Level-triggered (a PCI INTx line): the remapped interrupt must reach the local
    /// APIC as level-triggered too, or its EOI never reaches the I/O APIC.
    pub level: bool,
}

/// Where a remapped interrupt goes: a host vector on a host CPU (physical xAPIC
/// destination mode, fixed delivery, edge triggered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiTarget {
    pub vector: u8,
    /// Local APIC id of the destination CPU (xAPIC: 0..=255).
    pub dest_apic_id: u32,
}

/// What a recorded fault was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    DmaRead,
    DmaWrite,
    /// An interrupt request that remapping rejected.
    Interrupt,
    /// A fault not tied to one request (table access errors, illegal commands).
    Other,
}

/// One fault reported by the IOMMU hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuFault {
    /// The driver's index of the unit that reported it: a requester id names a
    /// function only together with the unit (and its segment) that saw it.
    pub unit: usize,
    /// The requester as the unit reports it, on the unit's segment. Behind a
    /// PCIe-to-PCI bridge this may be an alias several functions share.
    pub bdf: Bdf,
    /// The faulting DMA address, or for interrupt faults the remapping index.
    pub address: u64,
    /// Hardware reason code (VT-d fault reason, AMD-Vi event code).
    pub code: u16,
    /// Human-readable reason.
    pub reason: &'static str,
    pub kind: FaultKind,
}

impl fmt::Display for IommuFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FaultKind::DmaRead => "DMA read",
            FaultKind::DmaWrite => "DMA write",
            FaultKind::Interrupt => "interrupt",
            FaultKind::Other => "fault",
        };
        write!(f, "{} {kind} at {:#x}: {} (code {:#x})", self.bdf, self.address, self.reason, self.code)
    }
}

/// What went wrong in the IOMMU layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IommuError {
    /// Firmware describes no usable IOMMU: device passthrough is refused.
    NoIommu,
    /// The unit lacks something Bulkhead needs (named).
    Unsupported(&'static str),
    /// No frames left for tables.
    OutOfMemory,
    /// A guest-physical range is outside what the domain's page tables can address,
    /// or a host-physical address exceeds the unit's address width.
    AddressOutOfRange {
        gpa: u64,
    },
    /// Misaligned or overlapping memory map (should not happen for a valid map).
    BadMapping {
        gpa: u64,
    },
    /// No IOMMU unit covers this device.
    NotCovered(Bdf),
    UnknownDomain(DomainId),
    /// The domain still has devices attached.
    DomainBusy(DomainId),
    /// No hardware domain id left.
    NoDomainIds,
    /// The device is attached to another domain; detach it first.
    AlreadyAttached {
        bdf: Bdf,
        domain: DomainId,
    },
    NotAttached(Bdf),
    /// No free interrupt remapping entry.
    NoInterruptEntries,
    /// The hardware did not complete a command in time (register named).
    Timeout(&'static str),
    /// The hardware reported an error while processing invalidations.
    InvalidationError(u32),
    /// Interrupt remapping is not available on this unit.
    NoInterruptRemapping,
}

/// Page-table errors as the IOMMU reports them: the engine refuses only what a valid
/// memory map never asks for, or runs out of frames.
impl From<MapError> for IommuError {
    fn from(e: MapError) -> Self {
        match e {
            MapError::OutOfFrames => Self::OutOfMemory,
            MapError::BadGeometry => Self::Unsupported("page-table depth"),
            MapError::OutOfRange { gpa } => Self::AddressOutOfRange { gpa: gpa.raw() },
            MapError::Misaligned { gpa } | MapError::AlreadyMapped { gpa } | MapError::BadPerms { gpa } => {
                Self::BadMapping { gpa: gpa.raw() }
            }
        }
    }
}

impl fmt::Display for IommuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoIommu => write!(f, "no IOMMU described by firmware; passthrough disabled"),
            Self::Unsupported(what) => write!(f, "IOMMU lacks {what}"),
            Self::OutOfMemory => write!(f, "out of frames for IOMMU tables"),
            Self::AddressOutOfRange { gpa } => write!(f, "GPA {gpa:#x} beyond the IOMMU's address width"),
            Self::BadMapping { gpa } => write!(f, "bad mapping at GPA {gpa:#x}"),
            Self::NotCovered(bdf) => write!(f, "{bdf} is not behind any IOMMU unit"),
            Self::UnknownDomain(d) => write!(f, "unknown {d}"),
            Self::DomainBusy(d) => write!(f, "{d} still has devices attached"),
            Self::NoDomainIds => write!(f, "no free domain ids"),
            Self::AlreadyAttached { bdf, domain } => write!(f, "{bdf} already attached to {domain}"),
            Self::NotAttached(bdf) => write!(f, "{bdf} is not attached"),
            Self::NoInterruptEntries => write!(f, "interrupt remapping table full"),
            Self::Timeout(reg) => write!(f, "IOMMU timed out waiting for {reg}"),
            Self::InvalidationError(code) => write!(f, "invalidation error {code:#x}"),
            Self::NoInterruptRemapping => write!(f, "interrupt remapping unsupported"),
        }
    }
}

/// DMA remapping and interrupt remapping for passthrough.
///
/// Every state-changing call invalidates the hardware caches it affects before it
/// returns, so a detached device can no longer reach the old domain's memory once
/// `detach` is back.
pub trait Iommu {
    /// "VT-d" or "AMD-Vi".
    fn name(&self) -> &'static str;

    /// Turns translation on (after setting every device to blocked), and interrupt
    /// remapping where the unit has it. Idempotent.
    fn enable(&mut self) -> Result<(), IommuError>;

    /// A new domain whose I/O page tables map exactly `map` (GPA → HPA, the regions'
    /// read/write rights; 2 MiB pages where GPA and HPA are both aligned).
    fn create_domain(&mut self, map: &GuestMemoryMap) -> Result<DomainId, IommuError>;

    /// Frees a domain's tables. Fails while devices are attached.
    fn destroy_domain(&mut self, domain: DomainId) -> Result<(), IommuError>;

    /// Sets aside `pages` (at most 512) I/O addresses from `iova` (2 MiB-aligned,
    /// unmapped) in `domain` as its transfer window: a host driver's DMA straight to
    /// or from memory outside its own region goes through it, one transfer at a time.
    fn reserve_window(&mut self, domain: DomainId, _iova: u64, _pages: usize) -> Result<(), IommuError> {
        Err(IommuError::UnknownDomain(domain))
    }

    /// Maps the pages of `ranges` (host page ranges, in order) at consecutive I/O
    /// addresses from the start of `domain`'s window, readable by the devices attached
    /// and writable when `writable`; returns that address. Refused, with nothing
    /// mapped, while the window is in use or when it is too small. In force when this
    /// returns.
    fn map_window(
        &mut self,
        domain: DomainId,
        _ranges: &[(HostPhysAddr, u64)],
        _writable: bool,
    ) -> Result<u64, IommuError> {
        Err(IommuError::UnknownDomain(domain))
    }

    /// Clears what [`Iommu::map_window`] mapped; the domain's IOTLB entries are
    /// invalidated, and the invalidation completed, before this returns, so the
    /// devices can no longer reach those pages.
    fn unmap_window(&mut self, domain: DomainId) -> Result<(), IommuError> {
        Err(IommuError::UnknownDomain(domain))
    }

    /// Points `bdf`'s DMA at `domain`.
    fn attach(&mut self, bdf: Bdf, domain: DomainId) -> Result<(), IommuError>;

    /// Returns `bdf` to blocked (no DMA, no interrupts) and drops its remapping entries.
    fn detach(&mut self, bdf: Bdf) -> Result<(), IommuError>;

    /// The domain `bdf` is attached to.
    fn domain_of(&self, bdf: Bdf) -> Option<DomainId>;

    /// Whether a unit of this IOMMU translates `bdf`'s requests.
    fn covers(&self, bdf: Bdf) -> bool;

    /// Programs remapping entry `index` (the device's MSI/MSI-X vector number) of the
    /// attached device `bdf` to deliver `target`, and returns the message the device
    /// must be programmed with. Only `bdf` can use the entry.
    fn map_msi(&mut self, bdf: Bdf, index: u16, target: MsiTarget) -> Result<MsiMessage, IommuError>;

    /// Lets an I/O APIC pin deliver `target` (the keyboard's, or an assigned device's
    /// INTx line). `Some(handle)`: program the pin in remappable format with that
    /// interrupt index; `None`: its interrupts are not remapped, program it in
    /// compatibility format.
    fn map_ioapic_pin(&mut self, pin: IoapicPin, target: MsiTarget) -> Result<Option<u16>, IommuError>;

    /// Clears remapping entry `index` of `bdf`: the device's message is rejected again.
    fn unmap_msi(&mut self, bdf: Bdf, index: u16) -> Result<(), IommuError>;

    /// Invalidates every translation and interrupt cache of every unit.
    fn invalidate_all(&mut self) -> Result<(), IommuError>;

    /// Drains the fault records / event log.
    fn poll_faults(&mut self) -> Vec<IommuFault>;

    /// The index of the unit that translates `bdf` (the `unit` its faults carry).
    fn unit_of(&self, bdf: Bdf) -> Option<usize>;

    /// A requester id other than its own that `bdf`'s requests may arrive with, as
    /// the driver knows it from firmware (AMD-Vi: the IVRS alias). VT-d has no such
    /// table; bridge aliases come from the PCI topology.
    fn firmware_alias(&self, bdf: Bdf) -> Option<u16>;
}

/// A boxed IOMMU driver, as boot code keeps it.
pub type DynIommu = Box<dyn Iommu + Send>;

/// Allocates hardware domain ids from `first..=last`, skipping ids `skip` rejects.
#[derive(Debug, Clone)]
pub(crate) struct IdAllocator {
    used: Vec<u16>,
    first: u16,
    last: u16,
    skip: fn(u16) -> bool,
}

impl IdAllocator {
    pub(crate) fn new(first: u16, last: u16, skip: fn(u16) -> bool) -> Self {
        Self { used: Vec::new(), first, last, skip }
    }

    pub(crate) fn alloc(&mut self) -> Option<u16> {
        let id = (self.first..=self.last).find(|id| !(self.skip)(*id) && !self.used.contains(id))?;
        self.used.push(id);
        Some(id)
    }

    pub(crate) fn free(&mut self, id: u16) {
        self.used.retain(|u| *u != id);
    }
}
