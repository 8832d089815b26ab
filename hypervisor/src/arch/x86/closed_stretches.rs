//! How long the host runs with interrupts closed between places that take them: an
//! interrupt-driven keyboard is read the moment its interrupt can be taken, so the
//! longest closed stretch is the longest the keyboard can go unread. Interrupts are
//! taken during a guest's slice (a host interrupt ends the guest's run), in the idle
//! halt and inside [`with_interrupts_open`]; the switcher's poll reads the keyboard too.
//! A stretch starts when one of those ends and ends when the next begins.

use core::sync::atomic::{AtomicU64, Ordering};

use super::instr::rdtsc;

/// TSC when the current closed stretch began (0: none is being timed).
static SINCE: AtomicU64 = AtomicU64::new(0);
/// Longest stretch since the switcher last asked, in ticks.
static WORST_UNREPORTED: AtomicU64 = AtomicU64::new(0);

/// Interrupts can be taken again (or the keyboard is being polled): the stretch ends.
pub fn stretch_ends() {
    let since = SINCE.swap(0, Ordering::Relaxed);
    if since != 0 {
        let ticks = rdtsc().saturating_sub(since);
        WORST_UNREPORTED.fetch_max(ticks, Ordering::Relaxed);
    }
}

/// Interrupts close from now on until the next [`stretch_ends`].
pub fn stretch_starts() {
    SINCE.store(rdtsc(), Ordering::Relaxed);
}

/// The longest closed stretch since the last call, in ticks.
pub fn take_worst_unreported() -> u64 {
    WORST_UNREPORTED.swap(0, Ordering::Relaxed)
}

/// Runs `work` with interrupts on (and turns them off again if they were off): for
/// long work outside the exit path, so the keyboard's interrupt empties the controller
/// meanwhile. The interrupt handlers only record what fired and take no locks.
pub fn with_interrupts_open<R>(work: impl FnOnce() -> R) -> R {
    let open = !x86_64::instructions::interrupts::are_enabled();
    if open {
        stretch_ends();
        x86_64::instructions::interrupts::enable();
    }
    let result = work();
    if open {
        x86_64::instructions::interrupts::disable();
        stretch_starts();
    }
    result
}
