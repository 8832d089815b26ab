//! Lines typed on the hypervisor's serial console: `@NAME text` types `text` and a
//! newline into VM NAME's serial console; `!exits NAME` logs that VM's exit counters,
//! the device interrupts raised in it since its last start and the EOIs it signalled
//! through the paravirtual flag (no exit). (The switcher's own commands are tried
//! first, by the scheduler.)

use log::{info, warn};

use crate::arch::backend::Arch;
use crate::vm::instance::Vm;

/// The line being typed.
#[derive(Debug, Default)]
pub struct SerialCommands {
    line: heapless::String<256>,
}

impl SerialCommands {
    /// A complete command line, once one has been typed.
    pub fn poll(&mut self) -> Option<heapless::String<256>> {
        while let Some(byte) = crate::logging::read_byte() {
            if let Some(line) = self.push(byte) {
                return Some(line);
            }
        }
        None
    }

    /// Adds a typed byte; a line end completes a non-empty line. Bytes past the
    /// line's capacity are dropped.
    fn push(&mut self, byte: u8) -> Option<heapless::String<256>> {
        match byte {
            b'\r' | b'\n' => (!self.line.is_empty()).then(|| core::mem::take(&mut self.line)),
            b => {
                let _ = self.line.push(char::from(b));
                None
            }
        }
    }
}

/// A command line, understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialCommand<'a> {
    /// `!exits VM`
    Exits {
        vm: &'a str,
    },
    /// `!net VM`
    Net {
        vm: &'a str,
    },
    /// `@VM text`
    Type {
        vm: &'a str,
        text: &'a str,
    },
    NotUnderstood,
}

pub fn parse(line: &str) -> SerialCommand<'_> {
    if let Some(name) = line.trim().strip_prefix("!exits ") {
        return SerialCommand::Exits { vm: name.trim() };
    }
    if let Some(name) = line.trim().strip_prefix("!net ") {
        return SerialCommand::Net { vm: name.trim() };
    }
    match line.strip_prefix('@').and_then(|l| l.split_once(' ')) {
        Some((vm, text)) => SerialCommand::Type { vm, text },
        None => SerialCommand::NotUnderstood,
    }
}

/// Carries out a command line on the VMs.
pub fn execute<A: Arch, V: AsRef<Vm<A>>>(line: &str, vms: &[V]) {
    let find = |name: &str| vms.iter().map(AsRef::as_ref).find(|vm| vm.config.name == name);
    match parse(line) {
        // That VM's exit counters, the device interrupts raised in it since its last
        // start, its exit-less EOIs and the timing of IPIs between its vCPUs
        // (count/sum/min/max in TSC ticks), on one line.
        SerialCommand::Exits { vm: name } => match find(name) {
            Some(vm) => {
                let ipi = vm.ipi_latency();
                info!(
                    target: "vm",
                    "EXITS {} {}{} device_interrupts={} pv_eois={} ipi_taken={} ipi_eoi={} ipi_pv_eoi={} guest_tsc={} idle_tsc={} now_tsc={}",
                    vm.config.name,
                    vm.counters,
                    vm.counters.msr_writes(),
                    vm.device_interrupts,
                    vm.pv_eois(),
                    ipi.sent_to_taken,
                    ipi.sent_to_eoi,
                    ipi.sent_to_pv_eoi,
                    vm.counters.guest_tsc(),
                    crate::vm::counters::IDLE_TSC.load(core::sync::atomic::Ordering::Relaxed),
                    crate::arch::x86::instr::rdtsc()
                )
            }
            None => warn!(target: "vm", "!exits: no VM named {name:?}"),
        },
        // Per link of that VM: what it sent (and what the other end dropped of it) and
        // what it received.
        SerialCommand::Net { vm: name } => match find(name) {
            Some(vm) => {
                for port in vm.net_ports() {
                    let counters = port.wire.lock().link().counters();
                    let sent = counters.get(port.side).copied().unwrap_or_default();
                    let received = counters.get(port.side ^ 1).copied().unwrap_or_default();
                    info!(target: "vnet", "NET {} port {} sent {sent} received {received}", vm.config.name, port.index);
                }
            }
            None => warn!(target: "vm", "!net: no VM named {name:?}"),
        },
        SerialCommand::Type { vm: name, text } => match find(name) {
            Some(vm) => {
                vm.serial_input(text.as_bytes());
                vm.serial_input(b"\n");
            }
            None => warn!(target: "vm", "serial command for unknown VM {name:?}"),
        },
        SerialCommand::NotUnderstood => {
            warn!(target: "vm", "serial command {line:?} not understood (use `@VM text`, `!exits VM` or `!net VM`)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised() {
        assert_eq!(parse("!exits corporate"), SerialCommand::Exits { vm: "corporate" });
        assert_eq!(parse("  !exits  web \r"), SerialCommand::Exits { vm: "web" });
        assert_eq!(parse("@web echo hi there"), SerialCommand::Type { vm: "web", text: "echo hi there" });
        assert_eq!(parse("@web"), SerialCommand::NotUnderstood, "no text");
        assert_eq!(parse("web echo"), SerialCommand::NotUnderstood);
        assert_eq!(parse("!exits"), SerialCommand::NotUnderstood);
        assert_eq!(parse("!net corporate"), SerialCommand::Net { vm: "corporate" });
    }

    #[test]
    fn lines_end_at_cr_or_lf_and_empty_ones_are_skipped() {
        let mut commands = SerialCommands::default();
        let mut lines = alloc::vec::Vec::new();
        for &b in b"\r\n@a x\r\n\n!exits a\n" {
            lines.extend(commands.push(b));
        }
        assert_eq!(lines, ["@a x", "!exits a"]);
    }

    #[test]
    fn an_overlong_line_is_cut_not_grown() {
        let mut commands = SerialCommands::default();
        for _ in 0..1000 {
            assert_eq!(commands.push(b'x'), None);
        }
        assert_eq!(commands.push(b'\n').map(|l| l.len()), Some(256));
    }
}
