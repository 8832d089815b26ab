//! Plain data describing what enumeration found, and the one-line log format.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::hw::Bdf;

/// What a BAR decodes (PCI Local Bus Spec 3.0 §6.2.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    /// Memory type 01b: 32-bit, below 1 MiB (legacy).
    Mem1M,
    Mem64,
}

/// A sized, implemented BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// BAR slot (0-5; a 64-bit BAR occupies `index` and `index + 1`).
    pub index: u8,
    pub kind: BarKind,
    pub prefetchable: bool,
    pub address: u64,
    pub size: u64,
}

/// An expansion ROM BAR (PCI 3.0 §6.2.5.2, offset 30h of a type 0 header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rom {
    /// Where firmware placed it (bits 31:11; 0 if it did not).
    pub address: u64,
    pub size: u64,
}

/// Decoded details of the capabilities the hypervisor cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityDetail {
    None,
    /// PCI 3.0 §6.8.1: 64-bit address, per-vector masking, vectors requestable.
    Msi {
        is_64bit: bool,
        per_vector_mask: bool,
        max_vectors: u8,
    },
    /// PCI 3.0 §6.8.2: table entries and where the table and PBA live.
    MsiX {
        table_size: u16,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    },
    /// PCIe 6.0 §7.5.3.2: device/port type (0 endpoint, 4 root port, ...).
    PciExpress {
        port_type: u8,
    },
}

/// A standard capability (PCI 3.0 §6.7) found in the list at 0x34.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub id: u8,
    pub offset: u8,
    pub detail: CapabilityDetail,
}

impl Capability {
    pub fn name(&self) -> Option<&'static str> {
        Some(match self.id {
            0x01 => "pm",
            0x02 => "agp",
            0x03 => "vpd",
            0x04 => "slotid",
            0x05 => "msi",
            0x07 => "pcix",
            0x08 => "ht",
            0x09 => "vendor",
            0x0a => "dbgport",
            0x0c => "hotplug",
            0x0d => "ssvid",
            0x0f => "secdev",
            0x10 => "pcie",
            0x11 => "msix",
            0x12 => "sata",
            0x13 => "af",
            0x14 => "ea",
            _ => return None,
        })
    }
}

/// A PCIe extended capability (PCIe 6.0 §7.6) found from offset 0x100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtCapability {
    pub id: u16,
    pub version: u8,
    pub offset: u16,
}

impl ExtCapability {
    pub fn name(&self) -> Option<&'static str> {
        Some(match self.id {
            0x0001 => "aer",
            0x0002 | 0x0009 => "vc",
            0x0003 => "dsn",
            0x0004 => "power",
            0x000b => "vsec",
            0x000d => "acs",
            0x000e => "ari",
            0x000f => "ats",
            0x0010 => "sriov",
            0x0013 => "pri",
            0x0015 => "rebar",
            0x0017 => "tph",
            0x0018 => "ltr",
            0x0019 => "secpcie",
            0x001b => "pasid",
            0x001e => "l1ss",
            0x0025 => "dlf",
            0x0026 => "16gt",
            _ => return None,
        })
    }
}

/// Bus numbers of a PCI-PCI bridge (PCI-PCI Bridge Spec 1.2 §3.2.5.2-3.2.5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeBuses {
    pub primary: u8,
    pub secondary: u8,
    pub subordinate: u8,
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    pub bdf: Bdf,
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision: u8,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    /// Header layout (bits 6:0 of the header type register): 0 endpoint, 1 PCI-PCI
    /// bridge, 2 CardBus bridge.
    pub header_type: u8,
    pub multifunction: bool,
    pub interrupt_pin: u8,
    pub interrupt_line: u8,
    pub bars: Vec<Bar>,
    /// The expansion ROM BAR, if the function implements one.
    pub rom: Option<Rom>,
    pub capabilities: Vec<Capability>,
    pub ext_capabilities: Vec<ExtCapability>,
    pub bridge: Option<BridgeBuses>,
}

impl PciDevice {
    pub fn class_name(&self) -> &'static str {
        class_name(self.class, self.subclass, self.prog_if)
    }
    pub fn capability(&self, id: u8) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.id == id)
    }
    pub fn ext_capability(&self, id: u16) -> Option<&ExtCapability> {
        self.ext_capabilities.iter().find(|c| c.id == id)
    }

    /// The one-line description `log_all` prints, e.g.
    /// `00:02.0 1234:1111 VGA compatible controller BAR0 mem32 0x80000000 16M caps: msi,pcie`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "{} {:04x}:{:04x} {}", self.bdf, self.vendor_id, self.device_id, self.class_name());
        if let Some(b) = self.bridge {
            let _ = write!(s, " buses {:02x}-{:02x}", b.secondary, b.subordinate);
        }
        for bar in &self.bars {
            let kind = match bar.kind {
                BarKind::Io => "io",
                BarKind::Mem32 => "mem32",
                BarKind::Mem1M => "mem1m",
                BarKind::Mem64 => "mem64",
            };
            let pref = if bar.prefetchable { " pref" } else { "" };
            let _ = write!(s, " BAR{} {kind}{pref} {:#x} {}", bar.index, bar.address, HumanSize(bar.size));
        }
        if let Some(rom) = self.rom {
            let _ = write!(s, " ROM {:#x} {}", rom.address, HumanSize(rom.size));
        }
        let names = |s: &mut String, label: &str, names: &mut dyn Iterator<Item = String>| {
            let mut first = true;
            for n in names {
                let _ = write!(s, "{}{n}", if first { label } else { "," });
                first = false;
            }
        };
        names(
            &mut s,
            " caps: ",
            &mut self
                .capabilities
                .iter()
                .map(|c| c.name().map_or_else(|| alloc::format!("{:#04x}", c.id), String::from)),
        );
        names(
            &mut s,
            " ext: ",
            &mut self
                .ext_capabilities
                .iter()
                .map(|c| c.name().map_or_else(|| alloc::format!("{:#06x}", c.id), String::from)),
        );
        s
    }
}

/// Sizes as `16M`, `4K`, `256` (bytes).
struct HumanSize(u64);

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // log2 of each unit.
        const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        for (shift, suffix) in UNITS {
            if self.0 >= 1 << shift && self.0.trailing_zeros() >= shift {
                return write!(f, "{}{suffix}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Human name of a class code (PCI Code and ID Assignment Spec 1.11 §1).
pub fn class_name(class: u8, subclass: u8, prog_if: u8) -> &'static str {
    match (class, subclass, prog_if) {
        (0x00, 0x01, _) => "VGA compatible unclassified device",
        (0x00, _, _) => "Unclassified device",
        (0x01, 0x00, _) => "SCSI storage controller",
        (0x01, 0x01, _) => "IDE interface",
        (0x01, 0x04, _) => "RAID bus controller",
        (0x01, 0x06, _) => "SATA controller",
        (0x01, 0x07, _) => "Serial Attached SCSI controller",
        (0x01, 0x08, _) => "Non-Volatile memory controller",
        (0x01, _, _) => "Mass storage controller",
        (0x02, 0x00, _) => "Ethernet controller",
        (0x02, 0x80, _) => "Network controller",
        (0x02, _, _) => "Network controller",
        (0x03, 0x00, _) => "VGA compatible controller",
        (0x03, 0x01, _) => "XGA compatible controller",
        (0x03, 0x02, _) => "3D controller",
        (0x03, _, _) => "Display controller",
        (0x04, 0x00, _) => "Multimedia video controller",
        (0x04, 0x01, _) => "Multimedia audio controller",
        (0x04, 0x03, _) => "Audio device",
        (0x04, _, _) => "Multimedia controller",
        (0x05, 0x00, _) => "RAM memory",
        (0x05, _, _) => "Memory controller",
        (0x06, 0x00, _) => "Host bridge",
        (0x06, 0x01, _) => "ISA bridge",
        (0x06, 0x04, _) => "PCI bridge",
        (0x06, 0x07, _) => "CardBus bridge",
        (0x06, _, _) => "Bridge",
        (0x07, 0x00, _) => "Serial controller",
        (0x07, 0x80, _) => "Communication controller",
        (0x07, _, _) => "Communication controller",
        (0x08, 0x00, _) => "PIC",
        (0x08, 0x01, _) => "DMA controller",
        (0x08, 0x02, _) => "Timer",
        (0x08, 0x03, _) => "RTC",
        (0x08, 0x05, _) => "SD Host controller",
        (0x08, 0x06, _) => "IOMMU",
        (0x08, _, _) => "System peripheral",
        (0x09, _, _) => "Input device controller",
        (0x0b, _, _) => "Processor",
        (0x0c, 0x03, 0x00) => "USB controller (UHCI)",
        (0x0c, 0x03, 0x10) => "USB controller (OHCI)",
        (0x0c, 0x03, 0x20) => "USB controller (EHCI)",
        (0x0c, 0x03, 0x30) => "USB controller (xHCI)",
        (0x0c, 0x03, 0x40) => "USB controller (USB4)",
        (0x0c, 0x03, _) => "USB controller",
        (0x0c, 0x05, _) => "SMBus",
        (0x0c, 0x80, _) => "Serial bus controller",
        (0x0c, _, _) => "Serial bus controller",
        (0x0d, 0x11, _) => "Bluetooth",
        (0x0d, 0x80, _) => "Wireless controller",
        (0x0d, _, _) => "Wireless controller",
        (0x10, _, _) => "Encryption controller",
        (0x11, _, _) => "Signal processing controller",
        (0x12, _, _) => "Processing accelerator",
        (0xff, _, _) => "Unassigned class",
        _ => "Unknown device class",
    }
}

#[cfg(test)]
mod tests {
    use super::HumanSize;
    use alloc::string::ToString;

    #[test]
    fn sizes_use_the_largest_exact_unit() {
        let cases = [
            (0, "0"),
            (256, "256"),
            (1536, "1536"),
            (4096, "4K"),
            (3 << 30, "3G"),
            (1 << 40, "1T"),
            (u64::MAX, "18446744073709551615"),
        ];
        for (bytes, text) in cases {
            assert_eq!(HumanSize(bytes).to_string(), text);
        }
        assert_eq!(HumanSize((1 << 20) + (1 << 10)).to_string(), "1025K");
    }
}
