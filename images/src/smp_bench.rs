//! `cargo xtask bench smp`: two Linux desktops on a 4-CPU machine, `two` with two vCPUs
//! and `one` with one. Two boots of the same image:
//!
//! 1. under `-icount shift=0,sleep=off` (single-threaded TCG, guest time counts
//!    instructions): how long `two`'s kernel takes to bring up its second CPU (its
//!    dmesg, "smp: Bringing up secondary CPUs" to "smp: Brought up"); the latency of
//!    IPIs between `two`'s vCPUs while two shells pinned to its CPUs ping-pong through
//!    FIFOs (the hypervisor's `ipi_taken`/`ipi_eoi`/`ipi_pv_eoi` figures on the
//!    `!exits` line: from the sender's ICR write to the receiver's injection and to
//!    its EOI); then the hotkey-to-first-frame time (`SWITCH-FRAME`) with CPU-bound
//!    loops on every vCPU of both desktops;
//! 2. under multi-threaded TCG (`-accel tcg,thread=multi`, wall time): the same two
//!    CPU-bound jobs (`dd | md5sum`) run on `two`'s two CPUs at once and on `one`'s
//!    single CPU, several times, each timed by the guest's /proc/uptime; the speed-up
//!    is the best `one` time over the best `two` time.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bulkhead_policy::model::Policy;

use crate::bench::LineReader;
use crate::desktops::{self, Desktop};
use crate::switch_bench::{Qmp, SwitchFrame, parse_switch_frame};

/// The desktop with two vCPUs (slot 1) and the one with one (slot 2).
pub const TWO: &str = "two";
pub const ONE: &str = "one";

/// Under icount a 2-vCPU guest boots slowly: every 10 ms slice one of its vCPUs
/// spends waiting for the other costs 10 million emulated instructions.
const BOOT: Duration = Duration::from_secs(2400);
const STEP: Duration = Duration::from_secs(180);
const SHELL_BANNER: &str = "Enter 'help' for a list of built-in commands.";
/// Round trips of the FIFO ping-pong (two wake-ups each) in wall time, and under
/// icount, where a wake-up that waits for a 10 ms slice costs 10 million emulated
/// instructions (minutes of wall time for a few hundred).
pub const PING_PONGS: u32 = 200;
pub const PING_PONGS_ICOUNT: u32 = 20;
/// Guest seconds one speed-up job should take on a CPU of its own.
const JOB_TARGET_S: f64 = 5.0;

/// The policy: `two` (2 vCPUs) and `one` (1 vCPU), 256 MiB each, no network.
pub fn policy() -> Policy {
    let mut policy = desktops::desktops_policy(&[
        Desktop { name: TWO, label: "TWO vCPUs", colour: "#c0392b", memory_mib: 256 },
        Desktop { name: ONE, label: "ONE vCPU", colour: "#27ae60", memory_mib: 256 },
    ]);
    for vm in policy.vms.iter_mut() {
        vm.vcpus = if vm.name == TWO { 2 } else { 1 };
    }
    policy
}

/// count/sum/min/max of IPI latencies in TSC ticks, as the `!exits` line gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
}

impl Latency {
    /// The IPIs timed between two readings: their number and mean.
    pub fn since(&self, earlier: &Latency) -> (u64, Option<f64>) {
        let count = self.count.saturating_sub(earlier.count);
        let sum = self.sum.saturating_sub(earlier.sum);
        (count, (count > 0).then(|| sum as f64 / count as f64))
    }
}

/// `key=count/sum/min/max` in an `EXITS` line.
pub fn parse_latency(line: &str, key: &str) -> Option<Latency> {
    let value = line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
    let n: Vec<u64> = value.split('/').map(|v| v.parse().ok()).collect::<Option<_>>()?;
    match n[..] {
        [count, sum, min, max] => Some(Latency { count, sum, min, max }),
        _ => None,
    }
}

/// The three IPI figures of one `!exits` reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpiReading {
    pub taken: Latency,
    pub eoi: Latency,
    pub pv_eoi: Latency,
}

pub fn parse_ipi_reading(line: &str) -> Option<IpiReading> {
    Some(IpiReading {
        taken: parse_latency(line, "ipi_taken")?,
        eoi: parse_latency(line, "ipi_eoi")?,
        pv_eoi: parse_latency(line, "ipi_pv_eoi")?,
    })
}

/// The dmesg timestamp (`[    0.081234]`) of the line holding `needle`, in `text`
/// (dmesg lines joined on one line).
pub fn dmesg_time_of(text: &str, needle: &str) -> Option<f64> {
    let at = text.find(needle)?;
    let open = text[..at].rfind('[')?;
    let close = open + text[open..].find(']')?;
    text[open + 1..close].trim().parse().ok()
}

/// The sum of the per-CPU counts after `name:` in /proc/interrupts lines squeezed
/// onto one line (`RES: 12 30 Rescheduling interrupts CAL: ...`).
pub fn interrupt_total(text: &str, name: &str) -> Option<u64> {
    let mut words = text.split_whitespace().skip_while(|w| *w != format!("{name}:")).skip(1).peekable();
    words.peek()?.parse::<u64>().ok()?;
    Some(words.map_while(|w| w.parse::<u64>().ok()).sum())
}

/// `TIMES=12.34 18.90` (two /proc/uptime readings): the seconds between them.
pub fn parse_times(line: &str) -> Option<f64> {
    let mut v = line.split("TIMES=").nth(1)?.split_whitespace().map(|w| w.parse::<f64>().ok());
    let (start, end) = (v.next()??, v.next()??);
    (end >= start).then_some(end - start)
}

/// `now at 123 nsecs / now at 456 nsecs` (two /proc/timer_list readings): 333.
pub fn parse_ns_interval(text: &str) -> Option<u64> {
    let mut v = text.split('/').map(|part| part.split_whitespace().find_map(|w| w.parse::<u64>().ok()));
    let (start, end) = (v.next()??, v.next()??);
    end.checked_sub(start)
}

/// `TSC 999 MHz` in the hypervisor's boot log.
pub fn parse_tsc_mhz(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "MHz,").or_else(|| words.iter().position(|w| *w == "MHz"))?;
    (words.get(at.checked_sub(2)?)? == &"TSC").then(|| words[at - 1].parse().ok())?
}

/// The latencies one boot measured (under icount in instructions, otherwise in
/// wall time).
#[derive(Debug, Clone, Default)]
pub struct LatencyFigures {
    /// The hypervisor's TSC rate (its boot log).
    pub tsc_mhz: Option<u64>,
    /// Round trips of the ping-pong.
    pub ping_pongs: u32,
    /// The guest's nanoseconds for all of them.
    pub ping_pong_ns: Option<u64>,
    /// Guest seconds from "Bringing up secondary CPUs" to "Brought up", and that line.
    pub ap_bringup: Option<(f64, String)>,
    pub ipi_before: IpiReading,
    pub ipi_after: IpiReading,
    /// The guest's reschedule and function-call interrupts during the ping-pong.
    pub guest_ipis: Option<(u64, u64)>,
    pub switches: Vec<SwitchFrame>,
    pub errors: Vec<String>,
}

/// What the multi-threaded boot measured: seconds per run.
#[derive(Debug, Clone, Default)]
pub struct SpeedupFigures {
    /// 64 KiB blocks per job.
    pub blocks: u64,
    pub two: Vec<f64>,
    pub one: Vec<f64>,
    /// Exits per second of `two` (both vCPUs together) during its first run, by kind.
    pub two_exit_rates: Vec<(String, f64)>,
    pub errors: Vec<String>,
}

/// The counts of an `EXITS` line: `exits` (the total) and every `key=number`.
pub fn exit_counts(line: &str) -> Vec<(String, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut counts = Vec::new();
    if let Some(at) = words.iter().position(|w| *w == "exits")
        && let Some(total) = at.checked_sub(1).and_then(|i| words[i].parse().ok())
    {
        counts.push(("exits".to_string(), total));
    }
    for w in &words {
        if let Some((key, value)) = w.split_once('=')
            && let Ok(n) = value.parse::<u64>()
        {
            counts.push((key.to_string(), n));
        }
    }
    counts
}

/// Per-second rates of the counts that grew between two `EXITS` lines `seconds` apart,
/// largest first.
pub fn exit_rates(before: &str, after: &str, seconds: f64) -> Vec<(String, f64)> {
    let then = exit_counts(before);
    let mut rates: Vec<(String, f64)> = exit_counts(after)
        .into_iter()
        .filter_map(|(key, now)| {
            let was = then.iter().find(|(k, _)| *k == key).map_or(0, |(_, n)| *n);
            let exit_kind = !key.ends_with("_tsc");
            (exit_kind && now > was && seconds > 0.0).then(|| (key, (now - was) as f64 / seconds))
        })
        .collect();
    rates.sort_by(|a, b| b.1.total_cmp(&a.1));
    rates
}

impl SpeedupFigures {
    /// Best 1-vCPU time over best 2-vCPU time.
    pub fn speedup(&self) -> Option<f64> {
        let min = |v: &[f64]| v.iter().copied().reduce(f64::min);
        Some(min(&self.one)? / min(&self.two)?)
    }
}

/// Types `command` into `vm`'s shell and returns what it printed after `KEY=`
/// (`command` writes it as `KEY""=`, so the echo of the typed line does not match).
fn ask(m: &mut LineReader, vm: &str, command: &str, key: &str, timeout: Duration) -> Result<String, String> {
    let line = format!("@{vm} {command}");
    if line.len() > 255 {
        return Err(format!("serial command too long ({} bytes): {line}", line.len()));
    }
    m.type_line(&line)?;
    let answer = m.wait_for(&format!("[{vm}] {key}="), timeout)?;
    Ok(answer.split(&format!("{key}=")).nth(1).unwrap_or("").trim().to_string())
}

/// Waits until the machine printed a line containing each of `needles` (in any order:
/// lines seen while waiting for one stay in the transcript for the others).
fn wait_for_all(m: &mut LineReader, needles: &[String], timeout: Duration) -> Result<(), String> {
    for needle in needles {
        if !m.transcript.iter().any(|l| l.contains(needle.as_str())) {
            m.wait_for(needle, timeout)?;
        }
    }
    Ok(())
}

fn wait_for_desktops(m: &mut LineReader) -> Result<(), String> {
    m.wait_for("BULKHEAD READY", BOOT)?;
    let mut needles = Vec::new();
    for vm in [TWO, ONE] {
        needles.push(format!("[{vm}] BULKHEAD-GUEST-READY"));
        needles.push(format!("[{vm}] {SHELL_BANNER}"));
    }
    wait_for_all(m, &needles, BOOT)?;
    // The shells read typed lines once their line editors run.
    std::thread::sleep(Duration::from_secs(3));
    Ok(())
}

fn ipi_reading(m: &mut LineReader) -> Result<IpiReading, String> {
    let line = exits_line(m)?;
    parse_ipi_reading(&line).ok_or_else(|| format!("no IPI figures in {line:?}"))
}

fn exits_line(m: &mut LineReader) -> Result<String, String> {
    m.type_line(&format!("!exits {TWO}"))?;
    m.wait_for(&format!("EXITS {TWO} "), STEP)
}

/// Runs `steps` on the machine `command` boots and keeps its serial output in `log`.
fn with_machine(
    command: Command,
    log: &Path,
    steps: impl FnOnce(&mut LineReader) -> Result<(), String>,
) -> Result<(), String> {
    let mut m = LineReader::spawn(command)?;
    let result = steps(&mut m);
    let mut text = m.transcript.join("\n");
    text.push('\n');
    if let Err(e) = std::fs::write(log, text) {
        eprintln!("     cannot write {}: {e}", log.display());
    }
    result
}

/// Boot 1, under icount: AP bring-up, IPI latency, hotkeys while every vCPU is busy.
/// The serial output goes to `log`.
pub fn run_icount(command: Command, qmp_path: &Path, log: &Path) -> LatencyFigures {
    let mut f = LatencyFigures::default();
    let steps = |m: &mut LineReader| -> Result<(), String> {
        wait_for_desktops(m)?;
        latency_steps(m, PING_PONGS_ICOUNT, &mut f)?;
        hotkey_steps(m, qmp_path, &mut f)
    };
    if let Err(e) = with_machine(command, log, steps) {
        f.errors.push(e);
    }
    f
}

/// Boot 2, multi-threaded TCG: the same latencies in wall time, and between the IPIs
/// and the hotkeys the speed-up (see [`speedup_steps`]). The serial output goes to `log`.
pub fn run_wall(command: Command, qmp_path: &Path, runs: u32, log: &Path) -> (LatencyFigures, SpeedupFigures) {
    let mut f = LatencyFigures::default();
    let mut s = SpeedupFigures::default();
    let steps = |m: &mut LineReader| -> Result<(), String> {
        wait_for_desktops(m)?;
        latency_steps(m, PING_PONGS, &mut f)?;
        if let Err(e) = speedup_steps(m, runs, &mut s) {
            s.errors.push(e);
        }
        hotkey_steps(m, qmp_path, &mut f)
    };
    if let Err(e) = with_machine(command, log, steps) {
        f.errors.push(e);
    }
    (f, s)
}

/// The guest's AP bring-up and the IPI ping-pong.
fn latency_steps(m: &mut LineReader, n: u32, f: &mut LatencyFigures) -> Result<(), String> {
    eprintln!("     Both desktops are up");
    f.tsc_mhz = m.transcript.iter().find_map(|l| parse_tsc_mhz(l));
    let nproc = ask(m, TWO, "echo NPROC\"\"=$(nproc)", "NPROC", STEP)?;
    if nproc != "2" {
        return Err(format!("{TWO} runs {nproc} CPUs, not 2"));
    }

    let smp = ask(
        m,
        TWO,
        "echo SMP\"\"UP=$(dmesg | grep -E 'smp: Bringing up|smp: Brought up' | tr '\\n' ' ')",
        "SMPUP",
        STEP,
    )?;
    match (dmesg_time_of(&smp, "smp: Bringing up"), dmesg_time_of(&smp, "smp: Brought up")) {
        (Some(a), Some(b)) if b >= a => {
            let said = smp.split("smp: ").last().unwrap_or("").trim().to_string();
            f.ap_bringup = Some((b - a, said));
        }
        _ => f.errors.push(format!("AP bring-up: no smp lines in {TWO}'s dmesg: {smp:?}")),
    }

    // The ping-pong: the shell pinned to CPU 0 writes a line into one FIFO and waits
    // for the answer on the other; the one on CPU 1 answers. Each hand-over wakes the
    // other CPU (a reschedule IPI when it sleeps).
    f.ping_pongs = n;
    let irqs = "grep -E '^ *(RES|CAL):' /proc/interrupts | tr -s ' ' | tr '\\n' ' '";
    for line in [
        "mkfifo /tmp/p /tmp/q".to_string(),
        format!("echo 'i=0; while [ $i -lt {n} ]; do read x </tmp/p; echo $x >/tmp/q; i=$((i+1)); done' >/tmp/pong"),
        format!("echo 'i=0; while [ $i -lt {n} ]; do echo $i >/tmp/p; read x </tmp/q; i=$((i+1)); done' >/tmp/ping"),
    ] {
        ask(m, TWO, &format!("{line}; echo OK\"\"=$?"), "OK", STEP)?;
    }
    let guest_before = ask(m, TWO, &format!("echo IRQ\"\"S=$({irqs})"), "IRQS", STEP)?;
    f.ipi_before = ipi_reading(m)?;
    eprintln!("     {n} ping-pongs between {TWO}'s CPUs");
    let now = "$(grep -m1 'now at' /proc/timer_list)";
    let command = format!(
        "s=\"{now}\"; taskset -c 1 sh /tmp/pong & taskset -c 0 sh /tmp/ping; wait; echo PING\"\"PONG=$s / {now}"
    );
    let times = ask(m, TWO, &command, "PINGPONG", BOOT)?;
    f.ping_pong_ns = parse_ns_interval(&times);
    f.ipi_after = ipi_reading(m)?;
    let guest_after = ask(m, TWO, &format!("echo IRQ\"\"S=$({irqs})"), "IRQS", STEP)?;
    let delta =
        |name: &str| Some(interrupt_total(&guest_after, name)?.saturating_sub(interrupt_total(&guest_before, name)?));
    f.guest_ipis = delta("RES").zip(delta("CAL"));
    Ok(())
}

/// Every vCPU of both desktops busy (they stay so), then the hotkeys, both ways, twice.
fn hotkey_steps(m: &mut LineReader, qmp_path: &Path, f: &mut LatencyFigures) -> Result<(), String> {
    // Every vCPU of both desktops busy, then the hotkeys, both ways, twice.
    eprintln!("     Hotkeys with every vCPU busy");
    m.type_line(&format!("@{TWO} for c in 0 1; do taskset -c $c sh -c 'while :; do :; done' & done"))?;
    m.type_line(&format!("@{ONE} sh -c 'while :; do :; done' &"))?;
    std::thread::sleep(Duration::from_secs(3));
    let mut qmp = Qmp::connect(qmp_path)?;
    for (combo, slot) in [("ctrl-alt-2", 2), ("ctrl-alt-1", 1), ("ctrl-alt-2", 2), ("ctrl-alt-1", 1)] {
        qmp.send_keys(combo)?;
        let line = m.wait_for(&format!("SWITCH-FRAME slot={slot}"), STEP)?;
        f.switches.push(parse_switch_frame(&line).ok_or(format!("cannot parse {line:?}"))?);
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Two jobs of `blocks` 64 KiB blocks each on CPUs `a` and `b`; the guest seconds.
fn timed_jobs(m: &mut LineReader, vm: &str, blocks: u64, (a, b): (u32, u32)) -> Result<f64, String> {
    let command = format!(
        "s=$(cut -d' ' -f1 /proc/uptime); taskset -c {a} sh /tmp/job {blocks} & taskset -c {b} sh /tmp/job {blocks} & \
         wait; echo TI\"\"MES=$s $(cut -d' ' -f1 /proc/uptime)"
    );
    let line = ask(m, vm, &command, "TIMES", Duration::from_secs(600))?;
    parse_times(&format!("TIMES={line}")).ok_or_else(|| format!("{vm}: cannot parse the times {line:?}"))
}

/// `runs` rounds of the same two jobs in `two` (one per CPU) and in `one` (both on its
/// CPU), the other desktop idle meanwhile.
fn speedup_steps(m: &mut LineReader, runs: u32, f: &mut SpeedupFigures) -> Result<(), String> {
    for vm in [TWO, ONE] {
        ask(
            m,
            vm,
            "echo 'dd if=/dev/zero bs=64k count=$1 2>/dev/null | md5sum >/dev/null' >/tmp/job; echo OK\"\"=$?",
            "OK",
            STEP,
        )?;
    }
    // The job size: one job alone on `two`'s CPU 1 takes about JOB_TARGET_S.
    let probe = 1024;
    let probe_s = timed_jobs(m, TWO, probe / 2, (1, 1))?;
    f.blocks = ((probe as f64 * JOB_TARGET_S / probe_s.max(0.01)) as u64).clamp(64, 1 << 20);
    eprintln!("     {probe} blocks took {probe_s:.2} s: {} blocks per job", f.blocks);
    for run in 0..runs {
        let before = exits_line(m)?;
        let two = timed_jobs(m, TWO, f.blocks, (0, 1))?;
        if run == 0 {
            f.two_exit_rates = exit_rates(&before, &exits_line(m)?, two);
        }
        let one = timed_jobs(m, ONE, f.blocks, (0, 0))?;
        eprintln!("     run {}: {TWO} {two:.2} s, {ONE} {one:.2} s", run + 1);
        f.two.push(two);
        f.one.push(one);
    }
    Ok(())
}

/// The lines of one boot's latencies; `icount` says how its TSC ticks read.
fn latency_lines(f: &LatencyFigures, icount: bool, out: &mut Vec<String>) {
    let us = |ticks: f64| f.tsc_mhz.filter(|&m| m > 0).map(|m| ticks / m as f64);
    let unit = if icount { "instructions" } else { "TSC ticks" };
    match &f.ap_bringup {
        Some((s, said)) => out.push(format!(
            "  AP bring-up in {TWO} (dmesg 'smp: Bringing up secondary CPUs' -> 'smp: {said}'): {:.3} ms guest time",
            s * 1000.0
        )),
        None => out.push("  AP bring-up: not measured".into()),
    }
    let (b, a) = (&f.ipi_before, &f.ipi_after);
    out.push(format!(
        "  IPIs between {TWO}'s vCPUs during {} FIFO ping-pongs (shells on CPU 0 and CPU 1), {unit} per IPI:",
        f.ping_pongs
    ));
    if let Some(ns) = f.ping_pong_ns.filter(|_| f.ping_pongs > 0) {
        out.push(format!(
            "    (the guest's clock: {:.1} us per round trip, two wake-ups of the other CPU each)",
            ns as f64 / 1000.0 / f64::from(f.ping_pongs)
        ));
    }
    if let Some((res, cal)) = f.guest_ipis {
        out.push(format!("    (the guest counted {res} reschedule and {cal} function-call interrupts meanwhile)"));
    }
    for (what, now, then) in [
        ("sent (ICR write) -> injected into the receiver      ", a.taken, b.taken),
        ("sent -> receiver's EOI register write               ", a.eoi, b.eoi),
        ("sent -> receiver's paravirtual EOI (at its next exit)", a.pv_eoi, b.pv_eoi),
    ] {
        let (n, mean) = now.since(&then);
        let mean_us = mean.and_then(us).map_or(String::new(), |u| format!(" = {u:.1} us"));
        let mean = mean.map_or("-".into(), |m| format!("{m:.0}"));
        out.push(format!(
            "    {what} {n:>6} timed, mean {mean:>10}{mean_us}; since VM start min {} max {}",
            now.min, now.max
        ));
    }
    if !f.switches.is_empty() {
        out.push("  hotkey -> first frame of the other desktop, CPU-bound loops on all 3 vCPUs:".into());
        for s in &f.switches {
            out.push(format!(
                "    to slot {}: {:>7} us guest time ({} TSC ticks), within 16.7 ms: {}",
                s.slot,
                s.micros,
                s.ticks,
                if s.micros < 16_667 { "yes" } else { "NO" }
            ));
        }
    }
    for e in &f.errors {
        out.push(format!("  failed: {e}"));
    }
}

/// The result table.
pub fn report(icount: Option<&LatencyFigures>, wall: Option<&(LatencyFigures, SpeedupFigures)>) -> String {
    let mut out = vec![format!("smp (-smp 4; desktop '{TWO}' with 2 vCPUs, '{ONE}' with 1)")];
    if let Some(f) = icount {
        out.push(format!(
            "under -icount shift=0,sleep=off, every vCPU time-sliced on the boot CPU (guests=boot-cpu; guest time counts instructions of the whole machine; TSC {} MHz):",
            f.tsc_mhz.map_or("?".into(), |m| m.to_string())
        ));
        latency_lines(f, true, &mut out);
    }
    if let Some((f, s)) = wall {
        out.push(format!(
            "under multi-threaded TCG (-accel tcg,thread=multi), each vCPU on its own application processor, wall time, TSC {} MHz:",
            f.tsc_mhz.map_or("?".into(), |m| m.to_string())
        ));
        out.push(format!(
            "  speed-up: two jobs of `dd if=/dev/zero bs=64k count={} | md5sum` (guest /proc/uptime)",
            s.blocks
        ));
        let list = |v: &[f64]| v.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>().join(" ");
        out.push(format!("    {TWO} (one job per vCPU), s per run: {}", list(&s.two)));
        out.push(format!("    {ONE} (both on its vCPU), s per run: {}", list(&s.one)));
        match s.speedup() {
            Some(x) => out.push(format!("    speed-up, best {ONE} / best {TWO}: {x:.2}x (goal: at least 1.8x)")),
            None => out.push("    speed-up: not measured".into()),
        }
        if !s.two_exit_rates.is_empty() {
            let top: Vec<String> = s.two_exit_rates.iter().take(10).map(|(k, r)| format!("{k} {r:.0}")).collect();
            out.push(format!("    {TWO}'s exits per second during its first run (both vCPUs): {}", top.join(", ")));
        }
        for e in &s.errors {
            out.push(format!("    failed: {e}"));
        }
        latency_lines(f, false, &mut out);
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_rates_are_the_growth_per_second_largest_first() {
        let before = "[cpu0 INFO  vm] EXITS two 100 exits hlt=10 wrmsr.0x6e0=40 ipi_taken=3/9/1/5";
        let after = "[cpu0 INFO  vm] EXITS two 300 exits hlt=10 wrmsr.0x6e0=140 intr=20 ipi_taken=4/19/1/9 idle_tsc=99";
        let rates = exit_rates(before, after, 2.0);
        assert_eq!(
            rates,
            vec![("exits".to_string(), 100.0), ("wrmsr.0x6e0".to_string(), 50.0), ("intr".to_string(), 10.0)]
        );
    }

    #[test]
    fn parses_the_ipi_figures_of_an_exits_line() {
        let line = "[cpu0 INFO  vm] EXITS two 1234 exits hlt=3 device_interrupts=0 pv_eois=9 \
                    ipi_taken=4/4000/500/2000 ipi_eoi=0/0/0/0 ipi_pv_eoi=3/9000/2500/3500 guest_tsc=1";
        let r = parse_ipi_reading(line).unwrap();
        assert_eq!(r.taken, Latency { count: 4, sum: 4000, min: 500, max: 2000 });
        assert_eq!(r.pv_eoi.count, 3);
        let earlier = Latency { count: 1, sum: 1000, min: 500, max: 500 };
        assert_eq!(r.taken.since(&earlier), (3, Some(1000.0)));
        assert_eq!(r.eoi.since(&Latency::default()), (0, None));
        assert_eq!(parse_latency("ipi_taken=1/2/3", "ipi_taken"), None);
        assert_eq!(parse_latency("ipi_taken=1/2/x/4", "ipi_taken"), None);
        assert_eq!(parse_ipi_reading("EXITS two 5 exits pv_eois=1"), None);
    }

    #[test]
    fn finds_dmesg_times_interrupt_counts_and_job_times() {
        let smp = "[    0.081234] smp: Bringing up secondary CPUs ... [    0.093734] smp: Brought up 1 node, 2 CPUs ";
        assert_eq!(dmesg_time_of(smp, "smp: Bringing up"), Some(0.081234));
        assert_eq!(dmesg_time_of(smp, "smp: Brought up"), Some(0.093734));
        assert_eq!(dmesg_time_of(smp, "smpboot: Total"), None);
        let irqs = "RES: 120 45 Rescheduling interrupts CAL: 3 7 Function call interrupts ";
        assert_eq!(interrupt_total(irqs, "RES"), Some(165));
        assert_eq!(interrupt_total(irqs, "CAL"), Some(10));
        assert_eq!(interrupt_total(irqs, "TLB"), None);
        assert_eq!(parse_times("TIMES=12.34 18.84"), Some(6.5));
        assert_eq!(parse_times("TIMES=12.34"), None);
        assert_eq!(parse_times("TIMES=20.00 10.00"), None);
        assert_eq!(parse_tsc_mhz("[cpu0 INFO  lapic] xAPIC mode, TSC 999 MHz, timer 62495 ticks/ms"), Some(999));
        assert_eq!(parse_tsc_mhz("[cpu0 INFO  lapic] timer 5 MHz"), None);
        assert_eq!(parse_ns_interval("now at 1000 nsecs / now at 4500 nsecs"), Some(3500));
        assert_eq!(parse_ns_interval("now at 1000 nsecs / "), None);
        assert_eq!(parse_ns_interval("now at 9 nsecs / now at 5 nsecs"), None);
    }

    #[test]
    fn the_speedup_is_best_against_best_and_the_report_says_it() {
        let s = SpeedupFigures { blocks: 1000, two: vec![5.0, 4.0], one: vec![8.2, 8.0], ..Default::default() };
        assert_eq!(s.speedup(), Some(2.0));
        assert_eq!(SpeedupFigures::default().speedup(), None);
        let taken = Latency { count: 10, sum: 25_000, min: 900, max: 5000 };
        let icount = LatencyFigures {
            tsc_mhz: Some(1000),
            ap_bringup: Some((0.0125, "Brought up 1 node, 2 CPUs".into())),
            ipi_after: IpiReading { taken, ..IpiReading::default() },
            ping_pongs: 20,
            ping_pong_ns: Some(1_000_000),
            switches: vec![SwitchFrame { slot: 2, ticks: 900_000, micros: 900, bytes: 1 }],
            ..LatencyFigures::default()
        };
        let text = report(Some(&icount), Some(&(LatencyFigures::default(), s)));
        assert!(text.contains("12.500 ms"), "{text}");
        assert!(text.contains("2.00x"), "{text}");
        assert!(text.contains("8.20 8.00"), "{text}");
        assert!(text.contains("within 16.7 ms: yes"), "{text}");
        assert!(text.contains("10 timed, mean       2500 = 2.5 us; since VM start min 900 max 5000"), "{text}");
        assert!(text.contains("TSC 1000 MHz"), "{text}");
        assert!(text.contains("50.0 us per round trip"), "{text}");
    }

    #[test]
    fn the_policy_gives_two_vcpus_to_the_first_desktop_only() {
        let p = policy();
        let v: Vec<_> = p.vms.iter().map(|vm| (vm.name.as_str(), vm.vcpus)).collect();
        assert_eq!(v, [(TWO, 2), (ONE, 1)]);
    }
}
