//! `cargo xtask bench switch`: the switcher under `-icount shift=0,sleep=off` (one
//! nanosecond of guest time per instruction). Measures the time from the hotkey's
//! keyboard interrupt (IRQ1) to the new VM's first complete frame on screen (the
//! hypervisor logs `SWITCH-FRAME ... ticks=T us=U bytes=B`), and the bytes the
//! compositor copies per frame for an idle desktop and for one that rewrites its whole
//! framebuffer all the time.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::bench::LineReader;

const BOOT: Duration = Duration::from_secs(600);
const STEP: Duration = Duration::from_secs(120);

/// One switch as the hypervisor logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchFrame {
    pub slot: u32,
    pub ticks: u64,
    pub micros: u64,
    pub bytes: u64,
}

/// Parses `SWITCH-FRAME slot=2 ticks=9820360 us=3972 bytes=3952640`.
pub fn parse_switch_frame(line: &str) -> Option<SwitchFrame> {
    let field = |key: &str| -> Option<u64> {
        line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).and_then(|v| v.parse().ok())
    };
    Some(SwitchFrame {
        slot: u32::try_from(field("slot")?).ok()?,
        ticks: field("ticks")?,
        micros: field("us")?,
        bytes: field("bytes")?,
    })
}

/// The compositor's counters (`FRAMES copied=.. idle=.. bytes_total=.. bytes_last=..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Frames {
    pub copied: u64,
    pub idle: u64,
    pub bytes_total: u64,
}

pub fn parse_frames(line: &str) -> Option<Frames> {
    let field = |key: &str| -> Option<u64> {
        line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).and_then(|v| v.parse().ok())
    };
    Some(Frames { copied: field("copied")?, idle: field("idle")?, bytes_total: field("bytes_total")? })
}

impl Frames {
    /// Frames and bytes per frame between two readings.
    pub fn since(&self, earlier: &Frames) -> (u64, f64) {
        let frames = (self.copied + self.idle).saturating_sub(earlier.copied + earlier.idle);
        let bytes = self.bytes_total.saturating_sub(earlier.bytes_total);
        (frames, if frames == 0 { 0.0 } else { bytes as f64 / frames as f64 })
    }
}

/// A QMP connection that can press keys (plain JSON; nothing else is needed here).
#[derive(Debug)]
pub struct Qmp {
    stream: UnixStream,
    reader: std::io::BufReader<UnixStream>,
}

impl Qmp {
    pub fn connect(path: &Path) -> Result<Qmp, String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => return Err(format!("QMP socket: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let reader = std::io::BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut qmp = Qmp { stream, reader };
        qmp.read_line()?; // greeting
        qmp.execute(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(qmp)
    }

    fn read_line(&mut self) -> Result<String, String> {
        use std::io::BufRead as _;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(|e| format!("QMP: {e}"))?;
        Ok(line)
    }

    fn execute(&mut self, json: &str) -> Result<(), String> {
        writeln!(self.stream, "{json}").map_err(|e| format!("QMP: {e}"))?;
        loop {
            let line = self.read_line()?;
            if line.contains("\"return\"") {
                return Ok(());
            }
            if line.contains("\"error\"") || line.is_empty() {
                return Err(format!("QMP refused {json}: {line}"));
            }
        }
    }

    /// Presses a combination like `ctrl-alt-2`.
    pub fn send_keys(&mut self, combo: &str) -> Result<(), String> {
        let keys: Vec<String> = combo.split('-').map(|k| format!(r#"{{"type":"qcode","data":"{k}"}}"#)).collect();
        self.execute(&format!(r#"{{"execute":"send-key","arguments":{{"keys":[{}]}}}}"#, keys.join(",")))
    }
}

/// Runs the benchmark on a booted machine: `qemu` is the running QEMU (serial on its
/// stdout and stdin), `qmp` its QMP socket.
pub fn run(command: Command, qmp_path: &Path) -> Result<String, String> {
    let mut serial = LineReader::spawn(command)?;
    serial.wait_for("BULKHEAD READY", BOOT)?;
    serial.wait_for("BULKHEAD-GUEST-READY", BOOT)?;
    serial.wait_for("BULKHEAD-GUEST-READY", BOOT)?;
    let mut qmp = Qmp::connect(qmp_path)?;

    // Quiet consoles: no blinking cursor, nothing else writing.
    for vm in ["corporate", "personal"] {
        serial.type_line(&format!("@{vm} echo 0 > /sys/class/graphics/fbcon/cursor_blink; echo QUIET"))?;
        serial.wait_for(&format!("[{vm}] QUIET"), STEP)?;
    }
    let frames = |serial: &mut LineReader| -> Result<Frames, String> {
        serial.type_line("!frames")?;
        let line = serial.wait_for("FRAMES copied=", STEP)?;
        parse_frames(&line).ok_or(format!("cannot parse {line:?}"))
    };
    // At least `min` frames between two readings (guest time runs slower than real
    // time when a guest writes a lot of memory under TCG).
    let sample = |serial: &mut LineReader, min: u64| -> Result<(u64, f64), String> {
        std::thread::sleep(Duration::from_secs(2));
        let start = frames(serial)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let now = frames(serial)?.since(&start);
            if now.0 >= min || std::time::Instant::now() > deadline {
                return Ok(now);
            }
        }
    };
    let idle = sample(&mut serial, 120)?;

    // Switch latency, both ways, on idle desktops.
    let mut switches = Vec::new();
    for (combo, slot) in [("ctrl-alt-2", 2), ("ctrl-alt-1", 1), ("ctrl-alt-2", 2), ("ctrl-alt-1", 1)] {
        qmp.send_keys(combo)?;
        let line = serial.wait_for(&format!("SWITCH-FRAME slot={slot}"), STEP)?;
        switches.push(parse_switch_frame(&line).ok_or(format!("cannot parse {line:?}"))?);
        std::thread::sleep(Duration::from_millis(500));
    }

    // A desktop that rewrites its whole framebuffer all the time.
    serial.type_line("@corporate (while :; do cat /dev/zero > /dev/fb0; done) 2>/dev/null & echo BUSY")?;
    serial.wait_for("[corporate] BUSY", STEP)?;
    let busy = sample(&mut serial, 30)?;
    // Switching away from and back to a busy desktop.
    for (combo, slot) in [("ctrl-alt-2", 2), ("ctrl-alt-1", 1)] {
        qmp.send_keys(combo)?;
        let line = serial.wait_for(&format!("SWITCH-FRAME slot={slot}"), STEP)?;
        switches.push(parse_switch_frame(&line).ok_or(format!("cannot parse {line:?}"))?);
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(report(&switches, idle, busy))
}

/// The result table.
pub fn report(switches: &[SwitchFrame], idle: (u64, f64), busy: (u64, f64)) -> String {
    let mut out = String::new();
    out.push_str(
        "switch (hotkey keyboard interrupt -> first frame of the new VM complete), -icount shift=0,sleep=off\n",
    );
    out.push_str("  to slot   TSC ticks   guest time (us)   ~instructions   bytes copied   within 16.7 ms\n");
    for s in switches {
        out.push_str(&format!(
            "  {:>7}   {:>9}   {:>15}   {:>13}   {:>12}   {}\n",
            s.slot,
            s.ticks,
            s.micros,
            s.micros * 1000,
            s.bytes,
            if s.micros < 16_667 { "yes" } else { "NO" }
        ));
    }
    out.push_str("compositor bytes per frame (60 fps cap)\n");
    out.push_str(&format!("  idle desktop (cursor blink off):      {:>12.0} bytes over {} frames\n", idle.1, idle.0));
    out.push_str(&format!("  desktop rewriting its framebuffer:    {:>12.0} bytes over {} frames\n", busy.1, busy.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hypervisor_lines() {
        let s = parse_switch_frame("[cpu0 INFO  switcher] SWITCH-FRAME slot=2 ticks=9820360 us=3972 bytes=3952640");
        assert_eq!(s, Some(SwitchFrame { slot: 2, ticks: 9_820_360, micros: 3972, bytes: 3_952_640 }));
        let a = parse_frames("[cpu0 INFO  switcher] FRAMES copied=10 idle=90 bytes_total=1000 bytes_last=10").unwrap();
        let b = parse_frames("FRAMES copied=10 idle=190 bytes_total=1000 bytes_last=10").unwrap();
        assert_eq!(b.since(&a), (100, 0.0));
        assert!(report(&[s.unwrap()], (100, 0.0), (50, 4096.0)).contains("yes"));
    }
}
