//! Where the instructions of an exit round trip go: TSC checkpoints along the exit
//! path, summed per stage. Off unless the cmdline says `exit-stages` (for `cargo
//! xtask bench exits`: under QEMU's `-icount shift=0,sleep=off` the TSC counts
//! instructions, so the sums are path lengths). Off, a checkpoint is a load and a
//! branch; on, it adds about ten instructions to the stage it ends.
//!
//! A checkpoint ends a stage: the TSC ticks since the previous checkpoint are added
//! to that stage's sum.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// The stages of one exit round trip, in the order the checkpoints come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The guest running, plus the VMRUN stub both ways (not reported).
    Guest = 0,
    /// After VMRUN: guest XCR0/XSAVE, VMCB to register block, exit decode.
    ExitDecode,
    /// The host-interrupt window and the exit counters.
    Bookkeeping,
    /// The exit handler in `dispatch::decide` and the set-up of its environment,
    /// without the instruction fetch and decode.
    Handler,
    /// Fetching and decoding the instruction at RIP to find its length (no NRIP save).
    InsnDecode,
    /// Applying the decision (RIP, events), BAR sync, power events, slice-end checks.
    Apply,
    /// The loop top: INTx resampling, device interrupts, pending interrupt checks.
    Interrupts,
    /// Entry: XRSTOR and the VMCB's RAX/RSP/RIP/RFLAGS before VMRUN.
    Entry,
}

const STAGES: usize = 8;
const NAMES: [&str; STAGES] =
    ["guest", "exit-decode", "bookkeeping", "handler", "insn-decode", "apply", "interrupts", "entry"];

static ENABLED: AtomicBool = AtomicBool::new(false);
static CLOCK: spin::Mutex<StageClock> = spin::Mutex::new(StageClock::new());

/// Turns the checkpoints on (cmdline `exit-stages`).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Ends `stage` now.
#[inline(always)]
pub fn checkpoint(stage: Stage) {
    if ENABLED.load(Ordering::Relaxed) {
        record(stage);
    }
}

#[inline(never)]
fn record(stage: Stage) {
    CLOCK.lock().record(stage, crate::arch::x86::instr::rdtsc());
}

/// The sums since the last `take` (all zero when off), zeroed; counting resumes at
/// the next entry, so the exit that reads them (and logs them) is not counted.
pub fn take() -> Sums {
    CLOCK.lock().take()
}

/// The checkpoint arithmetic.
#[derive(Debug)]
struct StageClock {
    last: u64,
    paused: bool,
    sums: [u64; STAGES],
}

impl StageClock {
    const fn new() -> StageClock {
        StageClock { last: 0, paused: true, sums: [0; STAGES] }
    }

    fn record(&mut self, stage: Stage, now: u64) {
        let since = now.wrapping_sub(core::mem::replace(&mut self.last, now));
        if self.paused {
            self.paused = stage != Stage::Entry;
            return;
        }
        if let Some(sum) = self.sums.get_mut(stage as usize) {
            *sum = sum.wrapping_add(since);
        }
    }

    fn take(&mut self) -> Sums {
        self.paused = true;
        Sums(core::mem::take(&mut self.sums))
    }
}

/// Ticks per stage, displayed as ` stage.guest=1234 stage.exit-decode=123 ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sums(pub [u64; STAGES]);

impl fmt::Display for Sums {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, sum) in NAMES.iter().zip(self.0) {
            write!(f, " stage.{name}={sum}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_display_every_stage() {
        let s = Sums([9, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            s.to_string(),
            " stage.guest=9 stage.exit-decode=1 stage.bookkeeping=2 stage.handler=3 stage.insn-decode=4 stage.apply=5 stage.interrupts=6 stage.entry=7"
        );
    }

    #[test]
    fn each_checkpoint_charges_the_ticks_since_the_previous_one_to_its_stage() {
        let mut c = StageClock::new();
        // Paused until the first entry: nothing before it counts.
        c.record(Stage::Handler, 100);
        c.record(Stage::Entry, 150);
        assert_eq!(c.sums, [0; STAGES]);
        c.record(Stage::Guest, 1150);
        c.record(Stage::ExitDecode, 1200);
        c.record(Stage::InsnDecode, 1500);
        c.record(Stage::Handler, 1510);
        c.record(Stage::Entry, 1520);
        c.record(Stage::Guest, 2000);
        c.record(Stage::ExitDecode, 2050);
        assert_eq!(c.take(), Sums([1480, 100, 0, 10, 300, 0, 0, 10]));
        // After a take, the rest of that exit is not counted; the next round trip is.
        c.record(Stage::Handler, 9000);
        c.record(Stage::Entry, 9010);
        c.record(Stage::Guest, 9020);
        assert_eq!(c.take(), Sums([10, 0, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn off_by_default() {
        // Nothing in the library's tests enables it, and `take` then reads zeros.
        assert!(!enabled());
        checkpoint(Stage::Handler);
        assert_eq!(take(), Sums([0; STAGES]));
    }
}
