//! `cargo xtask bench net`: a desktop downloads the same file twice under
//! `-icount shift=0,sleep=off` (where time counts instructions retired, guest and
//! hypervisor alike): once through the networking service VM (virtio-net link, router,
//! NAT, the service VM's e1000e on QEMU's user network) and once with the same NIC
//! passed through to the desktop directly. Each run reports the desktop's time per MiB
//! (its own clock, in instructions of the whole machine), the exits on each side per
//! MiB, and the link's frames and bytes per MiB (the hypervisor copies each byte once
//! per hop), and the table puts the two side by side.
//!
//! A second table splits the machine's instructions per MiB by where they ran: in the
//! desktop, in the service VM, in the hypervisor, and the virtual clock's idle jumps.
//! The hypervisor reads its TSC (under `-icount shift=0`, one tick per instruction)
//! around each VMRUN and around its idle HLT and prints the sums in the `!exits` line;
//! the hypervisor's share is the window less the guests' and the idle time.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::bench::{ExitsReading, LineReader, parse_counters};
#[cfg(test)]
use crate::bench::{exits_total, field};

/// Bytes downloaded in each run.
pub const DOWNLOAD_BYTES: usize = 32 << 20;
const BOOT: Duration = Duration::from_secs(900);
const STEP: Duration = Duration::from_secs(900);
const MIB: f64 = (1u64 << 20) as f64;

/// What one run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathFigures {
    /// The desktop's uptime spent on the download, in seconds (instructions / 1e9).
    pub seconds: f64,
    pub bytes: u64,
    /// Exits of the desktop during the download.
    pub desktop_exits: u64,
    /// Exits of the service VM during the download (none on the direct path).
    pub service_exits: Option<u64>,
    /// Frames and bytes the link carried towards the desktop (none on the direct path).
    pub link_frames: Option<u64>,
    pub link_bytes: Option<u64>,
    /// Where the machine's time went between the two `!exits` readings of the desktop.
    pub split: TimeSplit,
}

/// Host TSC ticks (instructions under `-icount shift=0`) in one measuring window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeSplit {
    /// The whole window (the desktop's `now_tsc` after less before).
    pub window: u64,
    pub desktop: u64,
    /// In the service VM's guest mode (0 on the direct path).
    pub service: u64,
    /// The hypervisor halted with nothing to run: clock jumps, not instructions.
    pub idle: u64,
}

impl TimeSplit {
    /// What is left for the hypervisor: the window less the guests and the idle time.
    pub fn hypervisor(&self) -> u64 {
        self.window.saturating_sub(self.desktop).saturating_sub(self.service).saturating_sub(self.idle)
    }
}

impl PathFigures {
    fn mib(&self) -> f64 {
        (self.bytes as f64 / MIB).max(f64::MIN_POSITIVE)
    }
    /// Guest-time throughput in MiB per second of the machine's instructions.
    pub fn mib_per_s(&self) -> f64 {
        self.mib() / self.seconds.max(f64::MIN_POSITIVE)
    }
}

/// Both runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetTable {
    pub service: PathFigures,
    pub direct: PathFigures,
}

impl fmt::Display for NetTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "download of {} MiB, QEMU TCG -icount shift=0,sleep=off (1 s = 10^9 instructions)",
            DOWNLOAD_BYTES >> 20
        )?;
        writeln!(
            f,
            "path            Minstr/MiB  MiB/s  desktop exits/MiB  service VM exits/MiB  link frames/MiB  copies/byte"
        )?;
        for (name, p) in [("service VM", &self.service), ("direct NIC", &self.direct)] {
            let per_mib = |n: u64| n as f64 / p.mib();
            writeln!(
                f,
                "{name:<15} {:>10.1} {:>6.2} {:>18.0} {:>21} {:>16} {:>12}",
                p.seconds * 1000.0 / p.mib(),
                p.mib_per_s(),
                per_mib(p.desktop_exits),
                p.service_exits.map_or("-".into(), |n| format!("{:.0}", per_mib(n))),
                p.link_frames.map_or("-".into(), |n| format!("{:.0}", per_mib(n))),
                p.link_bytes.map_or("-".into(), |n| format!("{:.2}", n as f64 / p.bytes.max(1) as f64)),
            )?;
        }
        let ratio = self.service.mib_per_s() / self.direct.mib_per_s().max(f64::MIN_POSITIVE);
        writeln!(f, "through the service VM: {:.0}% of the direct path's throughput", ratio * 100.0)?;
        writeln!(f, "instructions per MiB by where they ran (host TSC around VMRUN and the idle HLT), millions")?;
        writeln!(f, "path              desktop  service VM  hypervisor  (idle clock)  window")?;
        for (name, p) in [("service VM", &self.service), ("direct NIC", &self.direct)] {
            let m = |n: u64| n as f64 / p.mib() / 1e6;
            let t = &p.split;
            writeln!(
                f,
                "{name:<15} {:>9.1} {:>11.1} {:>11.1} {:>13.1} {:>7.1}",
                m(t.desktop),
                m(t.service),
                m(t.hypervisor()),
                m(t.idle),
                m(t.window)
            )?;
        }
        Ok(())
    }
}

/// Serves `body` to every HTTP request on a host port (any path); returns the port.
pub fn serve(body: Arc<Vec<u8>>) -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot open a host port: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
            });
        }
    });
    Ok(port)
}

/// `(frames, bytes)` the desktop's first link received, from `!net`.
fn link_received(m: &mut LineReader, vm: &str) -> Result<(u64, u64), String> {
    m.type_line(&format!("!net {vm}"))?;
    let line = m.wait_for(&format!("NET {vm} port 0 "), STEP)?;
    let received = line.split(" received ").nth(1).ok_or_else(|| format!("no received counters in {line:?}"))?;
    let counters = parse_counters(received);
    let get = |k: &str| counters.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    Ok((get("frames").unwrap_or(0), get("bytes").unwrap_or(0)))
}

/// Boots `command` (desktop VM `vm`, and the service VM `service` if any), waits for the
/// desktop's network, downloads from host port `port` and measures.
pub fn run_path(command: Command, vm: &str, service: Option<&str>, port: u16) -> Result<PathFigures, String> {
    let mut m = LineReader::spawn(command)?;
    m.wait_for("BULKHEAD READY", BOOT)?;
    m.wait_for(&format!("[{vm}] BULKHEAD-GUEST-READY"), BOOT)?;
    m.type_line(&format!(
        "@{vm} for i in $(seq 120); do ip -4 -o addr show eth0 | grep -q inet && break; sleep 1; done; echo NETUP=$(ip -4 -o addr show eth0 | grep -c inet)"
    ))?;
    let up = m.wait_for(&format!("[{vm}] NETUP="), STEP)?;
    if !up.ends_with("NETUP=1") {
        return Err(format!("{vm} got no address: {up}"));
    }
    // A first small request warms ARP and the NAT path.
    m.type_line(&format!("@{vm} wget -q -O /dev/null http://10.0.2.2:{port}/warm; echo WARM=$?"))?;
    m.wait_for(&format!("[{vm}] WARM="), STEP)?;
    let desktop_before = ExitsReading::take(&mut m, vm, STEP)?;
    let service_before = service.map(|s| ExitsReading::take(&mut m, s, STEP)).transpose()?;
    let link_before = service.map(|_| link_received(&mut m, vm)).transpose()?;
    m.type_line(&format!(
        "@{vm} a=$(cut -d' ' -f1 /proc/uptime); n=$(wget -q -O - http://10.0.2.2:{port}/bench | wc -c); \
         b=$(cut -d' ' -f1 /proc/uptime); echo NETBENCH bytes=$n start=$a end=$b"
    ))?;
    let line = m.wait_for(&format!("[{vm}] NETBENCH "), STEP)?;
    let value = |key: &str| -> Result<f64, String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in {line:?}"))
    };
    let bytes = value("bytes=")? as u64;
    if bytes != DOWNLOAD_BYTES as u64 {
        return Err(format!("{vm} downloaded {bytes} bytes instead of {DOWNLOAD_BYTES}"));
    }
    let seconds = value("end=")? - value("start=")?;
    let desktop_after = ExitsReading::take(&mut m, vm, STEP)?;
    let service_after = service.map(|s| ExitsReading::take(&mut m, s, STEP)).transpose()?;
    let desktop_exits = desktop_after.exits.saturating_sub(desktop_before.exits);
    let service_exits = service_before.zip(service_after).map(|(b, a)| a.exits.saturating_sub(b.exits));
    let split = TimeSplit {
        window: desktop_after.now_tsc.saturating_sub(desktop_before.now_tsc),
        desktop: desktop_after.guest_tsc.saturating_sub(desktop_before.guest_tsc),
        service: service_before.zip(service_after).map_or(0, |(b, a)| a.guest_tsc.saturating_sub(b.guest_tsc)),
        idle: desktop_after.idle_tsc.saturating_sub(desktop_before.idle_tsc),
    };
    let link = match link_before {
        Some((frames, bytes)) => {
            let (f, b) = link_received(&mut m, vm)?;
            Some((f.saturating_sub(frames), b.saturating_sub(bytes)))
        }
        None => None,
    };
    Ok(PathFigures {
        seconds,
        bytes,
        desktop_exits,
        service_exits,
        link_frames: link.map(|l| l.0),
        link_bytes: link.map(|l| l.1),
        split,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_totals_and_the_table() {
        assert_eq!(exits_total("[cpu0 INFO  vm] EXITS bench 1234 exits cpuid=3 io=9 device_interrupts=4"), Some(1234));
        assert_eq!(exits_total("EXITS bench nothing"), None);
        let line = "EXITS net 12 exits npf=12 device_interrupts=3 guest_tsc=900 idle_tsc=50 now_tsc=7000";
        assert_eq!(
            (field(line, "guest_tsc"), field(line, "idle_tsc"), field(line, "now_tsc")),
            (Some(900), Some(50), Some(7000))
        );
        assert_eq!(field(line, "tsc"), None);
        assert_eq!(field("guest_tsc=x", "guest_tsc"), None);
        let mib = (1u64 << 20) * 32;
        let table = NetTable {
            service: PathFigures {
                seconds: 4.0,
                bytes: mib,
                desktop_exits: 3200,
                service_exits: Some(6400),
                link_frames: Some(23000),
                link_bytes: Some(mib + mib / 30),
                split: TimeSplit {
                    window: 4_000_000_000,
                    desktop: 1_600_000_000,
                    service: 960_000_000,
                    idle: 320_000_000,
                },
            },
            direct: PathFigures { seconds: 2.0, bytes: mib, desktop_exits: 64000, ..PathFigures::default() },
        };
        let text = table.to_string();
        assert!(text.contains("through the service VM: 50% of the direct path's throughput"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("service VM") && l.contains(" 125.0 ") && l.contains("1.03")),
            "{text}"
        );
        assert!(text.lines().any(|l| l.starts_with("direct NIC") && l.contains("2000")), "{text}");
        // Per MiB: desktop 50, service VM 30, hypervisor 4000-1600-960-320 = 1120 -> 35, idle 10.
        assert!(
            text.lines().any(|l| l.starts_with("service VM")
                && l.contains(" 50.0 ")
                && l.contains(" 30.0 ")
                && l.contains(" 35.0 ")
                && l.contains(" 10.0 ")),
            "{text}"
        );
    }
}
