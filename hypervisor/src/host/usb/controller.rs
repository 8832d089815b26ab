//! The xHCI host controller over [`XhciHw`]: taking it from the firmware (USB Legacy
//! Support handoff, §4.22.1), halting and resetting it (§4.2), the DCBAA, command
//! ring, one-segment event ring and scratchpad buffers, running it with interrupts
//! off, commands, events and root-hub port reset (§4.19). Every wait has a deadline; a
//! controller that stops answering is marked failed and sent nothing more.
#![forbid(unsafe_code)]

use xhci::ring::trb::event::{Allowed, CompletionCode};

use super::regs::{self, XhciCapabilities, cap, legacy, op, portsc, rt};
use super::ring::{EventRing, ProducerRing, RING_TRBS, TRB_BYTES};

/// What the driver needs of the machine: the controller's registers, the DMA region
/// (addressed as the device sees it), and a clock.
pub trait XhciHw {
    fn read32(&mut self, offset: u64) -> u32;
    fn write32(&mut self, offset: u64, value: u32);
    /// Copies out of the DMA region; false when the range is not inside it.
    fn dma_read(&mut self, at: u64, buf: &mut [u8]) -> bool;
    /// Copies into the DMA region; false when the range is not inside it.
    fn dma_write(&mut self, at: u64, data: &[u8]) -> bool;
    /// A monotonic clock in microseconds.
    fn now_us(&mut self) -> u64;
    fn register_bytes(&self) -> u64;
}

const PAGE: u64 = 4096;
/// The bounce buffer: every bulk data stage goes through it. 64 KiB at the start of a
/// 64 KiB-aligned region, so one Normal TRB never crosses a 64 KiB boundary (§6.4.1).
pub const BOUNCE: u64 = 0;
pub const BOUNCE_BYTES: u64 = 64 * 1024;
pub const DCBAA: u64 = BOUNCE_BYTES;
const COMMAND_RING: u64 = DCBAA + PAGE;
const EVENT_RING: u64 = COMMAND_RING + PAGE;
const ERST: u64 = EVENT_RING + PAGE;
pub const INPUT_CONTEXT: u64 = ERST + PAGE;
pub const DEVICE_CONTEXT: u64 = INPUT_CONTEXT + PAGE;
pub const EP0_RING: u64 = DEVICE_CONTEXT + PAGE;
pub const BULK_IN_RING: u64 = EP0_RING + PAGE;
pub const BULK_OUT_RING: u64 = BULK_IN_RING + PAGE;
/// Small buffers: the CBW, the CSW and control transfers' data.
pub const SMALL: u64 = BULK_OUT_RING + PAGE;
pub const CBW_BUFFER: u64 = SMALL;
pub const CSW_BUFFER: u64 = SMALL + 0x40;
pub const CONTROL_BUFFER: u64 = SMALL + 0x100;
pub const CONTROL_BUFFER_BYTES: u64 = PAGE - 0x100;
const SCRATCH_ARRAY: u64 = SMALL + PAGE;
const SCRATCH_PAGES: u64 = SCRATCH_ARRAY + PAGE;
/// The most scratchpad buffers the driver gives a controller (laptop xHCIs ask for
/// a few dozen at most).
pub const MAX_SCRATCHPADS: u16 = 256;
/// The alignment of the DMA region (for the bounce buffer).
pub const DMA_ALIGN: u64 = BOUNCE_BYTES;
const _: () = assert!(RING_TRBS as u64 * TRB_BYTES == PAGE);
const _: () = assert!(MAX_SCRATCHPADS as u64 * 8 <= PAGE);

/// The DMA region a controller asking for `scratchpads` buffers needs.
pub fn dma_bytes(scratchpads: u16) -> u64 {
    SCRATCH_PAGES.saturating_add(u64::from(scratchpads).saturating_mul(PAGE))
}

/// How long the driver waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XhciTiming {
    /// A command or transfer, from the doorbell to its event.
    pub command_us: u64,
    /// Halt, reset, BIOS handoff, a port reset.
    pub state_us: u64,
}

impl Default for XhciTiming {
    fn default() -> Self {
        XhciTiming { command_us: 5_000_000, state_us: 1_000_000 }
    }
}

/// Why the controller or the device could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsbError {
    Unsupported(&'static str),
    /// A state change (halt, reset, handoff, port reset) did not happen in time.
    Stuck(&'static str),
    /// The controller reports a host system or controller error, or reads all-ones.
    Fatal,
    /// A command did not complete in time (its TRB type).
    CommandTimeout(u8),
    /// A command completed with this completion code.
    Command {
        trb_type: u8,
        code: u8,
    },
    /// A transfer did not complete in time.
    TransferTimeout,
    /// A transfer ended with this completion code (6 = stall).
    Transfer(u8),
    /// The driver's DMA bookkeeping failed (should not happen).
    Dma,
    /// An earlier failure left the controller or device unusable.
    Failed,
    /// A device answer the driver cannot use.
    Device(&'static str),
}

impl core::fmt::Display for UsbError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UsbError::Unsupported(what) => write!(f, "the controller lacks {what}"),
            UsbError::Stuck(what) => write!(f, "{what} did not finish in time"),
            UsbError::Fatal => write!(f, "host controller error (USBSTS.HSE/HCE, or the device is gone)"),
            UsbError::CommandTimeout(t) => write!(f, "command (TRB type {t}) timed out"),
            UsbError::Command { trb_type, code } => {
                write!(f, "command (TRB type {trb_type}) failed with completion code {code}")
            }
            UsbError::TransferTimeout => write!(f, "transfer timed out"),
            UsbError::Transfer(6) => write!(f, "endpoint stalled"),
            UsbError::Transfer(code) => write!(f, "transfer failed with completion code {code}"),
            UsbError::Dma => write!(f, "DMA region bookkeeping error"),
            UsbError::Failed => write!(f, "the controller was marked failed"),
            UsbError::Device(what) => write!(f, "{what}"),
        }
    }
}

pub const CODE_SUCCESS: u8 = CompletionCode::Success as u8;
pub const CODE_STALL: u8 = CompletionCode::StallError as u8;
pub const CODE_SHORT: u8 = CompletionCode::ShortPacket as u8;

/// A running controller with its command and event rings.
#[derive(Debug)]
pub struct Xhci<H: XhciHw> {
    pub(super) hw: H,
    pub(super) cap: XhciCapabilities,
    /// The DMA region's device address.
    pub(super) dma: u64,
    pub(super) timing: XhciTiming,
    commands: ProducerRing,
    events: EventRing,
    pub(super) failed: bool,
}

fn lo(v: u64) -> u32 {
    v as u32
}

fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}

impl<H: XhciHw> Xhci<H> {
    /// Reads the capability registers (to size the DMA region before it exists).
    pub fn capabilities(hw: &mut H) -> Result<XhciCapabilities, UsbError> {
        let first = hw.read32(cap::CAPLENGTH_HCIVERSION);
        if first == u32::MAX {
            return Err(UsbError::Fatal);
        }
        let c = XhciCapabilities::decode(
            first,
            hw.read32(cap::HCSPARAMS1),
            hw.read32(cap::HCSPARAMS2),
            hw.read32(cap::HCCPARAMS1),
            hw.read32(cap::DBOFF),
            hw.read32(cap::RTSOFF),
        );
        let regs = hw.register_bytes();
        let last_port = u64::from(c.caplength)
            .saturating_add(op::PORTSC_BASE)
            .saturating_add(u64::from(c.max_ports).saturating_mul(op::PORT_STRIDE));
        if c.caplength < 0x20 || c.max_slots == 0 || c.max_ports == 0 {
            return Err(UsbError::Unsupported("sane capability registers"));
        }
        if last_port > regs || c.runtime.saturating_add(0x40) > regs || c.doorbells.saturating_add(0x400) > regs {
            return Err(UsbError::Unsupported("a register window covering its registers"));
        }
        if c.scratchpads > MAX_SCRATCHPADS {
            return Err(UsbError::Unsupported("a modest number of scratchpad buffers"));
        }
        Ok(c)
    }

    /// Takes the controller from the firmware, resets it and starts it with empty
    /// rings. `dma` is the device address of a zeroed region of
    /// `dma_bytes(cap.scratchpads)` bytes, aligned to [`DMA_ALIGN`].
    pub fn start(hw: H, cap: XhciCapabilities, dma: u64, timing: XhciTiming) -> Result<Self, UsbError> {
        let mut x = Xhci {
            hw,
            cap,
            dma,
            timing,
            commands: ProducerRing::new(dma.wrapping_add(COMMAND_RING)),
            events: EventRing::new(dma.wrapping_add(EVENT_RING)),
            failed: false,
        };
        if !cap.ac64 && hi(dma.saturating_add(dma_bytes(cap.scratchpads))) != 0 {
            return Err(UsbError::Unsupported("64-bit addressing (its DMA region lies above 4 GiB)"));
        }
        x.take_from_firmware();
        x.halt_and_reset()?;
        if x.op_read(op::PAGESIZE) & 1 == 0 {
            return Err(UsbError::Unsupported("4 KiB pages"));
        }
        x.program()?;
        x.op_write(op::USBCMD, op::CMD_RUN);
        let deadline = x.deadline(x.timing.state_us);
        x.wait_until(deadline, |x| x.op_read(op::USBSTS) & op::STS_HCH == 0).map_err(|_| UsbError::Stuck("start"))?;
        x.check_alive()?;
        Ok(x)
    }

    pub(super) fn op_read(&mut self, off: u64) -> u32 {
        self.hw.read32(u64::from(self.cap.caplength).wrapping_add(off))
    }

    pub(super) fn op_write(&mut self, off: u64, value: u32) {
        self.hw.write32(u64::from(self.cap.caplength).wrapping_add(off), value)
    }

    fn op_write64(&mut self, off: u64, value: u64) {
        self.op_write(off, lo(value));
        self.op_write(off.wrapping_add(4), hi(value));
    }

    fn ir0_write64(&mut self, off: u64, value: u64) {
        let at = self.cap.runtime.wrapping_add(rt::IR0).wrapping_add(off);
        self.hw.write32(at, lo(value));
        self.hw.write32(at.wrapping_add(4), hi(value));
    }

    pub(super) fn deadline(&mut self, us: u64) -> u64 {
        self.hw.now_us().saturating_add(us)
    }

    /// Polls `done` until it holds or `deadline` passes.
    pub(super) fn wait_until(&mut self, deadline: u64, mut done: impl FnMut(&mut Self) -> bool) -> Result<(), ()> {
        loop {
            if done(self) {
                return Ok(());
            }
            if self.hw.now_us() > deadline {
                return if done(self) { Ok(()) } else { Err(()) };
            }
            core::hint::spin_loop();
        }
    }

    /// §4.22.1: asks the firmware to let go through the USB Legacy Support capability
    /// (if there is one) and turns its SMIs off. A firmware that does not let go within
    /// the state timeout is overridden, as Linux does.
    fn take_from_firmware(&mut self) {
        let mut at = self.cap.xecp;
        for _ in 0..64 {
            if at == 0 || at.saturating_add(8) > self.hw.register_bytes() {
                return;
            }
            let value = self.hw.read32(at);
            let (id, next) = regs::ext_cap(value);
            if id == legacy::ID {
                if value & legacy::BIOS_OWNED != 0 {
                    self.hw.write32(at, value | legacy::OS_OWNED);
                    let deadline = self.deadline(self.timing.state_us);
                    if self.wait_until(deadline, |x| x.hw.read32(at) & legacy::BIOS_OWNED == 0).is_err() {
                        log::warn!(target: "usb", "the firmware did not release the xHCI controller; taking it anyway");
                        let now = self.hw.read32(at);
                        self.hw.write32(at, (now & !legacy::BIOS_OWNED) | legacy::OS_OWNED);
                    }
                }
                let ctl = at.wrapping_add(4);
                let smi = self.hw.read32(ctl);
                self.hw.write32(ctl, smi & !legacy::SMI_ENABLES);
                return;
            }
            if next == 0 {
                return;
            }
            at = at.saturating_add(next);
        }
    }

    fn halt_and_reset(&mut self) -> Result<(), UsbError> {
        let cmd = self.op_read(op::USBCMD);
        if cmd == u32::MAX {
            return Err(UsbError::Fatal);
        }
        self.op_write(op::USBCMD, cmd & !(op::CMD_RUN | op::CMD_INTE));
        let deadline = self.deadline(self.timing.state_us);
        self.wait_until(deadline, |x| x.op_read(op::USBSTS) & op::STS_HCH != 0).map_err(|_| UsbError::Stuck("halt"))?;
        self.op_write(op::USBCMD, op::CMD_HCRST);
        let deadline = self.deadline(self.timing.state_us);
        self.wait_until(deadline, |x| {
            x.op_read(op::USBCMD) & op::CMD_HCRST == 0 && x.op_read(op::USBSTS) & op::STS_CNR == 0
        })
        .map_err(|_| UsbError::Stuck("controller reset"))
    }

    /// Zeroes the region's control structures and programs CONFIG, DCBAAP, CRCR and
    /// interrupter 0 (one ERST entry, interrupts off: events are polled).
    fn program(&mut self) -> Result<(), UsbError> {
        let zero = [0u8; PAGE as usize];
        let mut at = DCBAA;
        while at < SCRATCH_PAGES {
            self.dma_write(at, &zero)?;
            at = at.saturating_add(PAGE);
        }
        let n = self.cap.scratchpads;
        if n > 0 {
            for i in 0..u64::from(n) {
                let page = self.dma.wrapping_add(SCRATCH_PAGES).wrapping_add(i.wrapping_mul(PAGE));
                self.dma_write(SCRATCH_PAGES.wrapping_add(i.wrapping_mul(PAGE)), &zero)?;
                self.dma_write(SCRATCH_ARRAY.wrapping_add(i.wrapping_mul(8)), &page.to_le_bytes())?;
            }
            self.dma_write(DCBAA, &self.dma.wrapping_add(SCRATCH_ARRAY).to_le_bytes())?;
        }
        // One device slot: the stick.
        let config = self.op_read(op::CONFIG);
        self.op_write(op::CONFIG, (config & !0xff) | 1);
        self.op_write(op::DNCTRL, 0);
        self.op_write64(op::DCBAAP, self.dma.wrapping_add(DCBAA));
        self.op_write64(op::CRCR, self.commands.base() | 1);
        // §6.5: the ERST entry: segment base and size.
        let mut entry = [0u8; 16];
        entry[..8].copy_from_slice(&self.events.dequeue_pointer().to_le_bytes());
        entry[8..12].copy_from_slice(&u32::from(RING_TRBS).to_le_bytes());
        self.dma_write(ERST, &entry)?;
        let iman = self.cap.runtime.wrapping_add(rt::IR0).wrapping_add(rt::IMAN);
        self.hw.write32(iman, 0x1); // clear a pending IP, IE off
        self.hw.write32(self.cap.runtime.wrapping_add(rt::IR0).wrapping_add(rt::ERSTSZ), 1);
        let erdp = self.events.dequeue_pointer();
        self.ir0_write64(rt::ERDP, erdp);
        // ERSTBA last: writing it makes the controller read the table (§5.5.2.3.2).
        self.ir0_write64(rt::ERSTBA, self.dma.wrapping_add(ERST));
        Ok(())
    }

    pub(super) fn dma_write(&mut self, offset: u64, data: &[u8]) -> Result<(), UsbError> {
        let at = self.dma.checked_add(offset).ok_or(UsbError::Dma)?;
        self.hw.dma_write(at, data).then_some(()).ok_or(UsbError::Dma)
    }

    pub(super) fn dma_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), UsbError> {
        let at = self.dma.checked_add(offset).ok_or(UsbError::Dma)?;
        self.hw.dma_read(at, buf).then_some(()).ok_or(UsbError::Dma)
    }

    fn write_trbs(&mut self, writes: &[(u64, [u32; 4])]) -> Result<(), UsbError> {
        for (at, trb) in writes {
            let mut bytes = [0u8; 16];
            for (chunk, dword) in bytes.chunks_exact_mut(4).zip(trb) {
                chunk.copy_from_slice(&dword.to_le_bytes());
            }
            let offset = at.checked_sub(self.dma).ok_or(UsbError::Dma)?;
            self.dma_write(offset, &bytes)?;
        }
        Ok(())
    }

    /// Places `trb` on `ring` (a ring in the DMA region); returns its device address.
    pub(super) fn enqueue(&mut self, ring: &mut ProducerRing, trb: [u32; 4]) -> Result<u64, UsbError> {
        let (at, writes) = ring.push(trb);
        self.write_trbs(&writes)?;
        Ok(at)
    }

    pub(super) fn ring_doorbell(&mut self, slot: u8, target: u8) {
        let at = self.cap.doorbells.wrapping_add(u64::from(slot).wrapping_mul(4));
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.hw.write32(at, u32::from(target));
    }

    /// USBSTS says the controller is in trouble (or reads all-ones: it is gone).
    pub(super) fn check_alive(&mut self) -> Result<(), UsbError> {
        let sts = self.op_read(op::USBSTS);
        if sts == u32::MAX || sts & (op::STS_HSE | op::STS_HCE) != 0 {
            self.failed = true;
            return Err(UsbError::Fatal);
        }
        Ok(())
    }

    /// The next event, if one is there; moves ERDP past it.
    pub(super) fn poll_event(&mut self) -> Result<Option<[u32; 4]>, UsbError> {
        let mut bytes = [0u8; 16];
        let at = self.events.dequeue_pointer().checked_sub(self.dma).ok_or(UsbError::Dma)?;
        self.dma_read(at, &mut bytes)?;
        let mut trb = [0u32; 4];
        for (dword, chunk) in trb.iter_mut().zip(bytes.chunks_exact(4)) {
            *dword = chunk.try_into().map(u32::from_le_bytes).unwrap_or(0);
        }
        if !self.events.is_new(&trb) {
            return Ok(None);
        }
        self.events.advance();
        let erdp = self.events.dequeue_pointer() | rt::ERDP_EHB;
        self.ir0_write64(rt::ERDP, erdp);
        Ok(Some(trb))
    }

    /// Waits for the event `wanted` picks out (other events are dropped: port
    /// changes, and late completions of TRBs given up on); `None` at the deadline.
    pub(super) fn wait_event<T>(
        &mut self,
        timeout_us: u64,
        mut wanted: impl FnMut(Allowed) -> Option<T>,
    ) -> Result<Option<T>, UsbError> {
        let deadline = self.deadline(timeout_us);
        // Bounded: at most a few rings' worth of unrelated events per wait.
        let mut budget = u32::from(RING_TRBS).saturating_mul(4);
        loop {
            match self.poll_event()? {
                Some(raw) => {
                    if let Ok(event) = Allowed::try_from(raw)
                        && let Some(found) = wanted(event)
                    {
                        return Ok(Some(found));
                    }
                    budget = budget.saturating_sub(1);
                    if budget == 0 {
                        return Ok(None);
                    }
                }
                None => {
                    self.check_alive()?;
                    if self.hw.now_us() > deadline {
                        return Ok(None);
                    }
                    core::hint::spin_loop();
                }
            }
        }
    }

    /// Runs one command; returns the slot id of its completion event.
    pub(super) fn command(&mut self, trb: [u32; 4]) -> Result<u8, UsbError> {
        if self.failed {
            return Err(UsbError::Failed);
        }
        let trb_type = ((trb[3] >> 10) & 0x3f) as u8;
        let mut ring = self.commands;
        let at = self.enqueue(&mut ring, trb)?;
        self.commands = ring;
        self.ring_doorbell(0, 0);
        let done = self.wait_event(self.timing.command_us, |e| match e {
            Allowed::CommandCompletion(c) if c.command_trb_pointer() == at => {
                let code = match c.completion_code() {
                    Ok(code) => code as u8,
                    Err(raw) => raw,
                };
                Some((code, c.slot_id()))
            }
            _ => None,
        })?;
        match done {
            Some((CODE_SUCCESS, slot)) => Ok(slot),
            Some((code, _)) => Err(UsbError::Command { trb_type, code }),
            None => {
                // The command ring is in an unknown state: nothing more is sent.
                self.failed = true;
                Err(UsbError::CommandTimeout(trb_type))
            }
        }
    }

    fn portsc_offset(port: u8) -> u64 {
        op::PORTSC_BASE.wrapping_add(u64::from(port.saturating_sub(1)).wrapping_mul(op::PORT_STRIDE))
    }

    pub fn port_status(&mut self, port: u8) -> u32 {
        self.op_read(Self::portsc_offset(port))
    }

    /// Resets root-hub port `port` (1-based) and returns its speed once enabled.
    pub fn reset_port(&mut self, port: u8) -> Result<u8, UsbError> {
        let off = Self::portsc_offset(port);
        self.op_write(off, portsc::neutral(portsc::PR));
        let deadline = self.deadline(self.timing.state_us);
        self.wait_until(deadline, |x| {
            let v = x.op_read(off);
            v & portsc::PR == 0 && v & (portsc::PRC | portsc::WRC) != 0
        })
        .map_err(|_| UsbError::Stuck("port reset"))?;
        let v = self.op_read(off);
        self.op_write(off, portsc::neutral(v & portsc::CHANGE_BITS));
        if v & portsc::PED == 0 || v & portsc::CCS == 0 {
            return Err(UsbError::Device("the port did not enable after reset"));
        }
        // USB 2.0 §7.1.7.5 TRSTRCY: 10 ms before the device must answer.
        let settle = self.deadline(10_000);
        let _ = self.wait_until(settle, |_| false);
        Ok(portsc::speed(v))
    }

    /// Root-hub ports (1-based) with a device connected.
    pub fn connected_ports(&mut self) -> heapless::Vec<u8, 32> {
        let mut out = heapless::Vec::new();
        for port in 1..=self.cap.max_ports {
            if self.port_status(port) & portsc::CCS != 0 && out.push(port).is_err() {
                break;
            }
        }
        out
    }
}
