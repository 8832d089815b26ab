//! Bulkhead: a bare-metal client hypervisor. This library holds all of the hypervisor's
//! code; `main.rs` only provides the entry point. The modules are layered (see the
//! "Layers" table in docs/ARCHITECTURE.md, enforced by `tests/architecture.rs`);
//! unsafe code lives in `arch`, `memory`, `hw::mmio`, `host`, `heap` and `logging`, and
//! everything else is plain logic that runs under `cargo test` on the host.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

extern crate alloc;

pub mod arch;
pub mod boot;
pub mod cmdline;
pub mod devices;
// Test support, built with the `fuzzing` feature for the fuzz targets: like the tests it
// asserts, so the strict set above (which is for what ships) does not apply.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
pub mod fuzzing;
pub mod heap;
pub mod host;
pub mod hw;
pub mod log_limit;
pub mod log_ring;
pub mod logging;
pub mod memory;
pub mod panic;
pub mod policy;
pub mod storage;
pub mod switcher;
pub mod unlock;
pub mod vcpu;
pub mod vm;

/// Product name and version shown on the boot screen and in the log banner.
pub const PRODUCT: &str = "Bulkhead";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
