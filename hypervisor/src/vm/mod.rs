//! Virtual machines: configuration, lifecycle, and how a guest operating system is put
//! into memory.
pub mod config;
pub mod linux;
pub mod payload;
