//! The boot protocol for small bare-metal VM payloads (the self-test kernels and, later,
//! the service VM): a static x86-64 ELF linked at [`LOAD_BASE`] or above, started directly
//! in 64-bit mode.
//!
//! On entry: long mode, paging on with guest-physical memory identity mapped (the first
//! 4 GiB, 2 MiB pages), CS = 0x10 (64-bit code) and the data segments = 0x18 as in the
//! Linux 64-bit boot protocol, interrupts off, RSP at the top of RAM below the canary
//! page, RSI = RAM size in bytes. The payload loads its own GDT (with those selectors)
//! and IDT before enabling interrupts.

/// Lowest address a payload may be linked at (below it: page tables and GDT).
pub const LOAD_BASE: u64 = 0x10_0000;
/// Where the hypervisor builds the payload's page tables (6 pages).
pub const PAGE_TABLES: u64 = 0x1000;
/// A guest-physical window backed by a scratch device that stores whatever is written
/// (4 KiB), so payloads can exercise MMIO emulation with every instruction form.
pub const SCRATCH_MMIO: u64 = 0xFEB0_0000;
pub const SCRATCH_MMIO_LEN: u64 = 0x1000;
/// Ports 0x60 and 0x64: an i8042 keyboard controller (no interrupt line, no keys), so
/// payloads can test the model the desktop VMs use. Every other port reads all-ones.
pub const I8042_PORTS: [u16; 2] = [0x60, 0x64];
/// The last page of RAM holds a pattern the hypervisor writes and checks; payloads must
/// not touch it. A changed canary means another VM reached this VM's memory.
pub const CANARY_PAGES: u64 = 1;
