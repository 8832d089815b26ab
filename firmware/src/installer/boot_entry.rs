//! The firmware's boot variables: the entry an install adds, and the one we started from.

use alloc::format;
use alloc::string::String;

use firmware::install::gpt::Layout;
use firmware::install::load_option::{self, HardDrive};
use uefi::runtime::{self, VariableAttributes, VariableVendor};
use uefi::{CString16, Status};

use super::INSTALLED_LOADER;

const BOOT_ENTRY_NAME: &str = "Bulkhead";

/// Adds (or replaces) the Bulkhead boot entry and puts it first in BootOrder.
pub fn add_boot_entry(layout: &Layout) -> Result<u16, String> {
    let hd = HardDrive {
        partition_number: layout.esp.number,
        first_lba: layout.esp.first_lba,
        blocks: layout.esp.blocks(),
        partition_guid: layout.esp.unique,
    };
    let option = load_option::load_option(BOOT_ENTRY_NAME, &hd, INSTALLED_LOADER);
    let vendor = VariableVendor::GLOBAL_VARIABLE;
    let attributes =
        VariableAttributes::NON_VOLATILE | VariableAttributes::BOOTSERVICE_ACCESS | VariableAttributes::RUNTIME_ACCESS;
    // Reuse an earlier Bulkhead entry, else take the first free number.
    let mut free = None;
    let mut ours = None;
    for number in 0..=0xFFu16 {
        let name = CString16::try_from(load_option::variable_name(number).as_str()).map_err(|_| "bad name")?;
        match runtime::get_variable_boxed(&name, &vendor) {
            Ok((value, _)) => {
                if description(&value).as_deref() == Some(BOOT_ENTRY_NAME) {
                    ours = Some(number);
                    break;
                }
            }
            Err(e) if e.status() == Status::NOT_FOUND => free = free.or(Some(number)),
            Err(_) => {}
        }
    }
    let number = ours.or(free).ok_or("no free Boot#### number below Boot00FF")?;
    let name = CString16::try_from(load_option::variable_name(number).as_str()).map_err(|_| "bad name")?;
    runtime::set_variable(&name, &vendor, attributes, &option)
        .map_err(|e| format!("cannot write Boot{number:04X}: {:?}", e.status()))?;
    let order_name = CString16::try_from("BootOrder").map_err(|_| "bad name")?;
    let old = runtime::get_variable_boxed(&order_name, &vendor).map(|(v, _)| v).unwrap_or_default();
    let order = load_option::boot_order_with_first(&old, number);
    runtime::set_variable(&order_name, &vendor, attributes, &order)
        .map_err(|e| format!("cannot write BootOrder: {:?}", e.status()))?;
    println!("install: Boot{number:04X} = \"{BOOT_ENTRY_NAME}\" -> {INSTALLED_LOADER}, first in BootOrder");
    Ok(number)
}

/// The description of an EFI_LOAD_OPTION.
fn description(option: &[u8]) -> Option<String> {
    let units = option.get(6..)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0);
    char::decode_utf16(units).collect::<Result<String, _>>().ok()
}

/// The boot option the firmware started us through (`BootCurrent`), if it says.
pub fn boot_current() -> Option<u16> {
    let name = CString16::try_from("BootCurrent").ok()?;
    let mut buf = [0u8; 2];
    let (value, _) = runtime::get_variable(&name, &VariableVendor::GLOBAL_VARIABLE, &mut buf).ok()?;
    Some(u16::from_le_bytes(value.try_into().ok()?))
}
