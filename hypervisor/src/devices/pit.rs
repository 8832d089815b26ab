//! An 8254 programmable interval timer (Intel 8254 datasheet, 231164) at ports
//! 0x40-0x43, plus system control port B (0x61) with counter 2's gate, the speaker
//! enable and OUT2.
//!
//! - Counter 0 drives ISA IRQ0, which reaches the IOAPIC as GSI 2 (the MADT override).
//!   Modes 0 (interrupt on terminal count), 2 (rate generator: Linux's periodic
//!   tick), 3 (square wave) and 4 (software strobe: Linux's one-shot clockevent,
//!   control word 0x38) raise it; every rising edge of OUT0 is one
//!   [`GsiSink::pulse`] from [`Pit::tick`]. Missed periods are
//!   coalesced, and a periodic counter never interrupts more often than
//!   [`MIN_IRQ_INTERVAL_NS`].
//! - Counter 2 is gated by port 0x61 bit 0 and its OUT is readable at bit 5, which is
//!   what Linux's `pit_calibrate_tsc` and `quick_pit_calibrate` poll.
//! - Counter latch, read-back (count and status) and the LSB, MSB and LSB-then-MSB
//!   access modes work as in the datasheet; BCD counting is recorded but counts in
//!   binary, and a low gate does not pause modes 0 and 4 (as in QEMU).
//!
//! The counters run at [`PIT_HZ`] derived from guest TSC time: nothing here reads a
//! clock, every access takes `now`.
#![forbid(unsafe_code)]

use crate::devices::clock::GuestClock;
use crate::devices::irq::{GsiSink, PIT_GSI};
use crate::devices::layout::{PIT_CHANNEL0, PIT_CHANNEL1, PIT_CHANNEL2, PIT_COMMAND, SYSTEM_CONTROL_B};

/// The PIT and port 0x61.
#[derive(Debug, Clone)]
pub struct Pit {
    clock: GuestClock,
    channel0: Channel,
    channel1: Channel,
    channel2: Channel,
    /// Port 0x61 bit 1: speaker data enable.
    speaker_data: bool,
    /// Port 0x61 bit 4: toggles on every read, like the DRAM refresh clock.
    refresh: bool,
    /// When IRQ0 was last raised, for the rate limit.
    last_irq: Option<u64>,
}

/// One counter.
#[derive(Debug, Clone, Copy)]
struct Channel {
    /// The initial count, 1..=0x10000 (a written 0 means 0x10000).
    count: u32,
    /// A count was written since the last control word ("null count" clear).
    armed: bool,
    /// Guest TSC at which counting started.
    load_time: u64,
    /// The next OUT rising edge, in counter ticks since `load_time` (counter 0 only).
    next_edge: Option<u64>,
    latched_count: u16,
    /// How the latched count is read out; `None` when nothing is latched.
    count_latched: Option<RwState>,
    status_latched: Option<u8>,
    /// Access mode from the control word (RW bits 5:4).
    rw_mode: RwState,
    read_state: RwState,
    write_state: RwState,
    write_latch: u8,
    mode: u8,
    bcd: bool,
    gate: bool,
}

/// Byte sequencing of counter reads and writes (control word RW field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RwState {
    Lsb,
    Msb,
    /// LSB then MSB: next is the LSB.
    WordLow,
    /// LSB then MSB: next is the MSB.
    WordHigh,
}

/// The counters' input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// A periodic counter 0 raises IRQ0 at most every 100 µs, whatever it is programmed to.
pub const MIN_IRQ_INTERVAL_NS: u64 = 100_000;

/// Control word fields (8254 datasheet, "Control Word Format").
const CW_SELECT_SHIFT: u8 = 6;
const CW_READ_BACK: u8 = 3;
const CW_RW_SHIFT: u8 = 4;
const CW_MODE_SHIFT: u8 = 1;
const CW_BCD: u8 = 0x01;
/// Read-back command: COUNT# (bit 5) and STATUS# (bit 4) are active low.
const READ_BACK_NO_COUNT: u8 = 0x20;
const READ_BACK_NO_STATUS: u8 = 0x10;
/// Status byte: OUTPUT (bit 7), NULL COUNT (bit 6).
const STATUS_OUT: u8 = 0x80;
const STATUS_NULL_COUNT: u8 = 0x40;

/// Port 0x61 bits.
const PORT61_GATE2: u8 = 0x01;
const PORT61_SPEAKER: u8 = 0x02;
const PORT61_REFRESH: u8 = 0x10;
const PORT61_OUT2: u8 = 0x20;

impl RwState {
    fn from_bits(bits: u8) -> RwState {
        match bits & 3 {
            1 => RwState::Lsb,
            2 => RwState::Msb,
            _ => RwState::WordLow,
        }
    }
    fn bits(self) -> u8 {
        match self {
            RwState::Lsb => 1,
            RwState::Msb => 2,
            RwState::WordLow | RwState::WordHigh => 3,
        }
    }
}

impl Channel {
    fn new(gate: bool) -> Channel {
        Channel {
            count: 0x1_0000,
            armed: false,
            load_time: 0,
            next_edge: None,
            latched_count: 0,
            count_latched: None,
            status_latched: None,
            rw_mode: RwState::WordLow,
            read_state: RwState::WordLow,
            write_state: RwState::WordLow,
            write_latch: 0,
            mode: 0,
            bcd: false,
            gate,
        }
    }

    /// Counter ticks since counting started.
    fn ticks(&self, clock: &GuestClock, now: u64) -> u64 {
        clock.tsc_to_ticks(now.saturating_sub(self.load_time), PIT_HZ)
    }

    /// The counting element at `now` (datasheet mode descriptions).
    fn current_count(&self, clock: &GuestClock, now: u64) -> u16 {
        if !self.armed {
            return self.count as u16;
        }
        let d = self.ticks(clock, now);
        let count = u64::from(self.count);
        let value = match self.mode {
            // Mode 3 decrements by two each clock.
            3 => count.saturating_sub(d.saturating_mul(2).checked_rem(count).unwrap_or(0)),
            2 => count.saturating_sub(d.checked_rem(count).unwrap_or(0)),
            // Modes 0, 1, 4, 5 keep counting down past zero, wrapping at 16 bits.
            _ => count.wrapping_sub(d),
        };
        value as u16
    }

    /// The OUT pin at `now`.
    fn out(&self, clock: &GuestClock, now: u64) -> bool {
        if !self.armed {
            // After a control word OUT is low in mode 0 and high otherwise.
            return self.mode != 0;
        }
        let d = self.ticks(clock, now);
        let count = u64::from(self.count);
        let phase = d.checked_rem(count).unwrap_or(0);
        match self.mode {
            0 => d >= count,
            1 => d >= count,
            // Low for one clock when the count reaches 1, then reload.
            2 => phase != count.saturating_sub(1),
            // High for the first (N + 1) / 2 counts, low for the rest.
            3 => phase < count.saturating_add(1) / 2,
            // A one-clock low strobe when the count reaches 0.
            _ => d != count,
        }
    }

    /// The first OUT rising edge after counting starts, in ticks.
    fn first_edge(&self) -> u64 {
        let count = u64::from(self.count);
        // Modes 4 and 5 strobe OUT low at the terminal count; it rises a tick later.
        if self.mode >= 4 { count.saturating_add(1) } else { count }
    }

    /// The rising edge following the one at tick `d`; `None` for one-shot modes.
    fn edge_after(&self, d: u64) -> Option<u64> {
        let count = u64::from(self.count);
        match self.mode {
            2 | 3 => d.checked_div(count).map(|k| k.saturating_add(1).saturating_mul(count)),
            _ => None,
        }
    }

    fn load_count(&mut self, value: u16, now: u64) {
        self.count = if value == 0 { 0x1_0000 } else { u32::from(value) };
        self.armed = true;
        self.load_time = now;
        self.next_edge = Some(self.first_edge());
    }

    fn latch_count(&mut self, clock: &GuestClock, now: u64) {
        if self.count_latched.is_none() {
            self.latched_count = self.current_count(clock, now);
            self.count_latched = Some(self.rw_mode);
        }
    }

    fn latch_status(&mut self, clock: &GuestClock, now: u64) {
        if self.status_latched.is_none() {
            let mut status = (self.rw_mode.bits() << CW_RW_SHIFT) | (self.mode << CW_MODE_SHIFT);
            if self.bcd {
                status |= CW_BCD;
            }
            if self.out(clock, now) {
                status |= STATUS_OUT;
            }
            if !self.armed {
                status |= STATUS_NULL_COUNT;
            }
            self.status_latched = Some(status);
        }
    }

    /// A control word for this counter (not a latch or read-back).
    fn program(&mut self, value: u8) {
        let rw = RwState::from_bits(value >> CW_RW_SHIFT);
        self.rw_mode = rw;
        self.read_state = rw;
        self.write_state = rw;
        self.mode = match (value >> CW_MODE_SHIFT) & 7 {
            6 => 2,
            7 => 3,
            m => m,
        };
        self.bcd = value & CW_BCD != 0;
        self.armed = false;
        self.next_edge = None;
        self.count_latched = None;
        self.status_latched = None;
    }

    fn read(&mut self, clock: &GuestClock, now: u64) -> u8 {
        if let Some(status) = self.status_latched.take() {
            return status;
        }
        let [lo, hi] = self.latched_count.to_le_bytes();
        match self.count_latched {
            Some(RwState::Lsb) => {
                self.count_latched = None;
                return lo;
            }
            Some(RwState::Msb) | Some(RwState::WordHigh) => {
                self.count_latched = None;
                return hi;
            }
            Some(RwState::WordLow) => {
                self.count_latched = Some(RwState::WordHigh);
                return lo;
            }
            None => {}
        }
        let [lo, hi] = self.current_count(clock, now).to_le_bytes();
        match self.read_state {
            RwState::Lsb => lo,
            RwState::Msb => hi,
            RwState::WordLow => {
                self.read_state = RwState::WordHigh;
                lo
            }
            RwState::WordHigh => {
                self.read_state = RwState::WordLow;
                hi
            }
        }
    }

    fn write(&mut self, value: u8, now: u64) {
        match self.write_state {
            RwState::Lsb => self.load_count(u16::from(value), now),
            RwState::Msb => self.load_count(u16::from(value) << 8, now),
            RwState::WordLow => {
                self.write_latch = value;
                self.write_state = RwState::WordHigh;
            }
            RwState::WordHigh => {
                self.load_count(u16::from_le_bytes([self.write_latch, value]), now);
                self.write_state = RwState::WordLow;
            }
        }
    }

    /// The gate input; a rising edge retriggers modes 1, 2, 3 and 5.
    fn set_gate(&mut self, gate: bool, now: u64) {
        if gate && !self.gate && self.armed && matches!(self.mode, 1 | 2 | 3 | 5) {
            self.load_time = now;
            self.next_edge = Some(self.first_edge());
        }
        self.gate = gate;
    }
}

impl Pit {
    /// Counters unprogrammed; gates 0 and 1 tied high, gate 2 low.
    pub fn new(clock: GuestClock) -> Pit {
        Pit {
            clock,
            channel0: Channel::new(true),
            channel1: Channel::new(true),
            channel2: Channel::new(false),
            speaker_data: false,
            refresh: false,
            last_irq: None,
        }
    }

    fn channel(&mut self, n: u8) -> Option<&mut Channel> {
        match n {
            0 => Some(&mut self.channel0),
            1 => Some(&mut self.channel1),
            2 => Some(&mut self.channel2),
            _ => None,
        }
    }

    /// Whether `port` belongs to the PIT or port 0x61.
    pub fn claims_port(port: u16) -> bool {
        matches!(port, PIT_CHANNEL0..=PIT_COMMAND | SYSTEM_CONTROL_B)
    }

    /// Counter `n`'s OUT pin at `now` (`false` for n > 2).
    pub fn out(&self, n: u8, now: u64) -> bool {
        match n {
            0 => self.channel0.out(&self.clock, now),
            1 => self.channel1.out(&self.clock, now),
            2 => self.channel2.out(&self.clock, now),
            _ => false,
        }
    }

    /// A byte read of an absolute port at guest time `now`; unclaimed ports read 0xFF.
    pub fn read_port(&mut self, port: u16, now: u64) -> u8 {
        let clock = self.clock;
        match port {
            PIT_CHANNEL0 => self.channel0.read(&clock, now),
            PIT_CHANNEL1 => self.channel1.read(&clock, now),
            PIT_CHANNEL2 => self.channel2.read(&clock, now),
            // The control word register is write-only.
            PIT_COMMAND => 0xFF,
            SYSTEM_CONTROL_B => {
                self.refresh = !self.refresh;
                let mut v = 0;
                if self.channel2.gate {
                    v |= PORT61_GATE2;
                }
                if self.speaker_data {
                    v |= PORT61_SPEAKER;
                }
                if self.refresh {
                    v |= PORT61_REFRESH;
                }
                if self.channel2.out(&clock, now) {
                    v |= PORT61_OUT2;
                }
                v
            }
            _ => 0xFF,
        }
    }

    /// A byte write of an absolute port at guest time `now`.
    pub fn write_port(&mut self, port: u16, value: u8, now: u64) {
        let clock = self.clock;
        match port {
            PIT_CHANNEL0 => self.channel0.write(value, now),
            PIT_CHANNEL1 => self.channel1.write(value, now),
            PIT_CHANNEL2 => self.channel2.write(value, now),
            PIT_COMMAND => match value >> CW_SELECT_SHIFT {
                CW_READ_BACK => {
                    for n in 0..3u8 {
                        if value & (2u8 << n) == 0 {
                            continue;
                        }
                        let Some(ch) = self.channel(n) else { continue };
                        if value & READ_BACK_NO_COUNT == 0 {
                            ch.latch_count(&clock, now);
                        }
                        if value & READ_BACK_NO_STATUS == 0 {
                            ch.latch_status(&clock, now);
                        }
                    }
                }
                n => {
                    let Some(ch) = self.channel(n) else { return };
                    if (value >> CW_RW_SHIFT) & 3 == 0 {
                        ch.latch_count(&clock, now);
                    } else {
                        ch.program(value);
                    }
                }
            },
            SYSTEM_CONTROL_B => {
                self.speaker_data = value & PORT61_SPEAKER != 0;
                self.channel2.set_gate(value & PORT61_GATE2 != 0, now);
            }
            _ => {}
        }
    }

    /// When IRQ0 next rises, in guest TSC.
    pub fn next_deadline(&self) -> Option<u64> {
        let ch = &self.channel0;
        if !ch.armed {
            return None;
        }
        let edge = ch.load_time.saturating_add(self.clock.ticks_to_tsc(ch.next_edge?, PIT_HZ));
        let earliest = match (self.last_irq, ch.mode) {
            (Some(last), 2 | 3) => last.saturating_add(self.clock.ns_to_tsc(MIN_IRQ_INTERVAL_NS)),
            _ => 0,
        };
        Some(edge.max(earliest))
    }

    /// Raises IRQ0 (GSI 2) if counter 0's OUT rose by `now`.
    pub fn tick(&mut self, now: u64, sink: &mut dyn GsiSink) {
        let Some(deadline) = self.next_deadline() else { return };
        if deadline > now {
            return;
        }
        sink.pulse(PIT_GSI);
        self.last_irq = Some(now);
        let d = self.channel0.ticks(&self.clock, now);
        // The next edge strictly after now; missed ones are coalesced.
        self.channel0.next_edge = self.channel0.edge_after(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// 3 GHz: one PIT tick is about 2514.3 TSC ticks.
    const TSC_HZ: u64 = 3_000_000_000;

    fn pit() -> Pit {
        Pit::new(GuestClock::new(TSC_HZ).unwrap())
    }

    /// TSC time of `ticks` PIT ticks after `start` (rounded up).
    fn at(start: u64, ticks: u64) -> u64 {
        start + GuestClock::new(TSC_HZ).unwrap().ticks_to_tsc(ticks, PIT_HZ)
    }

    #[derive(Default)]
    struct PitIrqs(Vec<(u32, bool)>);

    impl GsiSink for PitIrqs {
        fn set_level(&mut self, gsi: u32, high: bool) {
            self.0.push((gsi, high));
        }
    }

    impl PitIrqs {
        fn pulses(&self) -> usize {
            self.0.iter().filter(|&&(g, h)| g == PIT_GSI && h).count()
        }
    }

    #[test]
    fn channel2_out2_rises_after_a_10ms_count() {
        let mut p = pit();
        let t0 = 1_000_000;
        // pit_calibrate_tsc(latch = PIT_TICK_RATE / 100, ms = 10): gate high, speaker
        // off, counter 2 mode 0 LSB/MSB, then poll port 0x61 bit 5.
        let v = p.read_port(0x61, t0);
        p.write_port(0x61, (v & !0x02) | 0x01, t0);
        p.write_port(0x43, 0xB0, t0);
        let latch: u16 = (PIT_HZ / 100) as u16;
        assert_eq!(latch, 11931);
        p.write_port(0x42, latch as u8, t0);
        p.write_port(0x42, (latch >> 8) as u8, t0);
        assert_eq!(p.read_port(0x61, t0) & 0x20, 0);
        let ten_ms = at(t0, 11931);
        assert_eq!(p.read_port(0x61, ten_ms - 1) & 0x20, 0);
        assert_eq!(p.read_port(0x61, ten_ms) & 0x21, 0x21);
        // 10 ms of a 3 GHz TSC, within one PIT tick.
        let elapsed = ten_ms - t0;
        assert!(elapsed.abs_diff(30_000_000) < 2_600, "{elapsed}");
        // Channel 2 never raises IRQ0.
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn quick_pit_calibrate_reads_a_falling_msb() {
        let mut p = pit();
        p.write_port(0x61, 0x01, 0);
        p.write_port(0x43, 0xB0, 0);
        p.write_port(0x42, 0xFF, 0);
        p.write_port(0x42, 0xFF, 0);
        // pit_verify_msb / pit_expect_msb: read LSB then MSB, unlatched.
        let read_msb = |p: &mut Pit, now| {
            p.read_port(0x42, now);
            p.read_port(0x42, now)
        };
        assert_eq!(read_msb(&mut p, at(0, 1)), 0xFF);
        assert_eq!(read_msb(&mut p, at(0, 255)), 0xFF);
        assert_eq!(read_msb(&mut p, at(0, 256)), 0xFE);
        assert_eq!(read_msb(&mut p, at(0, 256 * 10 + 1)), 0xF5);
        // The LSB counts down too.
        assert_eq!(p.read_port(0x42, at(0, 3)), 0xFC);
    }

    #[test]
    fn channel0_periodic_tick_without_drift() {
        let mut p = pit();
        let mut irqs = PitIrqs::default();
        // pit_set_periodic at HZ = 250: LATCH = (PIT_TICK_RATE + HZ/2) / HZ.
        let latch = ((PIT_HZ + 125) / 250) as u16;
        let t0 = 12_345;
        p.write_port(0x43, 0x34, t0);
        p.write_port(0x40, latch as u8, t0);
        p.write_port(0x40, (latch >> 8) as u8, t0);
        for k in 1..=5u64 {
            let due = at(t0, k * u64::from(latch));
            assert_eq!(p.next_deadline(), Some(due), "period {k}");
            p.tick(due - 1, &mut irqs);
            assert_eq!(irqs.pulses(), k as usize - 1);
            // Handled a little late: the next edge is still on the grid.
            p.tick(due + 1000, &mut irqs);
            assert_eq!(irqs.pulses(), k as usize);
        }
        assert_eq!(irqs.0[0], (2, true));
        assert_eq!(irqs.0[1], (2, false));
        // Mode 2 status through read-back: OUT high, RW = 3, mode 2.
        p.write_port(0x43, 0xE2, at(t0, 10));
        assert_eq!(p.read_port(0x40, at(t0, 10)), 0xB4);
        // A long stall: one coalesced interrupt, next edge on the grid after now.
        let late = at(t0, 50 * u64::from(latch) + 7);
        p.tick(late, &mut irqs);
        assert_eq!(irqs.pulses(), 6);
        assert_eq!(p.next_deadline(), Some(at(t0, 51 * u64::from(latch))));
    }

    #[test]
    fn channel0_one_shot_and_shutdown() {
        let mut p = pit();
        let mut irqs = PitIrqs::default();
        // pit_set_oneshot (mode 4) + pit_next_event(delta = 1193): OUT strobes low at
        // the terminal count and the interrupt is its rising edge one tick later.
        p.write_port(0x43, 0x38, 0);
        p.write_port(0x40, 0xA9, 100);
        p.write_port(0x40, 0x04, 100);
        let due = at(100, 1194);
        assert_eq!(p.next_deadline(), Some(due));
        assert!(!p.out(0, due - 1));
        p.tick(due, &mut irqs);
        assert!(p.out(0, due));
        assert_eq!(irqs.pulses(), 1);
        assert_eq!(p.next_deadline(), None);
        p.tick(due * 10, &mut irqs);
        assert_eq!(irqs.pulses(), 1);
        // A new count rearms; the shutdown control word disarms.
        p.write_port(0x40, 0x10, due);
        p.write_port(0x40, 0x00, due);
        assert!(p.next_deadline().is_some());
        p.write_port(0x43, 0x30, due);
        assert_eq!(p.next_deadline(), None);
        assert!(!p.out(0, due));
        // Shutdown with i8253_clear_counter_on_shutdown: count 0 = 65536, one IRQ.
        p.write_port(0x40, 0, due);
        p.write_port(0x40, 0, due);
        assert_eq!(p.next_deadline(), Some(at(due, 65536)));
    }

    #[test]
    fn counter_latch_freezes_the_read_value() {
        let mut p = pit();
        p.write_port(0x43, 0x34, 0);
        p.write_port(0x40, 0x00, 0);
        p.write_port(0x40, 0x10, 0); // 0x1000
        p.write_port(0x43, 0x00, at(0, 0x100));
        // A second latch before the read is ignored.
        p.write_port(0x43, 0x00, at(0, 0x200));
        assert_eq!(p.read_port(0x40, at(0, 0x300)), 0x00);
        assert_eq!(p.read_port(0x40, at(0, 0x300)), 0x0F);
        // Unlatched reads follow time again.
        assert_eq!(p.read_port(0x40, at(0, 0x300)), 0x00);
        assert_eq!(p.read_port(0x40, at(0, 0x300)), 0x0D);
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let mut p = pit();
        p.write_port(0x43, 0xB6, 0); // counter 2, LSB/MSB, mode 3
        // Status before a count: null count set.
        p.write_port(0x43, 0xE8, 0);
        assert_eq!(p.read_port(0x42, 0), 0x40 | 0x80 | 0x36);
        p.write_port(0x42, 0x00, 0);
        p.write_port(0x42, 0x01, 0); // 256
        // Both latched: status first, then the count's two bytes.
        p.write_port(0x43, 0xC8, at(0, 10));
        assert_eq!(p.read_port(0x42, at(0, 90)), 0x80 | 0x36);
        assert_eq!(p.read_port(0x42, at(0, 90)), 236);
        assert_eq!(p.read_port(0x42, at(0, 90)), 0);
        // The control port reads as nothing.
        assert_eq!(p.read_port(0x43, 0), 0xFF);
    }

    #[test]
    fn lsb_only_and_msb_only_access() {
        let mut p = pit();
        p.write_port(0x43, 0x50, 0); // counter 1, LSB only, mode 0
        p.write_port(0x41, 0x80, 0);
        assert_eq!(p.read_port(0x41, at(0, 0x10)), 0x70);
        assert_eq!(p.read_port(0x41, at(0, 0x10)), 0x70);
        p.write_port(0x43, 0x60, 0); // MSB only
        p.write_port(0x41, 0x02, 0); // 0x200
        assert_eq!(p.read_port(0x41, at(0, 0x100)), 0x01);
    }

    #[test]
    fn mode3_square_wave() {
        let mut p = pit();
        p.write_port(0x61, 0x01, 0);
        p.write_port(0x43, 0xB6, 0);
        p.write_port(0x42, 101, 0);
        p.write_port(0x42, 0, 0);
        // Odd count: high for 51 counts, low for 50.
        assert!(p.out(2, at(0, 50)));
        assert!(!p.out(2, at(0, 51)));
        assert!(!p.out(2, at(0, 100)));
        assert!(p.out(2, at(0, 101)));
        // Counting by two.
        assert_eq!(p.read_port(0x42, at(0, 10)), 81);
    }

    #[test]
    fn port61_gate_speaker_and_refresh() {
        let mut p = pit();
        assert_eq!(p.read_port(0x61, 0) & 0x03, 0);
        let a = p.read_port(0x61, 0) & 0x10;
        let b = p.read_port(0x61, 0) & 0x10;
        assert_ne!(a, b, "refresh toggles");
        p.write_port(0x61, 0x03, 0);
        assert_eq!(p.read_port(0x61, 0) & 0x03, 0x03);
        // Mode 2 on counter 2 restarts on a gate rising edge.
        p.write_port(0x43, 0xB4, 0);
        p.write_port(0x42, 0x00, 0);
        p.write_port(0x42, 0x01, 0);
        assert_eq!(p.read_port(0x42, at(0, 100)), 156);
        p.read_port(0x42, 0);
        p.write_port(0x61, 0x00, at(0, 100));
        let restart = at(0, 200);
        p.write_port(0x61, 0x01, restart);
        assert_eq!(p.read_port(0x42, at(restart, 10)), 246);
    }

    #[test]
    fn periodic_irq0_is_rate_limited() {
        let mut p = pit();
        let mut irqs = PitIrqs::default();
        p.write_port(0x43, 0x14, 0); // counter 0, LSB, mode 2
        p.write_port(0x40, 2, 0);
        let first = p.next_deadline().unwrap();
        p.tick(first, &mut irqs);
        assert_eq!(p.next_deadline(), Some(first + 300_000), "100 us at 3 GHz");
    }

    #[test]
    fn arbitrary_port_traffic_never_panics() {
        let mut p = pit();
        let mut irqs = PitIrqs::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..50_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let port = [0x40, 0x41, 0x42, 0x43, 0x61, 0x44][(seed % 6) as usize];
            let now = i * 1000;
            if seed & 0x100 != 0 {
                p.write_port(port, (seed >> 16) as u8, now);
            } else {
                p.read_port(port, now);
            }
            p.tick(now, &mut irqs);
        }
        assert!(Pit::claims_port(0x43) && Pit::claims_port(0x61) && !Pit::claims_port(0x44));
    }
}
