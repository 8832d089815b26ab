//! Why a VM cannot be created or (re)started, below [`crate::vm::instance::VmError`]:
//! its boot image does not fit its memory, or the machine refuses a piece of its
//! setup. The texts are what the log and the safe-mode screen show.
#![forbid(unsafe_code)]

use core::fmt;

use crate::devices::bus::BusError;
use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::GuestMemoryError;
use crate::memory::page_table::MapError;
use crate::vcpu::pvclock::PvClockError;
use crate::vm::acpi::GuestAcpiError;
use crate::vm::linux::LinuxBootError;
use crate::vm::multiboot::MultibootError;
use crate::vm::payload::PayloadError;

/// The boot image, or what the VM's memory must hold for it, is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// The VM's memory map cannot be built.
    Memory(GuestMemoryError),
    /// The payload test-device window is not a valid bus range.
    ScratchRange,
    Payload(PayloadError),
    Linux(LinuxBootError),
    Multiboot(MultibootError),
    /// A piece of the boot image (`what`) cannot be written at `gpa`.
    Place {
        what: &'static str,
        gpa: GuestPhysAddr,
        error: GuestMemoryError,
    },
    NoFramebuffer,
    Acpi(GuestAcpiError),
    PlaceAcpi(GuestMemoryError),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(e) => write!(f, "{e:?}"),
            Self::ScratchRange => f.write_str("scratch"),
            Self::Payload(e) => write!(f, "{e}"),
            Self::Linux(e) => write!(f, "{e}"),
            Self::Multiboot(e) => write!(f, "{e}"),
            Self::Place { what, gpa, error } => write!(f, "cannot place the {what} at {gpa}: {error:?}"),
            Self::NoFramebuffer => f.write_str("a desktop VM needs a framebuffer"),
            Self::Acpi(e) => write!(f, "ACPI tables: {e:?}"),
            Self::PlaceAcpi(e) => write!(f, "cannot place the ACPI tables: {e:?}"),
        }
    }
}

/// Why a desktop VM's platform devices cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformError {
    /// The host TSC frequency is not known, so no guest clock can run.
    NoTscFrequency,
    /// Two devices want the same ports or addresses.
    AddressClash(BusError),
    BadEcamWindow,
    /// kvmclock cannot express the TSC frequency.
    KvmclockScale(PvClockError),
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoTscFrequency => "TSC frequency unknown",
            Self::AddressClash(_) => "device address clash",
            Self::BadEcamWindow => "bad ECAM window",
            Self::KvmclockScale(_) => "cannot scale the TSC for kvmclock",
        })
    }
}

/// The machine refuses part of a VM's setup; `E` is the virtualisation backend's own
/// error (`Arch::Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError<E> {
    /// A device range clashes on the VM's port or MMIO bus.
    Bus(BusError),
    /// The desktop platform's devices cannot be built.
    Platform(PlatformError),
    /// The nested page table cannot be built.
    Npt(MapError),
    /// The backend cannot create the vCPU.
    Vcpu(E),
}

impl<E> BackendError<E> {
    /// The same error with the backend's own error converted (to a vendor-neutral one).
    pub fn map_vcpu<F>(self, f: impl FnOnce(E) -> F) -> BackendError<F> {
        match self {
            Self::Bus(e) => BackendError::Bus(e),
            Self::Platform(e) => BackendError::Platform(e),
            Self::Npt(e) => BackendError::Npt(e),
            Self::Vcpu(e) => BackendError::Vcpu(f(e)),
        }
    }
}

impl<E: fmt::Debug> fmt::Display for BackendError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "{e:?}"),
            Self::Platform(e) => write!(f, "{e}"),
            Self::Npt(e) => write!(f, "{e:?}"),
            Self::Vcpu(e) => write!(f, "{e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn texts_say_what_does_not_fit() {
        assert_eq!(ImageError::NoFramebuffer.to_string(), "a desktop VM needs a framebuffer");
        let e = ImageError::Linux(LinuxBootError::NotLoadedHigh);
        assert_eq!(e.to_string(), "zImage (not loaded high) is not supported");
        let e: BackendError<()> = BackendError::Platform(PlatformError::NoTscFrequency);
        assert_eq!(e.to_string(), "TSC frequency unknown");
        let clash = PlatformError::AddressClash(BusError::OutOfRange);
        assert_eq!(BackendError::<()>::Platform(clash).to_string(), "device address clash");
        let e: BackendError<()> = BackendError::Bus(BusError::OutOfRange);
        assert_eq!(e.to_string(), "OutOfRange");
    }
}
