//! The policy state the laptop keeps in UEFI variables (`bulkhead_abi::nv`), read here
//! while boot services still run and handed to the hypervisor, which decides what it
//! means and writes it back through the runtime services. The loader neither trusts
//! nor interprets these bytes: it only copies them, bounded in size.

use bulkhead_abi::PhysSlice;
use bulkhead_abi::nv;
use uefi::runtime::{self, VariableVendor};
use uefi::{CString16, Guid};

/// Copies variable `name` into loader-data pages; EMPTY when it is absent, too large
/// or unreadable (the hypervisor then treats the laptop as not enrolled or without a
/// delivered bundle, and says so).
pub fn read(name: &str, max_len: usize) -> PhysSlice {
    let Ok(name16) = CString16::try_from(name) else {
        return PhysSlice::EMPTY;
    };
    let vendor = VariableVendor(Guid::from_bytes(nv::VENDOR_GUID));
    let Ok((value, _)) = runtime::get_variable_boxed(&name16, &vendor) else {
        return PhysSlice::EMPTY;
    };
    if value.is_empty() || value.len() > max_len {
        println!("ignoring UEFI variable {name}: {} bytes", value.len());
        return PhysSlice::EMPTY;
    }
    match crate::loader::copy_to_pages(&value, firmware::memory_map::uefi_type::BULKHEAD_DATA) {
        Ok(addr) => PhysSlice { addr, len: value.len() as u64 },
        Err(_) => PhysSlice::EMPTY,
    }
}

/// The firmware's system table, for the hypervisor's runtime-services calls.
pub fn system_table() -> u64 {
    uefi::table::system_table_raw().map_or(0, |p| p.as_ptr() as u64)
}
