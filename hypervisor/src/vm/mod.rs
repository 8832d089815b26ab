//! Virtual machines: lifecycle, and how a guest operating system is put into memory.
pub mod acpi;
pub mod linux;
pub mod payload;
pub mod scheduler;
pub mod selftest;
