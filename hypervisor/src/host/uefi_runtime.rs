//! UEFI runtime services after ExitBootServices: the firmware's variable store is where
//! a laptop keeps its policy state (enrolled key, device id, highest version, trusted
//! time) and the last bundle a management server delivered.
//!
//! The hypervisor never calls SetVirtualAddressMap, so the firmware's runtime code runs
//! at its physical addresses, which the hypervisor's identity map keeps executable
//! (`paging`: runtime-services regions). Each call runs with interrupts closed and the
//! x87/SSE state saved around it: the firmware may use SSE registers, which hold the
//! state of the VM that was running (the hypervisor itself never uses them).
//!
//! The firmware is trusted as much as the hypervisor's own loader: it owns the machine
//! before the hypervisor, and a variable store is what every OS uses on this hardware.

use alloc::vec::Vec;

use spin::Once;
use uefi_raw::table::runtime::{RuntimeServices, VariableAttributes};
use uefi_raw::table::system::SystemTable;
use uefi_raw::{Guid, Status};

static RUNTIME: Once<Option<usize>> = Once::new();

/// Why a variable could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeError {
    /// The loader passed no system table (or its signature is wrong).
    Unavailable,
    /// The firmware's status (e.g. OUT_OF_RESOURCES when its store is full).
    Firmware(usize),
}

impl core::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RuntimeError::Unavailable => f.write_str("UEFI runtime services are not available"),
            RuntimeError::Firmware(status) => write!(f, "the firmware refused (EFI status {status:#x})"),
        }
    }
}

/// Remembers the runtime-services table from the system table the loader passed
/// (physical address; 0 when none).
pub fn init(system_table: u64) {
    RUNTIME.call_once(|| {
        if system_table == 0 {
            return None;
        }
        // SAFETY: the loader passed the firmware's system table, which lives in
        // runtime-services memory the hypervisor never reuses and maps identically; the
        // signature is checked before any pointer inside it is trusted.
        let table = unsafe { &*(system_table as *const SystemTable) };
        if table.header.signature != SystemTable::SIGNATURE || table.runtime_services.is_null() {
            return None;
        }
        Some(table.runtime_services as usize)
    });
}

pub fn available() -> bool {
    RUNTIME.get().copied().flatten().is_some()
}

/// Writes (or, with empty `data`, deletes) the non-volatile variable `name` under
/// `vendor` (GUID bytes in memory order).
pub fn set_variable(name: &str, vendor: &[u8; 16], data: &[u8]) -> Result<(), RuntimeError> {
    let Some(rt) = RUNTIME.get().copied().flatten() else {
        return Err(RuntimeError::Unavailable);
    };
    let name16: Vec<u16> = name.encode_utf16().chain(core::iter::once(0)).collect();
    let guid = Guid::from_bytes(*vendor);
    let attributes =
        VariableAttributes::NON_VOLATILE | VariableAttributes::BOOTSERVICE_ACCESS | VariableAttributes::RUNTIME_ACCESS;
    let status = with_firmware_state(|| {
        // SAFETY: `rt` is the firmware's runtime-services table (checked in `init`); its
        // code and data are identity-mapped and executable; the name is NUL-terminated
        // UCS-2 and `data` is valid for its length for the duration of the call.
        unsafe {
            let services = &*(rt as *const RuntimeServices);
            (services.set_variable)(name16.as_ptr().cast(), &guid, attributes, data.len(), data.as_ptr())
        }
    });
    if status == Status::SUCCESS || (data.is_empty() && status == Status::NOT_FOUND) {
        Ok(())
    } else {
        Err(RuntimeError::Firmware(status.0))
    }
}

/// 512-byte FXSAVE area.
#[repr(C, align(16))]
struct FxArea([u8; 512]);

/// Runs a firmware call with interrupts closed and the x87/SSE state preserved.
fn with_firmware_state<R>(call: impl FnOnce() -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut area = FxArea([0; 512]);
        // SAFETY: FXSAVE64/FXRSTOR64 need CR4.OSFXSR (set by the firmware and kept by
        // the hypervisor) and a 16-byte aligned 512-byte area, which `FxArea` is; the
        // area is restored unchanged.
        unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack)) };
        let result = call();
        // SAFETY: as above; restores what FXSAVE64 wrote.
        unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack)) };
        result
    })
}
