//! The source of 4 KiB physical frames. Page-table builders (the hypervisor's own tables,
//! nested page tables, IOMMU tables) are generic over [`FrameSource`] so that they run
//! on the host against a fake in unit tests.

use super::addr::HostPhysAddr;

/// One page-table-sized frame viewed as 512 entries.
pub type Table = [u64; 512];

/// Hands out zeroed 4 KiB frames and gives access to their contents.
pub trait FrameSource {
    /// A zeroed, 4 KiB-aligned frame, or `None` when memory is exhausted.
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr>;
    /// Returns a frame. Frames that held guest data are scrubbed before reuse.
    fn free(&mut self, frame: HostPhysAddr);
    /// The contents of a frame this source handed out, as a table.
    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table;
}
