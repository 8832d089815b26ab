//! DMA isolation under a real IOMMU: a payload VM owns QEMU's `edu` device (behind a
//! PCIe root port, so it can be reset by a secondary bus reset), finds it on its virtual
//! PCI bus, proves DMA inside its own memory works through its IOMMU domain, then aims
//! the device's DMA engine at the hypervisor image and at addresses above its RAM.
//! The IOMMU must block every transfer; a logged fault stops the VM (VT-d), and the
//! self-test verdict checks that the other VM's memory and the hypervisor are unchanged.

use std::sync::Mutex;
use std::time::Duration;

use images::qemu::Iommu;
use tests::{Machine, Outcome, image};

/// One QEMU at a time (the machines are slow and the cores shared).
static SERIAL: Mutex<()> = Mutex::new(());

const EDU: [&str; 4] =
    ["-device", "pcie-root-port,id=rp1,chassis=1,slot=1", "-device", "edu,bus=rp1,dma_mask=0xffffffffffffffff"];

fn run(scenario: &str, iommu: Iommu, extra: &[&str], attacker_expect: &str) -> String {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let vms = format!(
        "vm checks image=checks memory=16M expect=bad-hypercall\n\
         vm dma image=dma-attack memory=16M devices=1234:11e8 expect={attacker_expect}\n"
    );
    let img = image::build_payload_image(scenario, "selftest", &vms);
    let mut m = Machine::boot(scenario, &img, |c| {
        c.memory_mib = 512;
        c.cpus = 1;
        c.iommu = iommu;
        c.extra_args = extra.iter().chain(EDU.iter()).map(|s| s.to_string()).collect();
    });
    m.expect("DMA remapping on", Duration::from_secs(120));
    m.expect("BULKHEAD READY", Duration::from_secs(60));
    m.expect("before assignment to VM dma", Duration::from_secs(60));
    let outcome = m.wait_exit(Duration::from_secs(300));
    let serial = m.serial();
    let failed: Vec<&str> = serial.lines().filter(|l| l.contains("CHECK ") && l.contains(" FAIL")).collect();
    assert!(failed.is_empty(), "in-guest checks failed:\n{}", failed.join("\n"));
    for check in ["dma_device_on_virtual_bus", "dma_bar_preassigned", "dma_device_ident", "dma_device_mmio"] {
        assert!(serial.contains(&format!("CHECK {check} PASS")), "check {check} did not pass");
    }
    assert!(!serial.contains("DMA ATTACK SUCCEEDED"), "device DMA reached memory outside the VM");
    if outcome != Outcome::Exited(images::qemu::EXIT_SUCCESS) {
        m.fail(&format!("the hypervisor's self-test verdict was {outcome:?}"));
    }
    assert!(serial.contains("SELFTEST PASS"));
    m.pass();
    serial
}

#[test]
fn vt_d_blocks_device_dma_outside_the_vm_and_the_fault_stops_it() {
    let serial = run("dma-vtd", Iommu::Intel, &[], "dma-fault");
    assert!(serial.contains("DMA inside own memory works"), "DMA inside the VM's own memory failed");
    assert!(serial.contains("faulted"), "no IOMMU fault was logged");
    assert!(serial.contains("(dma) stopped: DmaFault"), "the DMA fault did not stop the VM");
    assert!(serial.contains("taken back from VM dma"), "the device was not reset after the VM stopped");
}

#[test]
fn amd_vi_blocks_device_dma_outside_the_vm() {
    // QEMU 7.2's AMD-Vi aborts a walk that meets an all-zero entry without logging an
    // event, so the VM is not stopped: the payload sees every transfer go nowhere and
    // shuts down; the verdict still checks that no memory outside it changed.
    // Under it even DMA inside the VM fails (silently) although the device table entry
    // of 01:00.0 points at the VM's domain: most likely QEMU 7.2 keys the translation
    // by the bus number the device had when it was created (0 behind a bridge before
    // firmware numbers the bus), which would look edu up as 00:00.0 (blocked).
    let serial = run("dma-amdvi", Iommu::None, &["-device", "amd-iommu,intremap=on"], "shutdown");
    assert!(serial.contains("DMA inside own memory is blocked"), "QEMU 7.2's AMD-Vi device-id quirk changed");
    assert!(serial.contains("every transfer outside this VM was blocked"), "the payload did not finish");
    assert!(serial.contains("taken back from VM dma"), "the device was not reset after the VM stopped");
}

#[test]
fn without_an_iommu_a_vm_with_devices_is_refused_before_any_vm_starts() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let vms = "vm checks image=checks memory=16M expect=bad-hypercall\n\
               vm dma image=dma-attack memory=16M devices=1234:11e8\n";
    let img = image::build_payload_image("dma-no-iommu", "selftest", vms);
    let mut m = Machine::boot("dma-no-iommu", &img, |c| {
        c.memory_mib = 512;
        c.cpus = 1;
        c.iommu = Iommu::None;
        c.extra_args = EDU.iter().map(|s| s.to_string()).collect();
    });
    let line = m.expect("no VM started", Duration::from_secs(120));
    assert!(line.contains("VM dma: devices= needs an IOMMU"), "{line}");
    assert_eq!(m.wait_exit(Duration::from_secs(60)), Outcome::Exited(images::qemu::EXIT_FAILURE));
    let serial = m.serial();
    assert!(!serial.contains("created:"), "a VM was created although the launch was refused");
    assert!(!serial.contains("[checks]"), "a VM ran although the launch was refused");
    m.pass();
}
