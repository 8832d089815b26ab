//! Rate limits for log lines a guest can cause (its console, its interrupt route
//! changes, ...): a token bucket per source, so a guest printing in a loop costs the
//! hypervisor a bounded number of log lines per second, and one summary line says how
//! many were left out.
//!
//! The bucket is plain data over a millisecond clock the caller passes in; [`now_ms`]
//! reads the TSC for the hypervisor's own use.
#![forbid(unsafe_code)]

/// What the caller does with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; first log a summary of the `suppressed` lines dropped before it, if any.
    Log { suppressed: u64 },
    /// Drop it (counted for the next summary).
    Drop,
}

/// A token bucket: up to `burst` lines at once, refilled at `per_sec` lines a second.
#[derive(Debug, Clone)]
pub struct LogBudget {
    burst: u32,
    per_sec: u32,
    tokens: u32,
    /// When `tokens` was last topped up (ms); the remainder of a partial token is kept
    /// by advancing this only by whole tokens' worth.
    refilled_ms: u64,
    suppressed: u64,
}

/// Guest console lines: a boot's burst passes, a print loop is cut to 50 lines/s.
pub const CONSOLE_BURST: u32 = 1000;
pub const CONSOLE_PER_SEC: u32 = 50;
/// Interrupt route changes (MSI/MSI-X/INTx) a guest's driver causes, and the other
/// [`Source`]s.
pub const ROUTES_BURST: u32 = 64;
pub const ROUTES_PER_SEC: u32 = 4;

impl LogBudget {
    pub const fn new(burst: u32, per_sec: u32) -> Self {
        LogBudget { burst, per_sec, tokens: burst, refilled_ms: 0, suppressed: 0 }
    }

    /// Decides about one line at time `now_ms`.
    pub fn admit(&mut self, now_ms: u64) -> Admit {
        self.refill(now_ms);
        if self.tokens == 0 {
            self.suppressed = self.suppressed.saturating_add(1);
            return Admit::Drop;
        }
        self.tokens = self.tokens.saturating_sub(1);
        Admit::Log { suppressed: core::mem::take(&mut self.suppressed) }
    }

    /// Lines dropped since the last one logged.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    fn refill(&mut self, now_ms: u64) {
        if self.per_sec == 0 {
            return;
        }
        let elapsed = now_ms.saturating_sub(self.refilled_ms);
        let ms_per_token = 1000u64.checked_div(u64::from(self.per_sec)).unwrap_or(1).max(1);
        let new = elapsed.checked_div(ms_per_token).unwrap_or(0);
        if new == 0 {
            return;
        }
        let room = u64::from(self.burst.saturating_sub(self.tokens));
        self.tokens = self.tokens.saturating_add(u32::try_from(new.min(room)).unwrap_or(0));
        self.refilled_ms = if self.tokens >= self.burst {
            now_ms
        } else {
            self.refilled_ms.saturating_add(new.saturating_mul(ms_per_token))
        };
    }
}

/// Kinds of log lines a guest's actions cause, each with its own budget per VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// MSI, MSI-X and INTx route changes.
    Routes = 0,
    /// Emulation notes (dropped writes, decoder disagreements).
    Emulation = 1,
    /// Network state the service VM reports (links, the uplink's address).
    Network = 2,
    /// Check-ins the service VM carries to and from the management server.
    Policy = 3,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Routes => "interrupt route",
            Source::Emulation => "emulation",
            Source::Network => "network state",
            Source::Policy => "policy check-in",
        }
    }
}

const SOURCES: usize = 4;
/// VMs with budgets of their own; VM ids beyond share them (ids are small in practice).
const VM_SLOTS: usize = 8;

static BUDGETS: spin::Mutex<[[LogBudget; VM_SLOTS]; SOURCES]> =
    spin::Mutex::new([const { [const { LogBudget::new(ROUTES_BURST, ROUTES_PER_SEC) }; VM_SLOTS] }; SOURCES]);

/// Whether VM `vm` may log one more line of `source` now: `Some(n)` with the lines
/// suppressed before it (log a summary first when `n > 0`), `None` to drop it. See
/// [`limited!`](crate::limited).
pub fn admit(source: Source, vm: u32) -> Option<u64> {
    let now = now_ms();
    let mut budgets = BUDGETS.lock();
    let slot = budgets.get_mut(source as usize)?.get_mut(usize::try_from(vm).unwrap_or(0).checked_rem(VM_SLOTS)?)?;
    match slot.admit(now) {
        Admit::Log { suppressed } => Some(suppressed),
        Admit::Drop => None,
    }
}

/// Logs a line a guest's action caused, within `source`'s budget for VM `vm`:
/// `limited!(Source::Routes, vm, info!(target: "msi", ...))`.
#[macro_export]
macro_rules! limited {
    ($source:expr, $vm:expr, $log:expr) => {
        if let Some(suppressed) = $crate::log_limit::admit($source, $vm) {
            if suppressed > 0 {
                log::warn!(target: "log", "vm {}: {} {} lines suppressed", $vm, suppressed, $source.name());
            }
            $log;
        }
    };
}

/// Milliseconds since boot, from the TSC (0 until the TSC is calibrated).
pub fn now_ms() -> u64 {
    let per_ms = crate::arch::x86::tsc::cached_ticks_per_ms();
    if per_ms == 0 {
        return 0;
    }
    crate::arch::x86::instr::rdtsc().checked_div(per_ms).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_the_summary_counts_the_gap() {
        let mut b = LogBudget::new(3, 10);
        let at = |b: &mut LogBudget, t| b.admit(t);
        for _ in 0..3 {
            assert_eq!(at(&mut b, 0), Admit::Log { suppressed: 0 });
        }
        // A flood in the same millisecond: all dropped, counted.
        for _ in 0..1000 {
            assert_eq!(at(&mut b, 0), Admit::Drop);
        }
        assert_eq!(b.suppressed(), 1000);
        // 100 ms later one token is back: the line comes with the summary.
        assert_eq!(at(&mut b, 100), Admit::Log { suppressed: 1000 });
        assert_eq!(at(&mut b, 100), Admit::Drop);
        // Over 10 s of flooding at one line per ms, about 10 lines/s get through.
        let logged = (101..10_101).filter(|&t| matches!(b.admit(t), Admit::Log { .. })).count();
        assert!((99..=101).contains(&logged), "{logged} lines logged in 10 s");
        // A long quiet time refills only up to the burst.
        let burst = (0..10).filter(|_| matches!(b.admit(1_000_000), Admit::Log { .. })).count();
        assert_eq!(burst, 3);
    }

    #[test]
    fn each_vm_and_source_has_its_own_budget() {
        // The TSC is not calibrated in host tests: the clock stands still at 0.
        let logged = (0..1000).filter(|_| admit(Source::Routes, 6).is_some()).count();
        assert_eq!(logged, ROUTES_BURST as usize);
        // VM 6's flood leaves VM 5's route lines and its own emulation lines alone.
        assert_eq!(admit(Source::Routes, 5), Some(0));
        assert_eq!(admit(Source::Emulation, 6), Some(0));
    }
}
