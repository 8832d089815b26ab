//! Virtual machines: configuration, lifecycle, scheduling, and how a guest operating
//! system is put into memory.
pub mod acpi;
pub mod config;
pub mod console;
pub mod counters;
pub mod desktop;
pub mod instance;
pub mod launch;
pub mod linux;
pub mod passthrough;
pub mod payload;
pub mod payload_irqs;
pub mod scheduler;
pub mod selftest;
pub mod start_error;
