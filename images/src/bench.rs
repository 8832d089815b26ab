//! `cargo xtask bench`: measurements under `-icount shift=0,sleep=off`, where QEMU's
//! virtual clock advances exactly one nanosecond per guest instruction, so guest-visible
//! time is an instruction count and the figures repeat exactly from run to run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Reads a child's stdout line by line on a thread, so callers can wait with timeouts.
#[derive(Debug)]
pub struct LineReader {
    rx: mpsc::Receiver<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    pub transcript: Vec<String>,
}

impl LineReader {
    pub fn spawn(mut command: Command) -> Result<LineReader, String> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                if tx.send(String::from_utf8_lossy(&line).trim_end().to_string()).is_err() {
                    break;
                }
            }
        });
        Ok(LineReader { rx, child, stdin, transcript: Vec::new() })
    }

    /// Types `text` and a newline on the child's stdin (the serial console).
    pub fn type_line(&mut self, text: &str) -> Result<(), String> {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{text}").and_then(|()| stdin.flush()).map_err(|e| format!("typing {text:?}: {e}"))
    }

    /// The first line containing `needle`, waiting at most `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.transcript.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    let tail = self.transcript.iter().rev().take(15).rev().cloned().collect::<Vec<_>>().join("\n");
                    return Err(format!("no {needle:?} within {timeout:?}; last lines:\n{tail}"));
                }
            }
        }
    }
}

impl Drop for LineReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `uptime=12.34` in a guest's ready line, in seconds.
pub fn parse_uptime(line: &str) -> Option<f64> {
    line.split_whitespace().find_map(|w| w.strip_prefix("uptime=")).and_then(|v| v.parse().ok())
}

/// `key=value` counters in a hypervisor exit-counter line (e.g. `npf=12 hlt=3`).
pub fn parse_counters(line: &str) -> Vec<(String, u64)> {
    line.split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The total in an `EXITS <vm> N exits ...` line.
pub fn exits_total(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "exits")?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

/// The value of `key=N` in an `EXITS` line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// One reading of the hypervisor's `!exits <vm>` command: the VM's exit total and the
/// host TSC sums (under `-icount shift=0`, instructions) it keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitsReading {
    pub exits: u64,
    /// Spent in the VM's guest mode.
    pub guest_tsc: u64,
    /// The hypervisor halted with nothing to run.
    pub idle_tsc: u64,
    /// The TSC when the reading was taken.
    pub now_tsc: u64,
}

impl ExitsReading {
    pub fn take(m: &mut LineReader, vm: &str, timeout: Duration) -> Result<ExitsReading, String> {
        m.type_line(&format!("!exits {vm}"))?;
        let line = m.wait_for(&format!("EXITS {vm} "), timeout)?;
        let get = |key: &str| field(&line, key).ok_or_else(|| format!("no {key} in {line:?}"));
        Ok(ExitsReading {
            exits: exits_total(&line).ok_or_else(|| format!("no exit total in {line:?}"))?,
            guest_tsc: get("guest_tsc")?,
            idle_tsc: get("idle_tsc")?,
            now_tsc: get("now_tsc")?,
        })
    }
}

/// The direct-boot QEMU command for a kernel and initramfs (no hypervisor, no firmware).
pub fn direct_linux_command(qemu: &Path, kernel: &Path, initrd: &Path, memory_mib: u32, cmdline: &str) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args(["-nodefaults", "-no-reboot", "-machine", "q35", "-cpu", crate::qemu::CPU_MODEL]);
    cmd.args(["-m", &format!("{memory_mib}M"), "-smp", "1", "-display", "none", "-serial", "stdio"]);
    cmd.args(["-icount", "shift=0,sleep=off"]);
    cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd).args(["-append", cmdline]);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uptime_and_counters() {
        assert_eq!(parse_uptime("[corporate] BULKHEAD-GUEST-READY uptime=3.21"), Some(3.21));
        assert_eq!(parse_uptime("no marker"), None);
        let c = parse_counters("[cpu0 INFO  vm] vm 0 (corporate) exits during boot: 120 exits npf=100 hlt=20");
        assert_eq!(c, vec![("npf".to_string(), 100), ("hlt".to_string(), 20)]);
    }
}
