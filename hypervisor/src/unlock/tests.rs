use super::machine::{MAX_DELAY_MS, MIN_NEW_LENGTH, UnlockMachine, UnlockStep, delay_ms};
use super::memory_vault::MemoryVault;
use super::secret::MAX_PASSPHRASE;
use super::typing::{PassKey, Typing};
use super::{UnlockOutcome, Vault};
use ui::passphrase::{Field, Mode, Tone};

fn type_text(m: &mut UnlockMachine, text: &str, now: u64) {
    for b in text.bytes() {
        assert_eq!(m.key(PassKey::Char(b), now), UnlockStep::Continue);
    }
}

/// Types `text` and Enter, and runs the check the machine asks for.
fn submit(m: &mut UnlockMachine, vault: &mut dyn Vault, text: &str, now: u64) -> UnlockStep {
    type_text(m, text, now);
    match m.key(PassKey::Enter, now) {
        UnlockStep::Check => m.check(vault, now),
        other => other,
    }
}

fn all_wiped(m: &UnlockMachine) -> bool {
    m.buffers().iter().all(|s| s.is_empty() && s.raw().iter().all(|&b| b == 0))
}

#[test]
fn the_right_passphrase_unlocks_and_leaves_nothing_behind() {
    let mut vault = MemoryVault::holding(b"correct horse");
    let mut m = UnlockMachine::new(vault.is_new());
    type_text(&mut m, "correct horse", 0);
    let view = m.view(0);
    assert_eq!((view.mode, view.field, view.typed), (Mode::Unlock, Field::Passphrase, 13));
    assert_eq!(m.key(PassKey::Enter, 0), UnlockStep::Check);
    let busy = m.view(0);
    assert_eq!((busy.message.as_str(), busy.tone), ("Unlocking...", Tone::Busy));
    assert_eq!(m.check(&mut vault, 5), UnlockStep::Done(UnlockOutcome::Unlocked));
    assert!(all_wiped(&m));
    assert_eq!(vault.checks, 1);
}

#[test]
fn wrong_passphrases_cost_a_growing_delay_during_which_keys_are_ignored() {
    let mut vault = MemoryVault::holding(b"correct horse");
    let mut m = UnlockMachine::new(false);
    assert_eq!(submit(&mut m, &mut vault, "wrong", 1000), UnlockStep::Continue);
    assert!(all_wiped(&m), "the wrong passphrase is wiped at once");
    assert_eq!(m.wrong_tries(), 1);
    let view = m.view(1000);
    assert_eq!(
        (view.message.as_str(), view.tone, view.typed),
        ("Wrong passphrase. Try again in 1 s", Tone::Refused, 0)
    );
    // Typed during the delay: ignored, Enter included.
    type_text(&mut m, "correct horse", 1500);
    assert_eq!(m.key(PassKey::Enter, 1999), UnlockStep::Continue);
    assert_eq!(m.view(1999).typed, 0);
    assert_eq!(vault.checks, 1);
    assert_eq!(m.view(2000).message.as_str(), "Wrong passphrase. Type it again.");

    assert_eq!(submit(&mut m, &mut vault, "still wrong", 2000), UnlockStep::Continue);
    assert_eq!(m.view(2000).message.as_str(), "Wrong passphrase. Try again in 2 s");
    // Rounded up: 1.5 s left reads "2 s", 1 ms left "1 s".
    assert_eq!(m.view(2500).message.as_str(), "Wrong passphrase. Try again in 2 s");
    assert_eq!(m.view(3999).message.as_str(), "Wrong passphrase. Try again in 1 s");
    assert_eq!(submit(&mut m, &mut vault, "third", 4000), UnlockStep::Continue);
    assert_eq!(m.view(4000).message.as_str(), "Wrong passphrase. Try again in 4 s");
    assert_eq!(m.wrong_tries(), 3);
    assert_eq!(submit(&mut m, &mut vault, "correct horse", 8000), UnlockStep::Done(UnlockOutcome::Unlocked));
    assert_eq!(vault.checks, 4);
}

#[test]
fn delays_double_up_to_a_minute() {
    let delays: Vec<u64> = (1..=9).map(delay_ms).collect();
    assert_eq!(delays, [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    assert_eq!(delay_ms(u32::MAX), MAX_DELAY_MS);
}

#[test]
fn escape_skips_even_during_a_delay_and_wipes() {
    let mut vault = MemoryVault::holding(b"correct horse");
    let mut m = UnlockMachine::new(false);
    submit(&mut m, &mut vault, "wrong", 0);
    type_text(&mut m, "ignored", 10);
    assert_eq!(m.key(PassKey::Escape, 10), UnlockStep::Done(UnlockOutcome::Skipped));
    assert!(all_wiped(&m));

    let mut m = UnlockMachine::new(false);
    type_text(&mut m, "half typed", 0);
    assert_eq!(m.key(PassKey::Escape, 0), UnlockStep::Done(UnlockOutcome::Skipped));
    assert!(all_wiped(&m));
}

#[test]
fn backspace_and_the_length_limit() {
    let mut m = UnlockMachine::new(false);
    type_text(&mut m, "abc", 0);
    m.key(PassKey::Backspace, 0);
    assert_eq!(m.view(0).typed, 2);
    assert_eq!(m.buffers()[0].raw()[2], 0, "the erased character is zeroed");
    let long = "x".repeat(MAX_PASSPHRASE + 5);
    type_text(&mut m, &long, 0);
    let view = m.view(0);
    assert_eq!(view.typed, MAX_PASSPHRASE);
    assert_eq!(view.message.as_str(), format!("At most {MAX_PASSPHRASE} characters."));
    m.key(PassKey::Backspace, 0);
    assert_eq!(m.view(0).message.as_str(), "");
    // Enter on an empty field asks for the passphrase instead of checking it.
    let mut m = UnlockMachine::new(false);
    assert_eq!(m.key(PassKey::Enter, 0), UnlockStep::Continue);
    assert_eq!(m.view(0).message.as_str(), "Type the passphrase first.");
}

#[test]
fn first_use_asks_for_a_long_enough_passphrase_twice() {
    let mut vault = MemoryVault::holding(b"");
    assert!(vault.is_new());
    let mut m = UnlockMachine::new(vault.is_new());
    let view = m.view(0);
    assert_eq!((view.mode, view.field), (Mode::FirstUse, Field::New));
    // F2 does nothing here.
    m.key(PassKey::Change, 0);
    assert_eq!(m.view(0).mode, Mode::FirstUse);

    let short = "s".repeat(MIN_NEW_LENGTH - 1);
    assert_eq!(submit(&mut m, &mut vault, &short, 0), UnlockStep::Continue);
    let view = m.view(0);
    assert_eq!((view.field, view.typed, view.tone), (Field::New, 0, Tone::Refused));
    assert!(all_wiped(&m));

    assert_eq!(submit(&mut m, &mut vault, "battery staple", 0), UnlockStep::Continue);
    assert_eq!(m.view(0).field, Field::Confirm);
    assert_eq!(submit(&mut m, &mut vault, "battery stapel", 0), UnlockStep::Continue);
    let view = m.view(0);
    assert_eq!(
        (view.field, view.message.as_str()),
        (Field::New, "Passphrases do not match. Choose the new one again.")
    );
    assert!(all_wiped(&m), "both tries are wiped after a mismatch");
    assert!(vault.is_new());

    submit(&mut m, &mut vault, "battery staple", 0);
    type_text(&mut m, "battery staple", 0);
    assert_eq!(m.key(PassKey::Enter, 0), UnlockStep::Check);
    assert_eq!(m.view(0).message.as_str(), "Setting the passphrase...");
    assert_eq!(m.check(&mut vault, 0), UnlockStep::Done(UnlockOutcome::Unlocked));
    assert!(all_wiped(&m));
    assert!(!vault.is_new());
    assert_eq!(vault.unlock(b"battery staple"), Ok(()));
    assert_eq!(m.wrong_tries(), 0);
}

#[test]
fn change_takes_the_current_passphrase_then_the_new_one_twice() {
    let mut vault = MemoryVault::holding(b"correct horse");
    let mut m = UnlockMachine::new(false);
    type_text(&mut m, "partial", 0);
    m.key(PassKey::Change, 0);
    let view = m.view(0);
    assert_eq!((view.mode, view.field, view.typed), (Mode::Change, Field::Current, 0));
    assert!(all_wiped(&m), "switching modes wipes what was typed");

    // A wrong current passphrase counts as a wrong try, found once the new one is typed.
    submit(&mut m, &mut vault, "not it", 0);
    assert_eq!(m.view(0).field, Field::New);
    submit(&mut m, &mut vault, "new passphrase", 0);
    assert_eq!(m.view(0).field, Field::Confirm);
    assert_eq!(submit(&mut m, &mut vault, "new passphrase", 0), UnlockStep::Continue);
    let view = m.view(0);
    assert_eq!(
        (view.mode, view.field, view.message.as_str()),
        (Mode::Change, Field::Current, "Wrong passphrase. Try again in 1 s")
    );
    assert!(all_wiped(&m));
    assert_eq!(vault.unlock(b"correct horse"), Ok(()));

    submit(&mut m, &mut vault, "correct horse", 1000);
    submit(&mut m, &mut vault, "new passphrase", 1000);
    type_text(&mut m, "new passphrase", 1000);
    assert_eq!(m.key(PassKey::Enter, 1000), UnlockStep::Check);
    assert_eq!(m.view(1000).message.as_str(), "Changing the passphrase...");
    assert_eq!(m.check(&mut vault, 1000), UnlockStep::Done(UnlockOutcome::Unlocked));
    assert!(all_wiped(&m));
    assert!(vault.unlock(b"correct horse").is_err());
    assert_eq!(vault.unlock(b"new passphrase"), Ok(()));
}

#[test]
fn escape_leaves_change_for_unlock() {
    let mut vault = MemoryVault::holding(b"correct horse");
    let mut m = UnlockMachine::new(false);
    m.key(PassKey::Change, 0);
    submit(&mut m, &mut vault, "correct horse", 0);
    type_text(&mut m, "new", 0);
    assert_eq!(m.key(PassKey::Escape, 0), UnlockStep::Continue);
    let view = m.view(0);
    assert_eq!((view.mode, view.field, view.typed), (Mode::Unlock, Field::Passphrase, 0));
    assert!(all_wiped(&m));
    assert_eq!(submit(&mut m, &mut vault, "correct horse", 0), UnlockStep::Done(UnlockOutcome::Unlocked));
}

#[test]
fn scan_codes_to_unlocked() {
    // "Ab1!" then Enter, in set 1 with left shift.
    let bytes = [0x2A, 0x1E, 0x9E, 0xAA, 0x30, 0xB0, 0x02, 0x82, 0x2A, 0x02, 0x82, 0xAA, 0x1C, 0x9C];
    let mut vault = MemoryVault::holding(b"Ab1!");
    let mut m = UnlockMachine::new(false);
    let mut typing = Typing::new();
    let mut last = UnlockStep::Continue;
    for b in bytes {
        if let Some(key) = typing.feed(b) {
            last = m.key(key, 0);
        }
    }
    assert_eq!(last, UnlockStep::Check);
    assert_eq!(m.check(&mut vault, 0), UnlockStep::Done(UnlockOutcome::Unlocked));
}
