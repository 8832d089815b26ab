//! The passphrase screen on the real image (`unlock-demo=<passphrase>`: the screen runs
//! after boot against a vault in memory). Keys are typed on QEMU's PS/2 keyboard
//! through QMP, so they take the real path: i8042, scan code set 1, the US layout.
//!
//! Every screen is compared pixel for pixel with the same screen rendered on the host:
//! the dots while a passphrase is typed, three wrong ones whose delays double (1, 2,
//! 4 s, in the log) with the last one's countdown on screen, keys typed during that
//! delay that leave no dot, and at last the right passphrase unlocking.

use std::time::{Duration, Instant};

use tests::screen::Screenshot;
use tests::{Machine, image};
use ui::passphrase::{Field, Mode, PassphraseScreen, Tone};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(30);
const PASSPHRASE: &str = "correct-horse";
const WAITING: [&str; 2] = ["Corporate", "Personal"];
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 800;

fn screen(mode: Mode, field: Field, typed: usize, message: &str, tone: Tone) -> Screenshot {
    Screenshot::render(WIDTH, HEIGHT, |canvas| {
        ui::passphrase::draw(
            canvas,
            &PassphraseScreen {
                product: "Bulkhead",
                mode,
                field,
                waiting: &WAITING,
                typed,
                min_length: 8,
                message,
                tone,
            },
        )
    })
}

fn unlock_screen(typed: usize, message: &str, tone: Tone) -> Screenshot {
    screen(Mode::Unlock, Field::Passphrase, typed, message, tone)
}

/// Takes screendumps until one equals a candidate (within `within`); returns its index.
fn wait_for_screen(m: &mut Machine, name: &str, candidates: &[Screenshot], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut best = usize::MAX;
    loop {
        let shot = m.screendump(name);
        for (i, expected) in candidates.iter().enumerate() {
            let differing = shot.differing_pixels(expected);
            if differing == 0 {
                return i;
            }
            best = best.min(differing);
        }
        if Instant::now() >= deadline {
            let _ = candidates[0].save(&image::scenario_dir("unlock").join(format!("{name}-expected.png")));
            m.fail(&format!("{name}: the screen differs from every expected screen (at best in {best} pixels)"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Types a wrong passphrase and waits for its refusal in the log, with the try and
/// its delay; returns when the log said so.
fn wrong_try(m: &mut Machine, try_number: u32, delay_s: u64) -> Instant {
    m.type_keys("wrong\n");
    m.expect(&format!("wrong passphrase (try {try_number}), next try in {delay_s} s"), STEP);
    Instant::now()
}

#[test]
fn wrong_passphrases_are_refused_with_a_growing_delay_then_the_right_one_unlocks() {
    let img = image::build_scenario_image("unlock", &format!("then=run unlock-demo={PASSPHRASE}"));
    let mut m = Machine::boot("unlock", &img, |c| {
        c.memory_mib = 512;
        c.cpus = 1;
    });
    m.connect_qmp();
    m.expect("BULKHEAD READY", BOOT);
    m.expect("asking for the disk passphrase (unlock) for 2 VM(s)", STEP);
    wait_for_screen(&mut m, "empty", &[unlock_screen(0, "", Tone::Info)], STEP);

    // One dot per character, never more.
    m.type_keys("wrong");
    wait_for_screen(&mut m, "five-dots", &[unlock_screen(5, "", Tone::Info)], STEP);
    // Rendered before the clock starts: the 4 s countdown, any second of which the
    // screendump may catch, and the screen once it is over.
    let countdown: Vec<Screenshot> = (1..=4)
        .rev()
        .map(|s| unlock_screen(0, &format!("Wrong passphrase. Try again in {s} s"), Tone::Refused))
        .collect();
    let over = unlock_screen(0, "Wrong passphrase. Type it again.", Tone::Refused);
    m.type_keys("\n");
    m.expect("wrong passphrase (try 1), next try in 1 s", STEP);
    std::thread::sleep(Duration::from_millis(1200));
    let second = wrong_try(&mut m, 2, 2);
    std::thread::sleep(Duration::from_secs(2).saturating_sub(second.elapsed()) + Duration::from_millis(200));
    let third = wrong_try(&mut m, 3, 4);

    // Typed during the delay: no dot, now or after it.
    m.type_keys("abc");
    let typed_during = third.elapsed();
    assert!(typed_during < Duration::from_secs(3), "typing took until {typed_during:?} of a 4 s delay");
    let left = Duration::from_secs(4).saturating_sub(third.elapsed() + Duration::from_millis(200));
    wait_for_screen(&mut m, "countdown", &countdown, left);
    std::thread::sleep(Duration::from_secs(4).saturating_sub(third.elapsed()) + Duration::from_millis(300));
    wait_for_screen(&mut m, "after-delay", &[over], STEP);

    m.type_keys(PASSPHRASE);
    wait_for_screen(&mut m, "typed", &[unlock_screen(PASSPHRASE.len(), "", Tone::Info)], STEP);
    m.type_keys("\n");
    m.expect("disks unlocked", STEP);
    m.expect("unlock demo ended: Unlocked", STEP);
    let serial = m.serial();
    // Nothing typed reaches the log once the screen is up.
    let after_boot = serial.split("asking for the disk passphrase").nth(1).unwrap_or_default();
    assert!(!after_boot.contains(PASSPHRASE), "the passphrase reached the log: {after_boot}");
    assert!(!after_boot.contains("abc"), "keys typed during the delay reached the log: {after_boot}");
    assert!(!after_boot.contains("wrong passphrase (try 4)"), "one wrong try too many: {after_boot}");
    m.pass();
}

/// A fresh machine: a passphrase too short is refused, two that differ are refused,
/// then one typed twice is set; F2 does nothing here.
#[test]
fn first_use_sets_a_long_enough_passphrase_typed_twice() {
    let img = image::build_scenario_image("unlock-first-use", "then=run unlock-demo=");
    let mut m = Machine::boot("unlock-first-use", &img, |c| {
        c.memory_mib = 512;
        c.cpus = 1;
    });
    m.connect_qmp();
    m.expect("BULKHEAD READY", BOOT);
    m.expect("asking for the disk passphrase (first use) for 2 VM(s)", STEP);
    let first_use = |field, typed, message: &str, tone| screen(Mode::FirstUse, field, typed, message, tone);
    wait_for_screen(&mut m, "new", &[first_use(Field::New, 0, "", Tone::Info)], STEP);
    m.type_keys("short\n");
    let too_short = first_use(Field::New, 0, "Too short: at least 8 characters.", Tone::Refused);
    wait_for_screen(&mut m, "too-short", &[too_short], STEP);
    m.type_keys("battery-staple\n");
    wait_for_screen(&mut m, "confirm", &[first_use(Field::Confirm, 0, "", Tone::Info)], STEP);
    m.type_keys("battery-stapel\n");
    let mismatch = first_use(Field::New, 0, "Passphrases do not match. Choose the new one again.", Tone::Refused);
    wait_for_screen(&mut m, "mismatch", &[mismatch], STEP);
    m.send_keys("f2");
    m.type_keys("battery-staple\nbattery-staple\n");
    m.expect("disks unlocked", STEP);
    m.expect("unlock demo ended: Unlocked", STEP);
    m.pass();
}

/// F2 opens the change screen and Esc goes back from it; Esc while unlocking starts
/// without the encrypted disks.
#[test]
fn f2_opens_change_esc_goes_back_and_esc_again_skips() {
    let img = image::build_scenario_image("unlock-skip", &format!("then=run unlock-demo={PASSPHRASE}"));
    let mut m = Machine::boot("unlock-skip", &img, |c| {
        c.memory_mib = 512;
        c.cpus = 1;
    });
    m.connect_qmp();
    m.expect("BULKHEAD READY", BOOT);
    m.expect("asking for the disk passphrase (unlock) for 2 VM(s)", STEP);
    m.type_keys("abc");
    wait_for_screen(&mut m, "typed", &[unlock_screen(3, "", Tone::Info)], STEP);
    m.send_keys("f2");
    let change = screen(Mode::Change, Field::Current, 0, "", Tone::Info);
    wait_for_screen(&mut m, "change", &[change], STEP);
    m.type_keys("xy");
    wait_for_screen(&mut m, "change-typed", &[screen(Mode::Change, Field::Current, 2, "", Tone::Info)], STEP);
    m.send_keys("esc");
    wait_for_screen(&mut m, "back", &[unlock_screen(0, "", Tone::Info)], STEP);
    assert!(!m.serial().contains("unlock demo ended"), "Esc in the change screen ended the screen");
    m.send_keys("esc");
    m.expect("skipped: starting without the encrypted disks", STEP);
    m.expect("unlock demo ended: Skipped", STEP);
    m.pass();
}
