//! The switcher with two Linux desktops, driven through the machine's real keyboard
//! (QMP send-key into the emulated i8042 that the hypervisor owns):
//!
//! - keys typed while a VM has the focus reach that VM only: each VM runs a command
//!   typed on its first virtual terminal, and the markers it prints show up under its
//!   own name and never under the other's;
//! - no guest sees the hotkey: the guest's own count of keyboard interrupts grows by
//!   exactly the bytes of the keys it was meant to get (the VM losing the focus gets
//!   the releases of Ctrl and Alt, the VM gaining it nothing of Ctrl+Alt+2), and the
//!   hypervisor's per-VM byte counters agree;
//! - an idle desktop costs no copying (nested-page dirty tracking);
//! - after each switch the screen shows the focused VM's console under a strip in its
//!   trust colour; the overview shows a tile per VM and switches with arrows + Enter;
//! - a focused VM that powers off produces a notification and falls back to the
//!   overview, which still switches to the other VM;
//! - a focused VM that crashes (a kernel panic that ends in a triple fault) produces an
//!   error notification and falls back to the overview; policy restarts it;
//! - the key map comes from the configuration: it binds slot 2 to Ctrl+Alt+F2, and
//!   Ctrl+Alt+2, a default hotkey, then reaches the guest like any other key; the
//!   secure-attention combination, which it does not name, still opens the overview.

use std::time::Duration;

use embedded_graphics::prelude::Size;
use images::desktops::Desktop;
use tests::machine::scancode_bytes_for;
use tests::screen::Screenshot;
use tests::{Machine, image};
use ui::notification::Severity;

const DESKTOPS: &[Desktop] = &[
    Desktop { name: "corporate", label: "CORPORATE · secure", colour: "#c0392b", memory_mib: 320 },
    Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 },
];
const RED: (u8, u8, u8) = (0xc0, 0x39, 0x2b);
const GREEN: (u8, u8, u8) = (0x27, 0xae, 0x60);

const BOOT: Duration = Duration::from_secs(240);
const STEP: Duration = Duration::from_secs(60);
const SCREEN: (u32, u32) = (1280, 800);

fn strip_height() -> u32 {
    ui::strip::height(ui::Scale::for_screen(Size::new(SCREEN.0, SCREEN.1)))
}

/// The guest's count of keyboard interrupts (one per byte from its i8042).
fn guest_key_irqs(m: &mut Machine, vm: &str, tag: &str) -> u64 {
    m.run_in_vm(
        vm,
        &format!("echo IRQ1{tag}=$(grep i8042 /proc/interrupts | head -n 1 | tr -s ' ' | cut -d ' ' -f 3)"),
    );
    let line = m.expect(&format!("[{vm}] IRQ1{tag}="), STEP);
    line.split('=').nth(1).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("bad IRQ line {line:?}"))
}

/// The hypervisor's count of bytes it gave each VM's keyboard.
fn injected(m: &mut Machine) -> (u64, u64) {
    m.type_serial("!keys\n");
    let mut get = |vm: &str| {
        let line = m.expect(&format!("KEYS vm={vm} injected="), STEP);
        assert!(line.ends_with(" dropped=0"), "{line}");
        line.split("injected=").nth(1).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
    };
    let corporate = get("corporate");
    let personal = get("personal");
    (corporate, personal)
}

/// The compositor's counters.
fn frames(m: &mut Machine) -> images::switch_bench::Frames {
    m.type_serial("!frames\n");
    let line = m.expect("FRAMES copied=", STEP);
    images::switch_bench::parse_frames(&line).unwrap_or_else(|| panic!("bad FRAMES line {line:?}"))
}

fn typed_bytes(text: &str) -> u64 {
    text.chars().map(|c| scancode_bytes_for(c) as u64).sum()
}

/// Waits for `marker` in the serial log and checks which VM printed it (the marker may
/// follow the VM's serial shell prompt on the same line).
fn expect_from(m: &mut Machine, vm: &str, marker: &str) {
    let line = m.expect(marker, STEP);
    assert!(line.contains(&format!("[{vm}] ")), "{marker:?} came from the wrong VM: {line:?}");
}

/// Switches with a hotkey and waits for the new VM's first frame.
fn switch(m: &mut Machine, combo: &str, slot: u32) {
    m.send_keys(combo);
    m.expect(&format!("SWITCH-FRAME slot={slot}"), STEP);
}

/// Starts recording the guest's keyboard events (its AT keyboard's evdev device).
fn record_key_events(m: &mut Machine, vm: &str) {
    m.run_in_vm(
        vm,
        "e=$(grep -l 'AT Translated' /sys/class/input/event*/device/name | cut -d/ -f5); \
         cat /dev/input/$e > /tmp/kev & echo $! > /tmp/kev.pid; echo KREC=$e",
    );
    let line = m.expect(&format!("[{vm}] KREC="), STEP);
    assert!(line.contains("KREC=event"), "{vm}: no keyboard event device: {line}");
}

/// Stops the recording and returns (presses, keys still down) as the guest saw them:
/// EV_KEY events with value 1 (press) and 0 (release); repeats (2) do not count.
fn recorded_balance(m: &mut Machine, vm: &str) -> (u64, String) {
    m.run_in_vm(
        vm,
        "kill $(cat /tmp/kev.pid); od -An -v -tu2 -w24 /tmp/kev | awk '$9==1&&$11<2{d[$10]=$11;n+=$11}\
         END{for(c in d)if(d[c])s=s\" \"c;print \"KBAL n=\"n+0\" stuck=[\"s\"]\"}'",
    );
    let line = m.expect(&format!("[{vm}] KBAL n="), STEP);
    let presses = line.split("n=").nth(1).and_then(|v| v.split_whitespace().next()?.parse().ok());
    let stuck = line.split("stuck=[").nth(1).and_then(|v| v.split(']').next());
    match (presses, stuck) {
        (Some(p), Some(s)) => (p, s.trim().to_owned()),
        _ => panic!("bad KBAL line {line:?}"),
    }
}

/// Hundreds of keys as fast as a person's fingers never go, with switches, the
/// overview, secure attention and Esc in between, typed through QEMU's keyboard into
/// the real i8042 while the switcher draws. Afterwards every key each guest saw go
/// down has come up (no stuck modifier), and the hypervisor lost no byte and never
/// left the keyboard unread.
fn key_storm(m: &mut Machine) {
    const HOLD_MS: u32 = 4;
    const COMBOS: usize = 320;
    for vm in ["corporate", "personal"] {
        record_key_events(m, vm);
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    // Letters that spell no command, alone or with Shift; Ctrl+Alt+2 is the guests'
    // (this key map binds slot 2 to Ctrl+Alt+F2), so modifiers go down in them too.
    let letters = ["q", "w", "z", "x", "v", "shift-q", "shift-z", "ctrl-alt-2"];
    let arrows = ["left", "right", "up", "down"];
    let mut combos: Vec<&str> = Vec::new();
    while combos.len() < COMBOS {
        match next(100) {
            0..=59 => combos.push(letters[next(letters.len() as u64) as usize]),
            60..=69 => combos.push("ctrl-alt-1"),
            70..=79 => combos.push("ctrl-alt-f2"),
            80..=85 => combos.push("ctrl-alt-tab"),
            86..=94 => {
                combos.push("ctrl-alt-spc");
                for _ in 0..=next(3) {
                    combos.push(arrows[next(4) as usize]);
                }
                combos.push("esc");
            }
            _ => combos.extend(["ctrl-alt-home", "right", "esc"]),
        }
    }
    let events = |combo: &str| 2 * combo.split('-').count() as u64;
    let total: u64 = combos.iter().map(|c| events(c)).sum();
    for chunk in combos.chunks(24) {
        for combo in chunk {
            m.queue_keys(combo, HOLD_MS);
        }
        // QEMU's input queue holds about 1,000 events: let this chunk come out first.
        let ms: u64 = chunk.iter().map(|c| events(c)).sum::<u64>() * u64::from(HOLD_MS);
        std::thread::sleep(Duration::from_millis(ms + 150));
    }
    eprintln!("key storm: {} combinations, {total} key events", combos.len());
    // Back to a known state: the overview, Esc, then the personal desktop.
    m.type_serial("!frames\n");
    m.expect("FRAMES copied=", STEP);
    m.send_keys("ctrl-alt-home");
    m.expect("hotkey SecureAttention", STEP);
    m.send_keys("esc");
    // The storm left letters on each console's command line: cleared (Ctrl+U, Enter).
    for (hotkey, slot) in [("ctrl-alt-1", 1), ("ctrl-alt-f2", 2)] {
        m.type_serial("!frames\n");
        m.expect("FRAMES copied=", STEP);
        m.send_keys(hotkey);
        m.expect(&format!("hotkey SwitchTo({slot})"), STEP);
        m.send_keys("ctrl-u");
        m.send_keys("ret");
    }
    std::thread::sleep(Duration::from_secs(1));
    for vm in ["corporate", "personal"] {
        let (presses, stuck) = recorded_balance(m, vm);
        eprintln!("key storm: {vm} saw {presses} presses");
        assert!(presses > 50, "{vm} saw only {presses} key presses in the storm");
        assert_eq!(stuck, "", "{vm} still has keys down after the storm (evdev codes)");
    }
    m.type_serial("!keys\n");
    let line = m.expect("KEYS read=", STEP);
    assert!(line.contains(" lost=0 ") && line.contains("(interrupt)"), "{line}");
    assert!(line.contains(" held=0 "), "the switcher still holds keys: {line}");
    let unread_us: u64 = line
        .split("longest_unread_us=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("bad KEYS line {line:?}"));
    eprintln!("key storm: keyboard left unread for at most {unread_us} us");
    assert!(unread_us < 10_000, "the keyboard went unread for {unread_us} us");
    let serial = m.serial();
    for warning in ["keyboard not read", "keyboard bytes lost", "typed too far ahead"] {
        assert!(!serial.contains(warning), "the hypervisor logged {warning:?}");
    }
    injected(m);
}

/// How a test stops a VM, and what the hypervisor says about it.
struct Stop {
    command: &'static str,
    reason: &'static str,
    message: &'static str,
}

/// Stops the focused VM in `slot`: the hypervisor logs the reason, shows the
/// notification and falls back to the overview with that VM selected. Returns the
/// screen.
fn stop_focused(m: &mut Machine, vm: &str, slot: u32, stop: &Stop, severity: Severity) -> Screenshot {
    m.run_in_vm(vm, stop.command);
    m.expect(&format!("({vm}) stopped: {}", stop.reason), STEP);
    m.expect(&format!("notification: {}", stop.message), STEP);
    m.expect(&format!("OVERVIEW-DRAWN tiles=2 selected={slot}"), STEP);
    std::thread::sleep(Duration::from_millis(500));
    let shot = m.screendump(&format!("stopped-{vm}"));
    check_notification(&shot, stop.message, severity);
    shot
}

/// The notification `message` is on screen, with the accent of its `severity`.
fn check_notification(shot: &Screenshot, message: &str, severity: Severity) {
    let screen = Size::new(SCREEN.0, SCREEN.1);
    let toast = ui::notification::rect(
        screen,
        ui::Scale::for_screen(screen),
        &ui::notification::Notification { message, severity },
    );
    let accent = match severity {
        Severity::Info => ui::palette::SEVERITY_INFO,
        _ => ui::palette::SEVERITY_ERROR,
    };
    let (x, y) = (toast.top_left.x as u32 + 2, toast.top_left.y as u32 + toast.size.height / 2);
    assert!(shot.is(x, y, accent), "no accent of {message:?} at ({x},{y}): {:?}", shot.pixel(x, y));
}

/// Pixels of `colour` below the strip.
fn below_strip_of(shot: &Screenshot, colour: (u8, u8, u8)) -> usize {
    let strip = strip_height();
    shot.count(0, strip, SCREEN.0, SCREEN.1 - strip, colour)
}

/// The strip along the top is in `colour`, and the console's first line shows the
/// `pattern` of lit and dark 8x16 cells right under it.
fn check_screen(shot: &Screenshot, colour: (u8, u8, u8), pattern: &str, what: &str) {
    let strip = strip_height();
    for (x, y) in [(1, 1), (SCREEN.0 / 2, 2), (SCREEN.0 - 2, strip / 2)] {
        assert_eq!(shot.pixel(x, y), colour, "{what}: strip pixel ({x},{y})");
    }
    let lit = |col: u32| (0..16).any(|dy| (0..8).any(|dx| shot.pixel(col * 8 + dx, strip + dy) != (0, 0, 0)));
    for (col, ch) in pattern.chars().enumerate() {
        assert_eq!(lit(col as u32), ch == '#', "{what}: console cell {col} ({ch:?})");
    }
}

/// The desktops' policy with this test's key map; the corporate kernel triple-faults
/// when it reboots after a panic (`reboot=t`), which the hypervisor sees as a crash.
fn policy() -> bulkhead_policy::Policy {
    let mut policy = images::desktops::desktops_policy(DESKTOPS);
    for vm in policy.vms.iter_mut().filter(|v| v.name == "corporate") {
        vm.cmdline.insert_str(0, "reboot=t ");
    }
    images::policy::fleet::with_hotkeys(
        policy,
        &[
            ("switch-1", "Ctrl+Alt+1"),
            ("switch-2", "Ctrl+Alt+F2"),
            ("next", "Ctrl+Alt+Tab"),
            ("overview", "Ctrl+Alt+Space"),
        ],
    )
}

#[test]
fn hotkeys_switch_keyboard_and_screen_between_vms() {
    let img = image::build_desktop_image_with_policy("switcher", "", &policy());
    let mut m = Machine::boot("switcher", &img, |c| {
        c.memory_mib = 1536;
        c.cpus = 1;
        // As `cargo xtask run`: the keyboard interrupt goes through VT-d remapping.
        c.iommu = images::qemu::Iommu::Intel;
    });
    m.expect("keyboard IRQ1: I/O APIC 0 pin 1 -> vector 0x21", BOOT);
    m.expect("BULKHEAD READY", BOOT);
    m.expect("key map: 4 bindings from the policy", BOOT);
    assert!(m.expect("i8042 ready", BOOT).ends_with("IRQ1)"), "the keyboard is polled, not interrupt-driven");
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    m.connect_qmp();
    m.run_in_vm("corporate", "dmesg | grep -c 'input: AT Translated Set 2 keyboard' | sed 's/^/ATKBD=/'");
    assert_eq!(m.expect("[corporate] ATKBD=", STEP).rsplit('=').next(), Some("1"), "the guest has no keyboard");

    // Keyboard: each VM gets its own keys, and nothing of the hotkey.
    let irq_corporate = guest_key_irqs(&mut m, "corporate", "a");
    let irq_personal = guest_key_irqs(&mut m, "personal", "a");
    let (inj_corporate, inj_personal) = injected(&mut m);
    let one = "echo kb-one-$((6*7)) > /dev/ttyS0\n";
    let two = "echo kb-two-$((6*8)) > /dev/ttyS0\n";
    m.type_keys(one);
    expect_from(&mut m, "corporate", "kb-one-42");
    switch(&mut m, "ctrl-alt-f2", 2);
    m.type_keys(two);
    expect_from(&mut m, "personal", "kb-two-48");
    let serial = m.serial();
    let printed_by =
        |vm: &str, marker: &str| serial.lines().any(|l| l.contains(&format!("[{vm}] ")) && l.contains(marker));
    assert!(!printed_by("personal", "kb-one-42"), "the personal VM ran a command typed for the corporate one");
    assert!(!printed_by("corporate", "kb-two-48"), "the corporate VM ran a command typed for the personal one");
    // The corporate VM saw Ctrl and Alt go down and, at the switch, come up.
    let want_corporate = typed_bytes(one) + 4;
    let want_personal = typed_bytes(two);
    // The command runs when Enter goes down; its release follows shortly.
    std::thread::sleep(Duration::from_secs(1));
    let (now_corporate, now_personal) = injected(&mut m);
    assert_eq!(now_corporate - inj_corporate, want_corporate, "bytes the hypervisor gave the corporate VM");
    assert_eq!(now_personal - inj_personal, want_personal, "bytes the hypervisor gave the personal VM");
    let got_corporate = guest_key_irqs(&mut m, "corporate", "b") - irq_corporate;
    let got_personal = guest_key_irqs(&mut m, "personal", "b") - irq_personal;
    assert_eq!(got_corporate, want_corporate, "keyboard interrupts the corporate guest took");
    assert_eq!(got_personal, want_personal, "keyboard interrupts the personal guest took (hotkey leaked?)");

    // Ctrl+Alt+2 is not bound by this key map: the focused guest gets all six bytes
    // (three makes, three breaks) and the focus stays.
    let (_, before) = injected(&mut m);
    m.send_keys("ctrl-alt-2");
    std::thread::sleep(Duration::from_secs(1));
    let (_, after) = injected(&mut m);
    assert_eq!(after - before, 6, "bytes the personal VM got for the unbound Ctrl+Alt+2");
    assert!(!m.serial().contains("SWITCH-FRAME slot=1"), "Ctrl+Alt+2 switched although the key map does not bind it");

    // Screen: a distinct pattern on each console, then switch back and forth.
    let patterns = [("corporate", "#".repeat(40)), ("personal", "# ".repeat(20))];
    for (vm, pattern) in &patterns {
        m.run_in_vm(vm, &format!("printf '\\033[2J\\033[H\\033[?25l{pattern}' > /dev/tty1; echo SHOWN"));
        m.expect(&format!("[{vm}] SHOWN"), STEP);
    }
    std::thread::sleep(Duration::from_secs(1));
    let shot = m.screendump("personal");
    check_screen(&shot, GREEN, &patterns[1].1, "personal focused");
    // Nothing changes on the focused console now (its cursor is hidden): frames go by
    // and the compositor copies nothing.
    let before = frames(&mut m);
    std::thread::sleep(Duration::from_secs(2));
    let after = frames(&mut m);
    assert!(after.idle > before.idle, "no frames went by: {before:?} -> {after:?}");
    assert_eq!(after.bytes_total, before.bytes_total, "an idle desktop was copied to the screen");
    switch(&mut m, "ctrl-alt-1", 1);
    std::thread::sleep(Duration::from_millis(500));
    let shot = m.screendump("corporate");
    check_screen(&shot, RED, &patterns[0].1, "corporate focused");

    // Overview: both tiles in their trust colours; Right + Enter picks the second.
    let (before, _) = injected(&mut m);
    m.send_keys("ctrl-alt-spc");
    m.expect("OVERVIEW-DRAWN tiles=2 selected=1", STEP);
    // Ctrl and Alt went down in the corporate VM and are released there by the switcher.
    let (after, _) = injected(&mut m);
    assert_eq!(after - before, 4, "bytes the corporate VM got for Ctrl+Alt+Space");
    std::thread::sleep(Duration::from_millis(500));
    let shot = m.screendump("overview");
    let (red, green) = (below_strip_of(&shot, RED), below_strip_of(&shot, GREEN));
    assert!(red > 200, "no corporate tile: {red} red pixels");
    assert!(green > 200, "no personal tile: {green} green pixels");
    m.send_keys("right");
    m.send_keys("ret");
    m.expect("SWITCH-FRAME slot=2", STEP);
    std::thread::sleep(Duration::from_millis(500));
    check_screen(&m.screendump("personal-from-overview"), GREEN, &patterns[1].1, "personal from the overview");

    key_storm(&mut m);

    // The focused VM powers off: a notification, and the overview instead of its screen.
    let stopped = Stop { command: "poweroff", reason: "GuestShutdown", message: "PERSONAL was shut down" };
    stop_focused(&mut m, "personal", 2, &stopped, Severity::Info);
    // The overview still switches, and the keyboard follows.
    m.send_keys("left");
    m.send_keys("ret");
    m.expect("SWITCH-FRAME slot=1", STEP);
    let (before, _) = injected(&mut m);
    let three = "echo kb-three > /dev/ttyS0\n";
    m.type_keys(three);
    expect_from(&mut m, "corporate", "kb-three");
    std::thread::sleep(Duration::from_secs(1));
    let (after, _) = injected(&mut m);
    assert_eq!(after - before, typed_bytes(three), "bytes given to the corporate VM after the overview");

    // The focused VM crashes: an error notification and the overview; policy restarts
    // the VM, and the overview switches to it again.
    let crash = Stop {
        command: "echo c > /proc/sysrq-trigger",
        reason: "TripleFault",
        message: "CORPORATE crashed: triple fault; restarted",
    };
    let shot = stop_focused(&mut m, "corporate", 1, &crash, Severity::Error);
    assert!(below_strip_of(&shot, RED) > 200, "the overview lost the corporate tile");
    m.expect("[corporate] BULKHEAD-GUEST-READY", BOOT);
    m.send_keys("ret");
    m.expect("SWITCH-FRAME slot=1", STEP);

    // Secure attention (Ctrl+Alt+Home, kept although the key map does not name it):
    // the hypervisor's overview over the running desktop; Esc goes back to it.
    m.send_keys("ctrl-alt-home");
    m.expect("OVERVIEW-DRAWN tiles=2 selected=1", STEP);
    m.send_keys("esc");
    m.expect("SWITCH-FRAME slot=1", STEP);
    m.pass();
}
