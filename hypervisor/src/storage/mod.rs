//! The hypervisor's own storage: at boot, the NVMe drive it drives (one the policy
//! does not give to a VM) and Bulkhead's data partition on it, kept here until the
//! code that stores the VMs' disks takes it (`take_data_partition`).
#![forbid(unsafe_code)]

pub mod disks;
mod random;
mod vault;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_vdisk::gpt::{self, PartitionDevice, TableUsed};
use bulkhead_vdisk::{BlockDevice, DeviceError};
use log::{error, info, warn};

use crate::host::iommu::Iommu;
use crate::host::nvme::{self, HostNvmeHw, NvmeNamespace, Timing};
use crate::host::pci::{ConfigAccess, PciInventory};
use crate::hw::Bdf;

/// The data partition on the hypervisor's NVMe namespace.
pub type DataPartition = PartitionDevice<NvmeNamespace<HostNvmeHw>>;

static DATA: spin::Mutex<Option<DataPartition>> = spin::Mutex::new(None);

/// At most this many controllers are tried at boot (each costs a DMA region).
const MAX_CONTROLLERS: usize = 4;

/// Hands the data partition to its user (once; `None` afterwards, or when boot found
/// none).
pub fn take_data_partition() -> Option<DataPartition> {
    DATA.lock().take()
}

/// What boot found, for the log and the boot screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The boot screen's "Disk:" value.
    pub line: String,
    pub data_bytes: Option<u64>,
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

fn size_text(bytes: u64) -> String {
    let mut out = ui::TextBuf::<32>::new();
    ui::boot_screen::format_memory(bytes, &mut out);
    String::from(out.as_str())
}

/// Finds the NVMe controllers the hypervisor may drive (every one `assigned` does not
/// name), brings them up in PCI order until one holds the data partition, and keeps
/// that partition for [`take_data_partition`].
pub fn init(
    inventory: &PciInventory,
    config: Option<&dyn ConfigAccess>,
    mut iommu: Option<&mut dyn Iommu>,
    assigned: &[Bdf],
) -> Found {
    for d in inventory.devices().iter().filter(|d| (d.class, d.subclass, d.prog_if) == nvme::NVME_CLASS) {
        if assigned.contains(&d.bdf) {
            info!(target: "nvme", "{}: given to a VM by the policy; the hypervisor does not touch it", d.bdf);
        }
    }
    let candidates = nvme::candidates(inventory, assigned);
    let Some(config) = config else {
        if !candidates.is_empty() {
            warn!(target: "storage", "no PCI configuration access: the NVMe drive is not used");
        }
        return Found { line: String::from("No data partition (no PCI access)"), data_bytes: None };
    };
    if candidates.is_empty() {
        info!(target: "storage", "no data partition: no NVMe drive for the hypervisor");
        return Found { line: String::from("No NVMe drive"), data_bytes: None };
    }
    let mut line = String::new();
    for dev in candidates.into_iter().take(MAX_CONTROLLERS) {
        let lent: Option<&mut dyn Iommu> = match iommu {
            Some(ref mut i) => Some(&mut **i),
            None => None,
        };
        let ns = match nvme::bring_up(dev, config, lent, Timing::default()) {
            Ok(ns) => ns,
            Err(e) => {
                error!(target: "nvme", "{}: cannot use the controller: {e}", dev.bdf);
                if line.is_empty() {
                    line = format!("NVMe drive unusable ({e})");
                }
                continue;
            }
        };
        log_drive(dev.bdf, &ns);
        match open_data_partition(ns) {
            Ok(part) => {
                let bytes = part.blocks().saturating_mul(u64::from(part.block_size()));
                let found = Found {
                    line: format!("{}, {} data partition", part.device().info.model, size_text(bytes)),
                    data_bytes: Some(bytes),
                };
                *DATA.lock() = Some(part);
                return found;
            }
            Err((model, why)) => {
                info!(target: "storage", "no data partition on {}: {why}", dev.bdf);
                line = format!("{model}, no data partition");
            }
        }
    }
    Found { line, data_bytes: None }
}

fn log_drive(bdf: Bdf, ns: &NvmeNamespace<HostNvmeHw>) {
    let info = &ns.info;
    info!(
        target: "nvme",
        "{bdf}: {}, serial {}, firmware {}; namespace {}: {} MiB, {} blocks of {} bytes; volatile write cache: {}; {} KiB per command",
        info.model,
        info.serial,
        info.firmware,
        ns.nsid,
        mib(ns.capacity_bytes()),
        ns.blocks(),
        ns.block_size(),
        if info.volatile_write_cache { "yes" } else { "no" },
        ns.max_transfer_bytes() >> 10
    );
}

/// The data partition of `ns` as a device, or the drive's model and why there is none.
fn open_data_partition(
    mut ns: NvmeNamespace<HostNvmeHw>,
) -> Result<DataPartition, (crate::host::nvme::identify::Text<40>, String)> {
    let model = ns.info.model.clone();
    let (part, used) = match gpt::find_partition(&mut ns, &bulkhead_abi::disk::DATA_PARTITION_TYPE) {
        Ok(found) => found,
        Err(e) => return Err((model, format!("{e}"))),
    };
    if let TableUsed::Backup(why) = used {
        warn!(target: "storage", "the primary GPT is damaged ({why}); using the backup GPT at the end of the disk");
    }
    let bs = u64::from(ns.block_size());
    info!(
        target: "storage",
        "data partition: {} MiB (blocks {}..={} of {} bytes)",
        mib(part.blocks.saturating_mul(bs)),
        part.first_lba,
        part.first_lba.saturating_add(part.blocks).saturating_sub(1),
        bs
    );
    PartitionDevice::new(ns, part).ok_or((model, String::from("the partition lies outside the namespace")))
}

/// Bytes the storage self-test writes at the end of the data partition.
pub const SELFTEST_BYTES: usize = 4096;

/// The self-test's pattern: a marker line, then bytes that differ from block to block
/// (a tester finds it in the disk image by the marker and checks every byte).
pub fn selftest_pattern() -> Vec<u8> {
    const MARKER: &[u8] = b"BULKHEAD STORAGE SELF-TEST\n";
    (0..SELFTEST_BYTES)
        .map(|i| match MARKER.get(i) {
            Some(&b) => b,
            None => (i as u8).wrapping_mul(7).wrapping_add((i >> 8) as u8) ^ 0xa5,
        })
        .collect()
}

/// Why the self-test failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelftestError {
    /// The partition is smaller than the pattern.
    TooSmall,
    Write(DeviceError),
    Flush(DeviceError),
    Read(DeviceError),
    /// The read-back differs from what was written, first at this byte.
    Mismatch {
        at: usize,
    },
}

impl core::fmt::Display for SelftestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SelftestError::TooSmall => write!(f, "the partition is smaller than {SELFTEST_BYTES} bytes"),
            SelftestError::Write(e) => write!(f, "write: {e}"),
            SelftestError::Flush(e) => write!(f, "flush: {e}"),
            SelftestError::Read(e) => write!(f, "read back: {e}"),
            SelftestError::Mismatch { at } => write!(f, "read back differs at byte {at}"),
        }
    }
}

/// Writes [`selftest_pattern`] to the last 4 KiB of `dev`, flushes, reads it back and
/// compares. Returns the first block written.
pub fn selftest(dev: &mut impl BlockDevice) -> Result<u64, SelftestError> {
    let bs = u64::from(dev.block_size());
    let blocks = (SELFTEST_BYTES as u64).checked_div(bs).ok_or(SelftestError::TooSmall)?;
    let lba = dev.blocks().checked_sub(blocks).ok_or(SelftestError::TooSmall)?;
    let pattern = selftest_pattern();
    dev.write(lba, &pattern).map_err(SelftestError::Write)?;
    dev.flush().map_err(SelftestError::Flush)?;
    let mut back = alloc::vec![0u8; SELFTEST_BYTES];
    dev.read(lba, &mut back).map_err(SelftestError::Read)?;
    match back.iter().zip(&pattern).position(|(a, b)| a != b) {
        Some(at) => Err(SelftestError::Mismatch { at }),
        None => Ok(lba),
    }
}

/// Runs [`selftest`] on the data partition boot found, and logs the outcome.
pub fn run_selftest() {
    let mut data = DATA.lock();
    let Some(part) = data.as_mut() else {
        error!(target: "storage", "storage self-test: FAILED: no data partition");
        return;
    };
    match selftest(part) {
        Ok(lba) => info!(
            target: "storage",
            "storage self-test: wrote, flushed and read back {SELFTEST_BYTES} bytes at partition block {lba}: ok"
        ),
        Err(e) => error!(target: "storage", "storage self-test: FAILED: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_vdisk::RamDevice;

    #[test]
    fn the_selftest_writes_only_the_last_4k_and_makes_it_durable() {
        for bs in [512u32, 4096] {
            let blocks = 64u64 * 4096 / u64::from(bs);
            let mut dev = RamDevice::new(bs, blocks);
            let lba = selftest(&mut dev).unwrap();
            assert_eq!(lba, blocks - 4096 / u64::from(bs));
            let durable = dev.after_power_cut().contents();
            assert_eq!(&durable[durable.len() - SELFTEST_BYTES..], &selftest_pattern()[..]);
            assert!(durable[..durable.len() - SELFTEST_BYTES].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn the_selftest_reports_failures() {
        let mut dev = RamDevice::new(512, 4);
        assert_eq!(selftest(&mut dev), Err(SelftestError::TooSmall));
        let mut dev = RamDevice::new(512, 64);
        dev.cut_power_after_writes(0);
        assert_eq!(selftest(&mut dev), Err(SelftestError::Write(DeviceError::Timeout)));
    }

    #[test]
    fn the_pattern_starts_with_its_marker_and_varies() {
        let p = selftest_pattern();
        assert!(p.starts_with(b"BULKHEAD STORAGE SELF-TEST\n"));
        assert_ne!(p[512..1024], p[1024..1536]);
        assert_eq!(p.len(), SELFTEST_BYTES);
    }
}
