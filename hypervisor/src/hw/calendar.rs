//! Calendar dates as the PC's CMOS clock keeps them: the host's clock is read into
//! one, a guest's clock model is set from one.

/// A calendar date and time of day (UTC, proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: u16,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

const SECS_PER_DAY: u64 = 86_400;
/// Days from 0000-03-01 to 1970-01-01 in the algorithm below.
const EPOCH_SHIFT_DAYS: i64 = 719_468;
const DAYS_PER_ERA: i64 = 146_097;
/// The supported range, years 0..=9999, in days since 1970-01-01.
const MIN_DAYS: i64 = -719_528;
const MAX_DAYS: i64 = 2_932_896;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-compatible
/// low-level date algorithms", `days_from_civil`). Arguments are clamped to years
/// 0..=9999, months 1..=12 and days 1..=31; a day past the month's end rolls over.
#[allow(clippy::arithmetic_side_effects)] // bounded by the clamps above
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let month = i64::from(month.clamp(1, 12));
    let day = i64::from(day.clamp(1, 31));
    let y = year.clamp(0, 9999) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * DAYS_PER_ERA + doe - EPOCH_SHIFT_DAYS
}

/// The date `days` after 1970-01-01 (`civil_from_days`), clamped to years 0..=9999.
#[allow(clippy::arithmetic_side_effects)] // bounded by the clamp
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days.clamp(MIN_DAYS, MAX_DAYS) + EPOCH_SHIFT_DAYS;
    let era = z.div_euclid(DAYS_PER_ERA);
    let doe = z - era * DAYS_PER_ERA;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u8, day as u8)
}

impl DateTime {
    /// The date and time `unix_secs` after the epoch (years beyond 9999 clamp).
    pub fn from_unix(unix_secs: u64) -> DateTime {
        let days = i64::try_from(unix_secs / SECS_PER_DAY).unwrap_or(MAX_DAYS);
        let (year, month, day) = civil_from_days(days);
        let secs = unix_secs % SECS_PER_DAY;
        DateTime {
            year: year as u16,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
        }
    }

    /// Seconds since the epoch; dates before 1970 give 0. Out-of-range fields are clamped.
    pub fn to_unix(&self) -> u64 {
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        // At most 86399: cannot overflow.
        let secs_of_day = u64::from(self.hour.min(23))
            .wrapping_mul(3600)
            .wrapping_add(u64::from(self.minute.min(59)).wrapping_mul(60))
            .wrapping_add(u64::from(self.second.min(59)));
        u64::try_from(days).map_or(0, |d| d.saturating_mul(SECS_PER_DAY).saturating_add(secs_of_day))
    }

    /// Day of the week, 1 = Sunday (the RTC's convention).
    pub fn weekday(&self) -> u8 {
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        // 1970-01-01 was a Thursday.
        (days.wrapping_add(4).rem_euclid(7) as u8).wrapping_add(1)
    }
}
