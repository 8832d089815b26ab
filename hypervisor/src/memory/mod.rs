//! Physical memory: the frame allocator, the hypervisor's page tables.
