//! The offline lease: a VM marked `needs_lease` runs only while the laptop has checked
//! in with its management server recently enough. The reference point is the last
//! check-in the server signed (see [`crate::heartbeat`]), or, before the first one, the
//! time the running bundle was issued: a stick made long ago does not give a fresh
//! lease. A clock more than [`CLOCK_TOLERANCE_S`] behind the last trusted time counts
//! as expired, so winding the clock back cannot stretch a lease; a server clock a few
//! seconds ahead of the laptop's (the usual skew) must not stop a running VM.

use crate::device::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Holds for this many more seconds.
    Holds { remaining_s: u64 },
    /// Expired: the last check-in (or issue time) was this long ago.
    Expired { offline_s: u64, lease_s: u64 },
    /// The clock is behind a time the laptop already trusted.
    ClockBehind { behind_s: u64 },
}

impl Lease {
    pub fn holds(&self) -> bool {
        matches!(self, Lease::Holds { .. })
    }
}

/// How far the laptop's clock may be behind a time it trusted (a server's clock, a
/// bundle's issue time) before that counts as a clock wound back.
pub const CLOCK_TOLERANCE_S: u64 = 300;

/// The lease at clock time `now`.
pub fn lease(now: u64, trusted_time: u64, last_checkin: u64, issued_at: u64, lease_s: u64) -> Lease {
    if now.saturating_add(CLOCK_TOLERANCE_S) < trusted_time {
        return Lease::ClockBehind { behind_s: trusted_time - now };
    }
    let since = last_checkin.max(issued_at);
    let offline_s = now.saturating_sub(since);
    if offline_s >= lease_s {
        Lease::Expired { offline_s, lease_s }
    } else {
        Lease::Holds { remaining_s: lease_s - offline_s }
    }
}

impl core::fmt::Display for Lease {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Lease::Holds { remaining_s } => write!(f, "lease holds for {}", Duration(*remaining_s)),
            Lease::Expired { offline_s, lease_s } => write!(
                f,
                "no check-in with IT's server for {} (the lease is {})",
                Duration(*offline_s),
                Duration(*lease_s)
            ),
            Lease::ClockBehind { behind_s } => {
                write!(f, "the clock is {} behind the last trusted time", Duration(*behind_s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn lease_runs_from_the_last_checkin_or_the_issue_time() {
        assert_eq!(lease(1000, 900, 0, 950, 100), Lease::Holds { remaining_s: 50 });
        assert_eq!(lease(1100, 900, 0, 950, 100), Lease::Expired { offline_s: 150, lease_s: 100 });
        assert_eq!(lease(1100, 900, 1090, 950, 100), Lease::Holds { remaining_s: 90 });
        // A server clock a second ahead of the laptop's: the lease holds.
        assert_eq!(lease(1100, 1101, 1101, 950, 100), Lease::Holds { remaining_s: 100 });
        // A clock wound back past the tolerance: expired.
        assert_eq!(lease(800, 1500, 1490, 950, 100), Lease::ClockBehind { behind_s: 700 });
        assert!(!lease(800, 1500, 1490, 950, 100).holds());
        assert_eq!(
            Lease::Expired { offline_s: 7200, lease_s: 3600 }.to_string(),
            "no check-in with IT's server for 2 h (the lease is 60 min)"
        );
    }
}
