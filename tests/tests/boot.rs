//! The real USB image boots under QEMU (TCG with SVM+NPT, q35, OVMF) across the machine
//! shapes a laptop fleet has: plain disk and USB stick on xHCI, 512 MiB and 4 GiB, one
//! and four CPUs, no IOMMU, Intel VT-d and AMD-Vi. Each scenario boots once and checks
//! everything it can on that boot.

use std::time::Duration;

use images::qemu::{BootMedium, Iommu};
use tests::{Machine, Outcome, image};

/// OVMF plus the loader under TCG take a few seconds; generous for loaded CI machines.
const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(30);

#[test]
fn boots_from_a_disk_with_512_mib_one_cpu_and_no_iommu() {
    let img = image::build_scenario_image("boot-disk-512m", "then=run");
    let mut m = Machine::boot("boot-disk-512m", &img, |c| {
        c.memory_mib = 512;
        c.cpus = 1;
        c.iommu = Iommu::None;
        c.medium = BootMedium::Disk;
    });
    m.expect("Bulkhead loader", BOOT);
    m.expect("Bulkhead 0.1.0 starting", STEP);
    m.expect("breakpoint at", STEP);
    let memory = m.expect("MiB RAM", STEP);
    let mib: u64 = memory.split("] ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!((480..=512).contains(&mib), "512 MiB machine reported {mib} MiB: {memory}");
    assert!(memory.contains("W^X"), "{memory}");
    m.expect("virtualisation: AMD SVM with nested paging", STEP);
    m.expect("nrip_save=false", STEP);
    m.expect("timer interrupt works", STEP);
    m.expect("IOMMU: no IOMMU table (passthrough disabled)", STEP);
    let pci = m.expect("PCI functions", STEP);
    assert!(!pci.contains("] 0 PCI"), "QEMU's q35 has PCI devices: {pci}");
    m.expect("boot screen drawn", STEP);
    m.expect("BULKHEAD READY", STEP);
    check_boot_screen(&m.screendump("boot-screen"));
    m.pass();
}

/// The boot screen as a person sees it: the product's background in every corner, the
/// solid accent header, and light text in the hardware summary.
fn check_boot_screen(shot: &tests::screen::Screenshot) {
    use embedded_graphics::prelude::Size;
    use ui::boot_screen::{BOOT_ACCENT, BOOT_BACKGROUND, BOOT_TEXT, header_rect, text_rect};
    assert_eq!((shot.width, shot.height), (1280, 800), "the manifest asked for 1280x800");
    let size = Size::new(shot.width, shot.height);
    for (x, y) in [(0, 0), (shot.width - 1, 0), (0, shot.height - 1), (shot.width - 1, shot.height - 1)] {
        assert!(shot.is(x, y, BOOT_BACKGROUND), "corner ({x},{y}) is {:?}", shot.pixel(x, y));
    }
    let header = header_rect(size);
    let area = (header.size.width * header.size.height) as usize;
    let accent = shot.count_in(header, BOOT_ACCENT);
    assert!(accent * 10 >= area * 9, "header is {accent}/{area} accent pixels");
    let text = shot.count_in(text_rect(size), BOOT_TEXT);
    assert!(text > 500, "only {text} text pixels in the hardware summary");
}

#[test]
fn boots_from_a_usb_stick_on_xhci_with_4_gib_four_cpus_and_vt_d_then_resets() {
    let img = image::build_scenario_image("boot-usb-4g-vtd", "then=reset");
    let mut m = Machine::boot("boot-usb-4g-vtd", &img, |c| {
        c.memory_mib = 4096;
        c.cpus = 4;
        c.iommu = Iommu::Intel;
        c.medium = BootMedium::UsbStick;
    });
    m.connect_qmp();
    m.expect("Bulkhead loader", BOOT);
    let memory = m.expect("MiB RAM", STEP);
    let mib: u64 = memory.split("] ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!((3900..=4096).contains(&mib), "4 GiB machine reported {mib} MiB: {memory}");
    let cpus = m.expect("CPUs: ", STEP);
    assert!(cpus.contains("CPUs: 4 (4 enabled"), "{cpus}");
    m.expect("ECAM: segment 0", STEP);
    m.expect("IOMMU: DMAR (VT-d) with 1 units", STEP);
    // The boot report lists every function with its assignability.
    m.expect("passthrough: 0 of 6 functions assignable", STEP);
    m.expect("USB controller (xHCI): group", STEP);
    m.expect("DMA remapping on", STEP);
    m.expect("BULKHEAD READY", STEP);
    // -no-reboot turns the reset into an exit; QMP says which it was.
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0));
    assert_eq!(m.shutdown_reasons(), vec!["guest_reset".to_string()]);
    m.pass();
}

/// A CPU without SVM (or with it disabled by firmware) is reported, not a crash; the
/// machine still powers off cleanly through ACPI.
#[test]
fn boots_with_amd_vi_and_no_svm_then_powers_off() {
    let img = image::build_scenario_image("boot-amdvi-nosvm", "then=shutdown");
    let mut m = Machine::boot("boot-amdvi-nosvm", &img, |c| {
        c.memory_mib = 1024;
        c.cpus = 2;
        c.iommu = Iommu::Amd;
        c.cpu_model = "max,-svm".into();
    });
    m.connect_qmp();
    m.expect("Bulkhead loader", BOOT);
    m.expect("virtualisation: none (no SVM or VMX)", STEP);
    m.expect("IOMMU: IVRS (AMD-Vi) with 1 IVHDs", STEP);
    m.expect("passthrough: ", STEP);
    m.expect("AMD-Vi unit 0 enabled", STEP);
    m.expect("DMA remapping on", STEP);
    m.expect("no SVM or VMX", STEP);
    m.expect("BULKHEAD READY", STEP);
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(0));
    assert_eq!(m.shutdown_reasons(), vec!["guest_shutdown".to_string()]);
    m.pass();
}

#[test]
fn corrupt_hypervisor_elf_gives_a_clear_loader_error() {
    let img = image::build_scenario_image("boot-corrupt-elf", "then=exit");
    // Keep the ELF header intact but cut the file short, the way a failed copy does.
    let elf = image::read(&img, images::layout::ESP_HYPERVISOR);
    image::overwrite(&img, images::layout::ESP_HYPERVISOR, &elf[..elf.len() / 3]);
    let mut m = Machine::boot("boot-corrupt-elf", &img, |c| c.memory_mib = 512);
    m.allow("BULKHEAD LOADER ERROR");
    let line = m.expect("BULKHEAD LOADER ERROR", BOOT);
    assert!(line.contains("hypervisor.elf is corrupt"), "{line}");
    assert!(line.contains("damaged or truncated copy"), "the message should say why: {line}");
    m.expect("Rebuild it with `cargo xtask image`", STEP);
    let serial = m.serial();
    assert!(!serial.contains("Bulkhead 0.1.0 starting"), "the hypervisor must not have been entered");
    m.pass();
}
