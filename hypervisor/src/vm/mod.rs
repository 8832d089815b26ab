//! Virtual machines: configuration, lifecycle, scheduling, and how a guest operating
//! system is put into memory.
pub mod acpi;
pub mod config;
pub mod console;
pub mod counters;
pub mod desk_view;
pub mod desktop;
pub mod exit_loop;
pub mod host_blocks;
pub mod instance;
pub mod launch;
pub mod link;
pub mod linux;
pub mod load_report;
pub mod multiboot;
pub mod net_port;
pub mod passthrough;
pub mod payload;
pub mod payload_irqs;
pub mod platform;
pub mod scheduler;
pub mod selftest;
pub mod serial_commands;
pub mod slice_host;
pub mod slice_rules;
pub mod start_error;
pub mod verdict;
