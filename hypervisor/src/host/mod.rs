//! The machine around the CPU: firmware tables, PCI, power control, the framebuffer,
//! the NVMe drive and the USB stick the hypervisor drives itself.
pub mod acpi;
pub mod cmos;
pub mod device_io;
pub mod dma_region;
pub mod handoff;
pub mod ioapic;
pub mod iommu;
pub mod keyboard;
pub mod nvme;
pub mod pci;
pub mod power;
pub mod rtc;
pub mod screen;
pub mod uefi_runtime;
pub mod usb;
