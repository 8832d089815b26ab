//! Virtual time for device models. A VM's time is its guest TSC: a `u64` count of
//! ticks at a fixed, known frequency (`tsc_hz`). Models never read a hardware clock;
//! every call that depends on time takes `now` (the guest TSC at that moment), and
//! every timer-bearing model reports `next_deadline() -> Option<u64>` in guest TSC
//! ticks. The vCPU loop arms one host timer for the earliest deadline of all models
//! and calls their `tick(now)` when it expires (or on any exit, which is harmless:
//! `tick` only fires what is due).
//!
//! Conversions between the TSC and a device's own clock (the 8254's 1.193182 MHz,
//! the local APIC timer's bus clock) are done in 128-bit arithmetic and saturate at
//! `u64::MAX`, which is "never" for a deadline.
#![forbid(unsafe_code)]

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// A VM's clock: the guest TSC and its frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestClock {
    tsc_hz: u64,
}

impl GuestClock {
    /// `None` if `tsc_hz` is 0.
    pub const fn new(tsc_hz: u64) -> Option<GuestClock> {
        if tsc_hz == 0 { None } else { Some(GuestClock { tsc_hz }) }
    }

    pub const fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// How many whole ticks of an `hz` clock fit into `tsc_delta` TSC ticks (rounded
    /// down, so a device never reports an event before it is due).
    pub fn tsc_to_ticks(&self, tsc_delta: u64, hz: u64) -> u64 {
        scale_floor(tsc_delta, hz, self.tsc_hz)
    }

    /// How many TSC ticks `ticks` of an `hz` clock last (rounded up, so a deadline
    /// computed from it is never early). `hz == 0` gives `u64::MAX` (never).
    pub fn ticks_to_tsc(&self, ticks: u64, hz: u64) -> u64 {
        scale_ceil(ticks, self.tsc_hz, hz)
    }

    pub fn tsc_to_ns(&self, tsc_delta: u64) -> u64 {
        self.tsc_to_ticks(tsc_delta, NS_PER_SEC)
    }

    pub fn ns_to_tsc(&self, ns: u64) -> u64 {
        self.ticks_to_tsc(ns, NS_PER_SEC)
    }
}

/// CPUID leaf 0x15 (SDM Vol. 2A, CPUID "Time Stamp Counter and Nominal Core Crystal
/// Clock"): `(eax, ebx, ecx)` = denominator, numerator and crystal Hz, with
/// `tsc_hz = crystal_hz * ebx / eax`. Linux takes `crystal_hz` as the local APIC
/// timer rate (`lapic_timer_period = crystal_khz * 1000 / HZ` in `native_calibrate_tsc`),
/// so pass [`APIC_TIMER_HZ`](super::vlapic::APIC_TIMER_HZ). The ratio is reduced
/// exactly when it fits 32 bits, else approximated.
pub fn cpuid_tsc_leaf(tsc_hz: u64, crystal_hz: u64) -> (u32, u32, u32) {
    let (mut num, mut den) = (tsc_hz, crystal_hz.max(1));
    let g = gcd(num, den);
    num = num.checked_div(g).unwrap_or(0);
    den = den.checked_div(g).unwrap_or(1);
    while num > u64::from(u32::MAX) || den > u64::from(u32::MAX) {
        num >>= 1;
        den = (den >> 1).max(1);
    }
    let crystal = u32::try_from(crystal_hz).unwrap_or(0);
    (den as u32, num as u32, crystal)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a.checked_rem(b).unwrap_or(0));
    }
    a.max(1)
}

/// `value * mul / div`, rounded down, saturating; `div == 0` saturates.
pub fn scale_floor(value: u64, mul: u64, div: u64) -> u64 {
    let wide = u128::from(value).saturating_mul(u128::from(mul));
    wide.checked_div(u128::from(div)).map_or(u64::MAX, saturate)
}

/// `value * mul / div`, rounded up, saturating; `div == 0` saturates.
pub fn scale_ceil(value: u64, mul: u64, div: u64) -> u64 {
    let wide = u128::from(value).saturating_mul(u128::from(mul));
    let div = u128::from(div);
    match (wide.checked_div(div), wide.checked_rem(div)) {
        (Some(q), Some(r)) => saturate(if r == 0 { q } else { q.saturating_add(1) }),
        _ => u64::MAX,
    }
}

fn saturate(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_frequency_is_rejected() {
        assert!(GuestClock::new(0).is_none());
        assert_eq!(GuestClock::new(2_000_000_000).unwrap().tsc_hz(), 2_000_000_000);
    }

    #[test]
    fn conversions_round_the_safe_way() {
        let c = GuestClock::new(3_000_000_000).unwrap();
        assert_eq!(c.ns_to_tsc(1), 3);
        assert_eq!(c.tsc_to_ns(2), 0);
        assert_eq!(c.tsc_to_ns(3), 1);
        // One PIT tick is 2514.28 TSC ticks at 3 GHz: deadline rounds up, counts down.
        assert_eq!(c.ticks_to_tsc(1, 1_193_182), 2515);
        assert_eq!(c.tsc_to_ticks(2514, 1_193_182), 0);
        assert_eq!(c.tsc_to_ticks(2515, 1_193_182), 1);
        // Round trip never lands before the tick.
        for t in [1u64, 7, 11_931, 65_536, 1 << 40] {
            assert!(c.tsc_to_ticks(c.ticks_to_tsc(t, 1_193_182), 1_193_182) >= t);
        }
    }

    #[test]
    fn conversions_saturate() {
        let c = GuestClock::new(1).unwrap();
        assert_eq!(c.ns_to_tsc(u64::MAX), u64::MAX / NS_PER_SEC + 1);
        let fast = GuestClock::new(u64::MAX).unwrap();
        assert_eq!(fast.ns_to_tsc(u64::MAX), u64::MAX);
        assert_eq!(fast.ticks_to_tsc(5, 0), u64::MAX);
        assert_eq!(scale_floor(5, 1, 0), u64::MAX);
    }

    #[test]
    fn cpuid_leaf_0x15_reports_the_tsc_ratio() {
        let (eax, ebx, ecx) = cpuid_tsc_leaf(2_450_000_000, 1_000_000_000);
        assert_eq!((eax, ebx, ecx), (20, 49, 1_000_000_000));
        // What Linux computes from it.
        assert_eq!(u64::from(ecx) / 1000 * u64::from(ebx) / u64::from(eax), 2_450_000);
        // A ratio that does not fit 32 bits is approximated closely.
        let (eax, ebx, _) = cpuid_tsc_leaf(4_999_999_999, 1_000_000_000);
        let tsc = 1_000_000_000u128 * u128::from(ebx) / u128::from(eax);
        assert!(tsc.abs_diff(4_999_999_999) < 10, "{tsc}");
        assert_eq!(cpuid_tsc_leaf(0, 0).0, 1);
    }

    #[test]
    fn earliest_deadline() {
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(5), None), Some(5));
        assert_eq!(earliest(None, Some(7)), Some(7));
        assert_eq!(earliest(Some(9), Some(7)), Some(7));
    }
}
