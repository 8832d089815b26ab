//! `cargo xtask bench disk`: a desktop writes and then reads the same number of MiB
//! of random data straight to and from its disk (`dd bs=1M`, `O_DIRECT`, so the page
//! cache plays no part), and checks that it reads back what it wrote, under `-icount shift=0,sleep=off`, once on each path:
//!
//! - its virtio-blk disk (`/dev/vda`), served by the hypervisor from a backend
//!   ([`DiskBackend`]: host RAM today; the NVMe disk store, plain or encrypted, once it
//!   exists);
//! - QEMU's NVMe controller (1b36:0010) passed through to the desktop, which drives it
//!   with Linux's own `nvme` driver (`/dev/nvme0n1`): the hardware's path with no
//!   virtual disk in between.
//!
//! For each phase it reports the desktop's guest time (its monotonic clock from
//! `/proc/timer_list`, in nanoseconds, which under icount are instructions of the whole
//! machine), the desktop's exits per MiB, and the machine's instructions per
//! MiB split by where they ran (desktop, hypervisor, idle clock jumps), from `!exits`
//! readings around the phase, as `bench net` does.

use std::fmt;
use std::process::Command;
use std::time::Duration;

use crate::bench::{ExitsReading, LineReader};

/// MiB written and then read in each run.
pub const BENCH_MIB: u64 = 64;
/// The disk each path gets: room for the bench, small enough for a RAM-backed disk.
pub const DISK_MIB: u64 = 128;
/// QEMU's NVMe controller, as a policy device selector.
pub const NVME_DEVICE: &str = "1b36:0010";
const BOOT: Duration = Duration::from_secs(900);
const STEP: Duration = Duration::from_secs(900);

/// Where the sectors of a virtio-blk disk live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBackend {
    /// A block of host RAM (`HostRamBackend`): what every disk has today.
    Ram,
    /// The VM's blocks in the data partition on the host's NVMe drive, unencrypted.
    NvmePlain,
    /// The same, under AES-256-XTS.
    NvmeEncrypted,
}

impl DiskBackend {
    pub const ALL: [DiskBackend; 3] = [DiskBackend::Ram, DiskBackend::NvmePlain, DiskBackend::NvmeEncrypted];

    /// The hypervisor's command line for a bench boot on this backend: NVMe volumes
    /// are made on a fresh data partition with a passphrase given on the command line
    /// and cheap Argon2id (both honoured only under the demo policy key), and without
    /// encryption for `NvmePlain`.
    pub fn cmdline(self) -> &'static str {
        match self {
            DiskBackend::Ram => "",
            DiskBackend::NvmePlain => "disk-kdf=test disk-passphrase=bench-passphrase disk-cipher=none",
            DiskBackend::NvmeEncrypted => "disk-kdf=test disk-passphrase=bench-passphrase",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DiskBackend::Ram => "RAM",
            DiskBackend::NvmePlain => "NVMe, plain",
            DiskBackend::NvmeEncrypted => "NVMe, XTS",
        }
    }
}

/// One way for the desktop to reach a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskPath {
    /// The virtio-blk disk the policy gives the desktop, on a backend.
    Virtio(DiskBackend),
    /// QEMU's NVMe controller passed through to the desktop.
    PassthroughNvme,
}

impl DiskPath {
    /// The block device inside the guest.
    pub fn guest_device(self) -> &'static str {
        match self {
            DiskPath::Virtio(_) => "/dev/vda",
            DiskPath::PassthroughNvme => "/dev/nvme0n1",
        }
    }

    pub fn name(self) -> String {
        match self {
            DiskPath::Virtio(b) => format!("virtio-blk, {}", b.name()),
            DiskPath::PassthroughNvme => "NVMe passed through".into(),
        }
    }
}

/// What one phase (the write or the read) measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseFigures {
    /// The desktop's uptime spent in `dd`, in seconds (instructions / 1e9).
    pub seconds: f64,
    pub mib: u64,
    /// The desktop's exits during the phase.
    pub exits: u64,
    /// Host TSC ticks (instructions) between the two readings around the phase.
    pub window: u64,
    /// Of those, in the desktop's guest mode.
    pub desktop: u64,
    /// The hypervisor halted with nothing to run: clock jumps, not instructions.
    pub idle: u64,
}

impl PhaseFigures {
    fn mib_f(&self) -> f64 {
        (self.mib as f64).max(f64::MIN_POSITIVE)
    }

    pub fn mib_per_s(&self) -> f64 {
        self.mib_f() / self.seconds.max(f64::MIN_POSITIVE)
    }

    pub fn exits_per_mib(&self) -> f64 {
        self.exits as f64 / self.mib_f()
    }

    /// The hypervisor's instructions: the window less the desktop and the idle time.
    pub fn hypervisor(&self) -> u64 {
        self.window.saturating_sub(self.desktop).saturating_sub(self.idle)
    }

    /// Millions of instructions per MiB.
    fn m_per_mib(&self, n: u64) -> f64 {
        n as f64 / self.mib_f() / 1e6
    }
}

/// Both phases of one path.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PathFigures {
    pub write: PhaseFigures,
    pub read: PhaseFigures,
    /// Lines about timeouts in the guest's kernel log after the run: each is an I/O
    /// whose completion interrupt never arrived (the figures then measure the timeout).
    pub io_timeouts: u64,
}

/// The runs, side by side; an error for a path that could not be measured (yet).
#[derive(Debug, Clone, Default)]
pub struct DiskTable {
    pub rows: Vec<(DiskPath, Result<PathFigures, String>)>,
}

impl DiskTable {
    fn find(&self, path: DiskPath) -> Option<&PathFigures> {
        self.rows.iter().find(|(p, _)| *p == path).and_then(|(_, r)| r.as_ref().ok())
    }
}

impl fmt::Display for DiskTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sequential write then read of {BENCH_MIB} MiB (dd bs=1M, O_DIRECT), QEMU TCG -icount shift=0,sleep=off \
             (1 s = 10^9 instructions)"
        )?;
        writeln!(
            f,
            "path                   phase  MiB/s  exits/MiB  Minstr/MiB: desktop  hypervisor  (idle clock)  window"
        )?;
        for (path, result) in &self.rows {
            match result {
                Ok(p) => {
                    if p.io_timeouts > 0 {
                        writeln!(
                            f,
                            "{:<22} WARNING: {} I/O timeouts in the guest's log: completions were found by the \
                             driver's timeout, not by an interrupt",
                            path.name(),
                            p.io_timeouts
                        )?;
                    }
                    for (phase, x) in [("write", &p.write), ("read", &p.read)] {
                        writeln!(
                            f,
                            "{:<22} {phase:<5} {:>6.1} {:>10.1} {:>20.2} {:>11.2} {:>13.2} {:>7.2}",
                            path.name(),
                            x.mib_per_s(),
                            x.exits_per_mib(),
                            x.m_per_mib(x.desktop),
                            x.m_per_mib(x.hypervisor()),
                            x.m_per_mib(x.idle),
                            x.m_per_mib(x.window),
                        )?;
                    }
                }
                Err(why) => writeln!(f, "{:<22} not measured: {why}", path.name())?,
            }
        }
        let direct = self.find(DiskPath::PassthroughNvme);
        for backend in DiskBackend::ALL {
            if let (Some(v), Some(d)) = (self.find(DiskPath::Virtio(backend)), direct) {
                writeln!(
                    f,
                    "virtio-blk on {} / NVMe passed through: write {:.0}%, read {:.0}% of the throughput",
                    backend.name(),
                    100.0 * v.write.mib_per_s() / d.write.mib_per_s().max(f64::MIN_POSITIVE),
                    100.0 * v.read.mib_per_s() / d.read.mib_per_s().max(f64::MIN_POSITIVE),
                )?;
            }
        }
        Ok(())
    }
}

/// The markers are quoted in the commands (`"DATA"=`) so that the shell's echo of a
/// typed line, which the console may wrap anywhere, never looks like the answer.
///
/// Guest commands that prepare the run: the virtio disk off /home (the bench writes the
/// raw device), `t`, the guest's monotonic clock in nanoseconds (`/proc/uptime` counts
/// in 10 ms), and the data to write, random so that the read-back check means something.
fn setup_commands(vm: &str, device: &str) -> [String; 2] {
    [
        format!(
            "@{vm} umount /home 2>/dev/null; t() {{ grep -m1 'now at' /proc/timer_list | cut -d' ' -f3; }}; \
             echo \"DEV\"=$(cat /sys/class/block/{}/size)/$(t)/$(dmesg | grep -ci timeout)",
            device.trim_start_matches("/dev/")
        ),
        format!(
            "@{vm} dd if=/dev/urandom of=/tmp/p bs=1M count={BENCH_MIB} 2>/dev/null; echo \"DATA\"=$(md5sum < /tmp/p)"
        ),
    ]
}

/// The guest command that times one phase: `dd` between the data in tmpfs (or
/// `/dev/null`) and the device, with the clock before and after.
fn phase_command(vm: &str, device: &str, write: bool) -> String {
    let dd = if write {
        format!("dd if=/tmp/p of={device} bs=1M count={BENCH_MIB} oflag=direct")
    } else {
        format!("dd if={device} of=/dev/null bs=1M count={BENCH_MIB} iflag=direct")
    };
    format!("@{vm} a=$(t); {dd} 2>/dev/null; r=$?; b=$(t); echo \"DISKBENCH\" rc=$r start=$a end=$b")
}

/// The guest's check afterwards: the device gives back what was written, and how many
/// I/O timeouts the kernel logged (a request whose interrupt never came completes only
/// when the driver's timeout polls for it).
fn check_command(vm: &str, device: &str) -> String {
    format!(
        "@{vm} echo \"CHECK\"=$(dd if={device} bs=1M count={BENCH_MIB} iflag=direct 2>/dev/null | md5sum)/$(dmesg | grep -ci timeout)"
    )
}

/// Seconds between `start=` and `end=` (nanoseconds) of a `DISKBENCH` line.
fn parse_phase(line: &str) -> Result<f64, String> {
    let value = |key: &str| -> Result<u64, String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in {line:?}"))
    };
    if value("rc=")? != 0 {
        return Err(format!("dd failed: {line}"));
    }
    Ok(value("end=")?.saturating_sub(value("start=")?) as f64 / 1e9)
}

/// Boots `command` (desktop VM `vm` reaching its disk on `path`), waits for the disk,
/// and measures the write and the read.
pub fn run_path(command: Command, vm: &str, path: DiskPath) -> Result<PathFigures, String> {
    let mut m = LineReader::spawn(command)?;
    m.wait_for("BULKHEAD READY", BOOT)?;
    m.wait_for(&format!("[{vm}] BULKHEAD-GUEST-READY"), BOOT)?;
    let device = path.guest_device();
    let [prepare, data] = setup_commands(vm, device);
    m.type_line(&prepare)?;
    let dev = m.wait_for(&format!("[{vm}] DEV="), STEP)?;
    let fields: Vec<&str> = dev.rsplit('=').next().unwrap_or("").split('/').map(str::trim).collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let sectors = number(0).unwrap_or(0);
    if sectors < BENCH_MIB * 2048 {
        return Err(format!("{device} in {vm} has {sectors} sectors, fewer than {BENCH_MIB} MiB: {dev}"));
    }
    let Some(now_ns) = number(1) else {
        return Err(format!("{vm} has no nanosecond clock in /proc/timer_list: {dev}"));
    };
    // Requests that time out already during the boot (the driver's admin and I/O
    // timeouts are 30-60 s each) would make the run take hours of guest time.
    if number(2) != Some(0) {
        // What the guest saw: the device's interrupt lines and its first timeouts.
        m.type_line(&format!(
            "@{vm} echo \"DIAG\"=$(grep -i -e nvme -e virtio /proc/interrupts | tr -s ' ' | head -3 | tr '\\n' '|')\
             $(dmesg | grep -i -m2 timeout | tr '\\n' '|')"
        ))?;
        let diag = m.wait_for(&format!("[{vm}] DIAG="), STEP).unwrap_or_default();
        return Err(format!(
            "the guest logged timeouts before the run ({} lines; its clock read {:.0} s at the shell): \
             the device's completion interrupts do not reach it; {}",
            fields.get(2).unwrap_or(&"?"),
            now_ns as f64 / 1e9,
            diag.split("DIAG=").nth(1).unwrap_or("").trim()
        ));
    }
    m.type_line(&data)?;
    let data = m.wait_for(&format!("[{vm}] DATA="), STEP)?;
    let written = data.rsplit('=').next().unwrap_or("").split_whitespace().next().unwrap_or("").to_owned();
    let mut phases = [PhaseFigures::default(); 2];
    for (phase, write) in phases.iter_mut().zip([true, false]) {
        let before = ExitsReading::take(&mut m, vm, STEP)?;
        m.type_line(&phase_command(vm, device, write))?;
        let line = m.wait_for(&format!("[{vm}] DISKBENCH "), STEP)?;
        let after = ExitsReading::take(&mut m, vm, STEP)?;
        *phase = PhaseFigures {
            seconds: parse_phase(&line)?,
            mib: BENCH_MIB,
            exits: after.exits.saturating_sub(before.exits),
            window: after.now_tsc.saturating_sub(before.now_tsc),
            desktop: after.guest_tsc.saturating_sub(before.guest_tsc),
            idle: after.idle_tsc.saturating_sub(before.idle_tsc),
        };
        eprintln!("     {} {}: {phase:?}", path.name(), if write { "write" } else { "read" });
    }
    m.type_line(&check_command(vm, device))?;
    let check = m.wait_for(&format!("[{vm}] CHECK="), STEP)?;
    let (sum, timeouts) = check.rsplit("CHECK=").next().unwrap_or("").split_once('/').unwrap_or(("", ""));
    let read_back = sum.split_whitespace().next().unwrap_or("");
    if written.len() != 32 || read_back != written {
        return Err(format!("{device} gave back other data ({read_back}) than was written ({written})"));
    }
    let io_timeouts = timeouts.trim().parse().map_err(|_| format!("no timeout count in {check:?}"))?;
    Ok(PathFigures { write: phases[0], read: phases[1], io_timeouts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_commands_fit_the_serial_line_and_parse() {
        for path in [DiskPath::Virtio(DiskBackend::Ram), DiskPath::PassthroughNvme] {
            for write in [true, false] {
                let c = phase_command("bench", path.guest_device(), write);
                assert!(c.len() <= 255, "{c}");
                assert!(c.contains(if write { "oflag=direct" } else { "iflag=direct" }), "{c}");
            }
            let device = path.guest_device();
            let phase = phase_command("bench", device, true);
            for c in setup_commands("bench", device).iter().chain([&check_command("bench", device), &phase]) {
                assert!(c.len() <= 255, "{c}");
                for marker in ["DEV=", "DATA=", "DISKBENCH ", "CHECK="] {
                    assert!(!c.contains(marker), "the echo of {c} could be taken for its answer");
                }
            }
        }
        assert_eq!(parse_phase("[bench] DISKBENCH rc=0 start=10500000000 end=11250000000"), Ok(0.75));
        assert!(parse_phase("[bench] DISKBENCH rc=1 start=10 end=11").is_err());
        assert!(parse_phase("[bench] DISKBENCH rc=0 start=10").is_err());
    }

    #[test]
    fn the_table_puts_the_paths_side_by_side() {
        let phase = |seconds: f64, exits: u64, hypervisor: u64| PhaseFigures {
            seconds,
            mib: BENCH_MIB,
            exits,
            window: 2_000_000_000 + hypervisor,
            desktop: 1_500_000_000,
            idle: 500_000_000,
        };
        let table = DiskTable {
            rows: vec![
                (
                    DiskPath::Virtio(DiskBackend::Ram),
                    Ok(PathFigures {
                        write: phase(1.0, 6400, 640_000_000),
                        read: phase(0.5, 3200, 320_000_000),
                        io_timeouts: 0,
                    }),
                ),
                (DiskPath::Virtio(DiskBackend::NvmeEncrypted), Err("QEMU exited".into())),
                (
                    DiskPath::PassthroughNvme,
                    Ok(PathFigures { write: phase(0.5, 64, 0), read: phase(0.25, 64, 0), io_timeouts: 2 }),
                ),
            ],
        };
        let text = table.to_string();
        // 64 MiB in 1 s; 100 exits per MiB; hypervisor 640 M / 64 MiB = 10 M per MiB.
        assert!(
            text.lines().any(|l| l.starts_with("virtio-blk, RAM")
                && l.contains(" write ")
                && l.contains(" 64.0 ")
                && l.contains(" 100.0 ")
                && l.contains(" 10.00 ")),
            "{text}"
        );
        assert!(text.contains("virtio-blk, NVMe, XTS  not measured: QEMU exited"), "{text}");
        assert!(
            text.contains("virtio-blk on RAM / NVMe passed through: write 50%, read 50% of the throughput"),
            "{text}"
        );
        assert!(!text.contains("virtio-blk on NVMe, XTS /"), "{text}");
        assert!(text.contains("NVMe passed through    WARNING: 2 I/O timeouts"), "{text}");
        assert_eq!(text.matches("WARNING").count(), 1, "{text}");
    }
}
