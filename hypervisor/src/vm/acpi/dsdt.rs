//! The DSDT's AML, built with `acpi_tables::aml`. In ASL:
//!
//! ```text
//! Name (\_S5, Package (4) { 5, 5, 0, 0 })          // SLP_TYPa, SLP_TYPb, reserved
//! Scope (\_SB) {
//!     Device (PCI0) {
//!         Name (_HID, EisaId ("PNP0A08"))           // PCI Express root bridge
//!         Name (_CID, EisaId ("PNP0A03"))           // PCI root bridge
//!         Name (_UID, 0)  Name (_SEG, 0)  Name (_BBN, <first bus>)
//!         Name (_CRS, ResourceTemplate () {
//!             WordBusNumber (<buses>)
//!             IO (Decode16, 0xCF8, 0xCF8, 1, 8)      // config mechanism 1
//!             WordIO (<each I/O window>)
//!             DWordMemory (<MMIO32 window>)  [QWordMemory (<MMIO64 window>)]
//!         })
//!         [Name (_PRT, Package () { Package () { 0xDDDDFFFF, pin, 0, gsi }, ... })]
//!     }
//!     Device (MRES) {                                // motherboard resources
//!         Name (_HID, EisaId ("PNP0C02"))  Name (_UID, 1)
//!         Name (_CRS, ResourceTemplate () {
//!             Memory32Fixed (ReadWrite, <ECAM>)     // Linux wants ECAM reserved here
//!             IO (<sleep control>) IO (<sleep status>) IO (<reset>)
//!         })
//!     }
//!     Device (COM1) { _HID PNP0501, _UID 1, _CRS { IO 0x3F8/8, Interrupt {4} } }
//!     Device (PS2K) { _HID PNP0303, _CRS { IO 0x60, IO 0x64, Interrupt {1} } }
//!     Device (PS2M) { _HID PNP0F13, _CRS { Interrupt {12} } }
//!     Device (RTC_) { _HID PNP0B00, _CRS { IO 0x70/2, Interrupt {8} } }
//! }
//! ```
//!
//! ISA interrupts use Extended Interrupt descriptors (consumer, edge, active high,
//! exclusive): Linux takes their trigger and polarity as written, and registers the
//! number as a GSI, which is what it is on this I/O APIC (GSI base 0, identity for
//! ISA IRQs 1, 4, 8, 12).
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use acpi_tables::Aml;
use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, IO, Interrupt, Memory32Fixed, Name, Package, Path,
    ResourceTemplate, Scope,
};

use super::config::{AcpiConfig, S5_SLP_TYP};

/// An Extended Interrupt descriptor for an ISA device's IRQ.
fn isa_irq(gsi: u32) -> Interrupt {
    Interrupt::new(true, true, false, false, gsi)
}

fn name(path: &str, value: &dyn Aml) -> Name {
    Name::new(Path::new(path), value)
}

fn hid(eisa_id: &str) -> Name {
    name("_HID", &EISAName::new(eisa_id))
}

/// A device named `path` with `_HID`, an optional `_UID` and a `_CRS`.
fn legacy_device(path: &str, eisa_id: &str, uid: Option<u8>, resources: Vec<&dyn Aml>) -> Vec<u8> {
    let hid = hid(eisa_id);
    let uid = uid.map(|u| name("_UID", &u));
    let crs = name("_CRS", &ResourceTemplate::new(resources));
    let mut children: Vec<&dyn Aml> = vec![&hid];
    if let Some(u) = &uid {
        children.push(u);
    }
    children.push(&crs);
    let mut out = Vec::new();
    Device::new(Path::new(path), children).to_aml_bytes(&mut out);
    out
}

/// Already-serialised AML, so parts built separately can sit in one scope.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn pci_root(config: &AcpiConfig) -> Vec<u8> {
    let pci = &config.pci;
    let buses = AddressSpace::<u16>::new_bus_number(pci.buses.start.into(), pci.buses.end.into());
    let conf1 = IO::new(0xcf8, 0xcf8, 1, 8);
    let io: Vec<AddressSpace<u16>> = pci.io.iter().map(|w| AddressSpace::new_io(w.start, w.end, None)).collect();
    let mmio32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        pci.mmio32.start,
        pci.mmio32.end,
        None,
    );
    let mmio64 = pci
        .mmio64
        .map(|w| AddressSpace::<u64>::new_memory(AddressSpaceCacheable::Cacheable, true, w.start, w.end, None));
    let mut resources: Vec<&dyn Aml> = vec![&buses, &conf1];
    resources.extend(io.iter().map(|w| w as &dyn Aml));
    resources.push(&mmio32);
    if let Some(w) = &mmio64 {
        resources.push(w);
    }

    let hid = hid("PNP0A08");
    let cid = name("_CID", &EISAName::new("PNP0A03"));
    let uid = name("_UID", &0u8);
    let seg = name("_SEG", &0u8);
    let bbn = name("_BBN", &pci.buses.start);
    let crs = name("_CRS", &ResourceTemplate::new(resources));
    // _PRT entries: Package { Address (device << 16 | 0xFFFF: any function), Pin,
    // Source (0: Source Index is a GSI), Source Index } (ACPI 6.5 §6.2.13).
    let prt_entries: Vec<Box<dyn Aml>> = pci
        .intx
        .iter()
        .map(|e| {
            let address = (u32::from(e.device) << 16) | 0xffff;
            let mut bytes = Vec::new();
            Package::new(vec![&address, &e.pin, &0u8, &e.gsi]).to_aml_bytes(&mut bytes);
            Box::new(Raw(bytes)) as Box<dyn Aml>
        })
        .collect();
    let prt = name("_PRT", &Package::new(prt_entries.iter().map(|b| b.as_ref()).collect()));
    let mut children: Vec<&dyn Aml> = vec![&hid, &cid, &uid, &seg, &bbn, &crs];
    if !pci.intx.is_empty() {
        children.push(&prt);
    }
    let mut out = Vec::new();
    Device::new(Path::new("PCI0"), children).to_aml_bytes(&mut out);
    out
}

fn motherboard_resources(config: &AcpiConfig) -> Vec<u8> {
    let (ecam_start, ecam_len) = config.pci.ecam_range();
    // `validate` keeps ECAM below 4 GiB.
    let ecam = Memory32Fixed::new(
        true,
        u32::try_from(ecam_start).unwrap_or(u32::MAX),
        u32::try_from(ecam_len).unwrap_or(u32::MAX),
    );
    let ports: Vec<IO> = [config.power.sleep_control, config.power.sleep_status, config.power.reset]
        .iter()
        .map(|&p| IO::new(p, p, 1, 1))
        .collect();
    let mut resources: Vec<&dyn Aml> = vec![&ecam];
    resources.extend(ports.iter().map(|p| p as &dyn Aml));
    legacy_device("MRES", "PNP0C02", Some(1), resources)
}

/// The DSDT body (everything after the table header).
pub fn build_dsdt_aml(config: &AcpiConfig) -> Vec<u8> {
    let mut aml = Vec::new();
    name("_S5_", &Package::new(vec![&S5_SLP_TYP, &S5_SLP_TYP, &0u8, &0u8])).to_aml_bytes(&mut aml);

    let mut devices = vec![Raw(pci_root(config)), Raw(motherboard_resources(config))];
    let legacy = &config.legacy;
    if legacy.com1 {
        let io = IO::new(0x3f8, 0x3f8, 1, 8);
        let irq = isa_irq(4);
        devices.push(Raw(legacy_device("COM1", "PNP0501", Some(1), vec![&io, &irq])));
    }
    if legacy.ps2_keyboard {
        let data = IO::new(0x60, 0x60, 1, 1);
        let command = IO::new(0x64, 0x64, 1, 1);
        let irq = isa_irq(1);
        devices.push(Raw(legacy_device("PS2K", "PNP0303", None, vec![&data, &command, &irq])));
    }
    if legacy.ps2_mouse {
        let irq = isa_irq(12);
        devices.push(Raw(legacy_device("PS2M", "PNP0F13", None, vec![&irq])));
    }
    if legacy.rtc {
        let io = IO::new(0x70, 0x70, 1, 2);
        let irq = isa_irq(8);
        devices.push(Raw(legacy_device("RTC_", "PNP0B00", None, vec![&io, &irq])));
    }
    Scope::new(Path::new("\\_SB_"), devices.iter().map(|d| d as &dyn Aml).collect()).to_aml_bytes(&mut aml);
    aml
}
