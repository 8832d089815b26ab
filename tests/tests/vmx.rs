//! The self-test payload batch on Intel VMX, under Bochs (QEMU's TCG has no VMX): the
//! same four VMs as `vms.rs` runs under SVM. One VM runs every in-guest check, one
//! triple-faults and is restarted once by policy, one attacks memory outside its VM and
//! must be stopped by an EPT violation, and a Multiboot kernel starts in 32-bit
//! protected mode without paging (unrestricted guest) and checks its state. The verdict
//! (`SELFTEST PASS`) also requires the hypervisor's own memory to be unchanged. Bochs
//! has no isa-debug-exit, so everything is judged from the serial log.
//!
//! Slow: OVMF alone takes about 20 s under Bochs; the whole run takes a few minutes.

use std::time::Duration;

use tests::selftest::four_vms;
use tests::{Bochs, image};

#[test]
fn vmx_selftest_batch_passes_under_bochs() {
    let img = image::build_payload_image("vmx-selftest", "selftest", &four_vms());
    let mut m = Bochs::boot("vmx-selftest", &img, 512);
    m.expect("BULKHEAD READY", Duration::from_secs(600));
    let ready = m.elapsed();
    m.expect("VMX enabled", Duration::from_secs(120));
    m.expect("SELFTEST ", Duration::from_secs(1200));
    let serial = m.serial();
    eprintln!("Bochs: BULKHEAD READY after {ready:?}, verdict after {:?}", m.elapsed());
    let failed: Vec<&str> = serial.lines().filter(|l| l.contains("CHECK ") && l.contains(" FAIL")).collect();
    assert!(failed.is_empty(), "in-guest checks failed:\n{}", failed.join("\n"));
    for check in
        ["cpuid_signature", "msr_denied_read_gp", "mmio_rep_movs", "interrupt_injection", "hlt_wakes_on_interrupt"]
    {
        if !serial.contains(&format!("CHECK {check} PASS")) {
            m.fail(&format!("check {check} did not pass"));
        }
    }
    for (needle, why) in [
        ("(crasher) stopped: TripleFault", "the crashing VM was not stopped for its triple fault"),
        ("(crasher) restarted (start 2)", "the crashing VM was not restarted"),
        ("(attacker) stopped: NestedPageFault", "the attack was not stopped by an EPT violation"),
        ("(checks) stopped: BadHypercall", "a bad hypercall argument did not stop the VM"),
        ("(checks) exit counters: ", "VM_INFO (a VMMCALL, #UD on Intel) did not print the exit counters"),
        ("CHECK multiboot_cr0_protected_no_paging PASS", "the Multiboot kernel did not start unpaged"),
        ("(multiboot) stopped: GuestShutdown", "the Multiboot kernel did not finish"),
        ("SELFTEST PASS", "the hypervisor's verdict was not a pass"),
    ] {
        if !serial.contains(needle) {
            m.fail(why);
        }
    }
    if serial.contains("ATTACK SUCCEEDED") {
        m.fail("the attacker reached memory outside its VM");
    }
    m.pass();
}

/// One unmodified Debian Linux desktop on the VMX backend, booted to its init's ready
/// marker. Slow under Bochs (minutes), so not part of the default run; `.ci/run` runs it:
/// `cargo test -p tests --test vmx -- --ignored`.
#[test]
#[ignore = "a Linux boot under Bochs takes minutes"]
fn vmx_linux_desktop_boots_under_bochs() {
    const DESKTOP: &[images::desktops::Desktop] =
        &[images::desktops::Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 }];
    let guest = image::linux_guest();
    let policy = images::desktops::desktops_policy(DESKTOP);
    let img = image::build_linux_image("vmx-linux", "", guest, &policy);
    let mut m = Bochs::boot("vmx-linux", &img, 1024);
    m.expect("BULKHEAD READY", Duration::from_secs(600));
    m.expect("VMX enabled", Duration::from_secs(120));
    m.expect("BULKHEAD-GUEST-READY", Duration::from_secs(1500));
    eprintln!("Bochs: Linux desktop ready after {:?}", m.elapsed());
    m.pass();
}
