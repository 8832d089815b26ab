//! Physical memory: typed addresses, the frame allocator, the hypervisor's page tables.
pub mod addr;
pub mod frames;
pub mod guest;
pub mod stage2;
