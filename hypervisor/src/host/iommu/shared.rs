//! How host drivers reach the IOMMU after boot. Its owner (`vm::passthrough`, which
//! keeps it behind its own lock with the PCI inventory) registers an accessor here, so
//! a driver such as the NVMe one can map a transfer's pages without knowing the VM
//! layer that holds the lock.
#![forbid(unsafe_code)]

use super::Iommu;

/// Runs a closure on the IOMMU, if there is one, under its owner's lock.
pub type Accessor = fn(&mut dyn FnMut(&mut dyn Iommu));

static ACCESSOR: spin::Once<Accessor> = spin::Once::new();

/// Called once by the IOMMU's owner.
pub fn register(accessor: Accessor) {
    ACCESSOR.call_once(|| accessor);
}

/// Runs `f` on the IOMMU; `None` when there is none (or no owner registered yet).
/// Never call it with the owner's lock held.
pub fn with_iommu<R>(f: impl FnOnce(&mut dyn Iommu) -> R) -> Option<R> {
    let accessor = ACCESSOR.get()?;
    let mut f = Some(f);
    let mut out = None;
    accessor(&mut |iommu| {
        if let Some(f) = f.take() {
            out = Some(f(iommu));
        }
    });
    out
}
