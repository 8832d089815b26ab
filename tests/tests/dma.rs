//! DMA isolation under a real IOMMU: a payload VM owns QEMU's `edu` device (behind a
//! PCIe root port, so it can be reset by a secondary bus reset) and an `e1000e` NIC on
//! QEMU's user network (on the root bus; PM reset), finds them on its virtual PCI bus,
//! proves DMA inside its own memory works through its IOMMU domain (the NIC sends a
//! frame), then aims the NIC's receive and transmit descriptors, and the edu DMA
//! engine, at the hypervisor image and at addresses above its RAM.
//! The IOMMU must block every transfer; a logged fault stops the VM (VT-d), and the
//! self-test verdict checks that the other VM's memory and the hypervisor are unchanged.
//! Before the attack the payload enables the device's MSI on its virtual capability
//! and checks that each interrupt the device raises reaches it on its own vector,
//! through interrupt remapping, at the cost of one exit.

use bulkhead_policy::model::Vm;
use images::policy::fleet::{self, payload};
use std::sync::Mutex;
use std::time::Duration;

use images::qemu::Iommu;
use tests::{Machine, Outcome, image};

/// One QEMU at a time (the machines are slow and the cores shared).
static SERIAL: Mutex<()> = Mutex::new(());

const DEVICES: [&str; 8] = [
    "-device",
    "pcie-root-port,id=rp1,chassis=1,slot=1",
    "-device",
    "edu,bus=rp1,dma_mask=0xffffffffffffffff",
    "-netdev",
    "user,id=n0",
    "-device",
    "e1000e,netdev=n0,bus=pcie.0,addr=0x5,romfile=",
];

/// The NIC checks the payload runs before the attack.
const NIC_CHECKS: [&str; 3] = ["nic_on_virtual_bus", "nic_link_up", "nic_dma_inside_own_memory"];

/// MSI checks the payload runs before the attack.
const MSI_CHECKS: [&str; 6] = [
    "msi_capability",
    "msi_delivered_on_guest_vector",
    "msi_each_interrupt_once",
    "msi_vector_change",
    "msi_disabled_is_silent",
    "msi_reenabled",
];
/// Interrupts the payload raises between its two exit-counter snapshots.
const MSI_ROUNDS: u64 = 8;

/// (exits, of which host-interrupt exits) of VM `dma` between its two VM_INFO
/// snapshots, from the "(dma) exit counters: N exits ... intr=K" lines.
fn exits_around_msi_rounds(serial: &str) -> Option<(u64, u64)> {
    let snapshots: Vec<(u64, u64)> = serial
        .lines()
        .filter_map(|l| l.split_once("(dma) exit counters: ").map(|(_, c)| c))
        .map(|c| {
            let total = c.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let intr = c.split_whitespace().find_map(|w| w.strip_prefix("intr=")).and_then(|n| n.parse().ok());
            (total, intr.unwrap_or(0))
        })
        .collect();
    let [(t0, i0), (t1, i1)] = snapshots.as_slice() else { return None };
    Some((t1 - t0, i1 - i0))
}

/// The payload's MSI checks passed through `iommu`'s interrupt remapping, at one
/// exit per interrupt, and the route was removed when the VM was torn down.
fn assert_msi_routed(serial: &str, iommu: &str) {
    for check in MSI_CHECKS {
        assert!(serial.contains(&format!("CHECK {check} PASS")), "MSI check {check} did not pass");
    }
    assert!(serial.contains(&format!("-> guest vector 0x51 (remapped by {iommu})")), "MSI not remapped by {iommu}");
    assert!(serial.contains("VM dma: 1 device interrupt route(s) removed"), "the VM's MSI route was not torn down");
    // One exit per interrupt: the host interrupt that ends the guest's run. The rest
    // of the window is the closing VM_INFO hypercall and, at most, a timer slice end.
    let (exits, intr) = exits_around_msi_rounds(serial).expect("two exit-counter snapshots of VM dma");
    eprintln!("{iommu}: {MSI_ROUNDS} MSIs cost {exits} exits, {intr} of them host interrupts");
    assert_eq!(exits - intr, 1, "exits other than host interrupts around the MSI rounds");
    assert!((MSI_ROUNDS..=MSI_ROUNDS + 2).contains(&intr), "{intr} host-interrupt exits for {MSI_ROUNDS} MSIs");
}

/// The Ethernet frames of a pcap file (`filter-dump`: the classic format, a 24-byte
/// header, then a 16-byte header per record).
fn pcap_frames(pcap: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut at = 24;
    while let Some(header) = pcap.get(at..at + 16) {
        let len = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
        let Some(frame) = pcap.get(at + 16..at + 16 + len) else { break };
        frames.push(frame);
        at += 16 + len;
    }
    frames
}

/// QEMU's default MAC for the first NIC, and its user network's gateway.
const NIC_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

/// Everything the NIC put on the wire: the payload's ARP requests (built in its own
/// memory), and frames the attack's transmit descriptors pointed outside the VM,
/// which must carry nothing (the IOMMU blocked the reads: QEMU sends zeros). Returns
/// (ARP requests, blocked frames).
fn nothing_leaked(pcap: &std::path::Path) -> (usize, usize) {
    let bytes = std::fs::read(pcap).unwrap_or_else(|e| panic!("reading {}: {e}", pcap.display()));
    let (mut arp, mut empty) = (0, 0);
    for frame in pcap_frames(&bytes) {
        let source = frame.get(6..12).unwrap_or_default();
        if source == GATEWAY_MAC {
            continue;
        }
        if source == NIC_MAC && frame.get(12..14) == Some(&[0x08, 0x06][..]) {
            arp += 1;
        } else if frame.iter().all(|b| *b == 0) {
            empty += 1;
        } else {
            panic!("the NIC sent a {}-byte frame with data from outside its VM: {:02x?}", frame.len(), &frame[..32]);
        }
    }
    (arp, empty)
}

fn run(scenario: &str, iommu: Iommu, extra: &[&str], attacker_expect: &str) -> String {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let vms = vec![
        Vm { expect: Some("bad-hypercall".into()), ..payload("checks", "checks", 16) },
        Vm {
            devices: vec!["1234:11e8".into(), "8086:10d3".into()],
            expect: Some(attacker_expect.into()),
            ..payload("dma", "dma-attack", 16)
        },
    ];
    let img = image::build_payload_image(scenario, "selftest", &fleet::demo_policy(vms));
    let pcap = std::env::temp_dir().join(format!("bulkhead-{scenario}.pcap"));
    let _ = std::fs::remove_file(&pcap);
    let mut m = Machine::boot(scenario, &img, |c| {
        c.memory_mib = 512;
        c.cpus = 1;
        c.iommu = iommu;
        c.extra_args = extra.iter().chain(DEVICES.iter()).map(|s| s.to_string()).collect();
        c.extra_args.extend(["-object".into(), format!("filter-dump,id=dump,netdev=n0,file={}", pcap.display())]);
    });
    m.expect("DMA remapping on", Duration::from_secs(120));
    m.expect("BULKHEAD READY", Duration::from_secs(60));
    m.expect("before assignment to VM dma", Duration::from_secs(60));
    let outcome = m.wait_exit(Duration::from_secs(300));
    let serial = m.serial();
    let failed: Vec<&str> = serial.lines().filter(|l| l.contains("CHECK ") && l.contains(" FAIL")).collect();
    assert!(failed.is_empty(), "in-guest checks failed:\n{}", failed.join("\n"));
    for check in ["dma_device_on_virtual_bus", "dma_bar_preassigned", "dma_device_ident", "dma_device_mmio"]
        .into_iter()
        .chain(NIC_CHECKS)
    {
        assert!(serial.contains(&format!("CHECK {check} PASS")), "check {check} did not pass");
    }
    assert!(!serial.contains("DMA ATTACK SUCCEEDED"), "device DMA reached memory outside the VM");
    if outcome != Outcome::Exited(images::qemu::EXIT_SUCCESS) {
        m.fail(&format!("the hypervisor's self-test verdict was {outcome:?}"));
    }
    assert!(serial.contains("SELFTEST PASS"));
    let (arp, blocked) = nothing_leaked(&pcap);
    eprintln!("{scenario}: the NIC sent {arp} ARP requests and {blocked} empty frames from blocked reads");
    assert_eq!(arp, 2, "the payload's ARP requests (one legitimate, one to draw a reply) are missing");
    m.pass();
    serial
}

#[test]
fn vt_d_blocks_device_dma_outside_the_vm_and_the_fault_stops_it() {
    let serial = run("dma-vtd", Iommu::Intel, &[], "dma-fault");
    assert!(serial.contains("DMA inside own memory works"), "DMA inside the VM's own memory failed");
    assert_msi_routed(&serial, "VT-d");
    // The first blocked transfer is the NIC writing the gateway's ARP reply where its
    // receive descriptor points: the hypervisor image (bus address 0x4000000).
    assert!(serial.contains("NIC receive descriptors aimed at 0x4000000"), "the NIC attack did not run");
    assert!(serial.contains("00:05.0 DMA write at 0x4000000"), "the NIC's write into the hypervisor was not logged");
    assert!(serial.contains("its device 00:05.0 faulted"), "the NIC's fault did not stop its VM");
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
    // Its interrupt remapping looks the device up by the requester id the MSI carries
    // (01:00.0), so the device's MSI is remapped and delivered.
    assert_msi_routed(&serial, "AMD-Vi");
    assert!(serial.contains("every transfer outside this VM was blocked"), "the payload did not finish");
    assert!(serial.contains("taken back from VM dma"), "the device was not reset after the VM stopped");
}

#[test]
fn without_an_iommu_a_vm_with_devices_is_refused_before_any_vm_starts() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let vms = vec![
        Vm { expect: Some("bad-hypercall".into()), ..payload("checks", "checks", 16) },
        Vm { devices: vec!["1234:11e8".into()], ..payload("dma", "dma-attack", 16) },
    ];
    let img = image::build_payload_image("dma-no-iommu", "selftest", &fleet::demo_policy(vms));
    let mut m = Machine::boot("dma-no-iommu", &img, |c| {
        c.memory_mib = 512;
        c.cpus = 1;
        c.iommu = Iommu::None;
        c.extra_args = DEVICES.iter().map(|s| s.to_string()).collect();
    });
    let line = m.expect("no VM started", Duration::from_secs(120));
    assert!(line.contains("VM dma: devices= needs an IOMMU"), "{line}");
    assert_eq!(m.wait_exit(Duration::from_secs(60)), Outcome::Exited(images::qemu::EXIT_FAILURE));
    let serial = m.serial();
    assert!(!serial.contains("created:"), "a VM was created although the launch was refused");
    assert!(!serial.contains("[checks]"), "a VM ran although the launch was refused");
    m.pass();
}
