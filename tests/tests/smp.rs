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

/// Runs `command` in `vm` and returns the value it prints after `KEY=` ([`Machine::ask`]).
fn run(m: &mut Machine, vm: &str, command: &str, key: &str) -> String {
    m.ask(vm, command, key, GUEST_STEP)
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

const SHELL_BANNER: &str = "Enter 'help' for a list of built-in commands.";
const GUEST_BOOT: Duration = Duration::from_secs(400);
const GUEST_STEP: Duration = Duration::from_secs(90);

/// User plus system ticks of each guest CPU, from /proc/stat.
fn cpu_ticks(m: &mut Machine, vm: &str) -> Vec<u64> {
    let line = run(m, vm, "echo STAT=$(grep '^cpu[0-9]' /proc/stat | cut -d' ' -f2,4 | tr '\\n' ' ')", "STAT");
    let numbers: Vec<u64> = line.split_whitespace().map(|n| n.parse().unwrap()).collect();
    numbers.chunks(2).map(|c| c.iter().sum()).collect()
}

/// A Linux desktop with two vCPUs next to one with one, on four CPUs: each vCPU is
/// pinned to its own application processor. The guest's kernel finds two local APICs
/// in its MADT, starts its second CPU with INIT and STARTUP IPIs through its virtual
/// local APIC, and keeps both busy in parallel with two CPU-bound loops; the other
/// desktop still answers its serial console; with both desktops busy the hotkeys
/// switch the screen; a kernel panic restarts the desktop by policy with both vCPUs
/// while the other desktop runs on.
#[test]
fn a_two_vcpu_linux_desktop_starts_its_second_cpu_and_keeps_both_busy() {
    let guest = image::linux_guest();
    let mut policy = images::desktops::desktops_policy(&[
        images::desktops::Desktop { name: "corporate", label: "CORPORATE", colour: "#c0392b", memory_mib: 256 },
        images::desktops::Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 },
    ]);
    for vm in policy.vms.iter_mut().filter(|vm| vm.name == "corporate") {
        vm.vcpus = 2;
    }
    let modules = images::desktops::modules_with_policy(guest, &policy);
    let img = image::build_image_with_modules("smp-desktops", "", modules);
    let mut m = Machine::boot("smp-desktops", &img, |c| {
        c.memory_mib = 1536;
        c.cpus = 4;
        c.extra_args.extend(["-accel".to_string(), "tcg,thread=multi".to_string()]);
    });
    m.expect("BULKHEAD READY", BOOT);
    let started = m.wait_count("vm 0 (corporate): vCPU 1 started at 0x", 1, GUEST_BOOT);
    println!("{started}");
    for vm in ["corporate", "personal"] {
        m.wait_count(&format!("[{vm}] BULKHEAD-GUEST-READY"), 1, GUEST_BOOT);
        m.wait_count(&format!("[{vm}] {SHELL_BANNER}"), 1, GUEST_BOOT);
    }
    // The shell reads a typed line only once its line editor runs.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!m.serial().contains("vCPU 2 started"), "a vCPU the policy does not give");

    // Pinned: corporate's two vCPUs on two application processors, personal's on a
    // third; the boot CPU keeps the switcher and the exit handlers.
    let serial = m.serial();
    let line = |vm: &str| {
        serial
            .lines()
            .find(|l| l.contains(&format!("sched] vm {vm}")))
            .unwrap_or_else(|| panic!("no placement for {vm}"))
    };
    let (corporate, personal) = (line("0 (corporate)"), line("1 (personal)"));
    println!("{corporate}\n{personal}");
    let cpus =
        |l: &str| -> Vec<u64> { l.split("on cpu").skip(1).map(|r| number_after(&format!("x{r}"), "x")).collect() };
    let (c, p) = (cpus(corporate), cpus(personal));
    assert_eq!((c.len(), p.len()), (2, 1), "{corporate} / {personal}");
    assert!(c[0] != c[1] && !c.contains(&p[0]) && !c.contains(&0) && p[0] != 0, "{corporate} / {personal}");
    assert!(serial.contains("guests run on 3 application processors"));

    assert_eq!(run(&mut m, "corporate", "echo NPROC=$(nproc)", "NPROC"), "2");
    assert_eq!(run(&mut m, "corporate", "echo CPUS=$(grep -c ^processor /proc/cpuinfo)", "CPUS"), "2");
    assert_eq!(run(&mut m, "personal", "echo NPROC=$(nproc)", "NPROC"), "1");

    m.run_in_vm("corporate", "for i in 1 2; do (while :; do :; done) & done");
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu_ticks(&mut m, "corporate");
    let measured = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    let after = cpu_ticks(&mut m, "corporate");
    // /proc/stat counts in USER_HZ (100 per second) of the guest's clock, which
    // follows the host's TSC: wall time under TCG.
    let wall_ticks = measured.elapsed().as_millis() as u64 / 10;
    println!("corporate busy ticks per CPU: before {before:?}, after {after:?}, over {wall_ticks} wall ticks");
    let irqs = run(&mut m, "corporate", "echo IRQS=$(grep -E 'LOC|RES|CAL|TLB' /proc/interrupts | tr -s ' ')", "IRQS");
    println!("corporate interrupts: {irqs}");
    // IPIs went both ways between the two vCPUs on their two cores: rescheduling and
    // function-call IPIs (which Linux's TLB shootdowns also use) reached each CPU.
    for kind in ["RES:", "CAL:"] {
        let counts: Vec<u64> = irqs
            .split(kind)
            .nth(1)
            .unwrap_or_else(|| panic!("no {kind} in {irqs}"))
            .split_whitespace()
            .take(2)
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(counts.len() == 2 && counts.iter().all(|&n| n > 0), "{kind} {counts:?}");
    }
    let on = run(&mut m, "corporate", "echo ON=$(for p in $(pidof sh); do cut -d' ' -f3,39 /proc/$p/stat; done)", "ON");
    println!("corporate shells (state, cpu): {on}");
    assert_eq!((before.len(), after.len()), (2, 2), "two CPUs in /proc/stat");
    // Both CPUs run a loop at the same time on their own cores: together they gain
    // more busy time than the wall clock advanced, which one core shared by both
    // could never give, and each keeps its CPU busy most of the time. (On this
    // 2-core host QEMU's four CPU threads share two cores; the boot CPU and the
    // other desktop mostly halt.)
    let gained: Vec<u64> = (0..2).map(|cpu| after[cpu] - before[cpu]).collect();
    let (low, high) = (gained[0].min(gained[1]), gained[0].max(gained[1]));
    assert!(low + high > wall_ticks * 11 / 10, "{gained:?} busy ticks over {wall_ticks}: not in parallel");
    assert!(low * 2 >= wall_ticks, "a CPU was busy for only {low} of {wall_ticks} ticks: {gained:?}");

    let asked = std::time::Instant::now();
    assert_eq!(run(&mut m, "personal", "echo PONG=ok", "PONG"), "ok");
    println!("personal answered in {:?} while corporate keeps two CPUs busy", asked.elapsed());

    // Both desktops busy: the hotkeys still switch, and the screen then shows the
    // chosen desktop under a strip in its colour.
    m.run_in_vm("personal", "(while :; do :; done) &");
    m.connect_qmp();
    for (combo, slot, colour) in [("ctrl-alt-2", 2, (0x27, 0xae, 0x60)), ("ctrl-alt-1", 1, (0xc0, 0x39, 0x2b))] {
        let pressed = std::time::Instant::now();
        m.send_keys(combo);
        let frame = m.expect(&format!("SWITCH-FRAME slot={slot}"), GUEST_STEP);
        println!("{combo} with every desktop busy: {frame} (seen after {:?})", pressed.elapsed());
        std::thread::sleep(Duration::from_millis(500));
        let shot = m.screendump(&format!("busy-slot-{slot}"));
        for (x, y) in [(1, 1), (640, 2)] {
            assert_eq!(shot.pixel(x, y), colour, "strip pixel ({x},{y}) after {combo}");
        }
    }
    console_text_reaches_the_screen(&mut m);

    // It crashes while both its CPUs are busy (a kernel panic stops the other CPU
    // with an IPI, then resets): restarted by policy with both again; the other
    // desktop goes on as if nothing happened.
    let personal_uptime = run(&mut m, "personal", "echo UP=$(cut -d. -f1 /proc/uptime)", "UP");
    m.run_in_vm("corporate", "echo c > /proc/sysrq-trigger");
    let stopped = m.wait_count("vm 0 (corporate) stopped: ", 1, GUEST_STEP);
    println!("{stopped}");
    assert!(!stopped.contains("Requested"), "{stopped}");
    m.wait_count("vm 0 (corporate) restarted (start 2)", 1, GUEST_STEP);
    m.wait_count("vm 0 (corporate): vCPU 1 started at 0x", 2, GUEST_BOOT);
    m.wait_count("[corporate] BULKHEAD-GUEST-READY", 2, GUEST_BOOT);
    m.wait_count(&format!("[corporate] {SHELL_BANNER}"), 2, GUEST_BOOT);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(run(&mut m, "corporate", "echo NPROC=$(nproc)", "NPROC"), "2");
    assert_eq!(run(&mut m, "personal", "echo PONG=again", "PONG"), "again");
    let uptime_after = run(&mut m, "personal", "echo UP=$(cut -d. -f1 /proc/uptime)", "UP");
    assert!(
        uptime_after.parse::<u64>().unwrap() > personal_uptime.parse::<u64>().unwrap(),
        "personal's uptime went from {personal_uptime} to {uptime_after}: it restarted"
    );
    assert!(!m.serial().contains("vm 1 (personal) stopped"), "the other desktop stopped");
    m.pass();
}

/// What the focused 2-vCPU desktop prints on its console, with its vCPUs busy on
/// other cores, is on the screen: the compositor sees the guest's writes to its
/// framebuffer while the screen was still before, and again after a change.
fn console_text_reaches_the_screen(m: &mut Machine) {
    for (n, pattern) in ["#".repeat(40), "# ".repeat(20)].iter().enumerate() {
        m.run_in_vm("corporate", &format!("printf '\\033[2J\\033[H\\033[?25l{pattern}' > /dev/tty1; echo SHOWN={n}"));
        m.expect(&format!("[corporate] SHOWN={n}"), GUEST_STEP);
        // A few frames, and a still screen between the two patterns.
        std::thread::sleep(Duration::from_secs(2));
        let shot = m.screendump(&format!("busy-console-{n}"));
        for (col, ch) in pattern.chars().enumerate() {
            let lit = shot.console_cell_lit(col as u32);
            assert_eq!(lit, ch == '#', "pattern {n}: cell {col} ({ch:?}) is {}", if lit { "lit" } else { "dark" });
        }
    }
}
