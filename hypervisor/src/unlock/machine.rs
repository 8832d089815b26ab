//! The passphrase screen's state machine, pure: it takes [`PassKey`]s and the time in
//! milliseconds, holds what is typed in [`Secret`]s, asks the [`Vault`], and says what
//! the screen shows. No clock, no hardware: the driver in `mod.rs` supplies both.
//!
//! Wrong passphrases cost a delay that doubles with every wrong try (1, 2, 4 … 60 s);
//! keys typed during it are ignored, except Esc. Every buffer is wiped as soon as its
//! content is no longer needed: after each check, on every mode change, and on drop.

use core::fmt::Write;

use log::warn;
use ui::passphrase::{Field, Mode, Tone};

use super::secret::{MAX_PASSPHRASE, Secret};
use super::typing::PassKey;
use super::{UnlockOutcome, Vault};

/// The least a new passphrase must have.
pub const MIN_NEW_LENGTH: usize = 8;
/// The delay after the first wrong passphrase; it doubles with each one after it.
const FIRST_DELAY_MS: u64 = 1000;
/// The longest delay.
pub const MAX_DELAY_MS: u64 = 60_000;

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockStep {
    /// Keep reading keys.
    Continue,
    /// Show the screen (it says the vault is at work), then call [`UnlockMachine::check`]:
    /// the vault's key derivation can take a second.
    Check,
    /// The screen is finished.
    Done(UnlockOutcome),
}

/// What the message line says (the countdown is worked out when it is shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    None,
    Wrong,
    Empty,
    TooShort,
    TooLong,
    Mismatch,
    Busy,
}

/// What a check asks the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Unlock,
    SetNew,
    Change,
}

/// Everything the screen shows that changes; equal views draw the same screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockView {
    pub mode: Mode,
    pub field: Field,
    pub typed: usize,
    pub message: heapless::String<64>,
    pub tone: Tone,
}

#[derive(Debug)]
pub struct UnlockMachine {
    mode: Mode,
    field: Field,
    /// The field being typed.
    typed: Secret,
    /// Change: the current passphrase, kept while the new one is typed.
    current: Secret,
    /// The new passphrase, kept while it is typed again.
    first: Secret,
    wrong_tries: u32,
    /// No key but Esc counts before this time.
    retry_at_ms: u64,
    notice: Notice,
    pending: Option<Request>,
}

/// The delay after the `tries`-th wrong passphrase in a row.
pub fn delay_ms(tries: u32) -> u64 {
    let doublings = tries.saturating_sub(1).min(16);
    FIRST_DELAY_MS.saturating_mul(1 << doublings).min(MAX_DELAY_MS)
}

impl UnlockMachine {
    /// Unlock mode, or first use when the vault has no passphrase yet.
    pub fn new(first_use: bool) -> UnlockMachine {
        let (mode, field) = if first_use { (Mode::FirstUse, Field::New) } else { (Mode::Unlock, Field::Passphrase) };
        UnlockMachine {
            mode,
            field,
            typed: Secret::new(),
            current: Secret::new(),
            first: Secret::new(),
            wrong_tries: 0,
            retry_at_ms: 0,
            notice: Notice::None,
            pending: None,
        }
    }

    /// Wrong passphrases so far.
    pub fn wrong_tries(&self) -> u32 {
        self.wrong_tries
    }

    /// Takes one key at `now_ms`.
    pub fn key(&mut self, input: PassKey, now_ms: u64) -> UnlockStep {
        if self.pending.is_some() {
            return UnlockStep::Check;
        }
        if input == PassKey::Escape {
            return self.escape();
        }
        if now_ms < self.retry_at_ms {
            return UnlockStep::Continue;
        }
        match input {
            PassKey::Char(byte) => {
                if self.typed.push(byte) {
                    if self.notice != Notice::TooLong {
                        self.notice = Notice::None;
                    }
                } else {
                    self.notice = Notice::TooLong;
                }
            }
            PassKey::Backspace => {
                self.typed.pop();
                if self.notice == Notice::TooLong {
                    self.notice = Notice::None;
                }
            }
            PassKey::Change if self.mode == Mode::Unlock => {
                self.wipe_all();
                self.mode = Mode::Change;
                self.field = Field::Current;
                self.notice = Notice::None;
            }
            PassKey::Change | PassKey::Escape => {}
            PassKey::Enter => return self.enter(),
        }
        UnlockStep::Continue
    }

    fn escape(&mut self) -> UnlockStep {
        self.wipe_all();
        self.notice = Notice::None;
        if self.mode == Mode::Change {
            self.mode = Mode::Unlock;
            self.field = Field::Passphrase;
            return UnlockStep::Continue;
        }
        UnlockStep::Done(UnlockOutcome::Skipped)
    }

    fn enter(&mut self) -> UnlockStep {
        match self.field {
            Field::Passphrase | Field::Current if self.typed.is_empty() => self.notice = Notice::Empty,
            Field::Passphrase => return self.start(Request::Unlock),
            Field::Current => {
                self.current.take_from(&mut self.typed);
                self.field = Field::New;
                self.notice = Notice::None;
            }
            Field::New if self.typed.len() < MIN_NEW_LENGTH => {
                self.typed.wipe();
                self.notice = Notice::TooShort;
            }
            Field::New => {
                self.first.take_from(&mut self.typed);
                self.field = Field::Confirm;
                self.notice = Notice::None;
            }
            Field::Confirm if self.first.same_as(self.typed.as_bytes()) => {
                return self.start(if self.mode == Mode::Change { Request::Change } else { Request::SetNew });
            }
            Field::Confirm => {
                self.typed.wipe();
                self.first.wipe();
                self.field = Field::New;
                self.notice = Notice::Mismatch;
            }
        }
        UnlockStep::Continue
    }

    fn start(&mut self, pending: Request) -> UnlockStep {
        self.pending = Some(pending);
        self.notice = Notice::Busy;
        UnlockStep::Check
    }

    /// Asks `vault` what [`UnlockStep::Check`] announced; `now_ms` is the time after the
    /// screen said so (a wrong passphrase's delay counts from here).
    pub fn check(&mut self, vault: &mut dyn Vault, now_ms: u64) -> UnlockStep {
        let Some(pending) = self.pending.take() else { return UnlockStep::Continue };
        let accepted = match pending {
            Request::Unlock => vault.unlock(self.typed.as_bytes()).is_ok(),
            Request::SetNew => {
                vault.set_new(self.first.as_bytes());
                true
            }
            Request::Change => vault.change(self.current.as_bytes(), self.first.as_bytes()).is_ok(),
        };
        self.wipe_all();
        if accepted {
            self.notice = Notice::None;
            return UnlockStep::Done(UnlockOutcome::Unlocked);
        }
        self.wrong_tries = self.wrong_tries.saturating_add(1);
        let delay = delay_ms(self.wrong_tries);
        self.retry_at_ms = now_ms.saturating_add(delay);
        self.notice = Notice::Wrong;
        if self.mode == Mode::Change {
            self.field = Field::Current;
        }
        warn!(target: "unlock", "wrong passphrase (try {}), next try in {} s", self.wrong_tries, delay / 1000);
        UnlockStep::Continue
    }

    /// What the screen shows at `now_ms`.
    pub fn view(&self, now_ms: u64) -> UnlockView {
        let mut message = heapless::String::new();
        let waiting = self.retry_at_ms.saturating_sub(now_ms);
        let tone = match self.notice {
            Notice::Wrong if waiting > 0 => {
                // Whole seconds, rounded up: "1 s" until the very end.
                let seconds = waiting.div_ceil(1000);
                let _ = write!(message, "Wrong passphrase. Try again in {seconds} s");
                Tone::Refused
            }
            Notice::Wrong => {
                let _ = message.push_str("Wrong passphrase. Type it again.");
                Tone::Refused
            }
            Notice::Empty => {
                let _ = message.push_str("Type the passphrase first.");
                Tone::Info
            }
            Notice::TooShort => {
                let _ = write!(message, "Too short: at least {MIN_NEW_LENGTH} characters.");
                Tone::Refused
            }
            Notice::TooLong => {
                let _ = write!(message, "At most {MAX_PASSPHRASE} characters.");
                Tone::Refused
            }
            Notice::Mismatch => {
                let _ = message.push_str("Passphrases do not match. Choose the new one again.");
                Tone::Refused
            }
            Notice::Busy => {
                let _ = message.push_str(match self.pending {
                    Some(Request::SetNew) => "Setting the passphrase...",
                    Some(Request::Change) => "Changing the passphrase...",
                    _ => "Unlocking...",
                });
                Tone::Busy
            }
            Notice::None => Tone::Info,
        };
        UnlockView { mode: self.mode, field: self.field, typed: self.typed.len(), message, tone }
    }

    fn wipe_all(&mut self) {
        self.typed.wipe();
        self.current.wipe();
        self.first.wipe();
    }

    /// Every buffer, for tests that check the wiping.
    #[cfg(test)]
    pub fn buffers(&self) -> [&Secret; 3] {
        [&self.typed, &self.current, &self.first]
    }
}
