//! Four VMs at once under the real hypervisor, on three application processors: one
//! runs every in-guest check, one triple-faults (and is restarted once by policy), one
//! attacks memory outside its VM, and a Multiboot kernel checks the state the
//! Multiboot loader gave it.
//! The hypervisor's verdict (exit status 33) requires every check to pass, each VM to end
//! exactly as configured, and the memory of the other VMs and of the hypervisor to be
//! unchanged. A configuration the hypervisor refuses starts no VM and says why, in the
//! log and on the safe-mode screen.

use std::time::Duration;

use bulkhead_policy::model::Policy;
use images::policy::fleet::{self, payload};
use tests::selftest::four_vms;
use tests::{Machine, Outcome, image};

/// What the Multiboot kernel (tests/payloads/src/bin/multiboot.rs) checks from inside.
const MULTIBOOT_CHECKS: [&str; 13] = [
    "multiboot_eax_magic",
    "multiboot_cr0_protected_no_paging",
    "multiboot_eflags_if_vm_clear",
    "multiboot_cs_flat",
    "multiboot_data_segments_flat",
    "multiboot_info_flags",
    "multiboot_mem_lower",
    "multiboot_mem_upper_matches_vm",
    "multiboot_mmap_covers_memory",
    "multiboot_cmdline",
    "multiboot_module_count",
    "multiboot_module_policy",
    "multiboot_module_checks",
];

#[test]
fn four_vms_checks_pass_crash_is_contained_attack_is_stopped_and_multiboot_boots() {
    let img = image::build_payload_image("vms-selftest", "selftest", &four_vms());
    let mut m = Machine::boot("vms-selftest", &img, |c| {
        c.memory_mib = 512;
        c.cpus = 4;
        c.extra_args.extend(["-accel".to_string(), "tcg,thread=multi".to_string()]);
    });
    m.expect("BULKHEAD READY", Duration::from_secs(120));
    m.expect("SVM enabled", Duration::from_secs(30));
    let outcome = m.wait_exit(Duration::from_secs(300));
    let serial = m.serial();
    let failed: Vec<&str> = serial.lines().filter(|l| l.contains("CHECK ") && l.contains(" FAIL")).collect();
    assert!(failed.is_empty(), "in-guest checks failed:\n{}", failed.join("\n"));
    for check in
        ["cpuid_signature", "msr_denied_read_gp", "mmio_rep_movs", "interrupt_injection", "hlt_wakes_on_interrupt"]
    {
        assert!(serial.contains(&format!("CHECK {check} PASS")), "check {check} did not pass");
    }
    for check in MULTIBOOT_CHECKS {
        assert!(serial.contains(&format!("CHECK {check} PASS")), "Multiboot check {check} did not pass");
    }
    assert!(serial.contains("(multiboot) stopped: GuestShutdown"), "the Multiboot kernel did not finish");
    assert!(serial.contains("(crasher) stopped: TripleFault"), "the crashing VM was not stopped for its triple fault");
    assert!(serial.contains("(crasher) restarted (start 2)"), "the crashing VM was not restarted");
    assert!(serial.contains("(attacker) stopped: NestedPageFault"), "the attack was not stopped by nested paging");
    assert!(!serial.contains("ATTACK SUCCEEDED"), "the attacker reached memory outside its VM");
    assert!(serial.contains("(checks) stopped: BadHypercall"), "a bad hypercall argument did not stop the VM");
    assert!(serial.contains("(checks) exit counters: "), "VM_INFO did not print the exit counters");
    if outcome != Outcome::Exited(images::qemu::EXIT_SUCCESS) {
        m.fail(&format!("the hypervisor's self-test verdict was {outcome:?}"));
    }
    assert!(serial.contains("SELFTEST PASS"));
    // The four VMs ran on the three application processors, pinned round robin.
    let cpus: std::collections::BTreeSet<&str> = serial
        .lines()
        .filter(|l| l.contains("sched] vm "))
        .filter_map(|l| l.split("vCPU 0 on ").nth(1))
        .map(|cpu| cpu.trim())
        .collect();
    assert_eq!(cpus.into_iter().collect::<Vec<_>>(), ["cpu1", "cpu2", "cpu3"], "the VMs' placement");
    m.pass();
}

/// A signed policy whose key map binds a key every guest needs: built directly (the
/// host compiler would refuse it), so the hypervisor's own check refuses it before any
/// VM exists.
fn bad_key_map() -> Policy {
    fleet::with_hotkeys(fleet::demo_policy(vec![payload("checks", "checks", 16)]), &[("next", "Shift+Tab")])
}

#[test]
fn a_refused_configuration_starts_no_vm_and_shows_the_reason() {
    let img = image::build_payload_image("vms-bad-config", "", &bad_key_map());
    let mut m = Machine::boot("vms-bad-config", &img, |c| {
        c.memory_mib = 512;
        c.cpus = 1;
    });
    m.connect_qmp();
    let line = m.expect("no VM started", Duration::from_secs(120));
    assert!(
        line.contains(
            "no VM started: the policy is refused: hotkey next: Shift+Tab needs Ctrl, Alt or Meta, or guests could \
             not type that key"
        ),
        "{line}"
    );
    // The screen is drawn before the line is logged; QEMU's display may lag a moment.
    let mut shown = false;
    for _ in 0..10 {
        let shot = m.screendump("safe-mode");
        if shot.is(shot.width / 2, 4, ui::safe_mode::SAFE_MODE_HEADER) {
            shown = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(shown, "no safe-mode header on the screen");
    assert!(!m.serial().contains("created:"), "a VM was created although the configuration was refused");
    m.pass();
}
