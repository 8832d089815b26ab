//! Reading the physical machine's CMOS clock at boot, so guests get the real date.
//!
//! The caller supplies `read(index) -> u8` (write the index to port 0x70, read 0x71);
//! everything here is pure. The procedure follows the MC146818A datasheet's advice for
//! reading during operation: wait until UIP is clear, read the time, and read it again
//! until two consecutive readings agree, so an update between the reads cannot produce
//! a torn value (e.g. 12:59:59 read as 12:00:59).
#![forbid(unsafe_code)]

use crate::hw::calendar::DateTime;

/// Why the host clock could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRtcError {
    /// UIP never cleared (no RTC, or a stopped one).
    UpdateStuck,
    /// Consecutive readings kept differing.
    Unstable,
    /// A register held a value no valid date has (bad BCD, month 13, ...).
    BadValue,
}

/// One reading of the time registers and the format they are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    second: u8,
    minute: u8,
    hour: u8,
    day: u8,
    month: u8,
    year: u8,
    century: Option<u8>,
    status_b: u8,
}

// Register indices and bits, MC146818A Figure 3 and "Registers".
const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0A;
const STATUS_B: u8 = 0x0B;
const A_UIP: u8 = 1 << 7;
const B_BINARY: u8 = 1 << 2;
const B_24H: u8 = 1 << 1;
const HOUR_PM: u8 = 1 << 7;

/// Status A polls before giving up on UIP. An update takes under 2 ms; each poll is a
/// pair of port accesses of about 1 µs on real hardware.
pub const UIP_POLLS: u32 = 100_000;
/// Readings taken while looking for two that agree.
pub const MAX_READINGS: u32 = 10;

/// Reads the host RTC and returns the Unix time it shows (the RTC is assumed to run in
/// UTC). `century_index` is the FADT `CENTURY` field (0 or `None`: no century
/// register; years 70..=99 are then 19xx and 00..=69 20xx).
pub fn read_host_rtc(mut read: impl FnMut(u8) -> u8, century_index: Option<u8>) -> Result<u64, HostRtcError> {
    let century_index = century_index.filter(|&i| i != 0);
    let mut previous = take_reading(&mut read, century_index)?;
    for _ in 1..MAX_READINGS {
        let reading = take_reading(&mut read, century_index)?;
        if reading == previous {
            return decode(&reading).map(|dt| dt.to_unix());
        }
        previous = reading;
    }
    Err(HostRtcError::Unstable)
}

fn take_reading(read: &mut impl FnMut(u8) -> u8, century_index: Option<u8>) -> Result<Reading, HostRtcError> {
    let mut polls = 0u32;
    while read(STATUS_A) & A_UIP != 0 {
        polls = polls.saturating_add(1);
        if polls >= UIP_POLLS {
            return Err(HostRtcError::UpdateStuck);
        }
    }
    Ok(Reading {
        second: read(SECONDS),
        minute: read(MINUTES),
        hour: read(HOURS),
        day: read(DAY_OF_MONTH),
        month: read(MONTH),
        year: read(YEAR),
        century: century_index.map(&mut *read),
        status_b: read(STATUS_B),
    })
}

fn from_bcd(value: u8) -> Result<u8, HostRtcError> {
    let (tens, ones) = (value >> 4, value & 0x0F);
    if tens > 9 || ones > 9 {
        return Err(HostRtcError::BadValue);
    }
    Ok(tens.wrapping_mul(10).wrapping_add(ones))
}

fn decode(r: &Reading) -> Result<DateTime, HostRtcError> {
    let binary = r.status_b & B_BINARY != 0;
    let field = |v: u8| if binary { Ok(v) } else { from_bcd(v) };
    let hour = if r.status_b & B_24H != 0 {
        field(r.hour)?
    } else {
        let h12 = field(r.hour & !HOUR_PM)?;
        if !(1..=12).contains(&h12) {
            return Err(HostRtcError::BadValue);
        }
        (h12 % 12).wrapping_add(if r.hour & HOUR_PM != 0 { 12 } else { 0 })
    };
    let year_in_century = field(r.year)?;
    let century = match r.century {
        Some(c) => field(c)?,
        None if year_in_century >= 70 => 19,
        None => 20,
    };
    let dt = DateTime {
        year: u16::from(century).wrapping_mul(100).wrapping_add(u16::from(year_in_century)),
        month: field(r.month)?,
        day: field(r.day)?,
        hour,
        minute: field(r.minute)?,
        second: field(r.second)?,
    };
    let valid = (19..=99).contains(&century)
        && year_in_century <= 99
        && (1..=12).contains(&dt.month)
        && (1..=31).contains(&dt.day)
        && dt.hour <= 23
        && dt.minute <= 59
        && dt.second <= 59;
    if valid { Ok(dt) } else { Err(HostRtcError::BadValue) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A scripted CMOS: register contents, plus a UIP pattern and a mid-read update.
    struct FakeCmos {
        regs: [u8; 128],
        /// UIP reads as set for this many status-A reads.
        uip_reads: u32,
        /// After this many register reads, `after` is applied (an update cycle).
        update_after: Option<(usize, Vec<(u8, u8)>)>,
        reads: usize,
    }

    impl FakeCmos {
        fn new(pairs: &[(u8, u8)]) -> Self {
            let mut regs = [0u8; 128];
            for &(i, v) in pairs {
                regs[usize::from(i)] = v;
            }
            FakeCmos { regs, uip_reads: 0, update_after: None, reads: 0 }
        }

        fn read(&mut self, index: u8) -> u8 {
            self.reads += 1;
            if let Some((after, changes)) = &self.update_after
                && self.reads > *after
            {
                for &(i, v) in changes {
                    self.regs[usize::from(i)] = v;
                }
                self.update_after = None;
            }
            if index == STATUS_A && self.uip_reads > 0 {
                self.uip_reads -= 1;
                return 0x26 | A_UIP;
            }
            self.regs[usize::from(index)]
        }
    }

    /// 2024-02-29 23:59:59 in BCD, 24-hour, with the century at 0x32.
    fn leap_day_bcd() -> FakeCmos {
        FakeCmos::new(&[
            (SECONDS, 0x59),
            (MINUTES, 0x59),
            (HOURS, 0x23),
            (DAY_OF_MONTH, 0x29),
            (MONTH, 0x02),
            (YEAR, 0x24),
            (0x32, 0x20),
            (STATUS_A, 0x26),
            (STATUS_B, B_24H),
        ])
    }

    const LEAP_DAY_2359_59: u64 = 1_709_251_199;

    #[test]
    fn reads_bcd_24h_with_century() {
        let mut cmos = leap_day_bcd();
        cmos.uip_reads = 5;
        assert_eq!(read_host_rtc(|i| cmos.read(i), Some(0x32)), Ok(LEAP_DAY_2359_59));
    }

    #[test]
    fn a_mid_read_update_is_not_torn() {
        let mut cmos = leap_day_bcd();
        // The update to 2024-03-01 00:00:00 lands after the seconds were read.
        cmos.update_after = Some((
            2,
            alloc::vec![(SECONDS, 0x00), (MINUTES, 0x00), (HOURS, 0x00), (DAY_OF_MONTH, 0x01), (MONTH, 0x03)],
        ));
        assert_eq!(read_host_rtc(|i| cmos.read(i), Some(0x32)), Ok(LEAP_DAY_2359_59 + 1));
    }

    #[test]
    fn reads_binary_12h() {
        let mut cmos = FakeCmos::new(&[
            (SECONDS, 7),
            (MINUTES, 5),
            (HOURS, HOUR_PM | 12),
            (DAY_OF_MONTH, 1),
            (MONTH, 1),
            (YEAR, 0),
            (STATUS_B, B_BINARY),
        ]);
        // 2000-01-01 12:05:07, century inferred.
        assert_eq!(read_host_rtc(|i| cmos.read(i), None), Ok(946_728_307));
        cmos.regs[usize::from(HOURS)] = 12; // 12 AM is midnight
        assert_eq!(read_host_rtc(|i| cmos.read(i), Some(0)), Ok(946_684_800 + 307));
        cmos.regs[usize::from(YEAR)] = 99;
        assert_eq!(read_host_rtc(|i| cmos.read(i), None), Ok(915_148_800 + 307), "1999-01-01");
    }

    #[test]
    fn failures_are_reported() {
        let mut stuck = leap_day_bcd();
        stuck.uip_reads = u32::MAX;
        assert_eq!(read_host_rtc(|i| stuck.read(i), None), Err(HostRtcError::UpdateStuck));
        let mut bad_bcd = leap_day_bcd();
        bad_bcd.regs[usize::from(SECONDS)] = 0x5A;
        assert_eq!(read_host_rtc(|i| bad_bcd.read(i), None), Err(HostRtcError::BadValue));
        let mut bad_month = leap_day_bcd();
        bad_month.regs[usize::from(MONTH)] = 0x13;
        assert_eq!(read_host_rtc(|i| bad_month.read(i), None), Err(HostRtcError::BadValue));
        let mut bad_hour = leap_day_bcd();
        bad_hour.regs[usize::from(STATUS_B)] = 0;
        bad_hour.regs[usize::from(HOURS)] = 0x00; // hour 0 does not exist in 12-hour mode
        assert_eq!(read_host_rtc(|i| bad_hour.read(i), None), Err(HostRtcError::BadValue));
        // No RTC at all: the ports float high.
        assert_eq!(read_host_rtc(|_| 0xFF, None), Err(HostRtcError::UpdateStuck));
        // A counter that changes on every read never settles.
        let mut n = 0u8;
        let unstable = read_host_rtc(
            |i| {
                n = n.wrapping_add(1);
                if i == STATUS_A { 0 } else { n % 10 }
            },
            None,
        );
        assert_eq!(unstable, Err(HostRtcError::Unstable));
    }
}
