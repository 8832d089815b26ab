//! Physical memory: typed addresses, the frame allocator, the hypervisor's page tables
//! and the one page-table engine behind nested paging and the IOMMUs' DMA tables.
pub mod addr;
pub mod direct_map;
#[cfg(test)]
pub(crate) mod fake_frames;
pub mod frames;
pub mod guest;
pub mod page_table;
pub mod paging;
pub mod phys;
pub mod ranges;
