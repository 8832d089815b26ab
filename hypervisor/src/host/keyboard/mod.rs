//! The physical keyboard behind the 8042 controller (ports 0x60/0x64). Bulkhead owns
//! it: guests only ever see their own virtual i8042, fed by the switcher.
//!
//! The controller is set up with translation on, so the keyboard's bytes arrive as
//! scan code set 1, the set the switcher decodes and the guests expect. With IRQ1
//! routed, the interrupt handler empties the controller at once into a ring
//! ([`caught`]) that [`HostKeyboard::poll`] reads first; without it the controller is
//! polled. The driver never waits for a byte at run time: the LED command is a small
//! state machine advanced by the acknowledgements as they arrive. The protocol logic is generic over [`Ports`] so it runs against a
//! fake controller in host tests; the only `unsafe` is the port I/O in [`PortIo`].
//!
//! References: IBM PS/2 Hardware Technical Reference (8042 commands 0x20/0x60/0xAA/
//! 0xAD/0xAE/0xA7, configuration byte bits), keyboard commands 0xED (LEDs), 0xF4
//! (enable scanning), 0xFF (reset) with ACK 0xFA, resend 0xFE and self-test pass 0xAA.

use log::{info, warn};

pub mod caught;

const DATA: u16 = 0x60;
const STATUS_COMMAND: u16 = 0x64;

/// Status register bits.
mod status {
    /// A byte is waiting in the output buffer (port 0x60).
    pub const OUTPUT_FULL: u8 = 1 << 0;
    /// The controller has not taken the last byte written yet.
    pub const INPUT_FULL: u8 = 1 << 1;
    /// The waiting byte came from the auxiliary (mouse) port.
    pub const AUX_DATA: u8 = 1 << 5;
}

/// Controller commands (port 0x64).
mod cmd {
    pub const READ_CONFIG: u8 = 0x20;
    pub const WRITE_CONFIG: u8 = 0x60;
    pub const DISABLE_AUX: u8 = 0xA7;
    pub const SELF_TEST: u8 = 0xAA;
    pub const DISABLE_KBD: u8 = 0xAD;
    pub const ENABLE_KBD: u8 = 0xAE;
}

/// Configuration byte bits.
mod config {
    pub const KBD_IRQ: u8 = 1 << 0;
    pub const AUX_IRQ: u8 = 1 << 1;
    pub const KBD_CLOCK_OFF: u8 = 1 << 4;
    pub const AUX_CLOCK_OFF: u8 = 1 << 5;
    pub const TRANSLATE: u8 = 1 << 6;
}

/// Keyboard commands and replies (port 0x60).
mod kbd {
    pub const SET_LEDS: u8 = 0xED;
    pub const ENABLE_SCANNING: u8 = 0xF4;
    pub const RESET: u8 = 0xFF;
    pub const ACK: u8 = 0xFA;
    pub const RESEND: u8 = 0xFE;
    pub const SELF_TEST_PASSED: u8 = 0xAA;
}

const SELF_TEST_OK: u8 = 0x55;
/// Status reads before giving up on the controller (about 100 ms on hardware).
const SPINS: u32 = 100_000;
/// Polls an LED command may wait for its acknowledgement before it is abandoned.
const LED_PATIENCE: u32 = 64;
/// Bytes taken per poll, so a babbling controller cannot hold the scheduler.
const MAX_BYTES_PER_POLL: usize = 32;

/// Access to the controller's two ports.
pub trait Ports {
    fn status(&mut self) -> u8;
    fn read_data(&mut self) -> u8;
    fn write_data(&mut self, value: u8);
    fn write_command(&mut self, value: u8);
    /// The oldest (status, data) pair the keyboard interrupt already took from the
    /// controller, if any; those come before anything still in the controller.
    fn take_caught(&mut self) -> Option<(u8, u8)> {
        None
    }
}

/// The real ports.
#[derive(Debug, Default)]
pub struct PortIo;

impl Ports for PortIo {
    fn status(&mut self) -> u8 {
        // SAFETY: the 8042 belongs to the hypervisor (guests reach only their virtual
        // one, every guest port access is intercepted); reading status has no effect.
        unsafe { crate::arch::x86::instr::inb(STATUS_COMMAND) }
    }
    fn read_data(&mut self) -> u8 {
        // SAFETY: as above; reading data only takes the byte the driver is waiting for.
        unsafe { crate::arch::x86::instr::inb(DATA) }
    }
    fn write_data(&mut self, value: u8) {
        // SAFETY: as above; the driver sends only the keyboard commands listed in `kbd`.
        unsafe { crate::arch::x86::instr::outb(DATA, value) }
    }
    fn write_command(&mut self, value: u8) {
        // SAFETY: as above; the driver sends only the controller commands in `cmd`,
        // none of which resets the machine or touches the A20 gate.
        unsafe { crate::arch::x86::instr::outb(STATUS_COMMAND, value) }
    }
    fn take_caught(&mut self) -> Option<(u8, u8)> {
        caught::CAUGHT.pop()
    }
}

/// The keyboard interrupt's work: takes every byte the controller holds (at most
/// [`MAX_BYTES_PER_POLL`]) into [`caught::CAUGHT`]. Runs in the interrupt handler;
/// [`HostKeyboard::poll`] runs with interrupts off, so the two never read the data
/// port at the same time.
pub fn catch_from_interrupt() {
    let mut ports = PortIo;
    for _ in 0..MAX_BYTES_PER_POLL {
        let st = ports.status();
        if st & status::OUTPUT_FULL == 0 {
            break;
        }
        let byte = ports.read_data();
        caught::CAUGHT.push(st, byte);
    }
}

/// Where an LED update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leds {
    Idle,
    /// 0xED sent; the value follows its ACK.
    CommandSent {
        value: u8,
        waited: u32,
    },
    /// The value sent; waiting for its ACK.
    ValueSent {
        waited: u32,
    },
}

/// Why the keyboard is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// Nothing answers at port 0x64 (reads all ones), or the controller never replies.
    NoController,
    /// The controller failed its self-test (reply attached).
    SelfTest(u8),
}

/// The host keyboard, set up and owned.
#[derive(Debug)]
pub struct HostKeyboard<P: Ports> {
    ports: P,
    leds: Leds,
    /// LED state asked for while another update was in flight.
    wanted: Option<u8>,
    shown: u8,
}

fn wait_input_empty<P: Ports>(p: &mut P) -> bool {
    (0..SPINS).any(|_| p.status() & status::INPUT_FULL == 0)
}

fn send_command<P: Ports>(p: &mut P, value: u8) -> bool {
    let ok = wait_input_empty(p);
    p.write_command(value);
    ok
}

fn send_data<P: Ports>(p: &mut P, value: u8) -> bool {
    let ok = wait_input_empty(p);
    p.write_data(value);
    ok
}

fn receive<P: Ports>(p: &mut P) -> Option<u8> {
    (0..SPINS).find(|_| p.status() & status::OUTPUT_FULL != 0).map(|_| p.read_data())
}

fn flush<P: Ports>(p: &mut P) {
    for _ in 0..64 {
        if p.status() & status::OUTPUT_FULL == 0 {
            break;
        }
        p.read_data();
    }
}

impl<P: Ports> HostKeyboard<P> {
    /// Initialises the controller and the keyboard: both ports off, output flushed,
    /// translation on, controller self-test, keyboard port on, keyboard reset and
    /// scanning enabled. The mouse port and its interrupt stay off; the keyboard's
    /// interrupt (IRQ1) is on only with `irq1` (the caller routed it), else the
    /// keyboard is polled.
    pub fn init(mut ports: P, irq1: bool) -> Result<HostKeyboard<P>, Absent> {
        if ports.status() == 0xFF {
            return Err(Absent::NoController);
        }
        if !send_command(&mut ports, cmd::DISABLE_KBD) || !send_command(&mut ports, cmd::DISABLE_AUX) {
            return Err(Absent::NoController);
        }
        flush(&mut ports);
        send_command(&mut ports, cmd::READ_CONFIG);
        let old = receive(&mut ports).ok_or(Absent::NoController)?;
        let cfg = (old & !(config::KBD_IRQ | config::AUX_IRQ | config::KBD_CLOCK_OFF))
            | config::TRANSLATE
            | config::AUX_CLOCK_OFF
            | if irq1 { config::KBD_IRQ } else { 0 };
        send_command(&mut ports, cmd::WRITE_CONFIG);
        send_data(&mut ports, cfg);
        // The self-test resets some controllers, so the configuration is written again.
        send_command(&mut ports, cmd::SELF_TEST);
        match receive(&mut ports) {
            Some(SELF_TEST_OK) => {}
            Some(other) => return Err(Absent::SelfTest(other)),
            None => return Err(Absent::NoController),
        }
        send_command(&mut ports, cmd::WRITE_CONFIG);
        send_data(&mut ports, cfg);
        send_command(&mut ports, cmd::ENABLE_KBD);
        let mut kbd = HostKeyboard { ports, leds: Leds::Idle, wanted: None, shown: 0 };
        let reset = kbd.keyboard_command(kbd::RESET).then(|| receive(&mut kbd.ports));
        match reset {
            Some(Some(kbd::SELF_TEST_PASSED)) => {}
            other => warn!(target: "keyboard", "keyboard reset: no self-test pass ({other:?}); carrying on"),
        }
        if !kbd.keyboard_command(kbd::ENABLE_SCANNING) {
            warn!(target: "keyboard", "keyboard did not acknowledge enable; it may be absent");
        }
        flush(&mut kbd.ports);
        let how = if irq1 { "IRQ1" } else { "polled" };
        info!(target: "keyboard", "i8042 ready (config {old:#04x} -> {cfg:#04x}, set 1 by translation, {how})");
        Ok(kbd)
    }

    /// Sends a keyboard command and waits for its ACK (initialisation only).
    fn keyboard_command(&mut self, value: u8) -> bool {
        for _ in 0..3 {
            send_data(&mut self.ports, value);
            match receive(&mut self.ports) {
                Some(kbd::ACK) => return true,
                Some(kbd::RESEND) => continue,
                _ => return false,
            }
        }
        false
    }

    /// Takes the bytes the keyboard sent since the last poll (scan code set 1), those
    /// the interrupt caught first, and hands each to `key`; replies to the LED command
    /// are consumed here. The caller keeps the keyboard interrupt off meanwhile.
    pub fn poll(&mut self, mut key: impl FnMut(u8)) {
        for _ in 0..MAX_BYTES_PER_POLL {
            let (st, byte) = match self.ports.take_caught() {
                Some(pair) => pair,
                None => {
                    let st = self.ports.status();
                    if st & status::OUTPUT_FULL == 0 {
                        break;
                    }
                    (st, self.ports.read_data())
                }
            };
            if st & status::AUX_DATA != 0 {
                continue;
            }
            if !self.led_reply(byte) {
                key(byte);
            }
        }
        self.led_tick();
    }

    /// Advances the LED update on a reply; `false` when the byte is a key.
    fn led_reply(&mut self, byte: u8) -> bool {
        match (self.leds, byte) {
            (Leds::CommandSent { value, .. }, kbd::ACK) => {
                send_data(&mut self.ports, value);
                self.shown = value;
                self.leds = Leds::ValueSent { waited: 0 };
                true
            }
            (Leds::ValueSent { .. }, kbd::ACK) => {
                self.leds = Leds::Idle;
                true
            }
            (Leds::CommandSent { .. } | Leds::ValueSent { .. }, kbd::RESEND) => {
                // Give up on this update; the next change tries again.
                self.leds = Leds::Idle;
                true
            }
            _ => false,
        }
    }

    fn led_tick(&mut self) {
        self.leds = match self.leds {
            Leds::CommandSent { waited, .. } | Leds::ValueSent { waited } if waited >= LED_PATIENCE => Leds::Idle,
            Leds::CommandSent { value, waited } => Leds::CommandSent { value, waited: waited.saturating_add(1) },
            Leds::ValueSent { waited } => Leds::ValueSent { waited: waited.saturating_add(1) },
            Leds::Idle => {
                if let Some(value) = self.wanted.take().filter(|v| *v != self.shown) {
                    send_data(&mut self.ports, kbd::SET_LEDS);
                    Leds::CommandSent { value, waited: 0 }
                } else {
                    Leds::Idle
                }
            }
        };
    }

    /// Shows `leds` (bit 0 Scroll, 1 Num, 2 Caps Lock, as in the 0xED command) on the
    /// keyboard; sent on the next poll without waiting.
    pub fn set_leds(&mut self, leds: u8) {
        self.wanted = Some(leds & 0x07);
    }

    /// The ports (tests look at what was sent).
    #[cfg(test)]
    fn ports(&self) -> &P {
        &self.ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A controller with a keyboard that behaves like QEMU's.
    #[derive(Default, Debug)]
    struct FakeController {
        out: VecDeque<(u8, bool)>,
        config: u8,
        expect_config: bool,
        commands: Vec<u8>,
        to_keyboard: Vec<u8>,
        absent: bool,
        failing_self_test: bool,
        /// Keyboard waits for the LED value byte.
        led_value_next: bool,
        /// What the interrupt took from the controller before the poll.
        caught: VecDeque<(u8, u8)>,
    }

    impl Ports for FakeController {
        fn status(&mut self) -> u8 {
            if self.absent {
                return 0xFF;
            }
            match self.out.front() {
                Some((_, aux)) => status::OUTPUT_FULL | if *aux { status::AUX_DATA } else { 0 },
                None => 0,
            }
        }
        fn read_data(&mut self) -> u8 {
            self.out.pop_front().map_or(0, |(b, _)| b)
        }
        fn write_data(&mut self, value: u8) {
            if std::mem::take(&mut self.expect_config) {
                self.config = value;
                return;
            }
            self.to_keyboard.push(value);
            if std::mem::take(&mut self.led_value_next) {
                self.out.push_back((kbd::ACK, false));
                return;
            }
            match value {
                kbd::RESET => self.out.extend([(kbd::ACK, false), (kbd::SELF_TEST_PASSED, false)]),
                kbd::SET_LEDS => {
                    self.led_value_next = true;
                    self.out.push_back((kbd::ACK, false));
                }
                _ => self.out.push_back((kbd::ACK, false)),
            }
        }
        fn write_command(&mut self, value: u8) {
            self.commands.push(value);
            match value {
                cmd::READ_CONFIG => self.out.push_back((self.config, false)),
                cmd::WRITE_CONFIG => self.expect_config = true,
                cmd::SELF_TEST => {
                    let reply = if self.failing_self_test { 0xFC } else { SELF_TEST_OK };
                    self.out.push_back((reply, false));
                }
                _ => {}
            }
        }
        fn take_caught(&mut self) -> Option<(u8, u8)> {
            self.caught.pop_front()
        }
    }

    fn ready() -> HostKeyboard<FakeController> {
        // Firmware left IRQs on, translation off and a stale byte in the buffer.
        let fake = FakeController { config: 0x03, out: [(0x1E, false)].into(), ..Default::default() };
        HostKeyboard::init(fake, false).unwrap()
    }

    #[test]
    fn init_turns_the_keyboard_interrupt_on_when_routed() {
        let fake = FakeController { config: 0x03, ..Default::default() };
        let kbd = HostKeyboard::init(fake, true).unwrap();
        assert_eq!(kbd.ports().config, config::KBD_IRQ | config::TRANSLATE | config::AUX_CLOCK_OFF);
    }

    #[test]
    fn init_turns_translation_on_and_interrupts_and_mouse_off() {
        let kbd = ready();
        let p = kbd.ports();
        assert_eq!(p.config, config::TRANSLATE | config::AUX_CLOCK_OFF);
        assert_eq!(
            p.commands,
            [
                cmd::DISABLE_KBD,
                cmd::DISABLE_AUX,
                cmd::READ_CONFIG,
                cmd::WRITE_CONFIG,
                cmd::SELF_TEST,
                cmd::WRITE_CONFIG,
                cmd::ENABLE_KBD
            ]
        );
        assert_eq!(p.to_keyboard, [kbd::RESET, kbd::ENABLE_SCANNING]);
        assert!(p.out.is_empty());
    }

    #[test]
    fn absent_or_broken_controllers_are_reported() {
        let absent = FakeController { absent: true, ..Default::default() };
        assert_eq!(HostKeyboard::init(absent, false).unwrap_err(), Absent::NoController);
        let broken = FakeController { failing_self_test: true, ..Default::default() };
        assert_eq!(HostKeyboard::init(broken, false).unwrap_err(), Absent::SelfTest(0xFC));
    }

    #[test]
    fn keys_pass_mouse_bytes_do_not() {
        let mut kbd = ready();
        kbd.ports.out.extend([(0x1E, false), (0x08, true), (0x9E, false)]);
        let mut keys = vec![];
        kbd.poll(|b| keys.push(b));
        assert_eq!(keys, [0x1E, 0x9E]);
    }

    #[test]
    fn bytes_the_interrupt_caught_come_first_and_mouse_bytes_stay_out() {
        let mut kbd = ready();
        let full = status::OUTPUT_FULL;
        kbd.ports.caught.extend([(full, 0x1D), (full | status::AUX_DATA, 0x08), (full, 0x9D)]);
        kbd.ports.out.extend([(0x1E, false), (0x9E, false)]);
        let mut keys = vec![];
        kbd.poll(|b| keys.push(b));
        assert_eq!(keys, [0x1D, 0x9D, 0x1E, 0x9E]);
        assert!(kbd.ports.caught.is_empty() && kbd.ports.out.is_empty());
        // More caught than one poll takes: the rest waits for the next poll, in order.
        kbd.ports.caught.extend((0..40).map(|i| (full, i)));
        let mut keys = vec![];
        kbd.poll(|b| keys.push(b));
        assert_eq!(keys.len(), MAX_BYTES_PER_POLL);
        kbd.poll(|b| keys.push(b));
        assert_eq!(keys, (0..40).collect::<Vec<u8>>());
    }

    #[test]
    fn leds_are_sent_without_blocking_and_acks_are_not_keys() {
        let mut kbd = ready();
        kbd.ports.to_keyboard.clear();
        kbd.set_leds(0x04);
        let mut keys = vec![];
        kbd.poll(|b| keys.push(b)); // sends 0xED
        // A key typed meanwhile arrives before the ACK.
        kbd.ports.out.push_front((0x30, false));
        kbd.poll(|b| keys.push(b)); // key, ACK -> value 0x04, its ACK
        kbd.poll(|b| keys.push(b));
        assert_eq!(keys, [0x30]);
        assert_eq!(kbd.ports.to_keyboard, [kbd::SET_LEDS, 0x04]);
        assert_eq!(kbd.leds, Leds::Idle);
        // The same state again sends nothing.
        kbd.set_leds(0x04);
        kbd.poll(|_| {});
        assert_eq!(kbd.ports.to_keyboard.len(), 2);
    }

    #[test]
    fn a_keyboard_that_never_answers_does_not_wedge_the_leds() {
        let mut kbd = ready();
        kbd.ports.to_keyboard.clear();
        kbd.set_leds(0x01);
        kbd.poll(|_| {});
        kbd.ports.out.clear(); // the ACK is lost
        for _ in 0..=LED_PATIENCE {
            kbd.poll(|_| {});
        }
        assert_eq!(kbd.leds, Leds::Idle);
        kbd.set_leds(0x02);
        kbd.poll(|_| {});
        assert_eq!(kbd.ports.to_keyboard.last(), Some(&kbd::SET_LEDS));
    }
}
