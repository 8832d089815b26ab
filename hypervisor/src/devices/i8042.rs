//! The i8042 keyboard controller with an MF2 keyboard behind it, at ports 0x60/0x64.
//!
//! The host injects key bytes in scan code set 1 ([`I8042::inject_scancodes`]), which is
//! what a physical keyboard delivers through a translating controller and what the
//! switcher forwards. With translation on (the power-on state, and what Linux's `atkbd`
//! keeps) the guest receives them unchanged; with translation off they are converted to
//! the set the guest selected (set 2, or set 1 if asked; set 3 is answered as set 2).
//!
//! There is no AUX (mouse) device. The DSDT should describe a `PNP0303` keyboard and no
//! `PNP0F13`, so Linux marks the AUX port absent without probing it. When it probes
//! anyway (`i8042.nopnp`), 0xD3 (AUX loopback) gets no answer and 0xA9 (AUX interface
//! test) reports a stuck clock line, so Linux still concludes there is no AUX port.
//!
//! References: IBM PS/2 Hardware Interface Technical Reference, "Keyboard/Auxiliary
//! Device Controller" (status register, commands) and "Keyboard" (device commands);
//! Linux `drivers/input/serio/i8042.c` and `drivers/input/keyboard/atkbd.c`.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::VecDeque;

use super::bus::PortDevice;
use super::irq_line::IrqLine;
use super::power::{PowerEvent, PowerSignal};
use crate::hw::AccessSize;

/// The controller and its keyboard.
pub struct I8042 {
    irq: Box<dyn IrqLine + Send>,
    power: Option<PowerSignal>,
    /// Controller RAM; byte 0 is the configuration byte (CTR).
    ram: [u8; 32],
    /// Status bit 3: the last write went to the command port.
    last_write_was_command: bool,
    /// A controller command waiting for its data byte.
    pending: Option<PendingWrite>,
    /// The output port (D0/D1): bit 0 reset line (1 = running), bit 1 A20 gate.
    output_port: u8,
    /// The output buffer, as the guest sees it through port 0x60.
    obf: Option<u8>,
    /// Reading an empty buffer returns the last byte again.
    last_data: u8,
    /// Controller replies, delivered before keyboard bytes.
    controller_out: VecDeque<u8>,
    kbd: Keyboard,
    irq_high: bool,
    reset_requested: bool,
    /// Replies dropped because a guest sent commands without reading the answers.
    dropped_replies: u64,
}

/// The keyboard's state (IBM PS/2 Technical Reference, "Keyboard", commands).
#[derive(Debug)]
struct Keyboard {
    /// Command replies; sent before queued key bytes.
    replies: VecDeque<u8>,
    keys: VecDeque<u8>,
    scanning: bool,
    /// The scan code set the guest selected with 0xF0 (1, 2 or 3).
    set: u8,
    leds: u8,
    led_changed: bool,
    typematic: u8,
    /// A command (0xED, 0xF3, 0xF0) waiting for its parameter byte.
    expecting: Option<u8>,
    last_sent: u8,
    dropped_keys: u64,
    dropped_replies: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingWrite {
    Ram(u8),
    OutputPort,
    KbdOutputBuffer,
    AuxOutputBuffer,
    AuxDevice,
}

// Status register (port 0x64 read).
const STS_OBF: u8 = 1 << 0;
const STS_SYS: u8 = 1 << 2;
const STS_CMD: u8 = 1 << 3;
/// "Inhibit switch": 1 = keyboard not locked (Linux warns "Keylock active" otherwise).
const STS_UNLOCKED: u8 = 1 << 4;

// Configuration byte (controller RAM byte 0).
const CTR_KBD_INT: u8 = 1 << 0;
const CTR_SYS: u8 = 1 << 2;
const CTR_KBD_DISABLE: u8 = 1 << 4;
const CTR_AUX_DISABLE: u8 = 1 << 5;
const CTR_TRANSLATE: u8 = 1 << 6;
/// What firmware leaves behind: translation, system flag, keyboard interrupt, AUX off.
pub const CTR_POWER_ON: u8 = CTR_TRANSLATE | CTR_AUX_DISABLE | CTR_SYS | CTR_KBD_INT;

// Controller commands (port 0x64 write).
const CMD_READ_RAM: u8 = 0x20; // ..=0x3F
const CMD_WRITE_RAM: u8 = 0x60; // ..=0x7F
const CMD_PASSWORD_TEST: u8 = 0xA4;
const CMD_AUX_DISABLE: u8 = 0xA7;
const CMD_AUX_ENABLE: u8 = 0xA8;
const CMD_AUX_TEST: u8 = 0xA9;
const CMD_SELF_TEST: u8 = 0xAA;
const CMD_KBD_TEST: u8 = 0xAB;
const CMD_KBD_DISABLE: u8 = 0xAD;
const CMD_KBD_ENABLE: u8 = 0xAE;
const CMD_READ_OUTPUT_PORT: u8 = 0xD0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xD1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xD2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xD3;
const CMD_WRITE_AUX: u8 = 0xD4;
const CMD_A20_DISABLE: u8 = 0xDD;
const CMD_A20_ENABLE: u8 = 0xDF;
/// 0xF0..=0xFF pulse the output-port lines whose bit is 0; bit 0 is the reset line.
const CMD_PULSE_BASE: u8 = 0xF0;

const SELF_TEST_OK: u8 = 0x55;
const KBD_TEST_OK: u8 = 0x00;
/// AUX interface test result: "clock line stuck high", i.e. nothing connected.
const AUX_TEST_NO_DEVICE: u8 = 0x02;
const NO_PASSWORD: u8 = 0xF1;

// Output port bits.
const OUT_RESET: u8 = 1 << 0;
const OUT_A20: u8 = 1 << 1;
const OUT_KBD_OBF: u8 = 1 << 4;

// Keyboard commands (port 0x60 write) and replies.
const KBD_SET_LEDS: u8 = 0xED;
const KBD_ECHO: u8 = 0xEE;
const KBD_SCANCODE_SET: u8 = 0xF0;
const KBD_IDENTIFY: u8 = 0xF2;
const KBD_TYPEMATIC: u8 = 0xF3;
const KBD_ENABLE: u8 = 0xF4;
const KBD_DISABLE: u8 = 0xF5;
const KBD_DEFAULTS: u8 = 0xF6;
const KBD_RESEND: u8 = 0xFE;
const KBD_RESET: u8 = 0xFF;
const KBD_ACK: u8 = 0xFA;
const KBD_BAT_OK: u8 = 0xAA;
const KBD_NAK: u8 = 0xFE;
/// MF2 keyboard ID; the controller translates the 0x83 into 0x41 when translating.
const KBD_ID: [u8; 2] = [0xAB, 0x83];
const KBD_ID_TRANSLATED: [u8; 2] = [0xAB, 0x41];
/// Default typematic: 10.9 characters/s after 500 ms.
const TYPEMATIC_DEFAULT: u8 = 0x2B;
/// Key bytes the keyboard holds while the guest is not reading.
pub const KEY_QUEUE_BYTES: usize = 256;
/// The end of the key queue kept for releases: every key the router can have down at
/// once (16), each released with at most three set-2 bytes (E0 F0 code).
pub const RELEASE_RESERVE_BYTES: usize = 48;

/// Bytes of the set-1 key sequence that starts `bytes`: E1 takes two more, E0 one.
fn set1_key_len(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(0xE1) => 3,
        Some(0xE0) => 2,
        _ => 1,
    }
}
/// Unread command replies held by the controller, and by the keyboard. The real
/// controller has a one-byte output buffer and the keyboard a 16-byte one; a guest
/// that writes commands without reading the answers loses the newest replies instead
/// of growing a queue on the hypervisor's fixed heap. The longest reply sequence any
/// single command produces is 3 bytes (0xF2: ACK and the two ID bytes).
pub const REPLY_QUEUE_BYTES: usize = 16;

/// Appends `byte` to a reply queue unless it already holds [`REPLY_QUEUE_BYTES`], in
/// which case it counts the byte in `dropped`.
fn push_reply(queue: &mut VecDeque<u8>, dropped: &mut u64, byte: u8) {
    if queue.len() >= REPLY_QUEUE_BYTES {
        *dropped = dropped.wrapping_add(1);
    } else {
        queue.push_back(byte);
    }
}

/// The 8042's set-2 to set-1 translation (codes 0x00..=0x84). IBM PS/2 Technical
/// Reference; the same table every PC keyboard controller implements.
#[rustfmt::skip]
const SET2_TO_SET1: [u8; 0x85] = [
    0xFF, 0x43, 0x41, 0x3F, 0x3D, 0x3B, 0x3C, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3E, 0x0F, 0x29, 0x59,
    0x65, 0x38, 0x2A, 0x70, 0x1D, 0x10, 0x02, 0x5A, 0x66, 0x71, 0x2C, 0x1F, 0x1E, 0x11, 0x03, 0x5B,
    0x67, 0x2E, 0x2D, 0x20, 0x12, 0x05, 0x04, 0x5C, 0x68, 0x39, 0x2F, 0x21, 0x14, 0x13, 0x06, 0x5D,
    0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5E, 0x6A, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09, 0x5F,
    0x6B, 0x33, 0x25, 0x17, 0x18, 0x0B, 0x0A, 0x60, 0x6C, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0C, 0x61,
    0x6D, 0x73, 0x28, 0x74, 0x1A, 0x0D, 0x62, 0x6E, 0x3A, 0x36, 0x1C, 0x1B, 0x75, 0x2B, 0x63, 0x76,
    0x55, 0x56, 0x77, 0x78, 0x79, 0x7A, 0x0E, 0x7B, 0x7C, 0x4F, 0x7D, 0x4B, 0x47, 0x7E, 0x7F, 0x6F,
    0x52, 0x53, 0x50, 0x4C, 0x4D, 0x48, 0x01, 0x45, 0x57, 0x4E, 0x51, 0x4A, 0x37, 0x49, 0x46, 0x54,
    0x80, 0x81, 0x82, 0x41, 0x54,
];

/// Set-1 make code to set-2 make code (0 = none), the inverse of [`SET2_TO_SET1`]. Where
/// two set-2 codes translate alike, the higher wins: F7 is 0x83 and SysRq 0x84.
const SET1_TO_SET2: [u8; 0x80] = invert_translation();

#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // const-evaluated
const fn invert_translation() -> [u8; 0x80] {
    let mut inv = [0u8; 0x80];
    let mut set2 = SET2_TO_SET1.len() - 1;
    while set2 > 0 {
        let set1 = SET2_TO_SET1[set2];
        if set1 < 0x80 && inv[set1 as usize] == 0 {
            inv[set1 as usize] = set2 as u8;
        }
        set2 -= 1;
    }
    inv
}

/// Appends the set-2 form of one set-1 byte. Prefixes (E0, E1) pass through; a break
/// code (bit 7) becomes F0 and the make code.
fn set1_to_set2(byte: u8, out: &mut impl FnMut(u8)) {
    match byte {
        0xE0 | 0xE1 => out(byte),
        _ => {
            let make = SET1_TO_SET2.get(usize::from(byte & 0x7F)).copied().unwrap_or(0);
            if make == 0 {
                return;
            }
            if byte & 0x80 != 0 {
                out(0xF0);
            }
            out(make);
        }
    }
}

impl Keyboard {
    fn new() -> Self {
        Keyboard {
            replies: VecDeque::new(),
            keys: VecDeque::new(),
            scanning: true,
            set: 2,
            leds: 0,
            led_changed: false,
            typematic: TYPEMATIC_DEFAULT,
            expecting: None,
            last_sent: 0,
            dropped_keys: 0,
            dropped_replies: 0,
        }
    }

    fn reply(&mut self, byte: u8) {
        push_reply(&mut self.replies, &mut self.dropped_replies, byte);
    }

    fn next_byte(&mut self) -> Option<u8> {
        let byte = self.replies.pop_front().or_else(|| self.keys.pop_front())?;
        self.last_sent = byte;
        Some(byte)
    }

    /// Power-on defaults (what 0xF5, 0xF6 and 0xFF restore), dropping queued keys.
    fn defaults(&mut self) {
        self.keys.clear();
        self.set = 2;
        self.typematic = TYPEMATIC_DEFAULT;
        self.expecting = None;
        if self.leds != 0 {
            self.leds = 0;
            self.led_changed = true;
        }
    }

    /// A byte the host wrote to the keyboard.
    fn write(&mut self, byte: u8, translated: bool) {
        if let Some(command) = self.expecting.take() {
            match command {
                KBD_SET_LEDS => {
                    let leds = byte & 0x07;
                    self.led_changed |= leds != self.leds;
                    self.leds = leds;
                    self.reply(KBD_ACK);
                }
                KBD_TYPEMATIC => {
                    self.typematic = byte & 0x7F;
                    self.reply(KBD_ACK);
                }
                _ => {
                    self.reply(KBD_ACK);
                    match byte {
                        // Get: the answer passes through the translation like any byte.
                        0 => {
                            let set = if translated {
                                SET2_TO_SET1.get(usize::from(self.set)).copied().unwrap_or(self.set)
                            } else {
                                self.set
                            };
                            self.reply(set);
                        }
                        1..=3 => self.set = byte,
                        _ => {}
                    }
                }
            }
            return;
        }
        match byte {
            KBD_SET_LEDS | KBD_TYPEMATIC | KBD_SCANCODE_SET => {
                self.expecting = Some(byte);
                self.reply(KBD_ACK);
            }
            KBD_ECHO => self.reply(KBD_ECHO),
            KBD_IDENTIFY => {
                self.reply(KBD_ACK);
                for id in if translated { KBD_ID_TRANSLATED } else { KBD_ID } {
                    self.reply(id);
                }
            }
            KBD_ENABLE => {
                self.keys.clear();
                self.scanning = true;
                self.reply(KBD_ACK);
            }
            KBD_DISABLE => {
                self.defaults();
                self.scanning = false;
                self.reply(KBD_ACK);
            }
            KBD_DEFAULTS => {
                self.defaults();
                self.reply(KBD_ACK);
            }
            // Set-3 key type commands: accepted and ignored.
            0xF7..=0xFD => self.reply(KBD_ACK),
            KBD_RESEND => {
                let last = self.last_sent;
                self.reply(last);
            }
            KBD_RESET => {
                self.defaults();
                self.scanning = true;
                self.reply(KBD_ACK);
                self.reply(KBD_BAT_OK);
            }
            _ => self.reply(KBD_NAK),
        }
    }
}

impl core::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("I8042")
            .field("ctr", &self.ctr())
            .field("pending", &self.pending)
            .field("output_port", &self.output_port)
            .field("obf", &self.obf)
            .field("controller_out", &self.controller_out)
            .field("kbd", &self.kbd)
            .field("irq_high", &self.irq_high)
            .field("reset_requested", &self.reset_requested)
            .finish_non_exhaustive()
    }
}

/// Port offsets from 0x60: the data port, and the status/command port at 0x64.
pub const DATA_OFFSET: u16 = 0;
pub const COMMAND_OFFSET: u16 = 4;

impl I8042 {
    /// A controller in its post-firmware state, interrupting through `irq` (IRQ1).
    pub fn new(irq: Box<dyn IrqLine + Send>) -> Self {
        let mut ram = [0u8; 32];
        ram[0] = CTR_POWER_ON;
        I8042 {
            irq,
            power: None,
            ram,
            last_write_was_command: false,
            pending: None,
            output_port: OUT_RESET | OUT_A20,
            obf: None,
            last_data: 0,
            controller_out: VecDeque::new(),
            kbd: Keyboard::new(),
            irq_high: false,
            reset_requested: false,
            dropped_replies: 0,
        }
    }

    /// Also report reset pulses to a VM-wide [`PowerSignal`].
    pub fn with_power_signal(mut self, signal: PowerSignal) -> Self {
        self.power = Some(signal);
        self
    }

    /// Queues key bytes in scan code set 1, as a physical keyboard delivers them through
    /// a translating controller. Each key's bytes (a prefix and its code) are queued
    /// whole or not at all, and the last [`RELEASE_RESERVE_BYTES`] of the queue take
    /// releases only: a guest that stops reading loses presses, never the release of a
    /// key it saw go down, so no key sticks. Dropped while the guest has the keyboard
    /// disabled (0xF5).
    pub fn inject_scancodes(&mut self, bytes: &[u8]) {
        if !self.kbd.scanning {
            self.kbd.dropped_keys = self.kbd.dropped_keys.wrapping_add(bytes.len() as u64);
            return;
        }
        let raw_set1 = self.translating() || self.kbd.set == 1;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (key, after) = rest.split_at(set1_key_len(rest).min(rest.len()));
            rest = after;
            let mut queued: heapless::Vec<u8, 8> = heapless::Vec::new();
            for &byte in key {
                if raw_set1 {
                    let _ = queued.push(byte);
                } else {
                    set1_to_set2(byte, &mut |b| {
                        let _ = queued.push(b);
                    });
                }
            }
            let release = key.last().is_some_and(|b| b & 0x80 != 0);
            let limit = if release { KEY_QUEUE_BYTES } else { KEY_QUEUE_BYTES.saturating_sub(RELEASE_RESERVE_BYTES) };
            if self.kbd.keys.len().saturating_add(queued.len()) <= limit {
                self.kbd.keys.extend(queued);
            } else {
                self.kbd.dropped_keys = self.kbd.dropped_keys.wrapping_add(key.len() as u64);
            }
        }
        self.refill();
    }

    /// Whether the guest pulsed the reset line (command 0xFE, or an output-port write
    /// with bit 0 clear).
    pub fn reset_requested(&self) -> bool {
        self.reset_requested
    }

    /// Returns and clears [`Self::reset_requested`].
    pub fn take_reset_request(&mut self) -> bool {
        core::mem::take(&mut self.reset_requested)
    }

    /// The keyboard LEDs the guest set: bit 0 Scroll Lock, bit 1 Num Lock, bit 2 Caps Lock.
    pub fn leds(&self) -> u8 {
        self.kbd.leds
    }

    /// The LED state if it changed since the last call, for mirroring on the real keyboard.
    pub fn take_led_change(&mut self) -> Option<u8> {
        core::mem::take(&mut self.kbd.led_changed).then_some(self.kbd.leds)
    }

    /// The scan code set the guest receives (1 when the controller translates).
    pub fn guest_scancode_set(&self) -> u8 {
        if self.translating() { 1 } else { self.kbd.set }
    }

    /// Whether key presses currently reach the guest's output buffer.
    pub fn keyboard_active(&self) -> bool {
        self.kbd.scanning && self.ctr() & CTR_KBD_DISABLE == 0
    }

    /// Key bytes dropped (keyboard disabled or queue full).
    pub fn dropped_keys(&self) -> u64 {
        self.kbd.dropped_keys
    }

    /// The A20 gate (output port bit 1).
    pub fn a20(&self) -> bool {
        self.output_port & OUT_A20 != 0
    }

    /// The keyboard's typematic byte (rate and delay) as set with 0xF3.
    pub fn typematic(&self) -> u8 {
        self.kbd.typematic
    }

    fn ctr(&self) -> u8 {
        self.ram[0]
    }

    fn set_ctr(&mut self, value: u8) {
        self.ram[0] = value;
    }

    fn translating(&self) -> bool {
        self.ctr() & CTR_TRANSLATE != 0
    }

    fn pulse_reset(&mut self) {
        self.reset_requested = true;
        if let Some(signal) = &self.power {
            signal.raise(PowerEvent::Reset);
        }
    }

    fn reply(&mut self, byte: u8) {
        push_reply(&mut self.controller_out, &mut self.dropped_replies, byte);
    }

    /// Controller and keyboard replies dropped because their queue was full.
    pub fn dropped_replies(&self) -> u64 {
        self.dropped_replies.wrapping_add(self.kbd.dropped_replies)
    }

    /// Unread bytes the controller and keyboard hold (replies and keys).
    pub fn queued_bytes(&self) -> usize {
        self.controller_out.len().saturating_add(self.kbd.replies.len()).saturating_add(self.kbd.keys.len())
    }

    /// Loads the output buffer if it is empty: controller replies first, then keyboard
    /// bytes while the keyboard interface is enabled.
    fn refill(&mut self) {
        if self.obf.is_none() {
            self.obf = self.controller_out.pop_front();
        }
        if self.obf.is_none() && self.ctr() & CTR_KBD_DISABLE == 0 {
            self.obf = self.kbd.next_byte();
        }
        self.update_irq();
    }

    fn update_irq(&mut self) {
        let high = self.obf.is_some() && self.ctr() & CTR_KBD_INT != 0;
        if high != self.irq_high {
            self.irq_high = high;
            self.irq.set_level(high);
        }
    }

    fn status(&self) -> u8 {
        let mut status = STS_UNLOCKED;
        if self.obf.is_some() {
            status |= STS_OBF;
        }
        if self.ctr() & CTR_SYS != 0 {
            status |= STS_SYS;
        }
        if self.last_write_was_command {
            status |= STS_CMD;
        }
        status
    }

    fn read_data(&mut self) -> u8 {
        match self.obf.take() {
            Some(byte) => {
                self.last_data = byte;
                // The line drops when the buffer is read and rises again with the next
                // byte, so an edge-triggered input sees one edge per byte.
                if self.irq_high {
                    self.irq_high = false;
                    self.irq.set_level(false);
                }
                self.refill();
                byte
            }
            None => self.last_data,
        }
    }

    fn write_command(&mut self, command: u8) {
        self.last_write_was_command = true;
        self.pending = None;
        match command {
            CMD_READ_RAM..=0x3F => {
                let value = self.ram.get(usize::from(command & 0x1F)).copied().unwrap_or(0);
                self.reply(value);
            }
            CMD_WRITE_RAM..=0x7F => self.pending = Some(PendingWrite::Ram(command & 0x1F)),
            CMD_PASSWORD_TEST => self.reply(NO_PASSWORD),
            CMD_AUX_DISABLE => self.set_ctr(self.ctr() | CTR_AUX_DISABLE),
            CMD_AUX_ENABLE => self.set_ctr(self.ctr() & !CTR_AUX_DISABLE),
            CMD_AUX_TEST => self.reply(AUX_TEST_NO_DEVICE),
            CMD_SELF_TEST => {
                self.set_ctr(self.ctr() | CTR_SYS);
                self.reply(SELF_TEST_OK);
            }
            CMD_KBD_TEST => self.reply(KBD_TEST_OK),
            CMD_KBD_DISABLE => self.set_ctr(self.ctr() | CTR_KBD_DISABLE),
            CMD_KBD_ENABLE => self.set_ctr(self.ctr() & !CTR_KBD_DISABLE),
            CMD_READ_OUTPUT_PORT => {
                let mut value = self.output_port & !OUT_KBD_OBF;
                if self.obf.is_some() {
                    value |= OUT_KBD_OBF;
                }
                self.reply(value);
            }
            CMD_WRITE_OUTPUT_PORT => self.pending = Some(PendingWrite::OutputPort),
            CMD_WRITE_KBD_OUTPUT => self.pending = Some(PendingWrite::KbdOutputBuffer),
            CMD_WRITE_AUX_OUTPUT => self.pending = Some(PendingWrite::AuxOutputBuffer),
            CMD_WRITE_AUX => self.pending = Some(PendingWrite::AuxDevice),
            CMD_A20_DISABLE => self.output_port &= !OUT_A20,
            CMD_A20_ENABLE => self.output_port |= OUT_A20,
            CMD_PULSE_BASE..=0xFF => {
                if command & OUT_RESET == 0 {
                    self.pulse_reset();
                }
            }
            _ => log::debug!(target: "devices", "i8042: ignoring command {command:#04x}"),
        }
        self.refill();
    }

    fn write_data(&mut self, value: u8) {
        self.last_write_was_command = false;
        match self.pending.take() {
            Some(PendingWrite::Ram(index)) => {
                if let Some(slot) = self.ram.get_mut(usize::from(index)) {
                    *slot = value;
                }
            }
            Some(PendingWrite::OutputPort) => {
                self.output_port = value & !OUT_KBD_OBF;
                if value & OUT_RESET == 0 {
                    self.pulse_reset();
                }
            }
            Some(PendingWrite::KbdOutputBuffer) => self.reply(value),
            // No AUX device: its bytes go nowhere and nothing answers.
            Some(PendingWrite::AuxOutputBuffer) | Some(PendingWrite::AuxDevice) => {}
            None => {
                // Sending to the keyboard re-enables its interface, as on real 8042s.
                self.set_ctr(self.ctr() & !CTR_KBD_DISABLE);
                let translated = self.translating();
                self.kbd.write(value, translated);
            }
        }
        self.refill();
    }
}

impl PortDevice for I8042 {
    fn read(&mut self, offset: u16, size: AccessSize) -> u32 {
        if size != AccessSize::Byte {
            return size.mask() as u32;
        }
        match offset {
            DATA_OFFSET => u32::from(self.read_data()),
            COMMAND_OFFSET => u32::from(self.status()),
            _ => 0xFF,
        }
    }

    fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
        if size != AccessSize::Byte {
            return;
        }
        let dropped_before = self.dropped_replies();
        match offset {
            DATA_OFFSET => self.write_data(value as u8),
            COMMAND_OFFSET => self.write_command(value as u8),
            _ => {}
        }
        if dropped_before == 0 && self.dropped_replies() != 0 {
            // Once per controller: a flood would otherwise log once per byte.
            log::warn!(target: "devices", "i8042: guest sends commands without reading the replies; newest dropped");
        }
    }
}

#[cfg(test)]
mod tests;
