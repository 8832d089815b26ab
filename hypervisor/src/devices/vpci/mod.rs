//! The guest's PCI bus: the host bridge every VM sees (0xCF8 and ECAM), virtual
//! functions' configuration space, and the filtered view of an assigned host function
//! (`passthrough`, `config_filter`, `msi`, `msix_window`).
pub mod config_filter;
pub mod config_space;
pub mod host_bridge;
pub mod msi;
pub mod msix_window;
pub mod passthrough;
