//! Host ACPI tables: discovered through the `acpi` crate (RSDP, RSDT/XSDT, header and
//! checksum validation), then copied and decoded into plain owned data by pure,
//! bounds-checked parsers. Firmware tables are inputs: a malformed optional table is
//! logged and left out, never a panic.
//!
//! The crate's own MADT/MCFG/FADT accessors trust the length fields (a zero-length MADT
//! entry spins forever; a short MCFG underflows), so only its discovery is used.

pub mod aml;
mod bytes;
pub mod dmar;
pub mod fadt;
mod handler;
pub mod ivrs;
pub mod madt;
pub mod mcfg;
pub mod s5;
mod summary;
#[cfg(test)]
pub(crate) mod test_util;

use alloc::vec::Vec;
use core::fmt;

pub use dmar::Dmar;
pub use fadt::{AddressSpace, Fadt, Gas, ResetRegister};
pub use ivrs::Ivrs;
pub use madt::{Cpu, InterruptOverride, IoApic, Madt};
pub use mcfg::EcamRegion;
pub use s5::SleepType;

/// Why a table could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// A field at `offset` lies past the end of the data.
    Truncated {
        offset: usize,
    },
    BadSignature {
        found: [u8; 4],
    },
    /// The header's length is shorter than a header or longer than the table we hold.
    BadLength {
        declared: usize,
        available: usize,
    },
    /// A sub-structure's length is too small to make progress or runs past its parent.
    BadEntryLength {
        offset: usize,
        len: usize,
    },
    /// A variable-length entry type whose length we cannot know.
    UnknownEntry {
        offset: usize,
        kind: u8,
    },
    /// An IVRS start-of-range entry without its end-of-range, or the reverse.
    UnterminatedRange {
        offset: usize,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { offset } => write!(f, "field at offset {offset:#x} is past the end"),
            Self::BadSignature { found } => write!(f, "unexpected signature {:?}", found),
            Self::BadLength { declared, available } => {
                write!(f, "declared length {declared} but {available} bytes present")
            }
            Self::BadEntryLength { offset, len } => {
                write!(f, "entry at {offset:#x} has bad length {len}")
            }
            Self::UnknownEntry { offset, kind } => {
                write!(f, "unknown entry type {kind:#x} at {offset:#x}")
            }
            Self::UnterminatedRange { offset } => write!(f, "unpaired range entry at {offset:#x}"),
        }
    }
}

/// Why the platform tables as a whole are unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// No valid RSDP at the given address (signature, checksum or revision).
    InvalidRsdp,
    /// The RSDT/XSDT the RSDP points to is invalid.
    InvalidRootTable,
    /// There is no MADT, so no way to know the CPUs and interrupt controllers.
    MissingMadt,
    /// The MADT is present but malformed.
    BadMadt(TableError),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRsdp => write!(f, "no valid RSDP"),
            Self::InvalidRootTable => write!(f, "invalid RSDT/XSDT"),
            Self::MissingMadt => write!(f, "no MADT"),
            Self::BadMadt(e) => write!(f, "malformed MADT: {e}"),
        }
    }
}

impl From<acpi::AcpiError> for AcpiError {
    fn from(e: acpi::AcpiError) -> Self {
        use acpi::AcpiError as E;
        match e {
            E::NoValidRsdp | E::RsdpIncorrectSignature | E::RsdpInvalidOemId | E::RsdpInvalidChecksum => {
                Self::InvalidRsdp
            }
            _ => Self::InvalidRootTable,
        }
    }
}

/// Which IOMMU the firmware describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IommuKind {
    /// No (usable) DMAR or IVRS: device passthrough is disabled.
    None,
    /// Intel VT-d, with this many remapping units (DRHDs).
    VtD { units: usize },
    /// AMD-Vi, with this many distinct IOMMUs (IVHDs after de-duplication).
    AmdVi { units: usize },
}

/// An optional table that was present but could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableProblem {
    pub signature: [u8; 4],
    pub error: TableError,
}

/// Raw table bytes as copied out of firmware memory, each with its header.
#[derive(Debug, Clone, Default)]
pub struct RawTables {
    pub madt: Option<Vec<u8>>,
    pub fadt: Option<Vec<u8>>,
    pub mcfg: Option<Vec<u8>>,
    pub hpet: Option<Vec<u8>>,
    pub dmar: Option<Vec<u8>>,
    pub ivrs: Option<Vec<u8>>,
    pub dsdt: Option<Vec<u8>>,
    pub ssdts: Vec<Vec<u8>>,
}

/// Everything Bulkhead needs from the host's ACPI tables, as owned data.
#[derive(Debug, Clone)]
pub struct PlatformTables {
    madt: Madt,
    ecam: Vec<EcamRegion>,
    fadt: Option<Fadt>,
    s5: Option<SleepType>,
    hpet_base: Option<Gas>,
    dmar: Option<Dmar>,
    ivrs: Option<Ivrs>,
    /// PCI INTx routes from the DSDT's and SSDTs' `_PRT` objects.
    pci_routing: aml::PciInterruptRouting,
    problems: Vec<TableProblem>,
}

impl PlatformTables {
    /// Finds and decodes the host tables from the RSDP's physical address (from the
    /// UEFI configuration table). Fails only when the root tables or the MADT are
    /// unusable; other tables are optional and their absence is recorded.
    pub fn from_rsdp(rsdp_phys: u64) -> Result<Self, AcpiError> {
        let rsdp = usize::try_from(rsdp_phys).map_err(|_| AcpiError::InvalidRsdp)?;
        let tables = handler::identity_tables(rsdp)?;
        Self::from_raw(&handler::copy_tables(&handler::IdentityMap, &tables))
    }

    /// Decodes tables already copied into memory (the pure half of `from_rsdp`).
    pub fn from_raw(raw: &RawTables) -> Result<Self, AcpiError> {
        let madt = madt::parse_madt(raw.madt.as_deref().ok_or(AcpiError::MissingMadt)?).map_err(AcpiError::BadMadt)?;
        let mut problems = Vec::new();
        let p = &mut problems;
        let ecam = decode(p, b"MCFG", raw.mcfg.as_deref(), mcfg::parse_mcfg).unwrap_or_default();
        let fadt = decode(p, b"FACP", raw.fadt.as_deref(), fadt::parse_fadt);
        let hpet_base = decode(p, b"HPET", raw.hpet.as_deref(), parse_hpet);
        let dmar = decode(p, b"DMAR", raw.dmar.as_deref(), dmar::parse_dmar);
        let ivrs = decode(p, b"IVRS", raw.ivrs.as_deref(), ivrs::parse_ivrs);
        let s5 = raw.dsdt.iter().chain(&raw.ssdts).find_map(|aml| s5::find_s5(aml));
        let aml_tables: Vec<&[u8]> = raw.dsdt.iter().chain(&raw.ssdts).map(Vec::as_slice).collect();
        let (pci_routing, aml_problems) = aml::PciInterruptRouting::from_aml(&aml_tables);
        for problem in aml_problems {
            log::warn!(target: "acpi", "AML: {problem}");
        }
        Ok(Self { madt, ecam, fadt, s5, hpet_base, dmar, ivrs, pci_routing, problems })
    }

    pub fn madt(&self) -> &Madt {
        &self.madt
    }
    pub fn cpus(&self) -> &[Cpu] {
        &self.madt.cpus
    }
    pub fn io_apics(&self) -> &[IoApic] {
        &self.madt.io_apics
    }
    pub fn interrupt_overrides(&self) -> &[InterruptOverride] {
        &self.madt.overrides
    }
    /// ECAM windows from the MCFG; empty when there is no (valid) MCFG.
    pub fn ecam_regions(&self) -> &[EcamRegion] {
        &self.ecam
    }
    pub fn fadt(&self) -> Option<&Fadt> {
        self.fadt.as_ref()
    }
    /// `\_S5_` sleep type values, when the DSDT/SSDTs define them.
    pub fn s5(&self) -> Option<SleepType> {
        self.s5
    }
    /// HPET register block, when an HPET table is present.
    pub fn hpet(&self) -> Option<Gas> {
        self.hpet_base
    }
    pub fn dmar(&self) -> Option<&Dmar> {
        self.dmar.as_ref()
    }
    pub fn ivrs(&self) -> Option<&Ivrs> {
        self.ivrs.as_ref()
    }
    /// How PCI INTx pins reach the I/O APICs (empty without a usable `_PRT`).
    pub fn pci_routing(&self) -> &aml::PciInterruptRouting {
        &self.pci_routing
    }
    /// Optional tables that were present but malformed (and so left out).
    pub fn problems(&self) -> &[TableProblem] {
        &self.problems
    }

    /// The IOMMU to drive. Should firmware describe both kinds, the DMAR wins.
    pub fn iommu(&self) -> IommuKind {
        if let Some(dmar) = self.dmar.as_ref().filter(|d| !d.units.is_empty()) {
            IommuKind::VtD { units: dmar.units.len() }
        } else if let Some(ivrs) = self.ivrs.as_ref().filter(|i| !i.ivhds.is_empty()) {
            IommuKind::AmdVi { units: ivrs.units().len() }
        } else {
            IommuKind::None
        }
    }
}

/// Decodes an optional table; a malformed one is recorded in `problems` and dropped.
fn decode<T>(
    problems: &mut Vec<TableProblem>,
    signature: &[u8; 4],
    bytes: Option<&[u8]>,
    parse: impl FnOnce(&[u8]) -> Result<T, TableError>,
) -> Option<T> {
    parse(bytes?).map_err(|error| problems.push(TableProblem { signature: *signature, error })).ok()
}

/// The HPET table's register block address (IA-PC HPET spec 1.0a §3.2.4, offset 40).
fn parse_hpet(bytes: &[u8]) -> Result<Gas, TableError> {
    Gas::parse(bytes::checked_table(bytes, b"HPET")?, 40)
}

#[cfg(test)]
mod tests;
