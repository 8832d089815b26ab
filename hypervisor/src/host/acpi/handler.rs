//! The only `unsafe` of the ACPI layer: the `acpi` crate's mapping hook for
//! Bulkhead's identity map, and copying validated tables out of firmware memory.
//!
//! Everything the crate finds is copied into owned `Vec<u8>`s here; all decoding
//! happens afterwards in safe, host-tested code.

use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::sdt::{SdtHeader, Signature};
use acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};

use crate::host::acpi::RawTables;
use crate::host::acpi::bytes::SDT_HEADER_LEN;

/// Largest table we copy. Real DSDTs are tens to hundreds of KiB; a bigger length is
/// a corrupt header and copying it would only exhaust the heap.
pub const MAX_TABLE_BYTES: usize = 4 << 20;

/// Maps physical memory at the same virtual address: the hypervisor runs with all
/// RAM and firmware-reserved regions identity-mapped.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityMap;

/// Stands in for physical address 0, which Rust cannot point at. A zeroed RSDT/XSDT
/// entry is a real firmware bug; the crate then reads this all-zero header, finds no
/// valid signature and skips the entry.
static ZERO_PAGE: [u64; 8] = [0; 8];

impl AcpiHandler for IdentityMap {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let (virt, size) = match NonNull::new(physical_address as *mut T) {
            Some(virt) => (virt, size),
            None => (NonNull::from(&ZERO_PAGE).cast::<T>(), size.min(size_of_val(&ZERO_PAGE))),
        };
        // SAFETY: virtual == physical under the identity map, so `virt` addresses the
        // `size` bytes the caller (the `acpi` crate) asked for, which it guarantees hold
        // a `T` (address 0 is replaced by a zeroed block that fails every signature
        // check); nothing is mapped, so nothing needs unmapping.
        unsafe { PhysicalMapping::new(physical_address, virt, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Walks the RSDT/XSDT behind `rsdp_phys` with the identity map.
pub fn identity_tables(rsdp_phys: usize) -> Result<AcpiTables<IdentityMap>, acpi::AcpiError> {
    // SAFETY: the loader passes the RSDP address from the UEFI configuration table and
    // all of physical memory is identity-mapped, so the address is readable as an RSDP;
    // the crate validates its signature and checksum before following it.
    unsafe { AcpiTables::from_rsdp(IdentityMap, rsdp_phys) }
}

macro_rules! raw_table {
    ($name:ident, $sig:ident) => {
        /// A table known only by its header; the body is read as bytes.
        #[repr(transparent)]
        struct $name {
            header: SdtHeader,
        }

        // SAFETY: the type is exactly the 36-byte SDT header every ACPI table starts
        // with (ACPI 6.5 §5.2.6); the crate maps `header.length` bytes behind it.
        unsafe impl AcpiTable for $name {
            const SIGNATURE: Signature = Signature::$sig;
            fn header(&self) -> &SdtHeader {
                &self.header
            }
        }
    };
}

raw_table!(RawMadt, MADT);
raw_table!(RawFadt, FADT);
raw_table!(RawMcfg, MCFG);
raw_table!(RawHpet, HPET);
raw_table!(RawDmar, DMAR);
raw_table!(RawIvrs, IVRS);

/// Copies a mapped region into an owned buffer.
fn copy_mapping<H: AcpiHandler, T>(mapping: &PhysicalMapping<H, T>) -> Option<Vec<u8>> {
    let len = mapping.region_length();
    if len > MAX_TABLE_BYTES {
        log::warn!(target: "acpi", "table at {:#x} claims {len} bytes; ignored", mapping.physical_start());
        return None;
    }
    // SAFETY: the handler mapped `region_length` bytes at `virtual_start` and the
    // mapping is alive for the duration of the copy; firmware tables are not written
    // concurrently.
    let bytes = unsafe { core::slice::from_raw_parts(mapping.virtual_start().as_ptr().cast::<u8>(), len) };
    Some(bytes.to_vec())
}

fn find<H: AcpiHandler, T: AcpiTable>(tables: &AcpiTables<H>) -> Option<Vec<u8>> {
    tables.find_table::<T>().ok().and_then(|m| copy_mapping(&m))
}

/// Copies `len` bytes of AML at `phys` (a DSDT/SSDT body the crate has validated).
fn copy_aml<H: AcpiHandler>(handler: &H, body: usize, body_len: u32) -> Option<Vec<u8>> {
    // The crate gives the AML body; the copy starts at the table's header, as the AML
    // interpreter (and the table fixtures) expect.
    let phys = body.checked_sub(SDT_HEADER_LEN)?;
    let len = usize::try_from(body_len).ok()?.checked_add(SDT_HEADER_LEN).filter(|&l| l <= MAX_TABLE_BYTES)?;
    // SAFETY: `phys..phys + len` is a table (header and body) whose header, length and
    // checksum the crate just validated, so the handler can map it.
    let mapping = unsafe { handler.map_physical_region::<u8>(phys, len) };
    copy_mapping(&mapping).map(|mut v| {
        v.truncate(len);
        v
    })
}

/// Copies every table Bulkhead decodes out of firmware memory.
pub fn copy_tables<H: AcpiHandler>(handler: &H, tables: &AcpiTables<H>) -> RawTables {
    let dsdt = tables.dsdt().ok().and_then(|aml| copy_aml(handler, aml.address, aml.length));
    let ssdts = tables.ssdts().filter_map(|aml| copy_aml(handler, aml.address, aml.length)).collect();
    RawTables {
        madt: find::<H, RawMadt>(tables),
        fadt: find::<H, RawFadt>(tables),
        mcfg: find::<H, RawMcfg>(tables),
        hpet: find::<H, RawHpet>(tables),
        dmar: find::<H, RawDmar>(tables),
        ivrs: find::<H, RawIvrs>(tables),
        dsdt,
        ssdts,
    }
}
