//! `cargo xtask bench exits`: the path length of one exit round trip, by kind of exit.
//!
//! The `exits` payload (tests/payloads/src/bin/exits.rs) runs as the only VM under
//! `-icount shift=0,sleep=off`, where the TSC counts instructions retired (guest and
//! hypervisor alike). For each kind it times 1000 iterations of the exiting
//! instruction and 1000 of a baseline in which that instruction is replaced by one that
//! does not exit, and prints `EXITS-BENCH kind=...` lines; around each exiting loop it
//! calls VM_INFO, which makes the hypervisor log the VM's exit counters. This module
//! turns that transcript into one line per kind: instructions per round trip, the
//! baseline, their difference (the hypervisor's work: #VMEXIT to the next VMRUN, plus
//! the two emulated world switches) and the exits each iteration caused.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::bench::{LineReader, parse_counters};

const BOOT: Duration = Duration::from_secs(600);
const STEP: Duration = Duration::from_secs(300);

/// Statistics of one timed loop, in TSC ticks (instructions under icount).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub min: u64,
    pub median: u64,
    pub max: u64,
    pub total: u64,
}

/// One `EXITS-BENCH kind=...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindLine {
    pub kind: String,
    pub iters: u64,
    /// Interrupts the payload handled during the exiting loop.
    pub irqs: u64,
    pub op: Span,
    pub base: Span,
}

/// The `kind=tsc-check` line: the same span empty and with 100 NOPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscCheck {
    pub nops: u64,
    pub empty: (u64, u64),
    pub with_nops: (u64, u64),
}

impl TscCheck {
    /// True when the NOPs added exactly one tick each, every time: the TSC counts
    /// instructions.
    pub fn counts_instructions(&self) -> bool {
        self.empty.0 == self.empty.1
            && self.with_nops.0 == self.with_nops.1
            && self.with_nops.0.checked_sub(self.empty.0) == Some(self.nops)
    }
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).and_then(|v| v.parse().ok())
}

fn span(line: &str, prefix: &str) -> Option<Span> {
    Some(Span {
        min: field(line, &format!("{prefix}_min"))?,
        median: field(line, &format!("{prefix}_median"))?,
        max: field(line, &format!("{prefix}_max"))?,
        total: field(line, &format!("{prefix}_total"))?,
    })
}

/// The text after `EXITS-BENCH ` in a console line (the hypervisor prefixes guest
/// output with its log header and the VM's name).
fn bench_text(line: &str) -> Option<&str> {
    line.split_once("EXITS-BENCH ").map(|(_, rest)| rest)
}

/// Parses `EXITS-BENCH kind=cpuid iters=1000 irqs=0 op_min=.. ... base_total=..`.
pub fn parse_kind(line: &str) -> Option<KindLine> {
    let text = bench_text(line)?;
    let kind = text.split_whitespace().find_map(|w| w.strip_prefix("kind="))?;
    if kind == "tsc-check" {
        return None;
    }
    Some(KindLine {
        kind: kind.to_string(),
        iters: field(text, "iters")?,
        irqs: field(text, "irqs")?,
        op: span(text, "op")?,
        base: span(text, "base")?,
    })
}

/// Parses `EXITS-BENCH kind=tsc-check nops=100 empty_min=.. empty_max=.. nops_min=..
/// nops_max=..`.
pub fn parse_tsc_check(line: &str) -> Option<TscCheck> {
    let text = bench_text(line)?;
    if !text.starts_with("kind=tsc-check") {
        return None;
    }
    Some(TscCheck {
        nops: field(text, "nops")?,
        empty: (field(text, "empty_min")?, field(text, "empty_max")?),
        with_nops: (field(text, "nops_min")?, field(text, "nops_max")?),
    })
}

/// One kind's result: the payload's line and the exits its loop caused, by reason.
#[derive(Debug, Clone, PartialEq)]
pub struct KindResult {
    pub line: KindLine,
    /// Exits during the timed loop by reason, without the VM_INFO call that logged
    /// the counters and without host interrupts (`intr`, the scheduler's timer).
    pub exits: BTreeMap<String, u64>,
    /// Host interrupt exits during the loop (they land in `op_max`, not the median).
    pub intr: u64,
    /// With the hypervisor's `exit-stages` option: instructions per stage of the exit
    /// path summed over the loop, in the hypervisor's order (empty without it).
    pub stages: Vec<(String, u64)>,
}

impl KindResult {
    /// Instructions of the hypervisor per iteration: the exiting loop's median minus
    /// the baseline's (both include the same setup instructions and RDTSC).
    pub fn hypervisor_work(&self) -> i64 {
        self.line.op.median as i64 - self.line.base.median as i64
    }

    /// Exits per iteration, all reasons (without host interrupts).
    pub fn exits_per_iter(&self) -> f64 {
        self.exits.values().sum::<u64>() as f64 / self.line.iters.max(1) as f64
    }
}

/// Everything the run printed that the report needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub tsc: TscCheck,
    pub kinds: Vec<KindResult>,
}

/// Reads the serial transcript: each kind's line follows the two exit-counter lines
/// that bracket its loop.
pub fn analyse(lines: &[String]) -> Result<Transcript, String> {
    let mut tsc = None;
    let mut kinds = Vec::new();
    let mut counters: Vec<Vec<(String, u64)>> = Vec::new();
    for line in lines {
        if line.contains("exit counters: ") {
            let after = line.split_once("exit counters: ").map_or("", |(_, c)| c);
            counters.push(parse_counters(after));
        } else if let Some(t) = parse_tsc_check(line) {
            tsc = Some(t);
        } else if let Some(k) = parse_kind(line) {
            let [.., before, after] = counters.as_slice() else {
                return Err(format!("no exit counters logged around the {} loop", k.kind));
            };
            let get = |list: &[(String, u64)], key: &str| list.iter().find(|(n, _)| n == key).map_or(0, |(_, v)| *v);
            let mut exits = BTreeMap::new();
            let mut stages = Vec::new();
            for (name, now) in after {
                if let Some(stage) = name.strip_prefix("stage.") {
                    // Already the sum since the previous counter line.
                    stages.push((stage.to_string(), *now));
                    continue;
                }
                let mut delta = now.saturating_sub(get(before, name));
                if name == "hypercall" {
                    delta = delta.saturating_sub(1); // the VM_INFO that logged `after`
                }
                if delta > 0 {
                    exits.insert(name.clone(), delta);
                }
            }
            let intr = exits.remove("intr").unwrap_or(0);
            kinds.push(KindResult { line: k, exits, intr, stages });
        }
    }
    let tsc = tsc.ok_or("the payload printed no TSC check")?;
    if kinds.is_empty() {
        return Err("the payload printed no results".into());
    }
    Ok(Transcript { tsc, kinds })
}

/// The result table.
pub fn report(t: &Transcript, machine: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("exits: one exit round trip by kind, payload VM inside Bulkhead, {machine}\n"));
    out.push_str(&format!(
        "  TSC counts instructions: {} ({} NOPs added {} ticks)\n",
        if t.tsc.counts_instructions() { "yes" } else { "NO" },
        t.tsc.nops,
        t.tsc.with_nops.0 as i64 - t.tsc.empty.0 as i64,
    ));
    out.push_str(
        "  kind        instructions/iter   baseline   hypervisor work   exits/iter   exits by reason (per loop)\n",
    );
    for k in &t.kinds {
        let reasons: Vec<String> = k.exits.iter().map(|(n, c)| format!("{n}={c}")).collect();
        out.push_str(&format!(
            "  {:<10}  {:>17}   {:>8}   {:>15}   {:>10.2}   {}\n",
            k.line.kind,
            k.line.op.median,
            k.line.base.median,
            k.hypervisor_work(),
            k.exits_per_iter(),
            reasons.join(" "),
        ));
    }
    out.push_str(
        "  (medians of 1000 iterations; a host timer interrupt in an iteration shows in its maximum, not the median)\n",
    );
    if t.kinds.iter().any(|k| !k.stages.is_empty()) {
        out.push_str(&stage_table(t));
    }
    out
}

/// The per-stage breakdown (hypervisor option `exit-stages`): mean instructions per
/// iteration in each stage; what the stages do not cover is the VMRUN stub and the
/// emulated VMRUN/#VMEXIT themselves.
fn stage_table(t: &Transcript) -> String {
    // `guest` (the guest and the VMRUN stub, between the checkpoints either side of
    // VMRUN) is not hypervisor work in the exit path; shown last, outside the sum.
    let names: Vec<&str> =
        t.kinds.iter().flat_map(|k| k.stages.iter().map(|(n, _)| n.as_str())).filter(|n| *n != "guest").fold(
            Vec::new(),
            |mut v, n| {
                if !v.contains(&n) {
                    v.push(n);
                }
                v
            },
        );
    let mut out =
        String::from("exit path by stage, instructions per iteration (checkpoints on, they add to each stage)\n");
    out.push_str(&format!("  {:<10}", "kind"));
    for n in &names {
        out.push_str(&format!("  {n:>11}"));
    }
    out.push_str(&format!("  {:>11}  {:>11}  {:>11}\n", "staged", "unstaged", "guest+stub"));
    for k in &t.kinds {
        let iters = k.line.iters.max(1) as f64;
        out.push_str(&format!("  {:<10}", k.line.kind));
        let mut staged = 0.0;
        for n in &names {
            let v = k.stages.iter().find(|(s, _)| s == n).map_or(0, |(_, v)| *v) as f64 / iters;
            staged += v;
            out.push_str(&format!("  {v:>11.1}"));
        }
        let guest = k.stages.iter().find(|(s, _)| s == "guest").map_or(0, |(_, v)| *v) as f64 / iters;
        out.push_str(&format!("  {staged:>11.1}  {:>11.1}  {guest:>11.1}\n", k.hypervisor_work() as f64 - staged));
    }
    out
}

/// QEMU under icount, SVM backend.
pub const QEMU_ICOUNT: &str = "QEMU TCG -icount shift=0,sleep=off (SVM)";
/// Bochs, VMX backend (its TSC also advances one tick per instruction).
pub const BOCHS: &str = "Bochs 2.7 corei7_skylake_x (VMX)";

/// Boots `command` (the bench image on a machine whose TSC counts instructions, named
/// `machine` in the report) and collects the payload's lines.
pub fn run(command: Command, machine: &str) -> Result<String, String> {
    let mut serial = LineReader::spawn(command)?;
    serial.wait_for("BULKHEAD READY", BOOT)?;
    eprintln!("     Hypervisor up; waiting for the payload");
    serial.wait_for("EXITS-BENCH start", BOOT)?;
    loop {
        let line = serial.wait_for("EXITS-BENCH ", STEP)?;
        if line.contains("EXITS-BENCH done") {
            break;
        }
        if let Some(k) = parse_kind(&line) {
            eprintln!("    Measured {} ({} iterations)", k.kind, k.iters);
        } else if parse_tsc_check(&line).is_some() {
            eprintln!("    Checked that the TSC counts instructions");
        }
    }
    let log = crate::layout::target_dir().join("bench-exits-serial.log");
    let _ = std::fs::write(&log, serial.transcript.join("\n"));
    let t = analyse(&serial.transcript)?;
    Ok(report(&t, machine))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    const TRANSCRIPT: &str = "\
[cpu0 INFO  guest] [exits] EXITS-BENCH start
[cpu0 INFO  guest] [exits] EXITS-BENCH kind=tsc-check nops=100 empty_min=3 empty_max=3 nops_min=103 nops_max=103
[cpu0 INFO  vm] vm 0 (exits) exit counters: 7 exits hypercall=7
[cpu0 INFO  vm] vm 0 (exits) exit counters: 1010 exits cpuid=1000 hypercall=8 intr=2
[cpu0 INFO  guest] [exits] EXITS-BENCH kind=cpuid iters=1000 irqs=0 op_min=900 op_median=905 op_max=9000 op_total=913000 base_min=6 base_median=6 base_max=6 base_total=6000
[cpu0 INFO  vm] vm 0 (exits) exit counters: 1011 exits cpuid=1000 hypercall=10 intr=2
[cpu0 INFO  vm] vm 0 (exits) exit counters: 3012 exits cpuid=1000 hypercall=1011 hlt=1000 intr=2
[cpu0 INFO  guest] [exits] EXITS-BENCH kind=hlt-wake iters=1000 irqs=1000 op_min=2000 op_median=2000 op_max=2100 op_total=2000100 base_min=80 base_median=80 base_max=80 base_total=80000
[cpu0 INFO  guest] [exits] EXITS-BENCH done
";

    #[test]
    fn parses_the_payload_lines() {
        let k = parse_kind("[x] EXITS-BENCH kind=wrmsr iters=10 irqs=0 op_min=1 op_median=2 op_max=3 op_total=20 base_min=4 base_median=5 base_max=6 base_total=50").unwrap();
        assert_eq!(k.kind, "wrmsr");
        assert_eq!((k.iters, k.irqs), (10, 0));
        assert_eq!(k.op, Span { min: 1, median: 2, max: 3, total: 20 });
        assert_eq!(k.base, Span { min: 4, median: 5, max: 6, total: 50 });
        assert_eq!(parse_kind("[x] EXITS-BENCH kind=cpuid iters=10"), None, "a truncated line is not a result");
        assert_eq!(parse_kind("EXITS-BENCH kind=tsc-check nops=100"), None);
        let t =
            parse_tsc_check("EXITS-BENCH kind=tsc-check nops=100 empty_min=3 empty_max=3 nops_min=103 nops_max=103");
        assert!(t.unwrap().counts_instructions());
        let off =
            parse_tsc_check("EXITS-BENCH kind=tsc-check nops=100 empty_min=3 empty_max=3 nops_min=160 nops_max=160");
        assert!(!off.unwrap().counts_instructions());
        let jitter =
            parse_tsc_check("EXITS-BENCH kind=tsc-check nops=100 empty_min=3 empty_max=9 nops_min=103 nops_max=103");
        assert!(!jitter.unwrap().counts_instructions());
    }

    #[test]
    fn attributes_exits_to_the_loop_between_two_counter_lines() {
        let t = analyse(&lines(TRANSCRIPT)).unwrap();
        assert!(t.tsc.counts_instructions());
        assert_eq!(t.kinds.len(), 2);
        let cpuid = &t.kinds[0];
        assert_eq!(cpuid.line.kind, "cpuid");
        // cpuid 1000; hypercall 8-7 minus the logging VM_INFO = 0; intr kept apart.
        assert_eq!(cpuid.exits, BTreeMap::from([("cpuid".to_string(), 1000)]));
        assert_eq!(cpuid.intr, 2);
        assert_eq!(cpuid.hypervisor_work(), 899);
        assert_eq!(cpuid.exits_per_iter(), 1.0);
        let hlt = &t.kinds[1];
        assert_eq!(hlt.exits, BTreeMap::from([("hypercall".to_string(), 1000), ("hlt".to_string(), 1000)]));
        assert_eq!(hlt.exits_per_iter(), 2.0);
        assert_eq!(hlt.intr, 0);
        let table = report(&t, QEMU_ICOUNT);
        assert!(table.contains("TSC counts instructions: yes (100 NOPs added 100 ticks)"));
        assert!(table.contains("cpuid"), "{table}");
        assert!(table.contains("hlt=1000 hypercall=1000"), "{table}");
    }

    #[test]
    fn stage_sums_are_taken_as_they_are_and_reported_per_iteration() {
        let text = "\
EXITS-BENCH kind=tsc-check nops=100 empty_min=3 empty_max=3 nops_min=103 nops_max=103
vm 0 (exits) exit counters: 7 exits hypercall=7 stage.exit-decode=5 stage.handler=9
vm 0 (exits) exit counters: 1008 exits cpuid=1000 hypercall=8 stage.exit-decode=100000 stage.handler=250000
EXITS-BENCH kind=cpuid iters=1000 irqs=0 op_min=900 op_median=905 op_max=9000 op_total=913000 base_min=6 base_median=6 base_max=6 base_total=6000";
        let t = analyse(&lines(text)).unwrap();
        let k = &t.kinds[0];
        assert_eq!(k.stages, vec![("exit-decode".to_string(), 100_000), ("handler".to_string(), 250_000)]);
        assert_eq!(k.exits, BTreeMap::from([("cpuid".to_string(), 1000)]));
        let table = report(&t, QEMU_ICOUNT);
        // 100 + 250 staged of 899; the rest is the VMRUN stub and the world switches.
        assert!(table.contains("100.0        250.0        350.0        549.0          0.0"), "{table}");
    }

    #[test]
    fn a_result_without_counter_lines_is_an_error() {
        let text = "EXITS-BENCH kind=tsc-check nops=100 empty_min=3 empty_max=3 nops_min=103 nops_max=103\n\
                    EXITS-BENCH kind=cpuid iters=1 irqs=0 op_min=1 op_median=1 op_max=1 op_total=1 base_min=1 base_median=1 base_max=1 base_total=1";
        assert!(analyse(&lines(text)).unwrap_err().contains("cpuid"));
        assert!(analyse(&lines("nothing")).is_err());
    }
}
