//! A 16550A UART (COM1). Transmitted bytes go to a per-VM [`ConsoleRing`] and, a line at
//! a time, to a [`ConsoleSink`] (the hypervisor log); bytes pushed with
//! [`Uart16550::push_input`] arrive in the receive FIFO as if typed on the serial line.
//!
//! The model has no line timing: a byte written to THR is transmitted at once, so THRE
//! and TEMT always read 1, and the receive-timeout indication (IIR 0x0C) is raised as
//! soon as the FIFO holds data below its trigger level. Input waits in a host-side queue
//! until the FIFO has room, so the guest never loses typed bytes to a slow driver.
//!
//! Reference: TI/National "PC16550D UART with FIFOs" datasheet (SNLS378), §8.6 registers.
//! Linux's `serial8250` autoconfig (`drivers/tty/serial/8250/8250_port.c`) identifies
//! this model as a 16550A.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use super::bus::PortDevice;
use super::irq_line::IrqLine;
use crate::hw::AccessSize;

/// Where completed console lines go (the hypervisor log, prefixed with the VM's name).
pub trait ConsoleSink {
    /// One line of guest output without its terminator, `\r` stripped.
    fn line(&mut self, vm_name: &str, line: &[u8]);
}

/// The last [`CONSOLE_RING_BYTES`] bytes a VM transmitted; older bytes are dropped.
pub struct ConsoleRing {
    buf: Box<[u8]>,
    /// Bytes ever pushed; `total % buf.len()` is the next write position.
    total: u64,
}

/// The per-VM console ring buffer size.
pub const CONSOLE_RING_BYTES: usize = 64 * 1024;
/// Longer lines are handed to the sink in pieces of this size.
pub const MAX_LINE_BYTES: usize = 256;
/// Host-side input waiting for room in the receive FIFO; more is dropped (and reported
/// to the guest as an overrun).
pub const INPUT_QUEUE_BYTES: usize = 4096;

/// The UART's state.
pub struct Uart16550 {
    name: String,
    irq: Box<dyn IrqLine + Send>,
    sink: Box<dyn ConsoleSink + Send>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo_enabled: bool,
    /// FCR bits 7:6.
    rx_trigger_bits: u8,
    /// LSR error bits (OE, PE, FE, BI), cleared by reading LSR.
    lsr_errors: u8,
    /// MSR delta bits (DCTS, DDSR, TERI, DDCD), cleared by reading MSR.
    msr_delta: u8,
    /// The THRE interrupt is pending (cleared by an IIR read that reports it).
    thre_pending: bool,
    rx: VecDeque<u8>,
    input: VecDeque<u8>,
    dropped_input: u64,
    irq_high: bool,
    ring: ConsoleRing,
    line: Vec<u8>,
}

// Register offsets, PC16550D §8.6 Table 3 ("DLAB" selects the divisor latch at 0 and 1).
const RBR_THR_DLL: u16 = 0;
const IER_DLM: u16 = 1;
const IIR_FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const MSR: u16 = 6;
const SCR: u16 = 7;

// IER, §8.6.4: bits 0..3 only; the rest read 0 (Linux's autoconfig checks that).
const IER_ERBFI: u8 = 1 << 0;
const IER_ETBEI: u8 = 1 << 1;
const IER_ELSI: u8 = 1 << 2;
const IER_EDSSI: u8 = 1 << 3;
const IER_MASK: u8 = 0x0F;

// IIR, §8.6.3 Table 4: interrupt identification, priority highest first.
const IIR_NONE: u8 = 0x01;
const IIR_RLS: u8 = 0x06;
const IIR_RDA: u8 = 0x04;
const IIR_TIMEOUT: u8 = 0x0C;
const IIR_THRE: u8 = 0x02;
const IIR_MSI: u8 = 0x00;
/// IIR bits 7:6 are set when the FIFOs are enabled.
const IIR_FIFOS: u8 = 0xC0;

// FCR, §8.6.5.
const FCR_ENABLE: u8 = 1 << 0;
const FCR_CLEAR_RX: u8 = 1 << 1;
const FCR_TRIGGER_SHIFT: u8 = 6;
/// The FIFO depth of a 16550A.
pub const FIFO_BYTES: usize = 16;

// LCR, §8.6.1.
const LCR_DLAB: u8 = 1 << 7;

// MCR, §8.6.6: DTR, RTS, OUT1, OUT2, LOOP; bits 7:5 read 0.
const MCR_DTR: u8 = 1 << 0;
const MCR_RTS: u8 = 1 << 1;
const MCR_OUT1: u8 = 1 << 2;
const MCR_OUT2: u8 = 1 << 3;
const MCR_LOOP: u8 = 1 << 4;
const MCR_MASK: u8 = 0x1F;

// LSR, §8.6.2.
const LSR_DR: u8 = 1 << 0;
const LSR_OE: u8 = 1 << 1;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;

// MSR, §8.6.7.
const MSR_DCTS: u8 = 1 << 0;
const MSR_DDSR: u8 = 1 << 1;
const MSR_TERI: u8 = 1 << 2;
const MSR_DDCD: u8 = 1 << 3;
const MSR_CTS: u8 = 1 << 4;
const MSR_DSR: u8 = 1 << 5;
const MSR_RI: u8 = 1 << 6;
const MSR_DCD: u8 = 1 << 7;
/// Outside loopback the line looks like a connected, ready terminal.
const MSR_LINE_READY: u8 = MSR_CTS | MSR_DSR | MSR_DCD;

impl ConsoleRing {
    pub fn new(len_bytes: usize) -> Self {
        ConsoleRing { buf: alloc::vec![0; len_bytes.max(1)].into_boxed_slice(), total: 0 }
    }

    pub fn push(&mut self, byte: u8) {
        let len = self.buf.len() as u64;
        if let Some(slot) = self.total.checked_rem(len).and_then(|pos| self.buf.get_mut(pos as usize)) {
            *slot = byte;
        }
        self.total = self.total.wrapping_add(1);
    }

    /// Bytes ever pushed, including those since dropped.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The bytes still held, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let len = self.buf.len();
        if self.total < len as u64 {
            return self.buf.get(..self.total as usize).unwrap_or_default().to_vec();
        }
        let pos = self.total.checked_rem(len as u64).unwrap_or(0) as usize;
        let (newer, older) = self.buf.split_at(pos.min(len));
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(older);
        out.extend_from_slice(newer);
        out
    }
}

impl core::fmt::Debug for ConsoleRing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConsoleRing").field("len", &self.buf.len()).field("total", &self.total).finish()
    }
}

impl core::fmt::Debug for Uart16550 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Uart16550")
            .field("name", &self.name)
            .field("ier", &self.ier)
            .field("lcr", &self.lcr)
            .field("mcr", &self.mcr)
            .field("fifo_enabled", &self.fifo_enabled)
            .field("rx", &self.rx.len())
            .field("input", &self.input.len())
            .field("irq_high", &self.irq_high)
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

impl Uart16550 {
    /// A UART in its reset state, for the VM called `vm_name`.
    pub fn new(vm_name: &str, irq: Box<dyn IrqLine + Send>, sink: Box<dyn ConsoleSink + Send>) -> Self {
        Uart16550 {
            name: String::from(vm_name),
            irq,
            sink,
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            // 115200 baud from the 1.8432 MHz clock.
            dll: 1,
            dlm: 0,
            fifo_enabled: false,
            rx_trigger_bits: 0,
            lsr_errors: 0,
            msr_delta: 0,
            thre_pending: false,
            rx: VecDeque::with_capacity(FIFO_BYTES),
            input: VecDeque::new(),
            dropped_input: 0,
            irq_high: false,
            ring: ConsoleRing::new(CONSOLE_RING_BYTES),
            line: Vec::with_capacity(MAX_LINE_BYTES),
        }
    }

    pub fn vm_name(&self) -> &str {
        &self.name
    }

    /// Queues bytes for the guest to receive, as if typed on the serial line.
    pub fn push_input(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.input.len() < INPUT_QUEUE_BYTES {
                self.input.push_back(byte);
            } else {
                self.dropped_input = self.dropped_input.wrapping_add(1);
                self.lsr_errors |= LSR_OE;
            }
        }
        self.refill_rx();
        self.update_irq();
    }

    /// Input bytes not yet read by the guest (FIFO plus host-side queue).
    pub fn pending_input(&self) -> usize {
        self.rx.len().saturating_add(self.input.len())
    }

    /// Input bytes dropped because the host-side queue was full.
    pub fn dropped_input(&self) -> u64 {
        self.dropped_input
    }

    /// The console ring: the VM's recent output.
    pub fn console(&self) -> &ConsoleRing {
        &self.ring
    }

    /// Hands a partial line (output not yet ended by `\n`) to the sink, e.g. when the VM
    /// stops.
    pub fn flush_line(&mut self) {
        if !self.line.is_empty() {
            self.emit_line();
        }
    }

    /// Whether the UART currently asserts its interrupt line.
    pub fn irq_level(&self) -> bool {
        self.irq_high
    }

    /// The divisor latch (baud = 115200 / divisor).
    pub fn divisor(&self) -> u16 {
        u16::from_le_bytes([self.dll, self.dlm])
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled { FIFO_BYTES } else { 1 }
    }

    /// The receive FIFO trigger level, FCR bits 7:6 (§8.6.5 Table 5).
    fn rx_trigger(&self) -> usize {
        match self.rx_trigger_bits {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    fn refill_rx(&mut self) {
        // In loopback the serial input is disconnected (§8.6.6).
        if self.loopback() {
            return;
        }
        while self.rx.len() < self.rx_capacity() {
            match self.input.pop_front() {
                Some(byte) => self.rx.push_back(byte),
                None => break,
            }
        }
    }

    /// The highest-priority pending interrupt (§8.6.3 Table 4), or [`IIR_NONE`].
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_ELSI != 0 && self.lsr_errors != 0 {
            IIR_RLS
        } else if self.ier & IER_ERBFI != 0 && !self.rx.is_empty() {
            if self.fifo_enabled && self.rx.len() < self.rx_trigger() { IIR_TIMEOUT } else { IIR_RDA }
        } else if self.ier & IER_ETBEI != 0 && self.thre_pending {
            IIR_THRE
        } else if self.ier & IER_EDSSI != 0 && self.msr_delta != 0 {
            IIR_MSI
        } else {
            IIR_NONE
        }
    }

    fn update_irq(&mut self) {
        // On a PC, OUT2 gates the UART's interrupt onto the ISA bus; in loopback the
        // output pins are forced inactive (§8.6.6), so the line is gated off too.
        let high = self.interrupt_id() != IIR_NONE && self.mcr & MCR_OUT2 != 0 && !self.loopback();
        if high != self.irq_high {
            self.irq_high = high;
            self.irq.set_level(high);
        }
    }

    /// The modem-status inputs (MSR bits 7:4) for a given MCR.
    fn modem_inputs(mcr: u8) -> u8 {
        if mcr & MCR_LOOP == 0 {
            return MSR_LINE_READY;
        }
        let mut msr = 0;
        if mcr & MCR_RTS != 0 {
            msr |= MSR_CTS;
        }
        if mcr & MCR_DTR != 0 {
            msr |= MSR_DSR;
        }
        if mcr & MCR_OUT1 != 0 {
            msr |= MSR_RI;
        }
        if mcr & MCR_OUT2 != 0 {
            msr |= MSR_DCD;
        }
        msr
    }

    fn write_mcr(&mut self, value: u8) {
        let old = Self::modem_inputs(self.mcr);
        self.mcr = value & MCR_MASK;
        let new = Self::modem_inputs(self.mcr);
        let changed = old ^ new;
        if changed & MSR_CTS != 0 {
            self.msr_delta |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            self.msr_delta |= MSR_DDSR;
        }
        if old & MSR_RI != 0 && new & MSR_RI == 0 {
            self.msr_delta |= MSR_TERI;
        }
        if changed & MSR_DCD != 0 {
            self.msr_delta |= MSR_DDCD;
        }
        self.refill_rx();
    }

    fn write_fcr(&mut self, value: u8) {
        let enable = value & FCR_ENABLE != 0;
        if enable != self.fifo_enabled {
            // Changing FCR0 clears both FIFOs (§8.6.5).
            self.rx.clear();
            self.fifo_enabled = enable;
        }
        if !enable {
            // The other FCR bits are only programmed together with FCR0.
            self.refill_rx();
            return;
        }
        if value & FCR_CLEAR_RX != 0 {
            self.rx.clear();
        }
        self.rx_trigger_bits = value >> FCR_TRIGGER_SHIFT;
        self.refill_rx();
    }

    fn write_ier(&mut self, value: u8) {
        let old = self.ier;
        self.ier = value & IER_MASK;
        // Enabling ETBEI while THR is empty raises THRE again; Linux's THRE test in
        // serial8250_do_startup relies on that.
        if old & IER_ETBEI == 0 && self.ier & IER_ETBEI != 0 {
            self.thre_pending = true;
        }
    }

    fn transmit(&mut self, byte: u8) {
        if self.loopback() {
            if self.rx.len() < self.rx_capacity() {
                self.rx.push_back(byte);
            } else {
                self.lsr_errors |= LSR_OE;
            }
        } else {
            self.ring.push(byte);
            match byte {
                b'\n' => self.emit_line(),
                b'\r' => {}
                _ => {
                    self.line.push(byte);
                    if self.line.len() >= MAX_LINE_BYTES {
                        self.emit_line();
                    }
                }
            }
        }
        // THR is empty again at once.
        self.thre_pending = true;
    }

    fn emit_line(&mut self) {
        self.sink.line(&self.name, &self.line);
        self.line.clear();
    }

    fn read_byte(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => self.dll,
            RBR_THR_DLL => {
                let byte = self.rx.pop_front().unwrap_or(0);
                self.refill_rx();
                byte
            }
            IER_DLM if dlab => self.dlm,
            IER_DLM => self.ier,
            IIR_FCR => {
                let id = self.interrupt_id();
                if id == IIR_THRE {
                    self.thre_pending = false;
                }
                id | if self.fifo_enabled { IIR_FIFOS } else { 0 }
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let mut lsr = LSR_THRE | LSR_TEMT | self.lsr_errors;
                if !self.rx.is_empty() {
                    lsr |= LSR_DR;
                }
                self.lsr_errors = 0;
                lsr
            }
            MSR => {
                let msr = Self::modem_inputs(self.mcr) | self.msr_delta;
                self.msr_delta = 0;
                msr
            }
            SCR => self.scr,
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, offset: u16, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => self.dll = value,
            RBR_THR_DLL => self.transmit(value),
            IER_DLM if dlab => self.dlm = value,
            IER_DLM => self.write_ier(value),
            IIR_FCR => self.write_fcr(value),
            LCR => self.lcr = value,
            MCR => self.write_mcr(value),
            SCR => self.scr = value,
            // LSR and MSR are read-only.
            _ => {}
        }
    }
}

impl PortDevice for Uart16550 {
    /// Wider accesses act on consecutive registers, as an 8-bit ISA device sees them.
    fn read(&mut self, offset: u16, size: AccessSize) -> u32 {
        let mut value = 0u32;
        for i in 0..size.bytes() {
            let byte = self.read_byte(offset.wrapping_add(u16::from(i)));
            value |= u32::from(byte) << (u32::from(i) * 8);
        }
        self.update_irq();
        value
    }

    fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
        for (i, byte) in value.to_le_bytes().into_iter().take(usize::from(size.bytes())).enumerate() {
            self.write_byte(offset.wrapping_add(i as u16), byte);
        }
        self.update_irq();
    }
}

#[cfg(test)]
mod tests;
