//! The MC146818 real-time clock and CMOS RAM at ports 0x70 (index) / 0x71 (data).
//!
//! Time is not kept by ticking registers: the model is told the wall-clock time at one
//! guest TSC value and derives the date from the TSC at each read, so it is right
//! however long the VM was descheduled. Guest writes to the time registers (normally
//! bracketed by the SET bit) move an offset from that wall clock. Binary and BCD formats
//! (status B bit 2) and 12/24-hour mode (status B bit 1) are honoured, and UIP is set
//! for the last 244 µs of every second. The update-ended, periodic and alarm flags in
//! status C are computed when C is read; the model raises no interrupt (IRQ8).
//!
//! Reference: Motorola MC146818A datasheet, "Address Map" (Figure 3), "Registers"
//! (A, B, C, D) and "Update Cycle". Byte 0x32 holds the century (PC/AT convention; the
//! FADT `CENTURY` field points at it).
#![forbid(unsafe_code)]

use crate::hw::calendar::DateTime;
use alloc::boxed::Box;

use super::bus::PortDevice;
use crate::hw::AccessSize;

/// The guest's time-stamp counter, read when the guest touches the RTC.
pub trait TscSource {
    fn now(&self) -> u64;
}

impl<F: Fn() -> u64> TscSource for F {
    fn now(&self) -> u64 {
        self()
    }
}

/// The RTC and CMOS RAM.
pub struct Rtc {
    clock: Box<dyn TscSource + Send>,
    base_unix_secs: u64,
    base_tsc: u64,
    tsc_hz: u64,
    /// Seconds the guest moved its clock away from the wall clock.
    offset_secs: i64,
    index: u8,
    /// CMOS RAM. Time registers, status C/D and the century byte are computed instead.
    cmos: [u8; 128],
    /// The time the guest is setting while status B's SET bit is on.
    frozen: Option<DateTime>,
    /// TSC of the last status C read, for the update-ended and periodic flags.
    last_c_tsc: u64,
}

// Register indices, MC146818A Figure 3.
const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0A;
const STATUS_B: u8 = 0x0B;
const STATUS_C: u8 = 0x0C;
const STATUS_D: u8 = 0x0D;
/// Century, PC/AT CMOS convention (ACPI FADT `CENTURY`).
pub const CENTURY: u8 = 0x32;

/// Port 0x70 bit 7 masks NMIs on a PC; ignored here.
const INDEX_MASK: u8 = 0x7F;

// Status A: UIP (read-only), DV2..0, RS3..0.
const A_UIP: u8 = 1 << 7;
const A_RS_MASK: u8 = 0x0F;
/// 32.768 kHz time base, 1024 Hz periodic rate: the PC power-on value.
const A_DEFAULT: u8 = 0x26;
// Status B.
const B_SET: u8 = 1 << 7;
const B_PIE: u8 = 1 << 6;
const B_AIE: u8 = 1 << 5;
const B_UIE: u8 = 1 << 4;
const B_BINARY: u8 = 1 << 2;
const B_24H: u8 = 1 << 1;
/// 24-hour BCD, no interrupts: the PC power-on value.
const B_DEFAULT: u8 = B_24H;
// Status C.
const C_IRQF: u8 = 1 << 7;
const C_PF: u8 = 1 << 6;
const C_AF: u8 = 1 << 5;
const C_UF: u8 = 1 << 4;
// Status D: valid RAM and time.
const D_VRT: u8 = 1 << 7;
/// Alarm bytes with both top bits set match any value.
const ALARM_DONT_CARE: u8 = 0xC0;
/// 12-hour mode: bit 7 of the hours byte is PM.
const HOUR_PM: u8 = 1 << 7;

/// Port offsets from 0x70.
pub const INDEX_OFFSET: u16 = 0;
pub const DATA_OFFSET: u16 = 1;

fn to_bcd(value: u8) -> u8 {
    ((value / 10 % 10) << 4) | (value % 10)
}

fn from_bcd(value: u8) -> u8 {
    (value >> 4).wrapping_mul(10).wrapping_add(value & 0x0F)
}

impl core::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rtc")
            .field("base_unix_secs", &self.base_unix_secs)
            .field("offset_secs", &self.offset_secs)
            .field("index", &self.index)
            .field("status_a", &self.status_a())
            .field("status_b", &self.status_b())
            .field("frozen", &self.frozen)
            .finish_non_exhaustive()
    }
}

impl Rtc {
    /// An RTC that reads `base_unix_secs` when the guest TSC is `base_tsc` and advances
    /// one second per `tsc_hz` ticks of `clock`.
    pub fn new(base_unix_secs: u64, base_tsc: u64, tsc_hz: u64, clock: Box<dyn TscSource + Send>) -> Self {
        let mut cmos = [0u8; 128];
        if let Some(a) = cmos.get_mut(usize::from(STATUS_A)) {
            *a = A_DEFAULT;
        }
        if let Some(b) = cmos.get_mut(usize::from(STATUS_B)) {
            *b = B_DEFAULT;
        }
        Rtc {
            clock,
            base_unix_secs,
            base_tsc,
            tsc_hz: tsc_hz.max(1),
            offset_secs: 0,
            index: 0,
            cmos,
            frozen: None,
            last_c_tsc: base_tsc,
        }
    }

    /// Presets a CMOS RAM byte (0x0E..=0x7F; the century byte is computed).
    pub fn set_nvram(&mut self, index: u8, value: u8) {
        if index >= 0x0E
            && index != CENTURY
            && let Some(slot) = self.cmos.get_mut(usize::from(index))
        {
            *slot = value;
        }
    }

    /// The guest's wall-clock time at guest TSC `now`, including its own adjustments.
    pub fn unix_time_at(&self, now: u64) -> u64 {
        let host = self.host_unix_at(now);
        host.saturating_add_signed(self.offset_secs)
    }

    /// The guest's wall-clock time now.
    pub fn unix_time(&self) -> u64 {
        self.unix_time_at(self.clock.now())
    }

    /// Reads register `index` as the guest would at guest TSC `now`.
    pub fn register_at(&mut self, index: u8, now: u64) -> u8 {
        self.read_register(index & INDEX_MASK, now)
    }

    fn elapsed_ticks(&self, now: u64) -> u64 {
        now.saturating_sub(self.base_tsc)
    }

    fn host_unix_at(&self, now: u64) -> u64 {
        self.base_unix_secs.saturating_add(self.elapsed_ticks(now).checked_div(self.tsc_hz).unwrap_or(0))
    }

    fn status_a(&self) -> u8 {
        self.cmos.get(usize::from(STATUS_A)).copied().unwrap_or(A_DEFAULT)
    }

    fn status_b(&self) -> u8 {
        self.cmos.get(usize::from(STATUS_B)).copied().unwrap_or(B_DEFAULT)
    }

    fn now_datetime(&self, now: u64) -> DateTime {
        self.frozen.unwrap_or_else(|| DateTime::from_unix(self.unix_time_at(now)))
    }

    /// UIP: set during the 244 µs before each update (MC146818A "Update Cycle").
    fn update_in_progress(&self, now: u64) -> bool {
        if self.status_b() & B_SET != 0 {
            return false;
        }
        let into_second = self.elapsed_ticks(now).checked_rem(self.tsc_hz).unwrap_or(0);
        into_second >= self.tsc_hz.saturating_sub(self.tsc_hz / 4096)
    }

    fn encode(&self, value: u8) -> u8 {
        if self.status_b() & B_BINARY != 0 { value } else { to_bcd(value) }
    }

    fn decode(&self, value: u8) -> u8 {
        if self.status_b() & B_BINARY != 0 { value } else { from_bcd(value) }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.status_b() & B_24H != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if hour >= 12 { HOUR_PM } else { 0 }
    }

    fn decode_hour(&self, value: u8) -> u8 {
        if self.status_b() & B_24H != 0 {
            return self.decode(value);
        }
        let h12 = self.decode(value & !HOUR_PM) % 12;
        if value & HOUR_PM != 0 { h12.wrapping_add(12) } else { h12 }
    }

    /// The periodic interrupt period in TSC ticks, from status A's rate select.
    fn periodic_ticks(&self) -> Option<u64> {
        let rate = self.status_a() & A_RS_MASK;
        let hz: u64 = match rate {
            0 => return None,
            1 => 256,
            2 => 128,
            _ => 32_768 >> (rate.wrapping_sub(1)),
        };
        Some(self.tsc_hz.checked_div(hz).unwrap_or(0).max(1))
    }

    fn alarm_matches(&self, dt: &DateTime) -> bool {
        let field = |index: u8, current: u8| {
            let alarm = self.cmos.get(usize::from(index)).copied().unwrap_or(0);
            alarm & ALARM_DONT_CARE == ALARM_DONT_CARE || alarm == current
        };
        field(SECONDS_ALARM, self.encode(dt.second))
            && field(MINUTES_ALARM, self.encode(dt.minute))
            && field(HOURS_ALARM, self.encode_hour(dt.hour))
    }

    fn read_status_c(&mut self, now: u64) -> u8 {
        let last = self.last_c_tsc;
        self.last_c_tsc = now;
        let mut flags = 0;
        if self.frozen.is_none() && self.host_unix_at(now) != self.host_unix_at(last) {
            flags |= C_UF;
        }
        if let Some(period) = self.periodic_ticks()
            && self.elapsed_ticks(now).checked_div(period) != self.elapsed_ticks(last).checked_div(period)
        {
            flags |= C_PF;
        }
        if self.alarm_matches(&self.now_datetime(now)) {
            flags |= C_AF;
        }
        let b = self.status_b();
        if (flags & C_PF != 0 && b & B_PIE != 0)
            || (flags & C_AF != 0 && b & B_AIE != 0)
            || (flags & C_UF != 0 && b & B_UIE != 0)
        {
            flags |= C_IRQF;
        }
        flags
    }

    fn read_register(&mut self, index: u8, now: u64) -> u8 {
        let dt = self.now_datetime(now);
        let year = dt.year;
        match index {
            SECONDS => self.encode(dt.second),
            MINUTES => self.encode(dt.minute),
            HOURS => self.encode_hour(dt.hour),
            DAY_OF_WEEK => self.encode(dt.weekday()),
            DAY_OF_MONTH => self.encode(dt.day),
            MONTH => self.encode(dt.month),
            YEAR => self.encode((year % 100) as u8),
            CENTURY => self.encode((year / 100 % 100) as u8),
            STATUS_A => {
                let uip = if self.update_in_progress(now) { A_UIP } else { 0 };
                (self.status_a() & !A_UIP) | uip
            }
            STATUS_C => self.read_status_c(now),
            STATUS_D => D_VRT,
            _ => self.cmos.get(usize::from(index)).copied().unwrap_or(0xFF),
        }
    }

    /// Applies a write to a time register: to the frozen time while SET is on, else
    /// straight to the offset.
    fn write_time(&mut self, index: u8, value: u8, now: u64) {
        let mut dt = self.now_datetime(now);
        let binary = self.decode(value);
        match index {
            SECONDS => dt.second = binary.min(59),
            MINUTES => dt.minute = binary.min(59),
            HOURS => dt.hour = self.decode_hour(value).min(23),
            DAY_OF_MONTH => dt.day = binary.clamp(1, 31),
            MONTH => dt.month = binary.clamp(1, 12),
            YEAR => dt.year = (dt.year / 100).wrapping_mul(100).wrapping_add(u16::from(binary % 100)),
            CENTURY => dt.year = u16::from(binary % 100).wrapping_mul(100).wrapping_add(dt.year % 100),
            _ => return,
        }
        if self.frozen.is_some() {
            self.frozen = Some(dt);
        } else {
            self.set_offset_for(dt, now);
        }
    }

    fn set_offset_for(&mut self, dt: DateTime, now: u64) {
        let wanted = i128::from(dt.to_unix());
        let host = i128::from(self.host_unix_at(now));
        self.offset_secs = i64::try_from(wanted.saturating_sub(host)).unwrap_or(0);
    }

    fn write_register(&mut self, index: u8, value: u8, now: u64) {
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_MONTH | MONTH | YEAR | CENTURY => self.write_time(index, value, now),
            // The day of the week follows the date.
            DAY_OF_WEEK => {}
            STATUS_A => {
                if let Some(slot) = self.cmos.get_mut(usize::from(STATUS_A)) {
                    *slot = value & !A_UIP;
                }
            }
            STATUS_B => {
                let mut value = value;
                if value & B_SET != 0 {
                    // SET stops updates and clears UIE.
                    value &= !B_UIE;
                    if self.frozen.is_none() {
                        self.frozen = Some(self.now_datetime(now));
                    }
                } else if let Some(dt) = self.frozen.take() {
                    self.set_offset_for(dt, now);
                }
                if let Some(slot) = self.cmos.get_mut(usize::from(STATUS_B)) {
                    *slot = value;
                }
            }
            STATUS_C | STATUS_D => {}
            _ => {
                if let Some(slot) = self.cmos.get_mut(usize::from(index)) {
                    *slot = value;
                }
            }
        }
    }
}

impl PortDevice for Rtc {
    fn read(&mut self, offset: u16, size: AccessSize) -> u32 {
        if size != AccessSize::Byte {
            return size.mask() as u32;
        }
        match offset {
            DATA_OFFSET => {
                let now = self.clock.now();
                u32::from(self.read_register(self.index, now))
            }
            // The index port is write-only.
            _ => 0xFF,
        }
    }

    fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
        if size != AccessSize::Byte {
            return;
        }
        let value = value as u8;
        match offset {
            INDEX_OFFSET => self.index = value & INDEX_MASK,
            DATA_OFFSET => {
                let now = self.clock.now();
                self.write_register(self.index, value, now);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::calendar::{civil_from_days, days_from_civil};
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicU64, Ordering};

    /// The guest TSC, settable by the test.
    #[derive(Clone)]
    struct Tsc(Arc<AtomicU64>);

    impl Tsc {
        fn new(v: u64) -> Self {
            Tsc(Arc::new(AtomicU64::new(v)))
        }
        fn get(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn set(&self, v: u64) {
            self.0.store(v, Ordering::SeqCst)
        }
    }

    const HZ: u64 = 1_000_000_000;
    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const LEAP_DAY: u64 = 1_709_251_198;

    fn rtc_at(unix: u64) -> (Rtc, Tsc) {
        let tsc = Tsc::new(5_000);
        let clock = tsc.clone();
        (Rtc::new(unix, 5_000, HZ, Box::new(move || clock.get())), tsc)
    }

    fn reg(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.write(INDEX_OFFSET, AccessSize::Byte, u32::from(index));
        rtc.read(DATA_OFFSET, AccessSize::Byte) as u8
    }

    fn set(rtc: &mut Rtc, index: u8, value: u8) {
        rtc.write(INDEX_OFFSET, AccessSize::Byte, u32::from(index) | 0x80); // NMI mask bit
        rtc.write(DATA_OFFSET, AccessSize::Byte, u32::from(value));
    }

    fn time(rtc: &mut Rtc) -> [u8; 8] {
        [SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY].map(|i| reg(rtc, i))
    }

    #[test]
    fn civil_conversion_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        // 2100 is not a leap year; 2000 was.
        assert_eq!(civil_from_days(days_from_civil(2100, 2, 28) + 1), (2100, 3, 1));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 28) + 1), (2000, 2, 29));
        assert_eq!(days_from_civil(2100, 1, 1), 47_482);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2038-01-19 03:14:08, just past i32 time_t.
        assert_eq!(DateTime::from_unix(2_147_483_648).to_unix(), 2_147_483_648);
        let y2038 = DateTime::from_unix(2_147_483_648);
        assert_eq!(
            (y2038.year, y2038.month, y2038.day, y2038.hour, y2038.minute, y2038.second),
            (2038, 1, 19, 3, 14, 8)
        );
        // Round trip over a few centuries of days.
        for days in (-10_000..60_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // Garbage is clamped, not a panic.
        assert_eq!(civil_from_days(i64::MAX).0, 9999);
        let _ = days_from_civil(i64::MIN, 0, 200);
        assert_eq!(DateTime::from_unix(u64::MAX).year, 9999);
    }

    #[test]
    fn weekdays() {
        assert_eq!(DateTime::from_unix(0).weekday(), 5, "1970-01-01 was a Thursday");
        assert_eq!(DateTime::from_unix(LEAP_DAY).weekday(), 5, "2024-02-29 was a Thursday");
        assert_eq!(DateTime::from_unix(946_684_800).weekday(), 7, "2000-01-01 was a Saturday");
    }

    #[test]
    fn reads_a_known_date_in_bcd_and_binary() {
        let (mut rtc, _) = rtc_at(LEAP_DAY);
        assert_eq!(reg(&mut rtc, STATUS_D), D_VRT);
        assert_eq!(reg(&mut rtc, STATUS_B), B_24H);
        assert_eq!(time(&mut rtc), [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]);
        set(&mut rtc, STATUS_B, B_24H | B_BINARY);
        assert_eq!(time(&mut rtc), [58, 59, 23, 5, 29, 2, 24, 20]);
    }

    #[test]
    fn time_advances_with_the_tsc_across_the_leap_day() {
        let (mut rtc, tsc) = rtc_at(LEAP_DAY);
        tsc.set(tsc.get() + 2 * HZ);
        assert_eq!(time(&mut rtc), [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]);
        assert_eq!(rtc.unix_time(), LEAP_DAY + 2);
        // Turn of the century into 2100 (not a leap year).
        let (mut rtc, _) =
            rtc_at(DateTime { year: 2100, month: 2, day: 28, hour: 23, minute: 59, second: 59 }.to_unix());
        assert_eq!(reg(&mut rtc, DAY_OF_MONTH), 0x28);
        let (mut rtc, _) =
            rtc_at(DateTime { year: 2100, month: 2, day: 28, hour: 23, minute: 59, second: 59 }.to_unix() + 1);
        assert_eq!((reg(&mut rtc, DAY_OF_MONTH), reg(&mut rtc, MONTH), reg(&mut rtc, CENTURY)), (0x01, 0x03, 0x21));
    }

    #[test]
    fn twelve_hour_mode() {
        let (mut rtc, tsc) = rtc_at(LEAP_DAY);
        set(&mut rtc, STATUS_B, 0); // BCD, 12-hour
        assert_eq!(reg(&mut rtc, HOURS), 0x80 | 0x11, "11 PM");
        tsc.set(tsc.get() + 2 * HZ);
        assert_eq!(reg(&mut rtc, HOURS), 0x12, "midnight is 12 AM");
        tsc.set(tsc.get() + 12 * 3600 * HZ);
        assert_eq!(reg(&mut rtc, HOURS), 0x80 | 0x12, "noon is 12 PM");
        set(&mut rtc, STATUS_B, B_BINARY);
        assert_eq!(reg(&mut rtc, HOURS), 0x80 | 12);
    }

    #[test]
    fn uip_is_set_just_before_each_second() {
        let (mut rtc, tsc) = rtc_at(LEAP_DAY);
        let base = tsc.get();
        assert_eq!(reg(&mut rtc, STATUS_A), A_DEFAULT);
        tsc.set(base + HZ - 100_000); // 100 µs before the update
        assert_eq!(reg(&mut rtc, STATUS_A), A_DEFAULT | A_UIP);
        tsc.set(base + HZ);
        assert_eq!(reg(&mut rtc, STATUS_A) & A_UIP, 0);
        set(&mut rtc, STATUS_A, 0xFF);
        assert_eq!(reg(&mut rtc, STATUS_A) & 0x7F, 0x7F);
    }

    #[test]
    fn guest_sets_the_clock_with_the_set_bit() {
        let (mut rtc, tsc) = rtc_at(LEAP_DAY);
        // Linux mc146818_set_time: SET on, write fields, SET off.
        set(&mut rtc, STATUS_B, B_SET | B_24H | B_UIE);
        assert_eq!(reg(&mut rtc, STATUS_B) & B_UIE, 0, "SET clears UIE");
        for (index, value) in [
            (YEAR, 0x31),
            (MONTH, 0x12),
            (DAY_OF_MONTH, 0x31),
            (HOURS, 0x22),
            (MINUTES, 0x30),
            (SECONDS, 0x00),
            (CENTURY, 0x20),
        ] {
            set(&mut rtc, index, value);
        }
        tsc.set(tsc.get() + 5 * HZ);
        assert_eq!(reg(&mut rtc, SECONDS), 0x00, "frozen while SET");
        assert_eq!(reg(&mut rtc, STATUS_A) & A_UIP, 0);
        set(&mut rtc, STATUS_B, B_24H);
        tsc.set(tsc.get() + 3 * HZ);
        let want = DateTime { year: 2031, month: 12, day: 31, hour: 22, minute: 30, second: 3 };
        assert_eq!(rtc.unix_time(), want.to_unix());
        assert_eq!(time(&mut rtc), [0x03, 0x30, 0x22, to_bcd(want.weekday()), 0x31, 0x12, 0x31, 0x20]);
        // A write without SET moves the clock at once; other fields keep running.
        set(&mut rtc, MINUTES, 0x45);
        assert_eq!((reg(&mut rtc, MINUTES), reg(&mut rtc, SECONDS)), (0x45, 0x03));
        // Nonsense values are clamped rather than trusted.
        set(&mut rtc, MONTH, 0x99);
        assert_eq!(reg(&mut rtc, MONTH), 0x12);
    }

    #[test]
    fn status_c_flags_are_polled() {
        let (mut rtc, tsc) = rtc_at(LEAP_DAY);
        let base = tsc.get();
        assert_eq!(reg(&mut rtc, STATUS_C) & (C_UF | C_PF), 0);
        tsc.set(base + HZ / 512); // two 1024 Hz periods, no second boundary
        assert_eq!(reg(&mut rtc, STATUS_C), C_PF);
        tsc.set(base + HZ + 1);
        set(&mut rtc, STATUS_B, B_24H | B_UIE);
        assert_eq!(reg(&mut rtc, STATUS_C), C_IRQF | C_UF | C_PF);
        assert_eq!(reg(&mut rtc, STATUS_C), 0, "read clears");
        // Alarm at 23:59:59 (BCD), hours "don't care".
        set(&mut rtc, STATUS_A, 0x20); // no periodic rate
        set(&mut rtc, SECONDS_ALARM, 0x59);
        set(&mut rtc, MINUTES_ALARM, 0x59);
        set(&mut rtc, HOURS_ALARM, 0xFF);
        set(&mut rtc, STATUS_B, B_24H | B_AIE);
        assert_eq!(reg(&mut rtc, STATUS_C), C_IRQF | C_AF);
    }

    #[test]
    fn nvram_is_stored_and_time_registers_are_not() {
        let (mut rtc, _) = rtc_at(LEAP_DAY);
        for index in 0x0E..0x80u8 {
            if index != CENTURY {
                set(&mut rtc, index, index ^ 0xA5);
            }
        }
        for index in 0x0E..0x80u8 {
            if index != CENTURY {
                assert_eq!(reg(&mut rtc, index), index ^ 0xA5);
            }
        }
        rtc.set_nvram(0x10, 0x44);
        assert_eq!(reg(&mut rtc, 0x10), 0x44);
        rtc.set_nvram(SECONDS, 0x11);
        assert_eq!(reg(&mut rtc, SECONDS), 0x58);
        // Index wraps at 0x80 (bit 7 is the NMI mask); C and D are read-only.
        assert_eq!(reg(&mut rtc, 0x90), 0x44);
        set(&mut rtc, STATUS_D, 0);
        assert_eq!(reg(&mut rtc, STATUS_D), D_VRT);
        assert_eq!(rtc.read(INDEX_OFFSET, AccessSize::Byte), 0xFF);
        assert_eq!(rtc.read(DATA_OFFSET, AccessSize::Word), 0xFFFF);
    }

    #[test]
    fn tsc_before_base_or_zero_hz_does_not_panic() {
        let tsc = Tsc::new(0);
        let clock = tsc.clone();
        let mut rtc = Rtc::new(LEAP_DAY, 1_000, 0, Box::new(move || clock.get()));
        assert_eq!(rtc.unix_time(), LEAP_DAY);
        tsc.set(u64::MAX);
        let _ = time(&mut rtc);
        let _ = reg(&mut rtc, STATUS_C);
        let _ = reg(&mut rtc, STATUS_A);
    }
}
