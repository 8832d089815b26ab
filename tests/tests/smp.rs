//! Four emulated CPUs under multi-threaded TCG: the hypervisor starts the three
//! application processors the MADT lists, each sets itself up (GDT, TSS, LAPIC timer,
//! SVM) and, asked through its mailbox, runs a work item that reports its APIC id.
//! QEMU 7.2's TCG offers no x2APIC, so this exercises the xAPIC ICR (MMIO, with its
//! delivery-status wait); the x2APIC ICR path runs only on hardware.

use std::time::Duration;

use tests::{Machine, Outcome, image};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(30);

/// The number after `key` in `line`.
fn number_after(line: &str, key: &str) -> u64 {
    let rest = line.split(key).nth(1).unwrap_or_else(|| panic!("no {key:?} in {line}"));
    rest.trim_start().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap()
}

#[test]
fn four_cpus_run_and_every_application_processor_runs_a_work_item() {
    let img = image::build_scenario_image("smp-four-cpus", "then=exit");
    let mut m = Machine::boot("smp-four-cpus", &img, |c| {
        c.memory_mib = 1024;
        c.cpus = 4;
        c.extra_args.extend(["-accel".to_string(), "tcg,thread=multi".to_string()]);
    });
    m.expect("Bulkhead loader", BOOT);
    let bsp_timer = m.expect("timer interrupt works", STEP);
    let bsp_ticks = number_after(&bsp_timer, "timer");
    let running = m.expect("running (", STEP);
    assert!(running.contains("[cpu0 INFO  smp] 4 CPUs running (3 application processors started in "), "{running}");
    println!("{running}");
    m.expect("self-test: 3 of 3 application processors ran a work item", STEP);
    m.expect("BULKHEAD READY", STEP);
    assert_eq!(m.wait_exit(STEP), Outcome::Exited(images::qemu::EXIT_SUCCESS));
    let serial = m.serial();
    for ap in 1..=3u64 {
        // Logged by the AP itself: the prefix is the APIC id of the CPU that logs.
        let online = serial
            .lines()
            .find(|l| l.starts_with(&format!("[cpu{ap} INFO  smp] cpu{ap} (APIC id {ap}) online")))
            .unwrap_or_else(|| panic!("AP {ap} did not report itself online"));
        assert!(online.contains("SVM on, host save area HPA:0x"), "{online}");
        assert!(online.contains(&format!("(boot CPU {bsp_ticks}, used here too), timer interrupt works")), "{online}");
        // Its own measurement is logged for comparison; TCG on a loaded host makes it
        // too noisy to compare with the boot CPU's.
        assert!(number_after(online, "LAPIC timer measured") > 0, "{online}");
        let ran = format!("[cpu{ap} INFO  smp] cpu{ap}: work item running on APIC id {ap}");
        assert!(serial.contains(&ran), "AP {ap} did not run its work item");
        let answered = format!("[cpu0 INFO  smp] self-test: cpu{ap} reported APIC id {ap} (expected {ap})");
        assert!(serial.contains(&answered), "the boot CPU did not get AP {ap}'s answer");
    }
    assert!(!serial.contains("left out"), "a CPU was left out");
    m.pass();
}
