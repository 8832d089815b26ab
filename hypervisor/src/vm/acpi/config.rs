//! What a VM's ACPI tables describe, and the checks that keep the builders from being
//! handed something they cannot encode.
#![forbid(unsafe_code)]

use crate::devices::layout;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::memory::addr::GuestPhysAddr;

/// Default GPA of the tables: the legacy BIOS area below 1 MiB, which is never RAM in
/// a PC memory map. The VM must back it with memory and mark it reserved (or ACPI) in
/// its e820 map.
pub const DEFAULT_TABLES_GPA: u64 = layout::ACPI_TABLES_GPA;
pub const DEFAULT_LAPIC_BASE: u32 = layout::LAPIC_BASE as u32;
pub const DEFAULT_IOAPIC_BASE: u32 = layout::IOAPIC_BASE as u32;
/// One bus of ECAM: 32 devices x 8 functions x 4 KiB.
pub const ECAM_BYTES_PER_BUS: u64 = 1 << 20;
pub const DEFAULT_ECAM_BASE: u64 = layout::PCI_ECAM_BASE;
pub const DEFAULT_SLEEP_CONTROL_PORT: u16 = 0x600;
pub const DEFAULT_SLEEP_STATUS_PORT: u16 = 0x601;
pub const DEFAULT_RESET_PORT: u16 = 0x604;
pub const DEFAULT_RESET_VALUE: u8 = 0x01;
/// The SLP_TYP value the DSDT's `\_S5_` package carries. OSPM writes
/// `SLP_EN (bit 5) | SLP_TYP << 2` to the sleep control register: 0x34 for S5
/// (ACPI 6.5 §4.8.3.7, "Sleep Control and Status Registers").
pub const S5_SLP_TYP: u8 = 5;
/// Every MADT entry but the per-vCPU ones fits a small VM; this caps the table size.
pub const MAX_VCPUS: u32 = 1024;

/// An inclusive range `start..=end`, as ACPI resource descriptors write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiWindow<T> {
    pub start: T,
    pub end: T,
}

impl<T: Copy + Ord + Into<u64>> AcpiWindow<T> {
    pub fn new(start: T, end: T) -> Self {
        AcpiWindow { start, end }
    }
    /// Non-empty, and its length (`end - start + 1`) fits in `T` as the address-space
    /// descriptors need.
    fn encodable(&self, max: u64) -> bool {
        let (s, e) = (self.start.into(), self.end.into());
        s <= e && !(s == 0 && e == max)
    }
    fn overlaps(&self, start: u64, len: u64) -> bool {
        self.start.into() < start.saturating_add(len) && start <= self.end.into()
    }
}

/// The I/O APIC (one, serving GSIs from `gsi_base`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApicInfo {
    /// Must match the ID register of the I/O APIC model (reset value 0).
    pub id: u8,
    pub base: u32,
    pub gsi_base: u32,
}

/// One PCI INTx routing: device `device` pin `pin` (0 = INTA#) raises `gsi`, level
/// triggered and active low (the PCI convention; ACPI 6.5 §6.2.13 `_PRT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIntx {
    pub device: u8,
    pub pin: u8,
    pub gsi: u32,
}

/// The PCI host bridge `\_SB.PCI0` (segment 0) and its ECAM window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiPciHost {
    /// ECAM base: the address of bus 0's configuration space (PCI Firmware Spec 3.3
    /// §4.1.2), even when `buses` starts above 0. 1 MiB aligned.
    pub ecam_base: u64,
    pub buses: AcpiWindow<u8>,
    /// I/O port windows forwarded to PCI (bridge windows in `_CRS`).
    pub io: Vec<AcpiWindow<u16>>,
    /// The 32-bit MMIO window for BARs.
    pub mmio32: AcpiWindow<u32>,
    /// An optional 64-bit MMIO window for large BARs.
    pub mmio64: Option<AcpiWindow<u64>>,
    /// INTx routing (`_PRT`); empty means no `_PRT` (devices then use MSI/MSI-X).
    pub intx: Vec<PciIntx>,
}

impl AcpiPciHost {
    /// The ECAM bytes the bus range decodes: `[ecam_base + start * 1 MiB, + n MiB)`.
    pub fn ecam_range(&self) -> (u64, u64) {
        let first = u64::from(self.buses.start).saturating_mul(ECAM_BYTES_PER_BUS);
        let buses = u64::from(self.buses.end).saturating_sub(u64::from(self.buses.start)).saturating_add(1);
        (self.ecam_base.saturating_add(first), buses.saturating_mul(ECAM_BYTES_PER_BUS))
    }
}

/// The I/O ports of the hardware-reduced power registers (trapped by the VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerPorts {
    /// Sleep control register (8 bits): a write of `SLP_EN | S5_SLP_TYP << 2` powers off.
    pub sleep_control: u16,
    /// Sleep status register (8 bits): WAK_STS in bit 7; reads 0, writes ignored.
    pub sleep_status: u16,
    /// Reset register (8 bits): a write of `reset_value` resets the VM.
    pub reset: u16,
    pub reset_value: u8,
}

/// Legacy devices described in the DSDT so that Linux's PNP layer binds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyDevices {
    /// 16550 at 0x3F8, IRQ 4 (`PNP0501`).
    pub com1: bool,
    /// i8042 keyboard port at 0x60/0x64, IRQ 1 (`PNP0303`). Also sets the FADT's
    /// "8042" boot flag, without which Linux treats the controller as absent.
    pub ps2_keyboard: bool,
    /// i8042 auxiliary (mouse) port, IRQ 12 (`PNP0F13`).
    pub ps2_mouse: bool,
    /// CMOS RTC at 0x70, IRQ 8 (`PNP0B00`). Clear sets the FADT's "CMOS RTC not
    /// present" flag.
    pub rtc: bool,
}

/// Everything the tables describe. [`AcpiConfig::default`] is the layout below.
///
/// | What | Where |
/// |---|---|
/// | ACPI tables | GPA 0xE_0000 (below 1 MiB, legacy BIOS area), a few KiB |
/// | PCI MMIO32 window | 0xC000_0000..=0xDFFF_FFFF |
/// | ECAM, bus 0 only | 0xE000_0000..=0xE00F_FFFF |
/// | I/O APIC (GSI 0-23) | 0xFEC0_0000 |
/// | local APICs | 0xFEE0_0000 |
/// | PCI I/O windows | ports 0x0000..=0x0CF7 and 0x0D00..=0xFFFF; 0xCF8-0xCFF config mechanism 1 |
/// | sleep control / status / reset | ports 0x600 / 0x601 / 0x604 (reset value 0x01) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// vCPU `n` gets APIC ID `n` and ACPI processor UID `n`.
    pub vcpus: u32,
    pub lapic_base: u32,
    pub ioapic: IoApicInfo,
    /// Add the PC's interrupt source override ISA IRQ 0 (PIT) -> GSI 2. Only true if
    /// the I/O APIC model wires the PIT to pin 2.
    pub pit_on_gsi2: bool,
    pub pci: AcpiPciHost,
    pub power: PowerPorts,
    pub legacy: LegacyDevices,
}

impl Default for AcpiConfig {
    fn default() -> Self {
        AcpiConfig {
            vcpus: 1,
            lapic_base: DEFAULT_LAPIC_BASE,
            ioapic: IoApicInfo { id: 0, base: DEFAULT_IOAPIC_BASE, gsi_base: 0 },
            pit_on_gsi2: true,
            pci: AcpiPciHost {
                ecam_base: DEFAULT_ECAM_BASE,
                buses: AcpiWindow::new(0, 0),
                io: vec![AcpiWindow::new(0x0000, 0x0cf7), AcpiWindow::new(0x0d00, 0xffff)],
                mmio32: AcpiWindow::new(layout::PCI_MMIO32_START as u32, (layout::PCI_MMIO32_END - 1) as u32),
                mmio64: None,
                intx: Vec::new(),
            },
            power: PowerPorts {
                sleep_control: DEFAULT_SLEEP_CONTROL_PORT,
                sleep_status: DEFAULT_SLEEP_STATUS_PORT,
                reset: DEFAULT_RESET_PORT,
                reset_value: DEFAULT_RESET_VALUE,
            },
            legacy: LegacyDevices { com1: true, ps2_keyboard: true, ps2_mouse: false, rtc: true },
        }
    }
}

/// Why a configuration cannot be turned into tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAcpiError {
    /// No vCPUs, or more than [`MAX_VCPUS`].
    VcpuCount(u32),
    /// The table GPA is not 16-byte aligned or the tables would wrap the address space.
    BadBase(u64),
    /// ECAM base not 1 MiB aligned, bus range reversed, or the window above 4 GiB.
    BadEcam(u64),
    /// A window is empty or reversed, or spans its whole address space.
    BadWindow(&'static str),
    /// A window overlaps ECAM or the interrupt controllers.
    Overlap(&'static str),
    /// A power register port is 0.
    BadPort(&'static str),
    /// More `_PRT` entries than an AML package holds, or a device/pin out of range.
    BadIntx,
}

impl fmt::Display for GuestAcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestAcpiError::VcpuCount(n) => write!(f, "{n} vCPUs (1..={MAX_VCPUS} supported)"),
            GuestAcpiError::BadBase(gpa) => write!(f, "ACPI tables cannot go at GPA {gpa:#x}"),
            GuestAcpiError::BadEcam(base) => write!(f, "bad ECAM window at {base:#x}"),
            GuestAcpiError::BadWindow(what) => write!(f, "bad {what} window"),
            GuestAcpiError::Overlap(what) => write!(f, "{what} overlaps another platform range"),
            GuestAcpiError::BadPort(what) => write!(f, "{what} port must not be 0"),
            GuestAcpiError::BadIntx => write!(f, "bad PCI INTx routing"),
        }
    }
}

impl AcpiConfig {
    /// Checks everything the table builders rely on.
    pub fn validate(&self, base: GuestPhysAddr) -> Result<(), GuestAcpiError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(GuestAcpiError::VcpuCount(self.vcpus));
        }
        if !base.is_aligned(16) || base.checked_add(1 << 20).is_none() {
            return Err(GuestAcpiError::BadBase(base.raw()));
        }
        let pci = &self.pci;
        let (ecam_start, ecam_len) = pci.ecam_range();
        let ecam_end = ecam_start.saturating_add(ecam_len);
        if !pci.ecam_base.is_multiple_of(ECAM_BYTES_PER_BUS) || pci.buses.start > pci.buses.end || ecam_end > 1 << 32 {
            return Err(GuestAcpiError::BadEcam(pci.ecam_base));
        }
        if pci.io.is_empty() || !pci.io.iter().all(|w| w.encodable(u16::MAX.into())) {
            return Err(GuestAcpiError::BadWindow("PCI I/O"));
        }
        if !pci.mmio32.encodable(u32::MAX.into()) {
            return Err(GuestAcpiError::BadWindow("PCI MMIO32"));
        }
        if let Some(w) = pci.mmio64
            && !w.encodable(u64::MAX)
        {
            return Err(GuestAcpiError::BadWindow("PCI MMIO64"));
        }
        let fixed: [(&'static str, u64, u64); 3] = [
            ("ECAM", ecam_start, ecam_len),
            ("I/O APIC", self.ioapic.base.into(), 0x1000),
            ("local APIC", self.lapic_base.into(), 0x1000),
        ];
        for (what, start, len) in fixed {
            if pci.mmio32.overlaps(start, len) || pci.mmio64.is_some_and(|w| w.overlaps(start, len)) {
                return Err(GuestAcpiError::Overlap(what));
            }
        }
        for (what, port) in [
            ("sleep control", self.power.sleep_control),
            ("sleep status", self.power.sleep_status),
            ("reset", self.power.reset),
        ] {
            if port == 0 {
                return Err(GuestAcpiError::BadPort(what));
            }
        }
        if pci.intx.len() > 255 || pci.intx.iter().any(|e| e.device > 31 || e.pin > 3) {
            return Err(GuestAcpiError::BadIntx);
        }
        Ok(())
    }
}
