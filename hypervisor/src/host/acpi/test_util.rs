//! Test helpers: building tables by hand and laying QEMU's real tables out in a fake
//! physical memory by replaying QEMU's BIOS linker/loader script
//! (`hw/acpi/bios-linker-loader.c`).

use alloc::vec::Vec;
use core::ptr::NonNull;
use std::string::String;

use acpi::{AcpiHandler, PhysicalMapping};

/// A table with a valid header and checksum around `body`.
pub fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.extend_from_slice(&[revision, 0]);
    t.extend_from_slice(b"BLKHD BULKHEAD\x01\0\0\0TEST\x01\0\0\0");
    t.extend_from_slice(body);
    t[9] = 0u8.wrapping_sub(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)));
    t
}

/// Where the replayed loader puts the two fw_cfg files.
pub const TABLES_PHYS: usize = 0x7fe0_0000;
pub const RSDP_PHYS: usize = 0x000f_5a00;

/// Fake physical memory: a few regions with their physical base.
#[derive(Debug)]
pub struct FakeMemory {
    pub regions: Vec<(usize, Vec<u8>)>,
}

fn fixture(dir: &str, file: &str) -> Vec<u8> {
    let path = String::from(env!("CARGO_MANIFEST_DIR")) + "/tests/fixtures/acpi/" + dir + "/" + file;
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn name(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// Replays `etc/table-loader` over the fixture's `etc/acpi/tables` and `etc/acpi/rsdp`.
pub fn link_qemu(dir: &str) -> FakeMemory {
    let mut tables = fixture(dir, "fw_cfg-etc-acpi-tables");
    let mut rsdp = fixture(dir, "fw_cfg-etc-acpi-rsdp");
    rsdp.resize(64, 0); // room for the crate's 36-byte ACPI 2.0 RSDP view
    let loader = fixture(dir, "fw_cfg-etc-table-loader");
    tables.resize(tables.len().next_multiple_of(4096), 0);
    let file = |n: &[u8]| if n == b"etc/acpi/rsdp" { 0 } else { 1 };
    let base = [RSDP_PHYS, TABLES_PHYS];
    for cmd in loader.chunks_exact(128) {
        let u32_at = |o: usize| u32::from_le_bytes(cmd[o..o + 4].try_into().unwrap()) as usize;
        match u32_at(0) {
            1 => {} // ALLOCATE: placement is fixed above
            2 => {
                // ADD_POINTER dest_file[56] src_file[56] offset u32 size u8
                let (dest, src) = (file(name(&cmd[4..60])), file(name(&cmd[60..116])));
                let (offset, size) = (u32_at(116), cmd[120] as usize);
                let buf = if dest == 0 { &mut rsdp } else { &mut tables };
                let mut v = [0u8; 8];
                v[..size].copy_from_slice(&buf[offset..offset + size]);
                let patched = (u64::from_le_bytes(v) + base[src] as u64).to_le_bytes();
                buf[offset..offset + size].copy_from_slice(&patched[..size]);
            }
            3 => {
                // ADD_CHECKSUM file[56] offset start length
                let buf = if file(name(&cmd[4..60])) == 0 { &mut rsdp } else { &mut tables };
                let (offset, start, len) = (u32_at(60), u32_at(64), u32_at(68));
                let sum = buf[start..start + len].iter().fold(0u8, |a, b| a.wrapping_add(*b));
                buf[offset] = buf[offset].wrapping_sub(sum);
            }
            other => panic!("unknown loader command {other}"),
        }
    }
    FakeMemory { regions: alloc::vec![(RSDP_PHYS, rsdp), (TABLES_PHYS, tables)] }
}

/// The linked table with `signature` from a QEMU fixture.
pub fn qemu_table(dir: &str, signature: &[u8; 4]) -> Vec<u8> {
    let mem = link_qemu(dir);
    let blob = &mem.regions[1].1;
    let mut off = 64; // FACS comes first and has its own header format
    while off + 8 <= blob.len() {
        let len = u32::from_le_bytes(blob[off + 4..off + 8].try_into().unwrap()) as usize;
        if &blob[off..off + 4] == signature {
            return blob[off..off + len].to_vec();
        }
        assert!(len >= 36, "ran off the tables looking for {signature:?}");
        off += len;
    }
    panic!("no {signature:?} in {dir}");
}

/// An `AcpiHandler` over a leaked `FakeMemory`.
#[derive(Debug, Clone, Copy)]
pub struct FakeHandler(pub &'static FakeMemory);

impl AcpiHandler for FakeHandler {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let (base, bytes) = self
            .0
            .regions
            .iter()
            .find(|(base, b)| phys >= *base && phys + size <= base + b.len())
            .unwrap_or_else(|| panic!("test read outside fake memory: {phys:#x}+{size}"));
        let virt = NonNull::from(&bytes[phys - base]).cast::<T>();
        // SAFETY: `virt` points at `size` initialised bytes of a leaked buffer, which
        // the crate only reads.
        unsafe { PhysicalMapping::new(phys, virt, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}
