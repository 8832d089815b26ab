//! Hostile payload VMs beside a Linux desktop, in one boot. Each hostile VM attacks CPU
//! state the world switch must cover and exception deliveries that hang a real CPU
//! (`tests/payloads/src/bin/hostile.rs`); two copies run at once so that each one would
//! see the other's breakpoint addresses, TSC_AUX, PKRU or YMM state if any leaked.
//! The test checks that every CHECK a hostile VM reports passes, that each one ends
//! contained (stopped with a reason, or still running its own loop), that the
//! hypervisor stays up, and that the desktop still answers on its serial console and
//! through the switcher's hotkeys.
//!
//! A third VM floods everything a guest can make the hypervisor buffer, log or loop
//! over (`tests/payloads/src/bin/hostile_flood.rs`); the test checks that its console
//! flood reached the log rate-limited, and that the i8042 reported the dropped replies.
//!
//! More hostile VMs: add a line to [`HOSTILE`] (name, payload image, memory, and what
//! it must show).

use std::time::Duration;

use bulkhead_policy::model::{Policy, Vm};
use images::desktops::{Desktop, GUEST_CMDLINE, desktop_vm};
use images::policy::fleet;
use tests::{Machine, image};

const DESKTOP: Desktop =
    Desktop { name: "corporate", label: "CORPORATE · secure", colour: "#c0392b", memory_mib: 320 };

/// What a hostile VM must show: how it may end (the stop reasons accepted in
/// "(name) stopped: REASON", and whether it may still be running, contained in a loop
/// of its own exits), the CHECKs that must pass, and whether its stop line must count
/// an exception exit.
struct Expected {
    stopped: &'static [&'static str],
    may_keep_running: bool,
    must_pass: &'static [&'static str],
    exception_exit: bool,
}

/// The hostile payload ends with the #DB gate loop: where the CPU models it, the VM's
/// stack runs out of mapped memory and it triple-faults; where it does not, it shuts
/// down with status 0 (QEMU 7.2 TCG does not loop: it raises the first #DB late, after
/// the payload's next exit, and the payload catches it there). Its data-breakpoint
/// #DB must have been an exit (intercepted, then reflected).
const GATE_LOOP: Expected = Expected {
    stopped: &["TripleFault", "GuestShutdown { status: 0 }"],
    may_keep_running: true,
    must_pass: &["hostile_cpuid_hides_pku", "hostile_dr0_3_own_r1", "hostile_dr0_3_own_r4", "hostile_tsc_aux_own_r4"],
    exception_exit: true,
};

/// The flooding payload floods the i8042 with commands it never reads the answers
/// to, the console with 5,000 lines, a port with a 1 MiB string instruction and its
/// own interrupt; it checks the device side from inside and shuts down with status 0
/// when every check passed.
const FLOOD: Expected = Expected {
    stopped: &["GuestShutdown { status: 0 }"],
    may_keep_running: false,
    must_pass: &[
        "i8042_flood_replies_bounded",
        "i8042_flood_keeps_the_oldest_reply",
        "i8042_answers_after_flood",
        "port_string_flood_completes",
        "interrupt_flood_coalesces",
        "still_running_after_floods",
    ],
    exception_exit: false,
};

/// (VM name, payload, memory, what it must show).
const HOSTILE: &[(&str, &str, u32, Expected)] = &[
    ("hostile-a", "hostile", 16, GATE_LOOP),
    ("hostile-b", "hostile", 16, GATE_LOOP),
    ("hostile-flood", "hostile-flood", 16, FLOOD),
];

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);

fn policy() -> Policy {
    let mut vms: Vec<Vm> = vec![desktop_vm(&DESKTOP, GUEST_CMDLINE)];
    vms.extend(HOSTILE.iter().map(|(name, payload, memory_mib, _)| fleet::payload(name, payload, *memory_mib)));
    fleet::demo_policy(vms)
}

/// The CHECK lines VM `vm` printed.
fn checks_of<'a>(serial: &'a str, vm: &str) -> Vec<&'a str> {
    let tag = format!("[{vm}] CHECK ");
    serial.lines().filter(|l| l.contains(&tag)).collect()
}

#[test]
fn hostile_vms_are_contained_and_the_desktop_keeps_working() {
    let img = image::build_desktop_and_payload_image("hostile", "", &policy());
    let mut m = Machine::boot("hostile", &img, |c| {
        c.memory_mib = 1024;
        c.cpus = 1;
    });
    m.expect("BULKHEAD READY", BOOT);
    // Every hostile VM gets through its checks and reports.
    wait_for_checks(&mut m);
    // The desktop may have come up while the hostile VMs were still reporting.
    if !m.serial().contains("[corporate] BULKHEAD-GUEST-READY") {
        m.expect("[corporate] BULKHEAD-GUEST-READY", BOOT);
    }
    // Let the hostile VMs' last attack run while the desktop works.
    std::thread::sleep(Duration::from_secs(5));
    m.run_in_vm("corporate", "echo ALIVE=$((40+2))");
    m.expect("[corporate] ALIVE=42", STEP);

    // The switcher still reacts to the machine's keyboard: the overview opens and
    // Enter goes back to the desktop.
    m.connect_qmp();
    m.send_keys("ctrl-alt-spc");
    m.expect("OVERVIEW-DRAWN", STEP);
    m.send_keys("ret");
    m.expect("SWITCH-FRAME slot=1", STEP);
    m.run_in_vm("corporate", "echo STILL=$((6*7))");
    m.expect("[corporate] STILL=42", STEP);

    let serial = m.serial();
    let problems = hostile_problems(&serial);
    assert!(
        serial.contains("i8042: guest sends commands without reading the replies"),
        "the i8042 did not report dropping replies"
    );
    let spam = serial.lines().filter(|l| l.contains("[hostile-flood] hostile-flood spam line")).count();
    eprintln!("{spam} of 5000 spam lines reached the log");
    assert!(spam > 0 && spam < 5_000, "{spam} of 5000 spam lines reached the log: not rate-limited");
    assert!(serial.contains("lines suppressed (console rate limit)"), "no summary of the suppressed lines");
    assert!(!serial.contains("(corporate) stopped"), "the desktop stopped");
    assert!(problems.is_empty(), "hostile VMs:\n{}", problems.join("\n"));
    m.pass();
}

/// Waits until every hostile VM has printed its CHECKS DONE line (in any order).
fn wait_for_checks(m: &mut Machine) {
    for _ in HOSTILE {
        m.expect("] CHECKS DONE", BOOT);
    }
    let serial = m.serial();
    for (name, ..) in HOSTILE {
        assert!(serial.contains(&format!("[{name}] CHECKS DONE")), "{name} did not report");
    }
}

/// What went wrong with the hostile VMs, from the serial log.
fn hostile_problems(serial: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, _, _, expected) in HOSTILE {
        let checks = checks_of(serial, name);
        if !checks.iter().any(|l| l.contains(" PASS")) {
            problems.push(format!("{name}: no CHECK passed"));
        }
        for failed in checks.iter().filter(|l| l.contains(" FAIL")) {
            problems.push(format!("{name}: {failed}"));
        }
        for must in expected.must_pass {
            if !checks.iter().any(|l| l.contains(&format!("CHECK {must} PASS"))) {
                problems.push(format!("{name}: {must} did not pass"));
            }
        }
        let stopped = serial.lines().find_map(|l| l.split_once(&format!("({name}) stopped: ")).map(|(_, r)| r));
        // The stop line carries the VM's exit counters.
        if let Some(reason) = stopped.filter(|_| expected.exception_exit) {
            let exceptions: u64 = reason
                .split_whitespace()
                .find_map(|w| w.strip_prefix("exception="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if exceptions == 0 {
                problems.push(format!("{name}: no exception exit (is #DB intercepted?): {reason}"));
            }
        }
        match stopped {
            Some(reason) if expected.stopped.iter().any(|ok| reason.starts_with(ok)) => {}
            Some(reason) => problems.push(format!("{name} stopped for an unexpected reason: {reason}")),
            None if expected.may_keep_running => {}
            None => problems.push(format!("{name} did not stop")),
        }
    }
    problems
}
