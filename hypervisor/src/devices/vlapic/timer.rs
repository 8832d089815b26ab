//! The local APIC timer (SDM Vol. 3 §11.5.4): one-shot, periodic and TSC-deadline
//! modes, counted in guest TSC.

use super::*;

impl Vlapic {
    pub fn timer_mode(&self) -> TimerMode {
        match (self.lvt_timer >> LVT_TIMER_MODE_SHIFT) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            // 3 is reserved; it counts like one-shot.
            _ => TimerMode::OneShot,
        }
    }

    /// The guest TSC at which the timer next fires.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timer.deadline
    }

    /// Fires the timer if it is due at `now`.
    pub fn tick(&mut self, now: u64) {
        self.now = now;
        let Some(deadline) = self.timer.deadline else { return };
        if deadline > now {
            return;
        }
        if self.lvt_timer & LVT_MASKED == 0 {
            self.accept_interrupt(self.lvt_timer as u8, false);
        }
        match self.timer_mode() {
            TimerMode::OneShot => self.timer.deadline = None,
            TimerMode::TscDeadline => {
                self.timer.deadline = None;
                self.timer.tsc_deadline = 0;
            }
            TimerMode::Periodic => {
                let period = self.timer_period_tsc().max(self.clock.ns_to_tsc(MIN_PERIODIC_NS)).max(1);
                // Missed periods are coalesced into this one interrupt.
                let missed = now.saturating_sub(deadline).checked_div(period).unwrap_or(0);
                self.timer.start = deadline.saturating_add(missed.saturating_mul(period));
                self.timer.done_at_start = 0;
                self.timer.deadline = Some(self.timer.start.saturating_add(period));
            }
        }
    }

    /// One full count in guest TSC ticks (at least 1).
    pub(super) fn timer_period_tsc(&self) -> u64 {
        self.counts_to_tsc(self.timer.initial)
    }

    /// How long `counts` take at the current divider, in guest TSC ticks (at least 1).
    pub(super) fn counts_to_tsc(&self, counts: u32) -> u64 {
        let bus_ticks = u64::from(counts).saturating_mul(u64::from(timer_divisor(self.timer.dcr)));
        self.clock.ticks_to_tsc(bus_ticks, APIC_TIMER_HZ).max(1)
    }

    /// Timer counts elapsed since the count was (re)loaded.
    pub(super) fn elapsed_counts(&self, now: u64) -> u64 {
        let bus_ticks = self.clock.tsc_to_ticks(now.saturating_sub(self.timer.start), APIC_TIMER_HZ);
        let since_start = bus_ticks.checked_div(u64::from(timer_divisor(self.timer.dcr))).unwrap_or(0);
        since_start.saturating_add(u64::from(self.timer.done_at_start))
    }

    /// The current count register at `now` (SDM Vol. 3 11.5.4).
    pub fn current_count(&self, now: u64) -> u32 {
        let initial = self.timer.initial;
        if initial == 0 || self.timer.deadline.is_none() || self.timer_mode() == TimerMode::TscDeadline {
            return 0;
        }
        let elapsed = self.elapsed_counts(now);
        let count = match self.timer_mode() {
            TimerMode::Periodic => {
                u64::from(initial).saturating_sub(elapsed.checked_rem(u64::from(initial)).unwrap_or(0))
            }
            _ => u64::from(initial).saturating_sub(elapsed),
        };
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    pub(super) fn write_initial_count(&mut self, value: u32, now: u64) {
        if self.timer_mode() == TimerMode::TscDeadline {
            return;
        }
        self.timer.initial = value;
        self.timer.start = now;
        self.timer.done_at_start = 0;
        self.timer.deadline = (value != 0).then(|| now.saturating_add(self.timer_period_tsc()));
    }

    /// A new divider applies to the rest of a running count.
    pub(super) fn write_divide(&mut self, value: u32, now: u64) {
        let running = self.timer.deadline.is_some() && self.timer_mode() != TimerMode::TscDeadline;
        let remaining = self.current_count(now);
        self.timer.dcr = value & TDCR_WRITABLE;
        if running && remaining != 0 {
            self.timer.done_at_start = self.timer.initial.saturating_sub(remaining);
            self.timer.start = now;
            self.timer.deadline = Some(now.saturating_add(self.counts_to_tsc(remaining)));
        }
    }

    pub(super) fn write_lvt_timer(&mut self, value: u32) {
        let before = self.timer_mode();
        self.lvt_timer = self.lvt_value(value, LVT_TIMER_WRITABLE);
        let after = self.timer_mode();
        // Entering or leaving TSC-deadline mode disarms the timer (SDM Vol. 3
        // 11.5.4.1); one-shot ↔ periodic keeps counting.
        if (before == TimerMode::TscDeadline) != (after == TimerMode::TscDeadline) {
            self.timer.initial = 0;
            self.timer.deadline = None;
            self.timer.tsc_deadline = 0;
        }
    }

    /// IA32_TSC_DEADLINE: reads 0 outside TSC-deadline mode.
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TimerMode::TscDeadline { self.timer.tsc_deadline } else { 0 }
    }

    /// WRMSR IA32_TSC_DEADLINE: arms (0 disarms) the timer; ignored outside
    /// TSC-deadline mode. A deadline already past fires at once.
    pub fn set_tsc_deadline(&mut self, value: u64, now: u64) {
        if self.timer_mode() != TimerMode::TscDeadline {
            return;
        }
        self.timer.tsc_deadline = value;
        self.timer.deadline = (value != 0).then_some(value);
        self.tick(now);
    }
}
