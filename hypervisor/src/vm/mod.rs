//! Virtual machines: lifecycle, and how a guest operating system is put into memory.
pub mod acpi;
pub mod linux;
