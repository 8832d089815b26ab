//! Bulkhead: a bare-metal client hypervisor. This library holds all of the hypervisor's
//! code; `main.rs` only provides the entry point. Hardware access is confined to
//! `arch`, `memory::paging` and the `platform` register accessors; everything else is
//! plain logic that runs under `cargo test` on the host.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod arch;
pub mod boot;
pub mod cmdline;
pub mod devices;
pub mod heap;
pub mod iommu;
pub mod log_limit;
pub mod log_ring;
pub mod logging;
pub mod memory;
pub mod panic;
pub mod pci;
pub mod platform;
pub mod switcher;
pub mod vcpu;
pub mod vm;

/// Product name and version shown on the boot screen and in the log banner.
pub const PRODUCT: &str = "Bulkhead";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
