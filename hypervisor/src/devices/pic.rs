//! Two cascaded 8259A PICs (master at ports 0x20/0x21, slave at 0xA0/0xA1, slave on
//! master IR2) and the ELCR edge/level registers at 0x4D0/0x4D1.
//!
//! Linux 6.1 only probes and initialises them (`probe_8259A` writes mask 0xFB and
//! reads it back; `init_8259A` runs ICW1-ICW4 and restores the masks), then routes
//! every interrupt through the IOAPIC and leaves the PICs fully masked. The model is
//! complete enough for that, for OCW2 EOIs, OCW3 IRR/ISR reads and poll mode, and for
//! ExtINT delivery when the local APIC's LINT0 is in ExtINT mode (or the APIC is
//! globally disabled): [`Pic::pending_vector`] / [`Pic::acknowledge`]. A masked line
//! never produces an interrupt.
//!
//! Ports are dispatched by absolute number through [`Pic::read_port`] /
//! [`Pic::write_port`]: the three ranges are disjoint, so the
//! [`InterruptController`](super::platform_irq::InterruptController) routes them
//! rather than a single [`PortDevice`](super::bus::PortDevice) registration. Each chip
//! on its own is a [`PortDevice`] for a two-port range.
#![forbid(unsafe_code)]

use crate::devices::bus::PortDevice;
use crate::devices::irq::PIC_CASCADE_IRQ;
use crate::devices::layout::{ELCR_MASTER, ELCR_SLAVE, PIC_MASTER_CMD, PIC_MASTER_DATA, PIC_SLAVE_CMD, PIC_SLAVE_DATA};
use crate::hw::AccessSize;

/// The master/slave pair.
#[derive(Debug, Clone)]
pub struct Pic {
    pub master: PicChip,
    pub slave: PicChip,
}

/// One 8259A (datasheet: "8259A Programmable Interrupt Controller", Intel 231468).
#[derive(Debug, Clone)]
pub struct PicChip {
    /// Line levels seen at the last update, for edge detection.
    last_irr: u8,
    irr: u8,
    imr: u8,
    isr: u8,
    /// Lowest-priority rotation: IR `priority_add` has the highest priority.
    priority_add: u8,
    /// ICW2 vector base (bits 7:3).
    irq_base: u8,
    /// OCW3 RR/RIS: read ISR (true) or IRR on the command port.
    read_isr: bool,
    /// OCW3 P: the next command-port read is a poll.
    poll: bool,
    special_mask: bool,
    /// ICW sequence position: 0 = operational, 1..=3 = expecting ICW2..ICW4.
    init_state: u8,
    init4: bool,
    single: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    /// ELCR: level-triggered inputs.
    elcr: u8,
    /// ELCR bits that may be set.
    elcr_mask: u8,
    is_master: bool,
}

/// ICW1 is a command-port write with bit 4 set (datasheet "Initialization Command
/// Words"): bit 0 IC4 (ICW4 needed), bit 1 SNGL, bit 3 LTIM.
const ICW1: u8 = 0x10;
const ICW1_IC4: u8 = 0x01;
const ICW1_SNGL: u8 = 0x02;
/// OCW3 is a command-port write with bits 4:3 = 01 (datasheet "Operation Command
/// Words"): bit 2 P (poll), bits 1:0 RR/RIS, bits 6:5 ESMM/SMM.
const OCW3: u8 = 0x08;
const OCW3_POLL: u8 = 0x04;
const OCW3_READ_REGISTER: u8 = 0x02;
const OCW3_ESMM: u8 = 0x40;
/// ICW4: bit 1 AEOI, bit 4 SFNM.
const ICW4_AEOI: u8 = 0x02;
const ICW4_SFNM: u8 = 0x10;
/// IRQ 0, 1, 2 (master) and 8, 13 (slave) are always edge-triggered (PIIX4 ELCR).
const ELCR_MASK_MASTER: u8 = 0xF8;
const ELCR_MASK_SLAVE: u8 = 0xDE;

impl PicChip {
    fn new(is_master: bool) -> PicChip {
        PicChip {
            last_irr: 0,
            irr: 0,
            imr: 0xFF,
            isr: 0,
            priority_add: 0,
            irq_base: 0,
            read_isr: false,
            poll: false,
            special_mask: false,
            init_state: 0,
            init4: false,
            single: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            elcr: 0,
            elcr_mask: if is_master { ELCR_MASK_MASTER } else { ELCR_MASK_SLAVE },
            is_master,
        }
    }

    pub fn imr(&self) -> u8 {
        self.imr
    }
    pub fn irr(&self) -> u8 {
        self.irr
    }
    pub fn isr(&self) -> u8 {
        self.isr
    }
    pub fn vector_base(&self) -> u8 {
        self.irq_base
    }

    /// What ICW1 resets (datasheet: IMR cleared, IR7 lowest priority, special mask
    /// mode off, status read set to IRR, ICW4 functions cleared unless IC4).
    fn init_reset(&mut self) {
        self.last_irr = 0;
        self.irr &= self.elcr;
        self.imr = 0;
        self.isr = 0;
        self.priority_add = 0;
        self.irq_base = 0;
        self.read_isr = false;
        self.poll = false;
        self.special_mask = false;
        self.init_state = 0;
        self.auto_eoi = false;
        self.rotate_on_auto_eoi = false;
        self.special_fully_nested = false;
        self.init4 = false;
        self.single = false;
    }

    /// Priority (0 = highest) of the best request in `mask`; 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        (0..8u8).find(|p| mask & bit(p.wrapping_add(self.priority_add) & 7) != 0).unwrap_or(8)
    }

    /// The IR line the chip would interrupt for, if any (INT output).
    fn output(&self) -> Option<u8> {
        let req = self.priority(self.irr & !self.imr);
        if req == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && self.is_master {
            in_service &= !bit(PIC_CASCADE_IRQ);
        }
        (req < self.priority(in_service)).then(|| req.wrapping_add(self.priority_add) & 7)
    }

    /// Drives input `irq` (0..8).
    fn set_irq(&mut self, irq: u8, level: bool) {
        let mask = bit(irq);
        if self.elcr & mask != 0 {
            if level {
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            if self.last_irr & mask == 0 {
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            self.last_irr &= !mask;
        }
    }

    /// INTA for `irq`: ISR set (unless auto-EOI), edge request cleared.
    fn intack(&mut self, irq: u8) {
        let mask = bit(irq);
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = irq.wrapping_add(1) & 7;
            }
        } else {
            self.isr |= mask;
        }
        if self.elcr & mask == 0 {
            self.irr &= !mask;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & ICW1 != 0 {
            self.init_reset();
            self.init_state = 1;
            self.init4 = value & ICW1_IC4 != 0;
            self.single = value & ICW1_SNGL != 0;
        } else if value & OCW3 != 0 {
            if value & OCW3_POLL != 0 {
                self.poll = true;
            }
            if value & OCW3_READ_REGISTER != 0 {
                self.read_isr = value & 1 != 0;
            }
            if value & OCW3_ESMM != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            self.write_ocw2(value);
        }
    }

    /// OCW2: R, SL, EOI in bits 7:5, level in 2:0.
    fn write_ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            // Rotate in automatic EOI mode: clear (0) / set (4).
            0 => self.rotate_on_auto_eoi = false,
            4 => self.rotate_on_auto_eoi = true,
            // Non-specific EOI (1), and with rotation (5).
            cmd @ (1 | 5) => {
                let p = self.priority(self.isr);
                if p != 8 {
                    let irq = p.wrapping_add(self.priority_add) & 7;
                    self.isr &= !bit(irq);
                    if cmd == 5 {
                        self.priority_add = irq.wrapping_add(1) & 7;
                    }
                }
            }
            // Specific EOI.
            3 => self.isr &= !bit(level),
            // Set priority: `level` becomes the lowest.
            6 => self.priority_add = level.wrapping_add(1) & 7,
            // Rotate on specific EOI.
            7 => {
                self.isr &= !bit(level);
                self.priority_add = level.wrapping_add(1) & 7;
            }
            // 2: no operation.
            _ => {}
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init_state {
            1 => {
                self.irq_base = value & 0xF8;
                self.init_state = match (self.single, self.init4) {
                    (false, _) => 2,
                    (true, true) => 3,
                    (true, false) => 0,
                };
            }
            2 => self.init_state = if self.init4 { 3 } else { 0 },
            3 => {
                self.special_fully_nested = value & ICW4_SFNM != 0;
                self.auto_eoi = value & ICW4_AEOI != 0;
                self.init_state = 0;
            }
            // OCW1.
            _ => self.imr = value,
        }
    }

    /// Poll mode read: 0x80 | level of the best request (acknowledged), or 0.
    fn poll_read(&mut self) -> u8 {
        self.poll = false;
        match self.output() {
            Some(irq) => {
                self.intack(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    fn read_command(&mut self) -> u8 {
        if self.poll {
            self.poll_read()
        } else if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }

    fn read_data(&mut self) -> u8 {
        if self.poll { self.poll_read() } else { self.imr }
    }
}

fn bit(irq: u8) -> u8 {
    1u8.wrapping_shl(u32::from(irq & 7))
}

impl Default for Pic {
    fn default() -> Self {
        Pic::new()
    }
}

impl Pic {
    /// Both chips as after power-up and before the guest initialises them: fully
    /// masked (firmware leaves them so).
    pub fn new() -> Pic {
        Pic { master: PicChip::new(true), slave: PicChip::new(false) }
    }

    /// Drives ISA IRQ `irq` (0..16); IRQ2 is the cascade and is ignored.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            PIC_CASCADE_IRQ => {}
            0..=7 => self.master.set_irq(irq, level),
            8..=15 => self.slave.set_irq(irq & 7, level),
            _ => log::debug!(target: "pic", "IRQ {irq} has no 8259 input"),
        }
        self.update_cascade();
    }

    /// The slave's INT output is the master's IR2 request. It is held until the INTA
    /// cycle, so it follows the slave's output as a level (a slave request withdrawn
    /// before it is taken leaves no spurious request at the master).
    fn update_cascade(&mut self) {
        let mask = bit(PIC_CASCADE_IRQ);
        if self.slave.output().is_some() {
            self.master.irr |= mask;
            self.master.last_irr |= mask;
        } else {
            self.master.irr &= !mask;
            self.master.last_irr &= !mask;
        }
    }

    /// The vector an INTA cycle would return now, if the master's INT is asserted.
    pub fn pending_vector(&self) -> Option<u8> {
        let irq = self.master.output()?;
        if irq == PIC_CASCADE_IRQ {
            let slave = self.slave.output().unwrap_or(7);
            return Some(self.slave.irq_base | slave);
        }
        Some(self.master.irq_base | irq)
    }

    /// The INTA cycle: acknowledges the best request and returns its vector. With
    /// nothing pending it returns the spurious IRQ7 vector of the chip involved, as
    /// the 8259A does.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.output() {
            Some(PIC_CASCADE_IRQ) => {
                self.master.intack(PIC_CASCADE_IRQ);
                match self.slave.output() {
                    Some(irq) => {
                        self.slave.intack(irq);
                        self.slave.irq_base | irq
                    }
                    None => self.slave.irq_base | 7,
                }
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.irq_base | irq
            }
            None => self.master.irq_base | 7,
        };
        self.update_cascade();
        vector
    }

    /// Whether `port` belongs to the PICs or the ELCR.
    pub fn claims_port(port: u16) -> bool {
        matches!(port, PIC_MASTER_CMD | PIC_MASTER_DATA | PIC_SLAVE_CMD | PIC_SLAVE_DATA | ELCR_MASTER | ELCR_SLAVE)
    }

    /// A byte read of an absolute port; unclaimed ports read 0xFF.
    pub fn read_port(&mut self, port: u16) -> u8 {
        let value = match port {
            PIC_MASTER_CMD => self.master.read_command(),
            PIC_MASTER_DATA => self.master.read_data(),
            PIC_SLAVE_CMD => self.slave.read_command(),
            PIC_SLAVE_DATA => self.slave.read_data(),
            ELCR_MASTER => self.master.elcr,
            ELCR_SLAVE => self.slave.elcr,
            _ => 0xFF,
        };
        self.update_cascade();
        value
    }

    /// A byte write of an absolute port; unclaimed ports are ignored.
    pub fn write_port(&mut self, port: u16, value: u8) {
        match port {
            PIC_MASTER_CMD => self.master.write_command(value),
            PIC_MASTER_DATA => self.master.write_data(value),
            PIC_SLAVE_CMD => self.slave.write_command(value),
            PIC_SLAVE_DATA => self.slave.write_data(value),
            ELCR_MASTER => self.master.elcr = value & self.master.elcr_mask,
            ELCR_SLAVE => self.slave.elcr = value & self.slave.elcr_mask,
            _ => {}
        }
        self.update_cascade();
    }
}

/// One chip on its own two-port range (offset 0 command, 1 data). Cascading needs the
/// pair, so a VM uses [`Pic`] through the interrupt controller.
impl PortDevice for PicChip {
    fn read(&mut self, offset: u16, _size: AccessSize) -> u32 {
        u32::from(if offset == 0 { self.read_command() } else { self.read_data() })
    }
    fn write(&mut self, offset: u16, _size: AccessSize, value: u32) {
        if offset == 0 { self.write_command(value as u8) } else { self.write_data(value as u8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `init_8259A(0)` from arch/x86/kernel/i8259.c.
    fn linux_init(pic: &mut Pic) {
        pic.write_port(0x21, 0xFF);
        pic.write_port(0xA1, 0xFF);
        pic.write_port(0x20, 0x11);
        pic.write_port(0x21, 0x30);
        pic.write_port(0x21, 0x04);
        pic.write_port(0x21, 0x01);
        pic.write_port(0xA0, 0x11);
        pic.write_port(0xA1, 0x38);
        pic.write_port(0xA1, 0x02);
        pic.write_port(0xA1, 0x01);
    }

    #[test]
    fn linux_probe_reads_the_mask_back() {
        let mut pic = Pic::new();
        // probe_8259A.
        pic.write_port(0xA1, 0xFF);
        pic.write_port(0x21, 0xFB);
        assert_eq!(pic.read_port(0x21), 0xFB);
        assert_eq!(pic.read_port(0xA1), 0xFF);
        linux_init(&mut pic);
        assert_eq!(pic.master.vector_base(), 0x30);
        assert_eq!(pic.slave.vector_base(), 0x38);
        // ICW1 cleared the masks; Linux restores them afterwards.
        assert_eq!(pic.read_port(0x21), 0);
        pic.write_port(0x21, 0xFF);
        pic.write_port(0xA1, 0xFF);
        assert_eq!((pic.read_port(0x21), pic.read_port(0xA1)), (0xFF, 0xFF));
    }

    #[test]
    fn masked_pic_never_delivers() {
        let mut pic = Pic::new();
        for irq in 0..16 {
            pic.set_irq(irq, true);
        }
        assert_eq!(pic.pending_vector(), None);
        linux_init(&mut pic);
        pic.write_port(0x21, 0xFF);
        pic.write_port(0xA1, 0xFF);
        for irq in 0..16 {
            pic.set_irq(irq, false);
            pic.set_irq(irq, true);
        }
        assert_eq!(pic.pending_vector(), None);
        // The requests are latched in IRR (OCW3 read IRR) but go nowhere.
        pic.write_port(0x20, 0x0A);
        assert_eq!(pic.read_port(0x20), 0xFB);
    }

    #[test]
    fn edge_request_ack_and_eoi() {
        let mut pic = Pic::new();
        linux_init(&mut pic);
        pic.write_port(0x21, 0xFE); // only IRQ0
        pic.set_irq(0, true);
        assert_eq!(pic.pending_vector(), Some(0x30));
        assert_eq!(pic.acknowledge(), 0x30);
        assert_eq!(pic.pending_vector(), None);
        // OCW3 read ISR.
        pic.write_port(0x20, 0x0B);
        assert_eq!(pic.read_port(0x20), 0x01);
        // Another edge needs the line to drop first; then it waits for the EOI.
        pic.set_irq(0, true);
        assert_eq!(pic.master.irr(), 0);
        pic.set_irq(0, false);
        pic.set_irq(0, true);
        assert_eq!(pic.pending_vector(), None, "IRQ0 in service");
        pic.write_port(0x20, 0x20); // non-specific EOI
        assert_eq!(pic.master.isr(), 0);
        assert_eq!(pic.pending_vector(), Some(0x30));
    }

    #[test]
    fn slave_cascades_through_ir2() {
        let mut pic = Pic::new();
        linux_init(&mut pic);
        pic.write_port(0x21, 0xFB);
        pic.write_port(0xA1, 0xEF); // IRQ12 only
        pic.set_irq(12, true);
        assert_eq!(pic.pending_vector(), Some(0x3C));
        assert_eq!(pic.acknowledge(), 0x3C);
        assert_eq!(pic.master.isr(), 0x04);
        assert_eq!(pic.slave.isr(), 0x10);
        // Specific EOI to the slave, then to the master's cascade input.
        pic.write_port(0xA0, 0x64);
        pic.write_port(0x20, 0x62);
        assert_eq!((pic.master.isr(), pic.slave.isr()), (0, 0));
        // Masking the cascade hides the slave.
        pic.set_irq(12, false);
        pic.set_irq(12, true);
        pic.write_port(0x21, 0xFF);
        assert_eq!(pic.pending_vector(), None);
    }

    #[test]
    fn priorities_and_spurious_irq7() {
        let mut pic = Pic::new();
        linux_init(&mut pic);
        pic.write_port(0x21, 0x00);
        pic.set_irq(5, true);
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), 0x33);
        // IRQ5 has lower priority than in-service IRQ3.
        assert_eq!(pic.pending_vector(), None);
        pic.write_port(0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x35);
        // Nothing pending: an INTA returns IRQ7 without setting ISR bit 7.
        assert_eq!(pic.acknowledge(), 0x37);
        assert_eq!(pic.master.isr() & 0x80, 0);
        // Rotate: set priority so IRQ5 is lowest; IRQ6 now beats IRQ1.
        pic.write_port(0x20, 0x20);
        pic.write_port(0x20, 0xC5);
        pic.set_irq(1, true);
        pic.set_irq(6, true);
        assert_eq!(pic.acknowledge(), 0x36);
    }

    #[test]
    fn level_triggered_via_elcr_and_poll_mode() {
        let mut pic = Pic::new();
        linux_init(&mut pic);
        pic.write_port(0x4D0, 0xFF);
        pic.write_port(0x4D1, 0xFF);
        assert_eq!(pic.read_port(0x4D0), 0xF8);
        assert_eq!(pic.read_port(0x4D1), 0xDE);
        pic.write_port(0x21, 0x00);
        pic.set_irq(9, true); // level-triggered through the ELCR
        pic.write_port(0xA1, 0x00);
        assert_eq!(pic.acknowledge(), 0x39);
        pic.write_port(0xA0, 0x20);
        pic.write_port(0x20, 0x20);
        // Still asserted: requested again after the EOIs.
        assert_eq!(pic.pending_vector(), Some(0x39));
        pic.set_irq(9, false);
        assert_eq!(pic.pending_vector(), None);
        // Poll: OCW3 with P set, then a read acknowledges the request.
        pic.set_irq(4, true);
        pic.write_port(0x20, 0x0C);
        assert_eq!(pic.read_port(0x20), 0x84);
        assert_eq!(pic.master.isr(), 0x10);
        pic.write_port(0x20, 0x0C);
        assert_eq!(pic.read_port(0x21), 0);
    }

    #[test]
    fn auto_eoi_and_single_chip_port_device() {
        let mut chip = PicChip::new(true);
        chip.write(0, AccessSize::Byte, 0x13); // ICW1: single, IC4
        chip.write(1, AccessSize::Byte, 0x08); // ICW2
        chip.write(1, AccessSize::Byte, 0x03); // ICW4: AEOI
        chip.write(1, AccessSize::Byte, 0x00); // OCW1
        chip.set_irq(1, true);
        assert_eq!(chip.output(), Some(1));
        chip.intack(1);
        assert_eq!(chip.isr(), 0);
        assert_eq!(chip.read(1, AccessSize::Byte), 0);
    }

    #[test]
    fn unknown_ports_and_irqs_are_harmless() {
        let mut pic = Pic::new();
        assert!(Pic::claims_port(0x4D1) && !Pic::claims_port(0x22));
        assert_eq!(pic.read_port(0x22), 0xFF);
        pic.write_port(0x22, 0);
        pic.set_irq(16, true);
        pic.set_irq(255, true);
        for v in 0..=255u8 {
            for port in [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1] {
                pic.write_port(port, v);
                pic.read_port(port);
            }
            pic.set_irq(v & 15, v & 16 != 0);
            pic.acknowledge();
        }
    }
}
