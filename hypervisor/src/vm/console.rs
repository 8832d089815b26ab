//! A VM's console: what the guest writes through the console hypercall (and, for Linux
//! guests, its serial port) goes to the hypervisor log line by line, prefixed with the
//! VM's name, and into a ring buffer the switcher and tests can read.
//!
//! The log gets at most [`log_limit::CONSOLE_BURST`] lines at once and
//! [`log_limit::CONSOLE_PER_SEC`] a second after that; the rest are counted, and one
//! "N lines suppressed" line precedes the next line logged. The self-test markers are
//! still counted for every line, logged or not.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use crate::log_limit::{self, Admit, LogBudget};

const RING_BYTES: usize = 64 * 1024;
const MAX_LINE: usize = 512;

#[derive(Debug)]
pub struct VmConsole {
    name: String,
    line: Vec<u8>,
    ring: VecDeque<u8>,
    /// Self-test bookkeeping: `CHECK ... FAIL` lines and the `CHECKS DONE` summary.
    pub failed_checks: u32,
    pub passed_checks: u32,
    pub checks_done: bool,
    /// The guest printed its ready marker (`BULKHEAD-GUEST-READY`).
    pub guest_ready: bool,
    budget: LogBudget,
    logged_lines: u64,
}

impl VmConsole {
    pub fn new(name: &str) -> Self {
        VmConsole {
            name: name.into(),
            line: Vec::new(),
            ring: VecDeque::new(),
            failed_checks: 0,
            passed_checks: 0,
            checks_done: false,
            guest_ready: false,
            budget: LogBudget::new(log_limit::CONSOLE_BURST, log_limit::CONSOLE_PER_SEC),
            logged_lines: 0,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.write_at(bytes, log_limit::now_ms());
    }

    /// [`Self::write`] at time `now_ms` (for the log's rate limit).
    pub fn write_at(&mut self, bytes: &[u8], now_ms: u64) {
        for &b in bytes {
            if self.ring.len() == RING_BYTES {
                self.ring.pop_front();
            }
            self.ring.push_back(b);
            match b {
                b'\n' => self.flush_line(now_ms),
                b'\r' => {}
                _ if self.line.len() < MAX_LINE => self.line.push(b),
                _ => {}
            }
        }
    }

    fn flush_line(&mut self, now_ms: u64) {
        let text = String::from_utf8_lossy(&self.line);
        if let Admit::Log { suppressed } = self.budget.admit(now_ms) {
            if suppressed > 0 {
                log::warn!(target: "guest", "[{}] ... {suppressed} lines suppressed (console rate limit)", self.name);
            }
            log::info!(target: "guest", "[{}] {}", self.name, text);
            self.logged_lines = self.logged_lines.saturating_add(1);
        }
        if text.starts_with("CHECK ") {
            if text.ends_with(" PASS") {
                self.passed_checks = self.passed_checks.saturating_add(1);
            } else {
                self.failed_checks = self.failed_checks.saturating_add(1);
            }
        } else if text.starts_with("CHECKS DONE") {
            self.checks_done = true;
        } else if text.starts_with("BULKHEAD-GUEST-READY") {
            self.guest_ready = true;
        }
        self.line.clear();
    }

    /// Lines that went to the hypervisor log.
    pub fn logged_lines(&self) -> u64 {
        self.logged_lines
    }

    /// Lines left out of the log since the last one logged.
    pub fn suppressed_lines(&self) -> u64 {
        self.budget.suppressed()
    }

    /// The most recent output, oldest first.
    pub fn tail(&self) -> Vec<u8> {
        self.ring.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_checks_and_keeps_a_bounded_ring() {
        let mut c = VmConsole::new("checks");
        c.write(b"CHECK a PASS\nCHECK b FAIL (why)\r\nCHECKS DONE passed=1 failed=1\n");
        assert_eq!((c.passed_checks, c.failed_checks, c.checks_done), (1, 1, true));
        c.write(&alloc::vec![b'x'; RING_BYTES + 10]);
        assert_eq!(c.tail().len(), RING_BYTES);
    }

    #[test]
    fn a_print_loop_is_rate_limited_in_the_log_but_every_check_is_counted() {
        let mut c = VmConsole::new("flood");
        for _ in 0..10_000 {
            c.write_at(b"spam\n", 5);
        }
        assert_eq!(c.logged_lines(), u64::from(log_limit::CONSOLE_BURST));
        assert_eq!(c.suppressed_lines(), 10_000 - u64::from(log_limit::CONSOLE_BURST));
        // Markers are counted even while the log drops their lines.
        c.write_at(b"CHECK x PASS\nCHECK y FAIL\n", 5);
        assert_eq!((c.passed_checks, c.failed_checks), (1, 1));
        assert_eq!(c.logged_lines(), u64::from(log_limit::CONSOLE_BURST));
        // A second later the rate allows lines again; the gap was summarised.
        c.write_at(b"back\n", 1005);
        assert_eq!(c.logged_lines(), u64::from(log_limit::CONSOLE_BURST) + 1);
        assert_eq!(c.suppressed_lines(), 0);
    }
}
