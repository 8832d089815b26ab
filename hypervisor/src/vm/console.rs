//! A VM's console: what the guest writes through the console hypercall (and, for Linux
//! guests, its serial port) goes to the hypervisor log line by line, prefixed with the
//! VM's name, and into a ring buffer the switcher and tests can read.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

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
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.ring.len() == RING_BYTES {
                self.ring.pop_front();
            }
            self.ring.push_back(b);
            match b {
                b'\n' => self.flush_line(),
                b'\r' => {}
                _ if self.line.len() < MAX_LINE => self.line.push(b),
                _ => {}
            }
        }
    }

    fn flush_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        log::info!(target: "guest", "[{}] {}", self.name, text);
        if text.starts_with("CHECK ") {
            if text.ends_with(" PASS") {
                self.passed_checks += 1;
            } else {
                self.failed_checks += 1;
            }
        } else if text.starts_with("CHECKS DONE") {
            self.checks_done = true;
        } else if text.starts_with("BULKHEAD-GUEST-READY") {
            self.guest_ready = true;
        }
        self.line.clear();
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
}
