//! When the agent checks in: soon after the uplink has an address, then every
//! check-in interval; after a failure sooner, with a backoff that doubles up to the
//! interval (and at most [`MAX_BACKOFF`]).

use smoltcp::time::{Duration, Instant};

/// The first check-in after the uplink gets an address waits this long (the uplink's
/// ARP and the server's own start settle).
pub const FIRST_DELAY: Duration = Duration::from_secs(2);
pub const MIN_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Check-in intervals are taken between these.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Without a management server, ask again this often (an accepted update may add one).
pub const UNMANAGED_RECHECK: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Default)]
pub struct Schedule {
    next: Option<Instant>,
    failures: u32,
}

fn interval(interval_s: u32) -> Duration {
    Duration::from_secs(u64::from(interval_s)).max(MIN_INTERVAL).min(MAX_INTERVAL)
}

impl Schedule {
    /// Whether a check-in is due at `now`; without an uplink address none is, and the
    /// next address starts over with [`FIRST_DELAY`].
    pub fn due(&mut self, now: Instant, uplink_ready: bool) -> bool {
        if !uplink_ready {
            self.next = None;
            return false;
        }
        match self.next {
            None => {
                self.next = Some(now + FIRST_DELAY);
                false
            }
            Some(at) => now >= at,
        }
    }

    pub fn succeeded(&mut self, now: Instant, interval_s: u32) {
        self.failures = 0;
        self.next = Some(now + interval(interval_s));
    }

    /// Returns the wait before the next try.
    pub fn failed(&mut self, now: Instant, interval_s: u32) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doubling = 1u64 << self.failures.saturating_sub(1).min(16);
        let wait = (MIN_BACKOFF * doubling as u32).min(MAX_BACKOFF).min(interval(interval_s));
        self.next = Some(now + wait);
        wait
    }

    pub fn unmanaged(&mut self, now: Instant) {
        self.next = Some(now + UNMANAGED_RECHECK);
    }

    /// When the next check-in is due, if one is planned.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Instant {
        Instant::from_secs(secs as i64)
    }

    #[test]
    fn first_checkin_waits_for_an_address_then_a_moment() {
        let mut s = Schedule::default();
        assert!(!s.due(t(0), false));
        assert!(!s.due(t(10), true));
        assert!(!s.due(t(11), true));
        assert!(s.due(t(12), true));
        s.succeeded(t(12), 60);
        assert!(!s.due(t(71), true));
        assert!(s.due(t(72), true));
        // Losing the address starts over.
        assert!(!s.due(t(80), false));
        assert!(!s.due(t(200), true));
        assert!(s.due(t(202), true));
    }

    #[test]
    fn failures_back_off_up_to_the_interval() {
        let mut s = Schedule::default();
        let waits: alloc::vec::Vec<u64> = (0..8).map(|_| s.failed(t(0), 60).secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60, 60, 60]);
        let mut long = Schedule::default();
        let last = (0..40).map(|_| long.failed(t(0), 86_400).secs()).last();
        assert_eq!(last, Some(300));
        long.succeeded(t(0), 5);
        assert_eq!(long.next(), Some(t(10)), "intervals below the minimum are raised");
        assert_eq!(long.failed(t(0), 60).secs(), 5, "a success resets the backoff");
    }
}
