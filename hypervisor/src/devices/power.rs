//! Guest power control: the hardware-reduced ACPI sleep control/status registers and
//! reset register (ports at [`layout::ACPI_SLEEP_CONTROL_PORT`]), the Intel reset control
//! register at 0xCF9, and the [`PowerSignal`] through which these and the i8042's reset
//! line tell the VM to power off or reset.
//!
//! The VM loop checks its [`PowerSignal`] after handling an exit; a pending event stops
//! the vCPUs and either tears the VM down ([`PowerEvent::Off`]) or restarts it
//! ([`PowerEvent::Reset`]).
#![forbid(unsafe_code)]

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU8, Ordering};

use super::bus::PortDevice;
use super::layout;
use crate::hw::AccessSize;

/// What the guest asked the platform to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PowerEvent {
    /// Restart the VM (ACPI reset register, 0xCF9, i8042 pulse of the reset line).
    Reset = 1,
    /// Power the VM off (ACPI S5).
    Off = 2,
}

/// A latch shared by every device that can reset or power off the VM. Clones share it.
/// When several events arrive before the VM looks, [`PowerEvent::Off`] wins.
#[derive(Debug, Clone, Default)]
pub struct PowerSignal(Arc<AtomicU8>);

impl PowerSignal {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn raise(&self, event: PowerEvent) {
        self.0.fetch_max(event as u8, Ordering::AcqRel);
    }

    /// The pending event, if any, without clearing it.
    pub fn peek(&self) -> Option<PowerEvent> {
        Self::decode(self.0.load(Ordering::Acquire))
    }

    /// The pending event, if any, clearing it.
    pub fn take(&self) -> Option<PowerEvent> {
        Self::decode(self.0.swap(0, Ordering::AcqRel))
    }

    fn decode(raw: u8) -> Option<PowerEvent> {
        match raw {
            1 => Some(PowerEvent::Reset),
            2 => Some(PowerEvent::Off),
            _ => None,
        }
    }
}

/// The ACPI power-control ports: sleep control (+0), sleep status (+1), reset (+4).
#[derive(Debug)]
pub struct AcpiPowerPorts {
    signal: PowerSignal,
    /// SLP_TYP of the last sleep-control write (SLP_EN is write-only).
    sleep_control: u8,
    /// WAK_STS; set when the guest resumes from a sleep state, which never happens here.
    wake_status: bool,
    /// Sleep requests for states other than S5, which are not supported.
    ignored_sleeps: u32,
}

/// Offsets from [`layout::ACPI_SLEEP_CONTROL_PORT`].
const SLEEP_CONTROL: u16 = 0;
const SLEEP_STATUS: u16 = layout::ACPI_SLEEP_STATUS_PORT.wrapping_sub(layout::ACPI_SLEEP_CONTROL_PORT);
const RESET_REGISTER: u16 = layout::ACPI_RESET_PORT.wrapping_sub(layout::ACPI_SLEEP_CONTROL_PORT);

/// Sleep control register, ACPI 6.5 §4.8.3.7: SLP_TYPx in bits 2..4, SLP_EN in bit 5.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b1_1100;
const SLP_EN: u8 = 1 << 5;
/// Sleep status register, ACPI 6.5 §4.8.3.7: WAK_STS in bit 7 (write 1 to clear).
const WAK_STS: u8 = 1 << 7;

impl AcpiPowerPorts {
    pub fn new(signal: PowerSignal) -> Self {
        AcpiPowerPorts { signal, sleep_control: 0, wake_status: false, ignored_sleeps: 0 }
    }

    /// Sleep requests for states this platform does not offer (anything but S5).
    pub fn ignored_sleeps(&self) -> u32 {
        self.ignored_sleeps
    }

    fn write_sleep_control(&mut self, value: u8) {
        self.sleep_control = value & SLP_TYP_MASK;
        if value & SLP_EN == 0 {
            return;
        }
        let slp_typ = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
        if slp_typ == layout::ACPI_S5_SLP_TYP {
            self.signal.raise(PowerEvent::Off);
        } else {
            self.ignored_sleeps = self.ignored_sleeps.wrapping_add(1);
            // Logged the 1st, 2nd, 4th, 8th... time: a guest asking in a loop costs a
            // few lines, not one per exit.
            if self.ignored_sleeps.is_power_of_two() {
                log::warn!(
                    target: "devices",
                    "guest asked for sleep type {slp_typ}, which is not offered ({} times so far)",
                    self.ignored_sleeps
                );
            }
        }
    }
}

impl PortDevice for AcpiPowerPorts {
    fn read(&mut self, offset: u16, size: AccessSize) -> u32 {
        if size != AccessSize::Byte {
            return size.mask() as u32;
        }
        match offset {
            SLEEP_CONTROL => u32::from(self.sleep_control),
            SLEEP_STATUS => u32::from(if self.wake_status { WAK_STS } else { 0 }),
            // The reset register is write-only.
            _ => 0xFF,
        }
    }

    fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
        if size != AccessSize::Byte {
            return;
        }
        let value = value as u8;
        match offset {
            SLEEP_CONTROL => self.write_sleep_control(value),
            SLEEP_STATUS if value & WAK_STS != 0 => self.wake_status = false,
            RESET_REGISTER if value == layout::ACPI_RESET_VALUE => self.signal.raise(PowerEvent::Reset),
            _ => {}
        }
    }
}

/// The reset control register at 0xCF9 (Intel PCH datasheets, "Reset Control Register"):
/// bit 1 SYS_RST selects a system reset, bit 2 RST_CPU starts the reset, bit 3 FULL_RST
/// a full power cycle. Any write with RST_CPU set resets this VM. The PCI host owns it
/// because 0xCF9 lies inside the configuration-address dword.
#[derive(Debug)]
pub struct ResetControl {
    signal: PowerSignal,
    value: u8,
}

const RST_SYS_RST: u8 = 1 << 1;
const RST_CPU: u8 = 1 << 2;
const RST_FULL_RST: u8 = 1 << 3;

impl ResetControl {
    pub fn new(signal: PowerSignal) -> Self {
        ResetControl { signal, value: 0 }
    }

    /// RST_CPU reads back as 0: it only triggers.
    pub fn read(&self) -> u8 {
        self.value
    }

    pub fn write(&mut self, value: u8) {
        self.value = value & (RST_SYS_RST | RST_FULL_RST);
        if value & RST_CPU != 0 {
            self.signal.raise(PowerEvent::Reset);
        }
    }
}

impl PortDevice for ResetControl {
    fn read(&mut self, _offset: u16, size: AccessSize) -> u32 {
        match size {
            AccessSize::Byte => u32::from(ResetControl::read(self)),
            _ => size.mask() as u32,
        }
    }

    fn write(&mut self, _offset: u16, size: AccessSize, value: u32) {
        if size == AccessSize::Byte {
            ResetControl::write(self, value as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::{PioBus, PortBus};
    use alloc::boxed::Box;

    fn bus_with_power() -> (PioBus, PowerSignal) {
        let signal = PowerSignal::new();
        let mut bus = PioBus::new("pio");
        bus.insert_ports(
            layout::ACPI_SLEEP_CONTROL_PORT,
            layout::ACPI_POWER_PORT_COUNT,
            Box::new(AcpiPowerPorts::new(signal.clone())),
        )
        .unwrap();
        (bus, signal)
    }

    #[test]
    fn linux_s5_sequence_powers_off() {
        let (mut bus, signal) = bus_with_power();
        // acpi_hw_extended_sleep: clear WAK_STS, then write SLP_TYP | SLP_EN.
        bus.write(layout::ACPI_SLEEP_STATUS_PORT, AccessSize::Byte, u32::from(WAK_STS));
        assert_eq!(signal.peek(), None);
        bus.write(layout::ACPI_SLEEP_CONTROL_PORT, AccessSize::Byte, 5 << 2);
        assert_eq!(signal.peek(), None, "SLP_TYP without SLP_EN does nothing");
        assert_eq!(bus.read(layout::ACPI_SLEEP_CONTROL_PORT, AccessSize::Byte), 5 << 2);
        bus.write(layout::ACPI_SLEEP_CONTROL_PORT, AccessSize::Byte, (5 << 2) | 0x20);
        assert_eq!(signal.take(), Some(PowerEvent::Off));
        assert_eq!(signal.take(), None);
    }

    #[test]
    fn other_sleep_states_are_ignored() {
        let signal = PowerSignal::new();
        let mut ports = AcpiPowerPorts::new(signal.clone());
        PortDevice::write(&mut ports, SLEEP_CONTROL, AccessSize::Byte, (3 << 2) | 0x20);
        assert_eq!(signal.peek(), None);
        assert_eq!(ports.ignored_sleeps(), 1);
        assert_eq!(PortDevice::read(&mut ports, SLEEP_STATUS, AccessSize::Byte), 0);
    }

    #[test]
    fn reset_register_needs_the_reset_value() {
        let (mut bus, signal) = bus_with_power();
        bus.write(layout::ACPI_RESET_PORT, AccessSize::Byte, 0x02);
        assert_eq!(signal.peek(), None);
        bus.write(layout::ACPI_RESET_PORT, AccessSize::Word, 0x01);
        assert_eq!(signal.peek(), None, "only byte writes count");
        bus.write(layout::ACPI_RESET_PORT, AccessSize::Byte, u32::from(layout::ACPI_RESET_VALUE));
        assert_eq!(signal.take(), Some(PowerEvent::Reset));
        // Ports 0x602/0x603 belong to the device but do nothing.
        bus.write(0x602, AccessSize::Byte, 0xFF);
        assert_eq!(bus.read(0x603, AccessSize::Byte), 0xFF);
        assert_eq!(signal.peek(), None);
    }

    #[test]
    fn cf9_resets_on_rst_cpu() {
        let signal = PowerSignal::new();
        let mut cf9 = ResetControl::new(signal.clone());
        // Linux reboot=pci: 0x02 (select system reset), then 0x06.
        cf9.write(0x02);
        assert_eq!(signal.peek(), None);
        assert_eq!(cf9.read(), 0x02);
        cf9.write(0x06);
        assert_eq!(signal.take(), Some(PowerEvent::Reset));
        assert_eq!(cf9.read(), 0x02, "RST_CPU does not stick");
        cf9.write(0x0E);
        assert_eq!(signal.take(), Some(PowerEvent::Reset));
        assert_eq!(PortDevice::read(&mut cf9, 0, AccessSize::Byte), 0x0A);
        PortDevice::write(&mut cf9, 0, AccessSize::Word, 0x06);
        assert_eq!(signal.peek(), None);
    }

    #[test]
    fn power_off_wins_over_reset() {
        let signal = PowerSignal::new();
        let other = signal.clone();
        other.raise(PowerEvent::Off);
        signal.raise(PowerEvent::Reset);
        assert_eq!(signal.take(), Some(PowerEvent::Off));
        signal.raise(PowerEvent::Reset);
        assert_eq!(other.take(), Some(PowerEvent::Reset));
    }
}
