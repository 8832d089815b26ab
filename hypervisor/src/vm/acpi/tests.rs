//! Reads the tables back with the `acpi` crate (an independent implementation of the
//! layouts), through a handler that maps "physical" addresses into the built blob.
#![allow(unsafe_code)]

use core::ptr::NonNull;
use std::rc::Rc;

use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};

use super::*;
use crate::memory::addr::GuestPhysAddr;

const BASE: u64 = DEFAULT_TABLES_GPA;

/// Maps GPAs inside the blob to the blob's bytes.
#[derive(Clone)]
struct BlobHandler {
    blob: Rc<Vec<u8>>,
    base: usize,
}

impl AcpiHandler for BlobHandler {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let offset = physical_address.checked_sub(self.base).expect("address below the blob");
        assert!(offset + size <= self.blob.len(), "{physical_address:#x}+{size:#x} outside the blob");
        let ptr = NonNull::new(self.blob[offset..].as_ptr() as *mut T).unwrap();
        // SAFETY: `ptr` points `size` readable bytes into the blob, which the mapping's
        // clone of the `Rc` keeps alive; the acpi crate only reads through it.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, self.clone()) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

fn parse(blob: &AcpiBlob) -> AcpiTables<BlobHandler> {
    let handler = BlobHandler { blob: Rc::new(blob.bytes.clone()), base: blob.base.raw() as usize };
    // SAFETY: the RSDP address lies in the blob the handler maps.
    unsafe { AcpiTables::from_rsdp(handler, blob.rsdp_gpa.raw() as usize) }.unwrap()
}

fn build(config: &AcpiConfig) -> AcpiBlob {
    build_acpi_tables(config, GuestPhysAddr::new(BASE)).unwrap()
}

fn table_bytes<'a>(blob: &'a AcpiBlob, sig: &[u8; 4]) -> &'a [u8] {
    let t = blob.table(sig).unwrap();
    let off = (t.gpa.raw() - blob.base.raw()) as usize;
    &blob.bytes[off..off + t.len_bytes as usize]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_checksum_sums_to_zero() {
    for vcpus in [1, 4, 300] {
        let blob = build(&AcpiConfig { vcpus, ..AcpiConfig::default() });
        let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        assert_eq!(sum(&blob.bytes[..20]), 0, "RSDP checksum");
        assert_eq!(sum(&blob.bytes[..36]), 0, "RSDP extended checksum");
        assert_eq!(blob.tables.len(), 5);
        for t in &blob.tables {
            let bytes = table_bytes(&blob, &t.signature);
            assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize, bytes.len());
            assert_eq!(sum(bytes), 0, "{}", core::str::from_utf8(&t.signature).unwrap());
            assert_eq!(t.gpa.raw() % 16, 0);
        }
    }
}

#[test]
fn rsdp_and_xsdt_lead_to_every_table() {
    let blob = build(&AcpiConfig::default());
    assert_eq!(blob.rsdp_gpa, GuestPhysAddr::new(BASE));
    assert_eq!(&blob.bytes[..8], b"RSD PTR ");
    assert_eq!(blob.bytes[15], 2, "RSDP revision");
    let tables = parse(&blob);
    assert_eq!(tables.revision(), 2);
    let mut sigs: Vec<String> = tables.headers().map(|h| h.signature.as_str().to_string()).collect();
    sigs.sort();
    assert_eq!(sigs, ["APIC", "FACP", "MCFG"]);
    for h in tables.headers() {
        assert_eq!(&h.oem_id, b"BULKHD");
        assert_eq!(&h.oem_table_id, b"BULKHEAD");
    }
    // A few KiB at most, all inside the pages it reports.
    assert!(blob.bytes.len() < 4096, "{}", blob.bytes.len());
    assert_eq!(blob.reserved_range(), (GuestPhysAddr::new(BASE), 4096));
}

#[test]
fn madt_lists_each_vcpu_the_ioapic_and_the_overrides() {
    let blob = build(&AcpiConfig { vcpus: 4, ..AcpiConfig::default() });
    let tables = parse(&blob);
    let madt = tables.find_table::<Madt>().unwrap();
    assert_eq!({ madt.get().local_apic_address }, 0xfee0_0000);
    assert!(madt.get().supports_8259(), "PCAT_COMPAT");
    assert_eq!({ madt.get().header.revision }, 5);
    let mut lapics = Vec::new();
    let (mut ioapics, mut overrides, mut nmis) = (0, 0, 0);
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                assert_eq!({ e.flags }, 1, "enabled");
                assert_eq!(e.processor_id, e.apic_id);
                lapics.push(e.apic_id);
            }
            MadtEntry::IoApic(e) => {
                ioapics += 1;
                assert_eq!({ e.io_apic_address }, 0xfec0_0000);
                assert_eq!({ e.global_system_interrupt_base }, 0);
                assert_eq!(e.io_apic_id, 0);
            }
            MadtEntry::InterruptSourceOverride(e) => {
                overrides += 1;
                assert_eq!((e.bus, e.irq, { e.global_system_interrupt }, { e.flags }), (0, 0, 2, 0));
            }
            MadtEntry::LocalApicNmi(e) => {
                nmis += 1;
                assert_eq!((e.processor_id, { e.flags }, e.nmi_line), (0xff, 0, 1));
            }
            other => panic!("unexpected MADT entry {other:?}"),
        }
    }
    assert_eq!(lapics, [0, 1, 2, 3]);
    assert_eq!((ioapics, overrides, nmis), (1, 1, 1));

    let no_pit = build(&AcpiConfig { pit_on_gsi2: false, ..AcpiConfig::default() });
    let tables = parse(&no_pit);
    let madt = tables.find_table::<Madt>().unwrap();
    assert!(!madt.get().entries().any(|e| matches!(e, MadtEntry::InterruptSourceOverride(_))));
}

#[test]
fn apic_ids_from_255_get_x2apic_entries() {
    let blob = build(&AcpiConfig { vcpus: 300, ..AcpiConfig::default() });
    let tables = parse(&blob);
    let madt = tables.find_table::<Madt>().unwrap();
    let (mut xapic, mut x2apic, mut x2nmi) = (Vec::new(), Vec::new(), 0);
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(e) => xapic.push(u32::from(e.apic_id)),
            MadtEntry::LocalX2Apic(e) => {
                assert_eq!({ e.processor_uid }, { e.x2apic_id });
                assert_eq!({ e.flags }, 1);
                x2apic.push(e.x2apic_id);
            }
            MadtEntry::X2ApicNmi(e) => {
                x2nmi += 1;
                assert_eq!(({ e.processor_uid }, e.nmi_line), (u32::MAX, 1));
            }
            _ => {}
        }
    }
    assert_eq!(xapic, (0..255).collect::<Vec<_>>());
    assert_eq!(x2apic, (255..300).collect::<Vec<_>>());
    assert_eq!(x2nmi, 1);
}

#[test]
fn fadt_is_hardware_reduced_with_sleep_and_reset_registers() {
    let blob = build(&AcpiConfig::default());
    let tables = parse(&blob);
    let fadt = tables.find_table::<Fadt>().unwrap();
    {
        use acpi::AcpiTable;
        assert_eq!(fadt.header().revision, 6);
        assert_eq!({ fadt.header().length }, 276);
    }
    let flags = fadt.flags;
    assert!(flags.system_is_hw_reduced_acpi());
    assert!(flags.supports_system_reset_via_fadt());
    assert!(flags.power_button_is_control_method() && flags.sleep_button_is_control_method());
    assert!(flags.supports_equivalent_to_wbinvd());
    let reset = fadt.reset_register().unwrap();
    assert_eq!(reset.address_space, acpi::address::AddressSpace::SystemIo);
    assert_eq!((reset.bit_width, reset.bit_offset, reset.address), (8, 0, 0x604));
    assert_eq!(fadt.reset_value, 0x01);
    let slp_cnt = fadt.sleep_control_register().unwrap().unwrap();
    let slp_sts = fadt.sleep_status_register().unwrap().unwrap();
    assert_eq!(slp_cnt.address_space, acpi::address::AddressSpace::SystemIo);
    assert_eq!((slp_cnt.bit_width, slp_cnt.address), (8, 0x600));
    assert_eq!((slp_sts.bit_width, slp_sts.address), (8, 0x601));
    let boot = fadt.iapc_boot_arch;
    assert!(boot.legacy_devices_are_accessible());
    assert!(boot.motherboard_implements_8042());
    assert!(boot.dont_probe_vga());
    assert!(!boot.dont_enable_msi());
    assert!(!boot.dont_enable_pcie_aspm());
    // No FACS on reduced hardware, no PM blocks, no SCI.
    assert!(fadt.facs_address().is_err());
    assert_eq!({ fadt.sci_interrupt }, 0);
    assert_eq!({ fadt.smi_cmd_port }, 0);
    assert!(fadt.pm_timer_block().unwrap().is_none());
    assert!(fadt.gpe0_block().unwrap().is_none());
    assert!(fadt.pm1b_event_block().unwrap().is_none());
    // X_DSDT points at the DSDT.
    assert_eq!(fadt.dsdt_address().unwrap() as u64, blob.table(b"DSDT").unwrap().gpa.raw());
    let fadt_bytes = table_bytes(&blob, b"FACP");
    assert_eq!(&fadt_bytes[40..44], &[0; 4], "32-bit DSDT must be 0 when X_DSDT is set");
    assert_eq!(fadt_bytes[131], 5, "FADT minor version");

    let no_rtc_no_kbd = AcpiConfig {
        legacy: LegacyDevices { com1: false, ps2_keyboard: false, ps2_mouse: false, rtc: false },
        ..AcpiConfig::default()
    };
    let blob = build(&no_rtc_no_kbd);
    let tables = parse(&blob);
    let boot = tables.find_table::<Fadt>().unwrap().iapc_boot_arch;
    assert!(!boot.motherboard_implements_8042());
    let raw = u16::from_le_bytes(table_bytes(&blob, b"FACP")[109..111].try_into().unwrap());
    assert_ne!(raw & (1 << 5), 0, "CMOS RTC not present");
}

#[test]
fn mcfg_describes_the_ecam_window() {
    let blob = build(&AcpiConfig::default());
    let tables = parse(&blob);
    let mcfg = tables.find_table::<Mcfg>().unwrap();
    let entries = mcfg.entries();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        ({ e.base_address }, { e.pci_segment_group }, e.bus_number_start, e.bus_number_end),
        (0xe000_0000, 0, 0, 0)
    );
}

/// Decodes `Name (_S5_, Package (n) { ... })` the way the "scan the DSDT" trick and
/// ACPICA see it: NameOp, the name, PackageOp, PkgLength, NumElements, then integers.
fn s5_package(aml: &[u8]) -> Vec<u64> {
    let at = aml.windows(5).position(|w| w == b"\x08_S5_").expect("no _S5_");
    let mut p = &aml[at + 5..];
    assert_eq!(p[0], 0x12, "PackageOp");
    let extra = usize::from(p[1] >> 6);
    let count = p[2 + extra];
    p = &p[3 + extra..];
    let mut out = Vec::new();
    for _ in 0..count {
        let (value, used) = match p[0] {
            0x00 => (0, 1),
            0x01 => (1, 1),
            0x0a => (u64::from(p[1]), 2),
            0x0b => (u64::from(u16::from_le_bytes([p[1], p[2]])), 3),
            op => panic!("unexpected opcode {op:#x} in _S5_"),
        };
        out.push(value);
        p = &p[used..];
    }
    out
}

#[test]
fn dsdt_has_s5_and_the_devices_linux_enumerates() {
    let blob = build(&AcpiConfig::default());
    let tables = parse(&blob);
    let dsdt = tables.dsdt().unwrap();
    let dsdt_loc = blob.table(b"DSDT").unwrap();
    assert_eq!(dsdt.address as u64, dsdt_loc.gpa.raw() + 36);
    let bytes = table_bytes(&blob, b"DSDT");
    assert_eq!(bytes[8], 2, "DSDT revision 2: 64-bit integers");
    let aml = &bytes[36..];
    assert_eq!(aml.len(), dsdt.length as usize);

    assert_eq!(s5_package(aml), [5, 5, 0, 0]);
    // EISA IDs, compressed (ACPI 6.5 §19.6.35 EISAID): PNP0A08, PNP0A03, PNP0C02,
    // PNP0501, PNP0303, PNP0B00.
    let eisa = |id: &[u8; 7]| -> [u8; 4] {
        let c = |b: u8| u32::from(b - 0x40);
        let h = |b: u8| (b as char).to_digit(16).unwrap();
        let v = (c(id[0]) << 26)
            | (c(id[1]) << 21)
            | (c(id[2]) << 16)
            | (h(id[3]) << 12)
            | (h(id[4]) << 8)
            | (h(id[5]) << 4)
            | h(id[6]);
        v.swap_bytes().to_le_bytes()
    };
    for id in [b"PNP0A08", b"PNP0A03", b"PNP0C02", b"PNP0501", b"PNP0303", b"PNP0B00"] {
        let mut name_hid = vec![0x0c]; // DWordPrefix
        name_hid.extend_from_slice(&eisa(id));
        assert!(contains(aml, &name_hid), "{}", core::str::from_utf8(id).unwrap());
    }
    assert!(!contains(aml, &eisa(b"PNP0F13")), "no mouse by default");
    for name in [&b"_SB_"[..], b"PCI0", b"MRES", b"COM1", b"PS2K", b"RTC_", b"_SEG", b"_BBN", b"_UID", b"_CRS"] {
        assert!(contains(aml, name), "{}", core::str::from_utf8(name).unwrap());
    }
    assert!(!contains(aml, b"_PRT"));
    // Resource descriptors (ACPI 6.5 §6.4): I/O port 0x3F8 length 8 and Extended
    // Interrupt 4 (consumer, edge, active high) for COM1; keyboard ports and IRQ 1.
    assert!(contains(aml, &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]));
    assert!(contains(aml, &[0x89, 0x06, 0x00, 0x03, 0x01, 4, 0, 0, 0]));
    assert!(contains(aml, &[0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01]));
    assert!(contains(aml, &[0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01]));
    assert!(contains(aml, &[0x89, 0x06, 0x00, 0x03, 0x01, 1, 0, 0, 0]));
    // ECAM reserved as a motherboard resource: Memory32Fixed, read-write, 1 MiB.
    assert!(contains(aml, &[0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x10, 0x00]));
    // The power ports are reserved too.
    for port in [0x600u16, 0x601, 0x604] {
        let [lo, hi] = port.to_le_bytes();
        assert!(contains(aml, &[0x47, 0x01, lo, hi, lo, hi, 0x01, 0x01]), "{port:#x}");
    }
    // Host bridge _CRS: bus 0-0 (Word Address Space, type 2), config ports, the I/O
    // windows and the MMIO32 window (DWord Address Space, type 0).
    assert!(contains(aml, &[0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]));
    assert!(contains(aml, &[0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08]));
    assert!(contains(aml, &[0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0, 0, 0x00, 0x0d, 0xff, 0xff]));
    assert!(contains(aml, &[0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0xff, 0xff, 0xdf]));
}

#[test]
fn optional_dsdt_parts_follow_the_config() {
    let mut config = AcpiConfig::default();
    config.legacy.ps2_mouse = true;
    config.pci.mmio64 = Some(AcpiWindow::new(0x80_0000_0000, 0x8f_ffff_ffff));
    config.pci.intx = vec![PciIntx { device: 3, pin: 0, gsi: 16 }, PciIntx { device: 4, pin: 1, gsi: 17 }];
    let blob = build(&config);
    let aml = &table_bytes(&blob, b"DSDT")[36..];
    assert!(contains(aml, b"PS2M"));
    assert!(contains(aml, &[0x89, 0x06, 0x00, 0x03, 0x01, 12, 0, 0, 0]));
    assert!(contains(aml, b"_PRT"));
    // Package { 0x0003FFFF, 0, 0, 16 } and { 0x0004FFFF, 1, 0, 17 }.
    assert!(contains(aml, &[0x04, 0x0c, 0xff, 0xff, 0x03, 0x00, 0x00, 0x00, 0x0a, 0x10]));
    assert!(contains(aml, &[0x04, 0x0c, 0xff, 0xff, 0x04, 0x00, 0x01, 0x00, 0x0a, 0x11]));
    // QWord Address Space, memory, min 0x80_0000_0000.
    assert!(contains(aml, &[0x8a, 0x2b, 0x00, 0x00]));
    assert!(contains(aml, &0x80_0000_0000u64.to_le_bytes()));
    // Still parses and checksums.
    parse(&blob).dsdt().unwrap();
}

#[test]
fn building_is_deterministic() {
    let config = AcpiConfig { vcpus: 8, ..AcpiConfig::default() };
    assert_eq!(build(&config), build(&config));
}

#[test]
fn invalid_configs_are_rejected() {
    let base = GuestPhysAddr::new(BASE);
    let bad = |f: &dyn Fn(&mut AcpiConfig)| {
        let mut c = AcpiConfig::default();
        f(&mut c);
        build_acpi_tables(&c, base).unwrap_err()
    };
    assert_eq!(bad(&|c| c.vcpus = 0), GuestAcpiError::VcpuCount(0));
    assert_eq!(bad(&|c| c.vcpus = MAX_VCPUS + 1), GuestAcpiError::VcpuCount(MAX_VCPUS + 1));
    assert_eq!(bad(&|c| c.pci.ecam_base = 0xe000_1000), GuestAcpiError::BadEcam(0xe000_1000));
    assert_eq!(bad(&|c| c.pci.buses = AcpiWindow::new(3, 2)), GuestAcpiError::BadEcam(0xe000_0000));
    assert_eq!(bad(&|c| c.pci.ecam_base = 0xffff_f000_0000), GuestAcpiError::BadEcam(0xffff_f000_0000));
    assert_eq!(bad(&|c| c.pci.io = vec![AcpiWindow::new(0, 0xffff)]), GuestAcpiError::BadWindow("PCI I/O"));
    assert_eq!(bad(&|c| c.pci.io.clear()), GuestAcpiError::BadWindow("PCI I/O"));
    assert_eq!(
        bad(&|c| c.pci.mmio32 = AcpiWindow::new(0xd000_0000, 0xc000_0000)),
        GuestAcpiError::BadWindow("PCI MMIO32")
    );
    assert_eq!(bad(&|c| c.pci.mmio64 = Some(AcpiWindow::new(0, u64::MAX))), GuestAcpiError::BadWindow("PCI MMIO64"));
    assert_eq!(bad(&|c| c.pci.mmio32 = AcpiWindow::new(0xc000_0000, 0xe000_0000)), GuestAcpiError::Overlap("ECAM"));
    assert_eq!(bad(&|c| c.pci.mmio32 = AcpiWindow::new(0xfe00_0000, 0xfeff_ffff)), GuestAcpiError::Overlap("I/O APIC"));
    assert_eq!(bad(&|c| c.power.reset = 0), GuestAcpiError::BadPort("reset"));
    assert_eq!(bad(&|c| c.pci.intx = vec![PciIntx { device: 32, pin: 0, gsi: 16 }]), GuestAcpiError::BadIntx);
    assert_eq!(bad(&|c| c.pci.intx = vec![PciIntx { device: 1, pin: 4, gsi: 16 }]), GuestAcpiError::BadIntx);
    let default = AcpiConfig::default();
    assert_eq!(build_acpi_tables(&default, GuestPhysAddr::new(BASE + 8)), Err(GuestAcpiError::BadBase(BASE + 8)));
    assert_eq!(
        build_acpi_tables(&default, GuestPhysAddr::new(u64::MAX - 15)),
        Err(GuestAcpiError::BadBase(u64::MAX - 15))
    );
}

#[test]
fn tables_can_go_anywhere_aligned() {
    for base in [0x1000u64, 0x9_f000, 0x7fff_0000, 0x1_0000_0000] {
        let blob = build_acpi_tables(&AcpiConfig::default(), GuestPhysAddr::new(base)).unwrap();
        let tables = parse(&blob);
        assert_eq!(tables.find_table::<Mcfg>().unwrap().entries().len(), 1);
        assert_eq!(tables.dsdt().unwrap().address as u64, blob.table(b"DSDT").unwrap().gpa.raw() + 36);
    }
}
