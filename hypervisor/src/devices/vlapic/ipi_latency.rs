//! How long fixed IPIs between a VM's vCPUs take, in guest TSC ticks (under QEMU's
//! `-icount shift=0`, instructions of the whole machine), for `cargo xtask bench smp`
//! and the `!exits` serial command:
//!
//! - **sent → taken**: from the sender's ICR write (the exit that carries it) to the
//!   entry that injects the vector into the receiver (IRR → ISR);
//! - **sent → EOI**: from the ICR write to the receiver's EOI of that vector, as the
//!   hypervisor sees it: an EOI register write at its exit; a paravirtual EOI (no
//!   exit) at the receiver's next exit, so that figure is an upper bound.
//!
//! Each receiving local APIC times one IPI at a time: one that arrives while another
//! is timed is not counted (a second one with the same vector merges into the first
//! in the IRR anyway). Fixed state, nothing allocated or logged per IPI.
#![forbid(unsafe_code)]

/// Count, sum, minimum and maximum of durations in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyStat {
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
}

impl LatencyStat {
    pub fn record(&mut self, ticks: u64) {
        self.min = if self.count == 0 { ticks } else { self.min.min(ticks) };
        self.max = self.max.max(ticks);
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(ticks);
    }

    /// Both sets of durations together.
    pub fn merged(self, other: LatencyStat) -> LatencyStat {
        if self.count == 0 {
            return other;
        }
        if other.count == 0 {
            return self;
        }
        LatencyStat {
            count: self.count.saturating_add(other.count),
            sum: self.sum.saturating_add(other.sum),
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

/// `count/sum/min/max`, the form the `!exits` line prints and the bench parses.
impl core::fmt::Display for LatencyStat {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}/{}/{}", self.count, self.sum, self.min, self.max)
    }
}

/// A receiver's figures (or a VM's, [`IpiLatency::merged`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpiLatency {
    timed: Option<Timed>,
    pub sent_to_taken: LatencyStat,
    /// Retired by an EOI register write (MMIO 0xB0 or MSR 0x80B).
    pub sent_to_eoi: LatencyStat,
    /// Retired by a paravirtual EOI, seen at the receiver's next exit.
    pub sent_to_pv_eoi: LatencyStat,
}

/// The IPI being timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timed {
    vector: u8,
    sent_at: u64,
    taken: bool,
}

/// How the receiver retired a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EoiKind {
    Register,
    Paravirtual,
}

impl IpiLatency {
    /// A fixed IPI with `vector`, written into the sender's ICR at `sent_at`, reached
    /// this APIC's IRR.
    pub fn arrived(&mut self, vector: u8, sent_at: u64) {
        if self.timed.is_none() {
            self.timed = Some(Timed { vector, sent_at, taken: false });
        }
    }

    /// The vCPU takes `vector` at `now` (injection).
    pub fn taken(&mut self, vector: u8, now: u64) {
        if let Some(t) = self.timed.as_mut()
            && t.vector == vector
            && !t.taken
        {
            t.taken = true;
            self.sent_to_taken.record(now.saturating_sub(t.sent_at));
        }
    }

    /// The vCPU retired `vector` at `now`.
    pub fn retired(&mut self, vector: u8, now: u64, kind: EoiKind) {
        let Some(t) = self.timed else { return };
        if t.vector != vector || !t.taken {
            return;
        }
        self.timed = None;
        let ticks = now.saturating_sub(t.sent_at);
        match kind {
            EoiKind::Register => self.sent_to_eoi.record(ticks),
            EoiKind::Paravirtual => self.sent_to_pv_eoi.record(ticks),
        }
    }

    /// The APIC was reset (INIT, disabled): the timed IPI is gone.
    pub fn forget(&mut self) {
        self.timed = None;
    }

    /// Two receivers' figures together (nothing in flight).
    pub fn merged(self, other: IpiLatency) -> IpiLatency {
        IpiLatency {
            timed: None,
            sent_to_taken: self.sent_to_taken.merged(other.sent_to_taken),
            sent_to_eoi: self.sent_to_eoi.merged(other.sent_to_eoi),
            sent_to_pv_eoi: self.sent_to_pv_eoi.merged(other.sent_to_pv_eoi),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_one_ipi_from_send_to_injection_and_eoi() {
        let mut l = IpiLatency::default();
        l.arrived(0xFD, 1000);
        // A second IPI while the first is timed is not counted.
        l.arrived(0xFC, 1100);
        l.taken(0xFC, 1200);
        assert_eq!(l.sent_to_taken.count, 0);
        l.taken(0xFD, 1500);
        // Taken once only.
        l.taken(0xFD, 1600);
        l.retired(0xFC, 1700, EoiKind::Register);
        assert_eq!(l.sent_to_eoi.count, 0);
        l.retired(0xFD, 1800, EoiKind::Register);
        assert_eq!(l.sent_to_taken, LatencyStat { count: 1, sum: 500, min: 500, max: 500 });
        assert_eq!(l.sent_to_eoi, LatencyStat { count: 1, sum: 800, min: 800, max: 800 });
        // The next one is timed again, and retired by a paravirtual EOI.
        l.arrived(0xFB, 2000);
        l.retired(0xFB, 2100, EoiKind::Paravirtual);
        assert_eq!(l.sent_to_pv_eoi.count, 0, "an EOI before the injection is not this IPI's");
        l.taken(0xFB, 2300);
        l.retired(0xFB, 2400, EoiKind::Paravirtual);
        assert_eq!(l.sent_to_pv_eoi, LatencyStat { count: 1, sum: 400, min: 400, max: 400 });
        assert_eq!(l.sent_to_taken, LatencyStat { count: 2, sum: 800, min: 300, max: 500 });
    }

    #[test]
    fn a_reset_forgets_the_ipi_in_flight_and_stats_merge() {
        let mut a = IpiLatency::default();
        a.arrived(0x40, 10);
        a.forget();
        a.taken(0x40, 20);
        assert_eq!(a.sent_to_taken.count, 0);
        // A clock that went backwards gives 0, not a wrapped figure.
        a.arrived(0x40, 50);
        a.taken(0x40, 40);
        assert_eq!(a.sent_to_taken, LatencyStat { count: 1, sum: 0, min: 0, max: 0 });
        let mut b = IpiLatency::default();
        b.arrived(0x41, 0);
        b.taken(0x41, 30);
        let m = a.merged(b).merged(IpiLatency::default());
        assert_eq!(m.sent_to_taken, LatencyStat { count: 2, sum: 30, min: 0, max: 30 });
        assert_eq!(m.sent_to_taken.to_string(), "2/30/0/30");
        assert_eq!(LatencyStat::default().merged(b.sent_to_taken), b.sent_to_taken);
    }
}
