//! Bulkhead's host tooling: building the bare-metal crates, packing the bootable USB
//! image, finding and running QEMU. The `cargo xtask` CLI (`src/bin/xtask.rs`) and the
//! integration tests (`tests/`) are both thin layers over this library.

pub mod bench;
pub mod bochs;
pub mod build;
pub mod data_disk;
pub mod desktops;
pub mod disk;
pub mod disk_bench;
pub mod exits_bench;
pub mod guest;
pub mod host_tools;
pub mod install;
pub mod layout;
pub mod mgmt;
pub mod net_bench;
pub mod policy;
pub mod qemu;
pub mod smp_bench;
pub mod switch_bench;
pub mod xts_bench;
