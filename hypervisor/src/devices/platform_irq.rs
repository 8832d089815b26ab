//! The VM's interrupt controllers and platform timers as one object: the local APIC,
//! the IOAPIC, the 8259 pair (with ELCR) and the 8254 PIT, with the legacy routing
//! between them (ISA IRQ0 → GSI 2, IRQ 1 and 3..=15 → GSI 1 and 3..=15, each ISA line
//! also to its 8259 input; LAPIC EOIs of level-triggered vectors back to the IOAPIC).
//!
//! What the vCPU loop calls, with `now` = the guest TSC at that moment:
//!
//! | When | Call |
//! |---|---|
//! | after every exit, before handling it | [`InterruptController::tick`] (fires due timers) |
//! | RDMSR/WRMSR | [`read_msr`](InterruptController::read_msr) / [`write_msr`](InterruptController::write_msr) first; `None` = not an APIC MSR, `Some(Err)` = inject #GP(0) |
//! | port I/O, MMIO | [`InterruptController::buses`] wraps the VM's buses so the APIC page, the IOAPIC and the PIC/PIT/ELCR/0x61 ports are handled here and the rest falls through |
//! | devices on buses | drain their [`GsiLines`](super::irq::GsiLines) into the controller (it is a [`GsiSink`]) |
//! | before entry | [`InterruptController::pending_vector`] to decide on an interrupt window; when the guest can take it, [`InterruptController::take_interrupt`] returns the vector to inject (IRR → ISR done) |
//! | NMI | [`InterruptController::take_nmi`] |
//! | CR8 / V_TPR sync | `lapic.tpr()` / `lapic.set_tpr()` |
//! | arming the host timer | [`InterruptController::next_deadline`] (guest TSC) |
//! | HLT | wait until `pending_vector()` or the deadline |
#![forbid(unsafe_code)]

use crate::devices::bus::{MmioBus, PortBus};
use crate::devices::clock::{GuestClock, earliest};
use crate::devices::ioapic::Vioapic;
use crate::devices::irq::{GsiSink, gsi_to_isa_irq, isa_irq_to_gsi};
use crate::devices::layout::{IOAPIC_BASE, IOAPIC_ID, IOAPIC_SIZE, LAPIC_BASE, LAPIC_SIZE};
use crate::devices::pic::Pic;
use crate::devices::pit::Pit;
use crate::devices::vlapic::{ApicFault, Eoi, Vlapic};
use crate::hw::AccessSize;
use crate::memory::addr::GuestPhysAddr;

/// The VM's interrupt controllers and PIT.
#[derive(Debug, Clone)]
pub struct InterruptController {
    pub lapic: Vlapic,
    pub ioapic: Vioapic,
    pub pic: Pic,
    pub pit: Pit,
}

/// The routing half, borrowed apart from the PIT so that the PIT can drive it.
struct IrqLines<'a> {
    lapic: &'a mut Vlapic,
    ioapic: &'a mut Vioapic,
    pic: &'a mut Pic,
}

impl GsiSink for IrqLines<'_> {
    fn set_level(&mut self, gsi: u32, high: bool) {
        self.ioapic.set_level(gsi, high, self.lapic);
        if let Some(irq) = gsi_to_isa_irq(gsi) {
            self.pic.set_irq(irq, high);
        }
    }
}

/// Retires the level-triggered EOIs the guest wrote into the IOAPIC.
fn forward_eois(lapic: &mut Vlapic, ioapic: &mut Vioapic) {
    while let Some(vector) = lapic.take_eoi_broadcast() {
        ioapic.eoi(vector, lapic);
    }
}

impl InterruptController {
    /// One vCPU (APIC ID 0, the BSP) and the IOAPIC with ID [`IOAPIC_ID`].
    pub fn new(clock: GuestClock) -> InterruptController {
        InterruptController {
            lapic: Vlapic::new(0, true, clock),
            ioapic: Vioapic::new(IOAPIC_ID),
            pic: Pic::new(),
            pit: Pit::new(clock),
        }
    }

    fn lines(&mut self) -> IrqLines<'_> {
        IrqLines { lapic: &mut self.lapic, ioapic: &mut self.ioapic, pic: &mut self.pic }
    }

    /// Drives ISA IRQ `irq` through its GSI (and 8259 input).
    pub fn set_isa_irq(&mut self, irq: u8, high: bool) {
        if let Some(gsi) = isa_irq_to_gsi(irq) {
            self.set_level(gsi, high);
        }
    }

    // ---- Time -----------------------------------------------------------------------

    /// Fires every timer due at `now`.
    pub fn tick(&mut self, now: u64) {
        self.lapic.tick(now);
        let InterruptController { lapic, ioapic, pic, pit } = self;
        pit.tick(now, &mut IrqLines { lapic, ioapic, pic });
    }

    /// The earliest timer deadline, in guest TSC.
    pub fn next_deadline(&self) -> Option<u64> {
        earliest(self.lapic.next_deadline(), self.pit.next_deadline())
    }

    // ---- Interrupt delivery ---------------------------------------------------------

    /// The 8259's vector, when LINT0 passes ExtINT through and the 8259 requests.
    fn extint_vector(&self) -> Option<u8> {
        if self.lapic.accepts_extint() { self.pic.pending_vector() } else { None }
    }

    /// The vector the vCPU would take next, if any. ExtINT from the 8259 comes first
    /// and is not subject to the TPR; otherwise the local APIC decides.
    pub fn pending_vector(&self) -> Option<u8> {
        self.extint_vector().or_else(|| self.lapic.pending_vector())
    }

    /// The INTA cycle: returns the vector to inject now and records it as taken
    /// (8259 acknowledge, or LAPIC IRR → ISR).
    pub fn take_interrupt(&mut self) -> Option<u8> {
        if self.extint_vector().is_some() {
            return Some(self.pic.acknowledge());
        }
        let vector = self.lapic.pending_vector()?;
        self.lapic.acknowledge(vector).then_some(vector)
    }

    /// Whether an NMI is requested; clears the request.
    pub fn take_nmi(&mut self) -> bool {
        self.lapic.take_nmi()
    }

    /// An EOI not written through the APIC registers (e.g. a paravirtual EOI):
    /// retires the highest in-service vector and tells the IOAPIC if it was level.
    pub fn eoi(&mut self) -> Option<Eoi> {
        let eoi = self.lapic.eoi()?;
        if eoi.level {
            self.ioapic.eoi(eoi.vector, &mut self.lapic);
        }
        Some(eoi)
    }

    /// What the guest's next EOI would retire; an 8259 request counts as requested.
    pub fn eoi_outlook(&self) -> crate::devices::vlapic::EoiOutlook {
        let mut outlook = self.lapic.eoi_outlook();
        outlook.requested |= self.extint_vector().is_some();
        outlook
    }

    // ---- MSRs -----------------------------------------------------------------------

    /// RDMSR: `None` if `msr` is not the APIC's (IA32_APIC_BASE, IA32_TSC_DEADLINE,
    /// x2APIC 0x800-0x8FF); `Some(Err)` means inject #GP(0).
    pub fn read_msr(&mut self, msr: u32, now: u64) -> Option<Result<u64, ApicFault>> {
        Vlapic::handles_msr(msr).then(|| self.lapic.read_msr(msr, now))
    }

    /// WRMSR, as [`read_msr`](Self::read_msr). EOIs reach the IOAPIC.
    pub fn write_msr(&mut self, msr: u32, value: u64, now: u64) -> Option<Result<(), ApicFault>> {
        if !Vlapic::handles_msr(msr) {
            return None;
        }
        let result = self.lapic.write_msr(msr, value, now);
        forward_eois(&mut self.lapic, &mut self.ioapic);
        Some(result)
    }

    // ---- MMIO and ports -------------------------------------------------------------

    /// Whether the controller owns guest-physical `gpa`.
    pub fn claims_mmio(gpa: u64) -> bool {
        in_window(gpa, LAPIC_BASE, LAPIC_SIZE).is_some() || in_window(gpa, IOAPIC_BASE, IOAPIC_SIZE).is_some()
    }

    /// An MMIO read; `None` if `gpa` is not the controller's.
    pub fn mmio_read(&mut self, gpa: u64, size: AccessSize, now: u64) -> Option<u64> {
        mmio_read(&mut self.lapic, &mut self.ioapic, gpa, size, now)
    }

    /// An MMIO write; `false` if `gpa` is not the controller's.
    pub fn mmio_write(&mut self, gpa: u64, size: AccessSize, value: u64, now: u64) -> bool {
        mmio_write(&mut self.lapic, &mut self.ioapic, gpa, size, value, now)
    }

    /// Whether the controller owns `port` (8259s, ELCR, PIT, port 0x61).
    pub fn claims_port(port: u16) -> bool {
        Pic::claims_port(port) || Pit::claims_port(port)
    }

    /// A port read; `None` if `port` is not the controller's. Wider accesses read
    /// consecutive byte ports, as the ISA bus splits them.
    pub fn port_read(&mut self, port: u16, size: AccessSize, now: u64) -> Option<u32> {
        port_read(&mut self.pic, &mut self.pit, port, size, now)
    }

    /// A port write; `false` if `port` is not the controller's.
    pub fn port_write(&mut self, port: u16, size: AccessSize, value: u32, now: u64) -> bool {
        port_write(&mut self.pic, &mut self.pit, port, size, value, now)
    }

    /// The VM's buses with this controller in front, for exit handling that takes
    /// `&mut dyn MmioBus` and `&mut dyn PortBus`. Accesses the controller does not
    /// claim go to `mmio` and `ports`.
    pub fn buses<'a>(
        &'a mut self,
        now: u64,
        mmio: &'a mut dyn MmioBus,
        ports: &'a mut dyn PortBus,
    ) -> (IrqMmio<'a>, IrqPorts<'a>) {
        let InterruptController { lapic, ioapic, pic, pit } = self;
        (IrqMmio { lapic, ioapic, now, next: mmio }, IrqPorts { pic, pit, now, next: ports })
    }
}

impl GsiSink for InterruptController {
    fn set_level(&mut self, gsi: u32, high: bool) {
        self.lines().set_level(gsi, high);
    }
}

/// `gpa`'s offset in `[base, base + size)`.
fn in_window(gpa: u64, base: u64, size: u64) -> Option<u64> {
    gpa.checked_sub(base).filter(|&off| off < size)
}

fn mmio_read(lapic: &mut Vlapic, ioapic: &mut Vioapic, gpa: u64, size: AccessSize, now: u64) -> Option<u64> {
    if let Some(off) = in_window(gpa, LAPIC_BASE, LAPIC_SIZE) {
        Some(lapic.mmio_read(off, size, now))
    } else {
        in_window(gpa, IOAPIC_BASE, IOAPIC_SIZE).map(|off| ioapic.mmio_read(off, size))
    }
}

fn mmio_write(lapic: &mut Vlapic, ioapic: &mut Vioapic, gpa: u64, size: AccessSize, value: u64, now: u64) -> bool {
    if let Some(off) = in_window(gpa, LAPIC_BASE, LAPIC_SIZE) {
        lapic.mmio_write(off, size, value, now);
        forward_eois(lapic, ioapic);
    } else if let Some(off) = in_window(gpa, IOAPIC_BASE, IOAPIC_SIZE) {
        ioapic.mmio_write(off, size, value);
        ioapic.service(lapic);
    } else {
        return false;
    }
    true
}

fn port_read(pic: &mut Pic, pit: &mut Pit, port: u16, size: AccessSize, now: u64) -> Option<u32> {
    if !InterruptController::claims_port(port) {
        return None;
    }
    let mut value = 0u32;
    for i in 0..size.bytes() {
        let p = port.wrapping_add(u16::from(i));
        let byte = if Pic::claims_port(p) {
            pic.read_port(p)
        } else if Pit::claims_port(p) {
            pit.read_port(p, now)
        } else {
            0xFF
        };
        value |= u32::from(byte).wrapping_shl(u32::from(i).wrapping_mul(8));
    }
    Some(value)
}

fn port_write(pic: &mut Pic, pit: &mut Pit, port: u16, size: AccessSize, value: u32, now: u64) -> bool {
    if !InterruptController::claims_port(port) {
        return false;
    }
    for i in 0..size.bytes() {
        let p = port.wrapping_add(u16::from(i));
        let byte = value.wrapping_shr(u32::from(i).wrapping_mul(8)) as u8;
        if Pic::claims_port(p) {
            pic.write_port(p, byte);
        } else if Pit::claims_port(p) {
            pit.write_port(p, byte, now);
        }
    }
    true
}

/// The MMIO side of [`InterruptController::buses`]: the APIC page and the IOAPIC,
/// then the VM's bus.
pub struct IrqMmio<'a> {
    lapic: &'a mut Vlapic,
    ioapic: &'a mut Vioapic,
    now: u64,
    next: &'a mut dyn MmioBus,
}

/// The port side of [`InterruptController::buses`]: 8259s, ELCR, PIT and port 0x61,
/// then the VM's bus.
pub struct IrqPorts<'a> {
    pic: &'a mut Pic,
    pit: &'a mut Pit,
    now: u64,
    next: &'a mut dyn PortBus,
}

impl core::fmt::Debug for IrqMmio<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IrqMmio").field("now", &self.now).finish_non_exhaustive()
    }
}

impl core::fmt::Debug for IrqPorts<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IrqPorts").field("now", &self.now).finish_non_exhaustive()
    }
}

impl MmioBus for IrqMmio<'_> {
    fn read(&mut self, gpa: GuestPhysAddr, size: AccessSize) -> u64 {
        match mmio_read(self.lapic, self.ioapic, gpa.raw(), size, self.now) {
            Some(v) => v & size.mask(),
            None => self.next.read(gpa, size),
        }
    }
    fn write(&mut self, gpa: GuestPhysAddr, size: AccessSize, value: u64) {
        if !mmio_write(self.lapic, self.ioapic, gpa.raw(), size, value & size.mask(), self.now) {
            self.next.write(gpa, size, value);
        }
    }
    fn claims(&self, gpa: GuestPhysAddr) -> bool {
        InterruptController::claims_mmio(gpa.raw()) || self.next.claims(gpa)
    }
}

impl PortBus for IrqPorts<'_> {
    fn read(&mut self, port: u16, size: AccessSize) -> u32 {
        match port_read(self.pic, self.pit, port, size, self.now) {
            Some(v) => v & size.mask() as u32,
            None => self.next.read(port, size),
        }
    }
    fn write(&mut self, port: u16, size: AccessSize, value: u32) {
        if !port_write(self.pic, self.pit, port, size, value, self.now) {
            self.next.write(port, size, value);
        }
    }
}

#[cfg(test)]
mod tests;
