//! Physical memory: typed addresses, the frame allocator, the hypervisor's page tables.
pub mod addr;
pub mod direct_map;
pub mod frames;
pub mod guest;
pub mod paging;
pub mod phys;
pub mod ranges;
pub mod stage2;
