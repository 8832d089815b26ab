//! The hypervisor's own storage: at boot, the NVMe drive it drives (one the policy
//! does not give to a VM) and Bulkhead's data partition on it, or, when no NVMe drive
//! has one, the data partition on the USB stick the machine booted from; kept here
//! until the code that stores the VMs' disks takes it (`take_data_partition`).
#![forbid(unsafe_code)]

pub mod disks;
mod drive;
mod random;
mod vault;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_vdisk::gpt::{self, PartitionDevice, TableUsed};
use bulkhead_vdisk::{BlockDevice, DeviceError};
use log::{error, info, warn};

pub use drive::DataDrive;

use crate::host::iommu::Iommu;
use crate::host::nvme::{self, HostNvmeHw, NvmeNamespace, Timing};
use crate::host::pci::{ConfigAccess, PciInventory};
use crate::host::usb;
use crate::hw::Bdf;

/// The data partition on the hypervisor's NVMe namespace or USB stick.
pub type DataPartition = PartitionDevice<DataDrive>;

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
/// that partition for [`take_data_partition`]. When no NVMe drive has one, the USB
/// stick is looked at (`init_usb`): an installed laptop's internal drive always wins
/// over whatever stick is plugged in.
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
    let mut line = String::new();
    if candidates.is_empty() {
        info!(target: "storage", "no NVMe drive for the hypervisor");
        line = String::from("No NVMe drive");
    }
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
        let model = ns.info.model.clone();
        match open_data_partition(DataDrive::Nvme(ns)) {
            Ok(part) => return keep(part, format!("{model}")),
            Err(why) => {
                info!(target: "storage", "no data partition on {}: {why}", dev.bdf);
                line = format!("{model}, no data partition");
            }
        }
    }
    match init_usb(inventory, config, iommu, assigned) {
        Some(found) => found,
        None => {
            info!(target: "storage", "no data partition: disks stay in RAM");
            Found { line, data_bytes: None }
        }
    }
}

/// Keeps `part` for [`take_data_partition`]; the boot screen line names `what` holds it.
fn keep(part: DataPartition, what: String) -> Found {
    let bytes = part.blocks().saturating_mul(u64::from(part.block_size()));
    let found = Found { line: format!("{what}, {} data partition", size_text(bytes)), data_bytes: Some(bytes) };
    *DATA.lock() = Some(part);
    found
}

/// The data partition on the USB stick, on the first xHCI controller (of at most
/// `MAX_CONTROLLERS`, in PCI order) with a mass-storage device that has one.
fn init_usb(
    inventory: &PciInventory,
    config: &dyn ConfigAccess,
    mut iommu: Option<&mut dyn Iommu>,
    assigned: &[Bdf],
) -> Option<Found> {
    for dev in usb::candidates(inventory, assigned).into_iter().take(MAX_CONTROLLERS) {
        let lent: Option<&mut dyn Iommu> = match iommu {
            Some(ref mut i) => Some(&mut **i),
            None => None,
        };
        let stick = match usb::bring_up(dev, config, lent, usb::XhciTiming::default()) {
            Ok(stick) => stick,
            Err(e) => {
                info!(target: "usb", "{}: no USB stick used: {e}", dev.bdf);
                continue;
            }
        };
        let info = stick.info.clone();
        let c = info.capacity;
        info!(
            target: "usb",
            "{}: stick {} {}: {} MiB, {} blocks of {} bytes",
            dev.bdf,
            info.inquiry.vendor,
            info.inquiry.product,
            mib(c.blocks.saturating_mul(u64::from(c.block_size))),
            c.blocks,
            c.block_size
        );
        match open_data_partition(DataDrive::UsbStick(stick)) {
            Ok(part) => return Some(keep(part, format!("USB stick {}", info.inquiry.product))),
            Err(why) => info!(target: "storage", "no data partition on the USB stick at {}: {why}", dev.bdf),
        }
    }
    None
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

/// Why a drive holds no usable data partition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoDataPartition {
    Gpt(gpt::GptError),
    OutsideDrive,
}

impl core::fmt::Display for NoDataPartition {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NoDataPartition::Gpt(e) => write!(f, "{e}"),
            NoDataPartition::OutsideDrive => write!(f, "the partition lies outside the drive"),
        }
    }
}

/// The data partition of `drive` as a device, or why there is none.
fn open_data_partition(mut drive: DataDrive) -> Result<DataPartition, NoDataPartition> {
    let (part, used) =
        gpt::find_partition(&mut drive, &bulkhead_abi::disk::DATA_PARTITION_TYPE).map_err(NoDataPartition::Gpt)?;
    if let TableUsed::Backup(why) = used {
        warn!(target: "storage", "the primary GPT is damaged ({why}); using the backup GPT at the end of the disk");
    }
    let bs = u64::from(drive.block_size());
    info!(
        target: "storage",
        "data partition: {} MiB (blocks {}..={} of {} bytes) on the {}",
        mib(part.blocks.saturating_mul(bs)),
        part.first_lba,
        part.first_lba.saturating_add(part.blocks).saturating_sub(1),
        bs,
        drive.kind()
    );
    PartitionDevice::new(drive, part).ok_or(NoDataPartition::OutsideDrive)
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
