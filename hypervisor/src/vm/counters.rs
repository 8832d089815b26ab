//! Exit counters per VM, by reason: the first thing to look at when a guest is slow.
#![forbid(unsafe_code)]

use core::fmt;
use core::sync::atomic::AtomicU64;

use crate::arch::exit::ExitReason;

const NAMES: [&str; 19] = [
    "cpuid",
    "rdmsr",
    "wrmsr",
    "io",
    "npf",
    "hlt",
    "hypercall",
    "intr",
    "nmi",
    "shutdown",
    "vintr",
    "exception",
    "xsetbv",
    "rdtsc",
    "pause",
    "wbinvd",
    "unsupported",
    "invalid",
    "unknown",
];

/// How many MSRs' writes are counted one by one (the first ones written; the rest
/// only in `wrmsr`).
const TRACKED_MSRS: usize = 32;
/// How many I/O ports' exits are counted one by one (the first ones used; the rest
/// only in `io`).
const TRACKED_PORTS: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct ExitCounters {
    counts: [u64; NAMES.len()],
    /// `wrmsr` exits by MSR, for the first [`TRACKED_MSRS`] MSRs written.
    msr_writes: [(u32, u64); TRACKED_MSRS],
    /// `io` exits by port, for the first [`TRACKED_PORTS`] ports used.
    io_ports: [(u16, u64); TRACKED_PORTS],
    /// Host TSC ticks spent in guest mode (from just before VMRUN to just after the
    /// exit). Under QEMU's `-icount shift=0` a tick is one instruction retired.
    guest_tsc: u64,
}

/// Host TSC ticks the hypervisor spent halted with nothing to run, machine-wide.
/// Under `-icount` with `sleep=off` these are the virtual clock's jumps to the next
/// timer, not instructions.
pub static IDLE_TSC: AtomicU64 = AtomicU64::new(0);

fn index(reason: &ExitReason) -> usize {
    match reason {
        ExitReason::Cpuid => 0,
        ExitReason::MsrRead { .. } => 1,
        ExitReason::MsrWrite { .. } => 2,
        ExitReason::Io(_) => 3,
        ExitReason::NestedPageFault { .. } => 4,
        ExitReason::Hlt => 5,
        ExitReason::Hypercall => 6,
        ExitReason::ExternalInterrupt => 7,
        ExitReason::Nmi => 8,
        ExitReason::Shutdown => 9,
        ExitReason::InterruptWindow => 10,
        ExitReason::Exception { .. } => 11,
        ExitReason::Xsetbv => 12,
        ExitReason::Rdtsc | ExitReason::Rdtscp => 13,
        ExitReason::Pause => 14,
        ExitReason::Wbinvd => 15,
        ExitReason::UnsupportedInstruction => 16,
        ExitReason::InvalidGuestState { .. } => 17,
        _ => 18,
    }
}

impl ExitCounters {
    pub fn record(&mut self, reason: &ExitReason) {
        if let Some(c) = self.counts.get_mut(index(reason)) {
            *c = c.saturating_add(1);
        }
        match reason {
            ExitReason::MsrWrite { msr, .. } => count_by_key(&mut self.msr_writes, *msr),
            ExitReason::Io(io) => count_by_key(&mut self.io_ports, io.port),
            _ => {}
        }
    }

    /// Adds one stretch of guest mode, in host TSC ticks.
    pub fn add_guest_tsc(&mut self, ticks: u64) {
        self.guest_tsc = self.guest_tsc.saturating_add(ticks);
    }

    /// Host TSC ticks spent in guest mode since the VM's start.
    pub fn guest_tsc(&self) -> u64 {
        self.guest_tsc
    }

    /// The exits since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &ExitCounters) -> ExitCounters {
        let mut out = ExitCounters::default();
        for ((o, now), before) in out.counts.iter_mut().zip(self.counts).zip(earlier.counts) {
            *o = now.saturating_sub(before);
        }
        for ((o, &(msr, now)), &(_, before)) in out.msr_writes.iter_mut().zip(&self.msr_writes).zip(&earlier.msr_writes)
        {
            *o = (msr, now.saturating_sub(before));
        }
        for ((o, &(port, now)), &(_, before)) in out.io_ports.iter_mut().zip(&self.io_ports).zip(&earlier.io_ports) {
            *o = (port, now.saturating_sub(before));
        }
        out.guest_tsc = self.guest_tsc.saturating_sub(earlier.guest_tsc);
        out
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn get(&self, name: &str) -> u64 {
        NAMES.iter().position(|n| *n == name).and_then(|i| self.counts.get(i)).copied().unwrap_or(0)
    }
}

impl fmt::Display for ExitCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} exits", self.total())?;
        for (name, count) in NAMES.iter().zip(self.counts).filter(|(_, c)| *c > 0) {
            write!(f, " {name}={count}")?;
        }
        Ok(())
    }
}

/// Counts one more for `key` in `slots` (a slot stays with the key that first used it;
/// once all are taken, new keys go uncounted).
fn count_by_key<K: Copy + PartialEq>(slots: &mut [(K, u64)], key: K) {
    let slot =
        (slots.iter().position(|(k, n)| *k == key && *n > 0)).or_else(|| slots.iter().position(|(_, n)| *n == 0));
    if let Some((k, n)) = slot.and_then(|i| slots.get_mut(i)) {
        *k = key;
        *n = n.saturating_add(1);
    }
}

/// `wrmsr` exits by MSR, displayed as ` wrmsr.0x6e0=12 ...`, then `io` exits by port,
/// as ` io.0x3f8=5 ...`.
#[derive(Debug)]
pub struct MsrWrites<'a>(&'a ExitCounters);

impl ExitCounters {
    /// The `wrmsr` exits by MSR, for display.
    pub fn msr_writes(&self) -> MsrWrites<'_> {
        MsrWrites(self)
    }
}

impl fmt::Display for MsrWrites<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (msr, count) in self.0.msr_writes.iter().filter(|(_, n)| *n > 0) {
            write!(f, " wrmsr.{msr:#x}={count}")?;
        }
        for (port, count) in self.0.io_ports.iter().filter(|(_, n)| *n > 0) {
            write!(f, " io.{port:#x}={count}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let mut c = ExitCounters::default();
        c.record(&ExitReason::Cpuid);
        c.record(&ExitReason::Cpuid);
        c.record(&ExitReason::Hlt);
        assert_eq!(c.get("cpuid"), 2);
        assert_eq!(alloc::format!("{c}"), "3 exits cpuid=2 hlt=1");
        let before = c.clone();
        c.record(&ExitReason::Hlt);
        assert_eq!(alloc::format!("{}", c.since(&before)), "1 exits hlt=1");
        for msr in [0x6e0, 0x6e0, 0x80b, 0x6e0] {
            c.record(&ExitReason::MsrWrite { msr, value: 0 });
        }
        let io = |port| {
            ExitReason::Io(crate::arch::exit::IoExit {
                port,
                size: crate::hw::AccessSize::Byte,
                direction: crate::arch::exit::IoDirection::In,
                string: false,
                rep: false,
            })
        };
        c.record(&io(0x3f8));
        c.record(&io(0x608));
        c.record(&io(0x3f8));
        let since = c.since(&before);
        assert_eq!(
            alloc::format!("{since}{}", since.msr_writes()),
            "8 exits wrmsr=4 io=3 hlt=1 wrmsr.0x6e0=3 wrmsr.0x80b=1 io.0x3f8=2 io.0x608=1"
        );
    }

    #[test]
    fn guest_time_adds_up_and_goes_into_since() {
        let mut c = ExitCounters::default();
        c.add_guest_tsc(1000);
        let before = c.clone();
        c.add_guest_tsc(250);
        c.add_guest_tsc(u64::MAX);
        assert_eq!(c.guest_tsc(), u64::MAX, "saturates");
        assert_eq!(before.guest_tsc(), 1000);
        let mut d = ExitCounters::default();
        d.add_guest_tsc(40);
        d.add_guest_tsc(2);
        assert_eq!(d.since(&ExitCounters::default()).guest_tsc(), 42);
        assert_eq!(c.since(&before).guest_tsc(), u64::MAX - 1000);
    }
}
