//! The passphrase screen: at boot, before any VM with an encrypted disk starts, the
//! hypervisor asks on its own screen, from its own keyboard, for the passphrase that
//! unlocks the disks. No guest runs yet and none ever owns the keyboard, so no guest
//! can read a keystroke of it (docs/passphrase.md).
//!
//! [`machine`] is the pure state machine (modes, delays after wrong passphrases,
//! wiping); [`typing`] turns scan codes into its keys; [`ask`] is the thin driver that
//! polls the keyboard, keeps the time and redraws. The caller supplies the disks'
//! side as a [`Vault`].
#![forbid(unsafe_code)]

use log::{info, warn};

use crate::host::keyboard::{HostKeyboard, PortIo};

pub mod machine;
pub mod memory_vault;
pub mod secret;
#[cfg(test)]
mod tests;
pub mod typing;

use machine::{UnlockMachine, UnlockStep, UnlockView};
use typing::Typing;

/// The passphrase was not the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrong;

/// The disks' side of the screen: whatever holds the wrapped disk keys.
pub trait Vault {
    /// No passphrase was ever set (a fresh machine): the screen asks for a new one.
    fn is_new(&self) -> bool;
    /// Unlocks the disks with `passphrase` (e.g. an Argon2id key that unwraps theirs).
    fn unlock(&mut self, passphrase: &[u8]) -> Result<(), Wrong>;
    /// Sets the first passphrase on a fresh machine; the disks are unlocked after it.
    fn set_new(&mut self, passphrase: &[u8]);
    /// Replaces `old` with `new`; the disks are unlocked after it.
    fn change(&mut self, old: &[u8], new: &[u8]) -> Result<(), Wrong>;
}

/// How the screen ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockOutcome {
    /// The disks are unlocked (after unlocking, setting the first passphrase, or
    /// changing it).
    Unlocked,
    /// Esc: start without the encrypted disks; the VMs that need them do not start.
    Skipped,
}

/// The pause between two looks at the keyboard.
const POLL_INTERVAL_MS: u64 = 2;

/// Shows the passphrase screen until the disks are unlocked or the user skips them.
/// `waiting` names the VMs whose disks need the passphrase. Runs at boot, before any
/// VM, with interrupts off: it polls the keyboard itself.
pub fn ask(vault: &mut dyn Vault, waiting: &[&str]) -> UnlockOutcome {
    let mut keyboard = match HostKeyboard::init(PortIo, false) {
        Ok(keyboard) => keyboard,
        Err(why) => {
            warn!(target: "unlock", "no keyboard ({why:?}): starting without the encrypted disks");
            return UnlockOutcome::Skipped;
        }
    };
    let ticks_per_ms = crate::arch::x86::tsc::cached_ticks_per_ms().max(1);
    let now_ms = || crate::arch::x86::instr::rdtsc().checked_div(ticks_per_ms).unwrap_or(0);
    // Boxed so the buffers stay in one place: moving the machine would leave copies
    // of what is typed on the stack.
    let mut machine = alloc::boxed::Box::new(UnlockMachine::new(vault.is_new()));
    let mut typing = Typing::new();
    let mut shown: Option<UnlockView> = None;
    info!(
        target: "unlock",
        "asking for the disk passphrase ({}) for {} VM(s)",
        if vault.is_new() { "first use" } else { "unlock" },
        waiting.len()
    );
    loop {
        let now = now_ms();
        let mut step = UnlockStep::Continue;
        keyboard.poll(|byte| {
            // Bytes after the screen ends (or during a check) are dropped.
            if step == UnlockStep::Continue
                && let Some(key) = typing.feed(byte)
            {
                step = machine.key(key, now);
            }
        });
        if step == UnlockStep::Check {
            show(&machine.view(now_ms()), waiting, &mut shown);
            step = machine.check(vault, now_ms());
        }
        if let UnlockStep::Done(outcome) = step {
            match outcome {
                UnlockOutcome::Unlocked => info!(target: "unlock", "disks unlocked"),
                UnlockOutcome::Skipped => info!(target: "unlock", "skipped: starting without the encrypted disks"),
            }
            return outcome;
        }
        show(&machine.view(now_ms()), waiting, &mut shown);
        pause_ms(&now_ms, POLL_INTERVAL_MS);
    }
}

/// Draws `view` unless it is already on the screen.
fn show(view: &UnlockView, waiting: &[&str], shown: &mut Option<UnlockView>) {
    if shown.as_ref() == Some(view) {
        return;
    }
    let screen = ui::passphrase::PassphraseScreen {
        product: crate::PRODUCT,
        mode: view.mode,
        field: view.field,
        waiting,
        typed: view.typed,
        min_length: machine::MIN_NEW_LENGTH,
        message: view.message.as_str(),
        tone: view.tone,
    };
    crate::host::screen::with_target(|fb| ui::passphrase::draw(fb, &screen));
    *shown = Some(view.clone());
}

fn pause_ms(now_ms: &impl Fn() -> u64, ms: u64) {
    let until = now_ms().saturating_add(ms);
    while now_ms() < until {
        core::hint::spin_loop();
    }
}
