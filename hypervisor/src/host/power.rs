//! Clean shutdown and reset of the host.
//!
//! What to do is decided by pure planning from the ACPI tables ([`plan_shutdown`],
//! [`plan_reset`], unit-tested); [`shutdown`] and [`reset`] only carry the plan out
//! with port and MMIO writes, step by step, falling through to the next step when one
//! has no effect.
//!
//! * Shutdown: ACPI S5 (ACPI 6.5 §7.4.2 and §4.8.3.2.1): SLP_TYPa/b from `\_S5_` into
//!   PM1a/PM1b_CNT with SLP_EN. As a last resort, the soft-off ports of known
//!   emulators (QEMU, Bochs, VirtualBox), each announced in the log. Then halt.
//! * Reset: the FADT reset register (ACPI 6.5 §4.8.4.6), the chipset reset control
//!   register at 0xcf9, the 8042 keyboard controller's pulse-reset command, and a
//!   triple fault.

use crate::host::pci::access::LegacyPorts;
use crate::hw::mmio::MmioRegion;
use alloc::vec::Vec;

use crate::arch::x86::instr;
use crate::host::acpi::{AddressSpace, Gas, PlatformTables, ResetRegister};

/// PM1 control register bits (ACPI 6.5 Table 4.13).
const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;

/// Intel PCH/ICH reset control register (e.g. ICH9 datasheet §13.7.5): SYS_RST (bit 1)
/// with RST_CPU (bit 2) rising edge = hard reset.
const RESET_CONTROL_PORT: u16 = 0xcf9;
const RESET_CONTROL_SYS_RST: u8 = 0x02;
const RESET_CONTROL_HARD_RESET: u8 = 0x06;
/// 8042 status/command port; bit 1 of status = input buffer full; 0xfe pulses the
/// reset line.
const KBC_PORT: u16 = 0x64;
const KBC_INPUT_FULL: u8 = 1 << 1;
const KBC_PULSE_RESET: u8 = 0xfe;

/// Emulators' soft-off ports: (port, value, who).
const EMULATOR_POWER_OFF: [(u16, u16, &str); 3] = [
    (0x604, 0x2000, "QEMU ACPI PM1a_CNT"),
    (0xb004, 0x2000, "Bochs/old QEMU ACPI PM1a_CNT"),
    (0x4004, 0x3400, "VirtualBox ACPI PM1a_CNT"),
];

/// A PM1 control register usable for sleep: I/O or memory, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pm1Register {
    Io(u16),
    Mem(u64),
}

impl core::fmt::Display for Pm1Register {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(port) => write!(f, "io {port:#x}"),
            Self::Mem(addr) => write!(f, "mem {addr:#x}"),
        }
    }
}

impl Pm1Register {
    fn from_gas(gas: Gas) -> Option<Self> {
        match gas.space {
            AddressSpace::SystemIo => u16::try_from(gas.address).ok().map(Self::Io),
            AddressSpace::SystemMemory => Some(Self::Mem(gas.address)),
            _ => None,
        }
    }
}

/// One shutdown attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownStep {
    /// Enter S5 through the PM1 control registers, first switching the chipset to ACPI
    /// mode through the SMI command port if SCI_EN is clear.
    AcpiS5 {
        pm1a: Pm1Register,
        pm1b: Option<Pm1Register>,
        slp_typ_a: u8,
        slp_typ_b: u8,
        acpi_enable: Option<(u16, u8)>,
    },
    /// Write `value` to a known emulator's PM1 control port.
    EmulatorPort { port: u16, value: u16, name: &'static str },
}

/// The ordered shutdown attempts for this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownPlan {
    pub steps: Vec<ShutdownStep>,
}

/// One reset attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineResetStep {
    /// The FADT reset register and value.
    AcpiResetRegister(ResetRegister),
    /// 0xcf9: SYS_RST then SYS_RST|RST_CPU.
    ResetControl,
    /// 8042 command 0xfe.
    KeyboardController,
    TripleFault,
}

/// The ordered reset attempts for this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPlan {
    pub steps: Vec<MachineResetStep>,
}

/// Plans a power-off from the FADT and `\_S5_`.
pub fn plan_shutdown(tables: &PlatformTables) -> ShutdownPlan {
    let mut steps = Vec::new();
    let acpi = tables.fadt().filter(|f| !f.hardware_reduced).zip(tables.s5());
    if let Some((fadt, s5)) = acpi
        && let Some(pm1a) = fadt.pm1a_control.and_then(Pm1Register::from_gas)
    {
        let acpi_enable = match (u16::try_from(fadt.smi_cmd), fadt.acpi_enable) {
            (Ok(port), value) if port != 0 && value != 0 => Some((port, value)),
            _ => None,
        };
        steps.push(ShutdownStep::AcpiS5 {
            pm1a,
            pm1b: fadt.pm1b_control.and_then(Pm1Register::from_gas),
            slp_typ_a: s5.slp_typ_a & 0b111,
            slp_typ_b: s5.slp_typ_b & 0b111,
            acpi_enable,
        });
    }
    steps.extend(EMULATOR_POWER_OFF.iter().map(|&(port, value, name)| ShutdownStep::EmulatorPort {
        port,
        value,
        name,
    }));
    ShutdownPlan { steps }
}

/// Plans a reset from the FADT.
pub fn plan_reset(tables: &PlatformTables) -> ResetPlan {
    let mut steps = Vec::new();
    let register = tables.fadt().filter(|f| f.reset_supported).and_then(|f| f.reset);
    if let Some(r) = register.filter(|r| {
        matches!(r.register.space, AddressSpace::SystemIo | AddressSpace::SystemMemory | AddressSpace::PciConfig)
    }) {
        steps.push(MachineResetStep::AcpiResetRegister(r));
    }
    // 0xcf9 is what most FADT reset registers point at anyway; do not repeat it.
    let is_cf9 = |r: &ResetRegister| r.register.space == AddressSpace::SystemIo && r.register.address == 0xcf9;
    if !register.is_some_and(|r| is_cf9(&r)) {
        steps.push(MachineResetStep::ResetControl);
    }
    steps.push(MachineResetStep::KeyboardController);
    steps.push(MachineResetStep::TripleFault);
    ResetPlan { steps }
}

/// Powers the machine off. Never returns: if every step fails, the CPU halts.
pub fn shutdown(tables: &PlatformTables) -> ! {
    x86_64::instructions::interrupts::disable();
    let plan = plan_shutdown(tables);
    if !matches!(plan.steps.first(), Some(ShutdownStep::AcpiS5 { .. })) {
        log::warn!(target: "power", "no ACPI S5 (FADT PM1 control and \\_S5_ needed); trying emulator ports");
    }
    // Buffered log lines would die with the power.
    crate::logging::flush();
    for step in &plan.steps {
        apply_shutdown_step(step);
        settle();
    }
    log::error!(target: "power", "power-off failed; halting");
    crate::logging::flush();
    instr::halt_forever()
}

/// Resets the machine. Never returns.
pub fn reset(tables: &PlatformTables) -> ! {
    x86_64::instructions::interrupts::disable();
    crate::logging::flush();
    for step in plan_reset(tables).steps {
        apply_reset_step(step);
        settle();
    }
    // SAFETY: unreachable in practice (the plan ends in a triple fault); if it were,
    // resetting is what the caller asked for.
    unsafe { instr::triple_fault() }
}

/// Waits long enough (tens of milliseconds) for a power or reset write to take effect.
fn settle() {
    let start = instr::rdtsc();
    while instr::rdtsc().wrapping_sub(start) < 100_000_000 {
        core::hint::spin_loop();
    }
}

fn apply_shutdown_step(step: &ShutdownStep) {
    match *step {
        ShutdownStep::AcpiS5 { pm1a, pm1b, slp_typ_a, slp_typ_b, acpi_enable } => {
            match pm1b {
                Some(b) => {
                    log::info!(target: "power", "ACPI S5: SLP_TYP {slp_typ_a:#x}/{slp_typ_b:#x} via PM1a {pm1a}, PM1b {b}")
                }
                None => {
                    log::info!(target: "power", "ACPI S5: SLP_TYP {slp_typ_a:#x} via PM1a {pm1a}")
                }
            }
            if let Some((port, value)) = acpi_enable
                && read_pm1(pm1a) & SCI_EN == 0
            {
                log::info!(target: "power", "switching to ACPI mode (SMI_CMD {port:#x} <- {value:#x})");
                // SAFETY: SMI_CMD and ACPI_ENABLE come from the FADT; this is the
                // documented handover of the fixed hardware to the OS.
                unsafe { instr::outb(port, value) };
                for _ in 0..1000 {
                    if read_pm1(pm1a) & SCI_EN != 0 {
                        break;
                    }
                    settle_short();
                }
            }
            for (reg, typ) in [(Some(pm1a), slp_typ_a), (pm1b, slp_typ_b)] {
                if let Some(reg) = reg {
                    let v = (read_pm1(reg) & !(SLP_TYP_MASK | SLP_EN)) | u16::from(typ) << SLP_TYP_SHIFT;
                    write_pm1(reg, v);
                }
            }
            for (reg, typ) in [(Some(pm1a), slp_typ_a), (pm1b, slp_typ_b)] {
                if let Some(reg) = reg {
                    let v = (read_pm1(reg) & !(SLP_TYP_MASK | SLP_EN)) | u16::from(typ) << SLP_TYP_SHIFT;
                    write_pm1(reg, v | SLP_EN);
                }
            }
        }
        ShutdownStep::EmulatorPort { port, value, name } => {
            log::warn!(target: "power", "last resort: {name} (port {port:#x} <- {value:#x})");
            // SAFETY: on the emulator this port is its ACPI PM1 control register; on
            // hardware where it is something else we are powering off anyway.
            unsafe { instr::outw(port, value) };
        }
    }
}

fn settle_short() {
    for _ in 0..10_000 {
        core::hint::spin_loop();
    }
}

/// A memory-mapped register the FADT names (PM1 control, reset register).
fn fadt_register(addr: u64, len: u64) -> MmioRegion {
    // SAFETY: the FADT describes this register as the platform's own power/reset
    // control, identity mapped; the hypervisor is the only one using it, and only on
    // its way to S5 or reset.
    unsafe { MmioRegion::new(addr, len) }
}

fn read_pm1(reg: Pm1Register) -> u16 {
    match reg {
        // SAFETY: the PM1 control block comes from the FADT; reading it has no side
        // effects (ACPI 6.5 §4.8.3.2.1).
        Pm1Register::Io(port) => unsafe { instr::inw(port) },
        Pm1Register::Mem(addr) => fadt_register(addr, 2).read(0),
    }
}

fn write_pm1(reg: Pm1Register, value: u16) {
    match reg {
        // SAFETY: the PM1 control block comes from the FADT; we are powering off.
        Pm1Register::Io(port) => unsafe { instr::outw(port, value) },
        Pm1Register::Mem(addr) => fadt_register(addr, 2).write(0, value),
    }
}

fn apply_reset_step(step: MachineResetStep) {
    match step {
        MachineResetStep::AcpiResetRegister(r) => {
            log::info!(target: "power", "reset via FADT reset register ({} <- {:#04x})", r.register, r.value);
            write_reset_register(r);
        }
        MachineResetStep::ResetControl => {
            log::info!(target: "power", "reset via port 0xcf9");
            // SAFETY: the chipset reset control register; we are resetting.
            unsafe { instr::outb(RESET_CONTROL_PORT, RESET_CONTROL_SYS_RST) };
            settle_short();
            // SAFETY: as above.
            unsafe { instr::outb(RESET_CONTROL_PORT, RESET_CONTROL_HARD_RESET) };
        }
        MachineResetStep::KeyboardController => {
            log::warn!(target: "power", "reset via keyboard controller");
            for _ in 0..100_000 {
                // SAFETY: reading the 8042 status register has no side effects.
                if unsafe { instr::inb(KBC_PORT) } & KBC_INPUT_FULL == 0 {
                    break;
                }
                core::hint::spin_loop();
            }
            // SAFETY: the 8042 pulse-reset command; we are resetting.
            unsafe { instr::outb(KBC_PORT, KBC_PULSE_RESET) };
        }
        MachineResetStep::TripleFault => {
            log::warn!(target: "power", "reset via triple fault");
            // SAFETY: every other reset method has failed; we are resetting.
            unsafe { instr::triple_fault() }
        }
    }
}

fn write_reset_register(r: ResetRegister) {
    let addr = r.register.address;
    match r.register.space {
        AddressSpace::SystemIo => {
            if let Ok(port) = u16::try_from(addr) {
                // SAFETY: the reset register from the FADT (RESET_REG_SUP set).
                unsafe { instr::outb(port, r.value) };
            }
        }
        AddressSpace::SystemMemory => fadt_register(addr, 1).write(0, r.value),
        AddressSpace::PciConfig => {
            // Segment 0, bus 0; address = device << 32 | function << 16 | offset.
            let (dev, func, off) = ((addr >> 32) & 0x1f, (addr >> 16) & 0x7, addr & 0xff);
            let function = pci_types::PciAddress::new(0, 0, dev as u8, func as u8);
            // SAFETY: the hypervisor owns the configuration ports; the byte is the reset
            // register the FADT names, and we are resetting.
            unsafe {
                let ports = LegacyPorts::new();
                ports.write8(function, off as u16, r.value);
            }
        }
        AddressSpace::Other(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::acpi::RawTables;

    /// QEMU q35's MADT and FADT (after `fadt_edit`) with the given DSDT body.
    fn tables(fadt_edit: impl FnOnce(&mut Vec<u8>), dsdt: Option<Vec<u8>>) -> PlatformTables {
        let dir = env!("CARGO_MANIFEST_DIR").to_owned() + "/tests/fixtures/acpi/qemu-q35/";
        let mut fadt = crate::host::acpi::test_util::qemu_table("qemu-q35", b"FACP");
        fadt_edit(&mut fadt);
        PlatformTables::from_raw(&RawTables {
            madt: Some(std::fs::read(dir.clone() + "APIC.bin").unwrap()),
            fadt: Some(fadt),
            dsdt,
            ..RawTables::default()
        })
        .unwrap()
    }

    fn qemu_dsdt() -> Option<Vec<u8>> {
        Some(include_bytes!("../../tests/fixtures/acpi/qemu-q35/DSDT.bin").to_vec())
    }

    #[test]
    fn qemu_shutdown_is_acpi_s5_then_emulator_ports() {
        let plan = plan_shutdown(&tables(|_| {}, qemu_dsdt()));
        assert_eq!(
            plan.steps[0],
            ShutdownStep::AcpiS5 {
                pm1a: Pm1Register::Io(0x604),
                pm1b: None,
                slp_typ_a: 0,
                slp_typ_b: 0,
                acpi_enable: Some((0xb2, 0x02)), // ICH9 APM: SMI_CMD 0xb2, ACPI_ENABLE 2
            }
        );
        assert_eq!(plan.steps.len(), 1 + EMULATOR_POWER_OFF.len());
        assert!(matches!(plan.steps[1], ShutdownStep::EmulatorPort { port: 0x604, value: 0x2000, .. }));
    }

    #[test]
    fn without_s5_only_emulator_ports_remain() {
        let plan = plan_shutdown(&tables(|_| {}, None));
        assert!(plan.steps.iter().all(|s| matches!(s, ShutdownStep::EmulatorPort { .. })));
    }

    #[test]
    fn qemu_reset_uses_the_fadt_register_and_skips_duplicate_cf9() {
        let plan = plan_reset(&tables(|_| {}, qemu_dsdt()));
        let fadt_reg = ResetRegister { register: Gas::legacy_io(0xcf9, 1), value: 0x0f };
        match plan.steps[0] {
            MachineResetStep::AcpiResetRegister(r) => {
                assert_eq!((r.register.space, r.register.address, r.value), (AddressSpace::SystemIo, 0xcf9, 0x0f));
            }
            other => panic!("{other:?} first, expected {fadt_reg:?}"),
        }
        assert_eq!(plan.steps[1..], [MachineResetStep::KeyboardController, MachineResetStep::TripleFault]);
    }

    #[test]
    fn reset_register_is_ignored_unless_flagged_supported() {
        // Clear RESET_REG_SUP (FADT flags at offset 112, bit 10).
        let plan = plan_reset(&tables(|f| f[113] &= !0x04, qemu_dsdt()));
        assert_eq!(
            plan.steps,
            [MachineResetStep::ResetControl, MachineResetStep::KeyboardController, MachineResetStep::TripleFault]
        );
    }

    #[test]
    fn memory_reset_register_keeps_cf9_fallback() {
        // RESET_REG becomes SystemMemory 0xfed00000.
        let plan = plan_reset(&tables(
            |f| {
                f[116] = 0;
                f[120..128].copy_from_slice(&0xfed0_0000u64.to_le_bytes());
            },
            qemu_dsdt(),
        ));
        assert!(
            matches!(plan.steps[0], MachineResetStep::AcpiResetRegister(r) if r.register.space == AddressSpace::SystemMemory)
        );
        assert_eq!(plan.steps[1], MachineResetStep::ResetControl);
    }

    #[test]
    fn pm1b_and_sleep_type_masking() {
        // A PM1b control block at 0x8804 and a DSDT whose _S5_ is (0x0f, 0x07): only
        // three bits of SLP_TYP exist.
        let t = tables(
            |f| f[68..72].copy_from_slice(&0x8804u32.to_le_bytes()),
            Some(alloc::vec![0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x02, 0x0a, 0x0f, 0x0a, 0x07]),
        );
        let ShutdownStep::AcpiS5 { pm1b, slp_typ_a, slp_typ_b, .. } = plan_shutdown(&t).steps[0] else {
            panic!("no S5 step");
        };
        assert_eq!((pm1b, slp_typ_a, slp_typ_b), (Some(Pm1Register::Io(0x8804)), 7, 7));
    }
}
