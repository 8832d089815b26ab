//! The machine around the CPU: firmware tables, PCI, power control, the framebuffer.
pub mod qemu;
pub mod screen;
