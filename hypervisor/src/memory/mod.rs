//! Physical memory: typed addresses, the frame allocator, the hypervisor's page tables.
pub mod addr;
pub mod frames;
