//! The VM's interrupt controllers and platform timers as one object: a local APIC per
//! vCPU, the IOAPIC, the 8259 pair (with ELCR) and the 8254 PIT, with the legacy routing
//! between them (ISA IRQ0 → GSI 2, IRQ 1 and 3..=15 → GSI 1 and 3..=15, each ISA line
//! also to its 8259 input; LAPIC EOIs of level-triggered vectors back to the IOAPIC).
//!
//! What the vCPU loop calls, with `now` = the guest TSC at that moment and `vcpu` the
//! index of the vCPU that exited (its local APIC; the 8259's ExtINT reaches vCPU 0,
//! the BSP, only):
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
use crate::devices::ipi::{ApicSet, route_outgoing};
use crate::devices::irq::{ApicSink, GsiSink, gsi_to_isa_irq, isa_irq_to_gsi};
use crate::devices::layout::{IOAPIC_BASE, IOAPIC_ID, IOAPIC_SIZE, LAPIC_BASE, LAPIC_SIZE};
use crate::devices::pic::Pic;
use crate::devices::pit::Pit;
use crate::devices::vlapic::ipi_latency::IpiLatency;
use crate::devices::vlapic::{ApicFault, Eoi, StartupSignals, Vlapic};
use crate::hw::AccessSize;
use crate::memory::addr::GuestPhysAddr;
use alloc::vec::Vec;

/// The VM's interrupt controllers and PIT.
#[derive(Debug, Clone)]
pub struct InterruptController {
    /// One per vCPU, indexed by vCPU; APIC ID = index, vCPU 0 is the BSP.
    pub lapics: Vec<Vlapic>,
    pub ioapic: Vioapic,
    pub pic: Pic,
    pub pit: Pit,
    /// vCPUs that received an IPI from a sibling since [`Self::take_kicked`] (bit per vCPU).
    kicked: u32,
}

/// The routing half, borrowed apart from the PIT so that the PIT can drive it.
struct IrqLines<'a> {
    apics: ApicSet<'a>,
    ioapic: &'a mut Vioapic,
    pic: &'a mut Pic,
}

impl GsiSink for IrqLines<'_> {
    fn set_level(&mut self, gsi: u32, high: bool) {
        self.ioapic.set_level(gsi, high, &mut self.apics);
        if let Some(irq) = gsi_to_isa_irq(gsi) {
            self.pic.set_irq(irq, high);
        }
    }
}

/// Retires the level-triggered EOIs vCPU `vcpu` wrote into the IOAPIC, and sends the
/// IPI it wrote into its ICR (if it did) to the other vCPUs.
fn after_lapic_write(lapics: &mut [Vlapic], vcpu: usize, ioapic: &mut Vioapic, kicked: &mut u32) {
    *kicked |= route_outgoing(lapics, vcpu);
    while let Some(vector) = lapics.get_mut(vcpu).and_then(Vlapic::take_eoi_broadcast) {
        ioapic.eoi(vector, &mut ApicSet { lapics });
    }
}

impl InterruptController {
    /// `vcpus` local APICs (IDs 0.., vCPU 0 the BSP; at least one) and the IOAPIC with
    /// ID [`IOAPIC_ID`].
    pub fn new(clock: GuestClock, vcpus: u8) -> InterruptController {
        InterruptController {
            lapics: (0..vcpus.max(1)).map(|id| Vlapic::new(u32::from(id), id == 0, clock)).collect(),
            ioapic: Vioapic::new(IOAPIC_ID),
            pic: Pic::new(),
            pit: Pit::new(clock),
            kicked: 0,
        }
    }

    fn lines(&mut self) -> IrqLines<'_> {
        IrqLines { apics: ApicSet { lapics: &mut self.lapics }, ioapic: &mut self.ioapic, pic: &mut self.pic }
    }

    /// The local APIC of vCPU `vcpu`.
    pub fn lapic(&self, vcpu: usize) -> Option<&Vlapic> {
        self.lapics.get(vcpu)
    }

    /// How many vCPUs (local APICs) the VM has.
    pub fn vcpus(&self) -> usize {
        self.lapics.len()
    }

    /// The vCPUs that received an IPI (INIT and STARTUP included) from another vCPU
    /// since the last call (bit per vCPU index).
    pub fn take_kicked(&mut self) -> u32 {
        core::mem::take(&mut self.kicked)
    }

    /// An MSI (or another message on the APIC bus) for whichever vCPUs it names;
    /// whether one took it.
    pub fn deliver_message(&mut self, msg: &crate::devices::irq::ApicMessage) -> bool {
        ApicSet { lapics: &mut self.lapics }.deliver(msg)
    }

    /// The INIT and STARTUP vCPU `vcpu` received since the last call.
    pub fn take_startup(&mut self, vcpu: usize) -> StartupSignals {
        self.lapics.get_mut(vcpu).map(Vlapic::take_startup).unwrap_or_default()
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
        for lapic in &mut self.lapics {
            lapic.tick(now);
        }
        let InterruptController { lapics, ioapic, pic, pit, .. } = self;
        pit.tick(now, &mut IrqLines { apics: ApicSet { lapics }, ioapic, pic });
    }

    /// The earliest timer deadline of any vCPU's APIC or the PIT, in guest TSC.
    pub fn next_deadline(&self) -> Option<u64> {
        let lapics = self.lapics.iter().filter_map(Vlapic::next_deadline).min();
        earliest(lapics, self.pit.next_deadline())
    }

    /// The earliest timer deadline that can interrupt a vCPU for which `counts` holds:
    /// those vCPUs' APICs and the PIT (routed to whichever vCPU the guest chose), in
    /// guest TSC.
    pub fn next_deadline_among(&self, counts: impl Fn(usize) -> bool) -> Option<u64> {
        let lapics =
            self.lapics.iter().enumerate().filter(|(i, _)| counts(*i)).filter_map(|(_, l)| l.next_deadline()).min();
        earliest(lapics, self.pit.next_deadline())
    }

    // ---- Interrupt delivery ---------------------------------------------------------

    /// The 8259's vector, when the BSP's LINT0 passes ExtINT through and the 8259
    /// requests (only vCPU 0's LINT0 is wired to the 8259).
    fn extint_vector(&self, vcpu: usize) -> Option<u8> {
        let wired = vcpu == 0 && self.lapics.first().is_some_and(Vlapic::accepts_extint);
        if wired { self.pic.pending_vector() } else { None }
    }

    /// The vector vCPU `vcpu` would take next, if any. ExtINT from the 8259 comes
    /// first and is not subject to the TPR; otherwise the local APIC decides.
    pub fn pending_vector(&self, vcpu: usize) -> Option<u8> {
        self.extint_vector(vcpu).or_else(|| self.lapics.get(vcpu).and_then(Vlapic::pending_vector))
    }

    /// The INTA cycle of vCPU `vcpu`: returns the vector to inject now and records it
    /// as taken (8259 acknowledge, or LAPIC IRR → ISR).
    pub fn take_interrupt(&mut self, vcpu: usize) -> Option<u8> {
        if self.extint_vector(vcpu).is_some() {
            return Some(self.pic.acknowledge());
        }
        let lapic = self.lapics.get_mut(vcpu)?;
        let vector = lapic.pending_vector()?;
        lapic.acknowledge(vector).then_some(vector)
    }

    /// Whether an NMI is requested for vCPU `vcpu`; clears the request.
    pub fn take_nmi(&mut self, vcpu: usize) -> bool {
        self.lapics.get_mut(vcpu).is_some_and(Vlapic::take_nmi)
    }

    /// An EOI of vCPU `vcpu` not written through the APIC registers (a paravirtual
    /// EOI), seen at guest time `now`: retires its highest in-service vector and tells
    /// the IOAPIC if it was level.
    pub fn eoi(&mut self, vcpu: usize, now: u64) -> Option<Eoi> {
        let eoi = self.lapics.get_mut(vcpu)?.paravirtual_eoi(now)?;
        if eoi.level {
            self.ioapic.eoi(eoi.vector, &mut ApicSet { lapics: &mut self.lapics });
        }
        Some(eoi)
    }

    /// How long the fixed IPIs between the VM's vCPUs took, all receivers together.
    pub fn ipi_latency(&self) -> IpiLatency {
        self.lapics.iter().map(Vlapic::ipi_latency).fold(IpiLatency::default(), IpiLatency::merged)
    }

    /// What vCPU `vcpu`'s next EOI would retire; an 8259 request counts as requested.
    pub fn eoi_outlook(&self, vcpu: usize) -> crate::devices::vlapic::EoiOutlook {
        let mut outlook = self.lapics.get(vcpu).map(Vlapic::eoi_outlook).unwrap_or_default();
        outlook.requested |= self.extint_vector(vcpu).is_some();
        outlook
    }

    // ---- MSRs -----------------------------------------------------------------------

    /// RDMSR by vCPU `vcpu`: `None` if `msr` is not the APIC's (IA32_APIC_BASE,
    /// IA32_TSC_DEADLINE, x2APIC 0x800-0x8FF); `Some(Err)` means inject #GP(0).
    pub fn read_msr(&mut self, vcpu: usize, msr: u32, now: u64) -> Option<Result<u64, ApicFault>> {
        if !Vlapic::handles_msr(msr) {
            return None;
        }
        Some(self.lapics.get_mut(vcpu).ok_or(ApicFault).and_then(|l| l.read_msr(msr, now)))
    }

    /// WRMSR, as [`read_msr`](Self::read_msr). EOIs reach the IOAPIC, IPIs the other vCPUs.
    pub fn write_msr(&mut self, vcpu: usize, msr: u32, value: u64, now: u64) -> Option<Result<(), ApicFault>> {
        if !Vlapic::handles_msr(msr) {
            return None;
        }
        let result = self.lapics.get_mut(vcpu).ok_or(ApicFault).and_then(|l| l.write_msr(msr, value, now));
        after_lapic_write(&mut self.lapics, vcpu, &mut self.ioapic, &mut self.kicked);
        Some(result)
    }

    // ---- MMIO and ports -------------------------------------------------------------

    /// Whether the controller owns guest-physical `gpa`.
    pub fn claims_mmio(gpa: u64) -> bool {
        in_window(gpa, LAPIC_BASE, LAPIC_SIZE).is_some() || in_window(gpa, IOAPIC_BASE, IOAPIC_SIZE).is_some()
    }

    /// An MMIO read by vCPU `vcpu` (the APIC page is its own); `None` if `gpa` is not
    /// the controller's.
    pub fn mmio_read(&mut self, vcpu: usize, gpa: u64, size: AccessSize, now: u64) -> Option<u64> {
        mmio_read(&mut self.apic_view(vcpu), gpa, size, now)
    }

    /// An MMIO write by vCPU `vcpu`; `false` if `gpa` is not the controller's.
    pub fn mmio_write(&mut self, vcpu: usize, gpa: u64, size: AccessSize, value: u64, now: u64) -> bool {
        mmio_write(&mut self.apic_view(vcpu), gpa, size, value, now)
    }

    /// The APICs as vCPU `vcpu` reaches them over MMIO.
    fn apic_view(&mut self, vcpu: usize) -> ApicView<'_> {
        ApicView { lapics: &mut self.lapics, vcpu, ioapic: &mut self.ioapic, kicked: &mut self.kicked }
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

    /// The VM's buses with this controller in front, as vCPU `vcpu` sees them, for
    /// exit handling that takes `&mut dyn MmioBus` and `&mut dyn PortBus`. Accesses
    /// the controller does not claim go to `mmio` and `ports`.
    pub fn buses<'a>(
        &'a mut self,
        vcpu: usize,
        now: u64,
        mmio: &'a mut dyn MmioBus,
        ports: &'a mut dyn PortBus,
    ) -> (IrqMmio<'a>, IrqPorts<'a>) {
        let InterruptController { lapics, ioapic, pic, pit, kicked } = self;
        (
            IrqMmio { apics: ApicView { lapics, vcpu, ioapic, kicked }, now, next: mmio },
            IrqPorts { pic, pit, now, next: ports },
        )
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

/// The APIC page of one vCPU and the IOAPIC, with every vCPU's APIC behind them.
struct ApicView<'a> {
    lapics: &'a mut [Vlapic],
    vcpu: usize,
    ioapic: &'a mut Vioapic,
    kicked: &'a mut u32,
}

fn mmio_read(view: &mut ApicView<'_>, gpa: u64, size: AccessSize, now: u64) -> Option<u64> {
    if let Some(off) = in_window(gpa, LAPIC_BASE, LAPIC_SIZE) {
        Some(view.lapics.get_mut(view.vcpu).map_or(0, |l| l.mmio_read(off, size, now)))
    } else {
        in_window(gpa, IOAPIC_BASE, IOAPIC_SIZE).map(|off| view.ioapic.mmio_read(off, size))
    }
}

fn mmio_write(view: &mut ApicView<'_>, gpa: u64, size: AccessSize, value: u64, now: u64) -> bool {
    if let Some(off) = in_window(gpa, LAPIC_BASE, LAPIC_SIZE) {
        if let Some(lapic) = view.lapics.get_mut(view.vcpu) {
            lapic.mmio_write(off, size, value, now);
        }
        after_lapic_write(view.lapics, view.vcpu, view.ioapic, view.kicked);
    } else if let Some(off) = in_window(gpa, IOAPIC_BASE, IOAPIC_SIZE) {
        view.ioapic.mmio_write(off, size, value);
        view.ioapic.service(&mut ApicSet { lapics: view.lapics });
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
    apics: ApicView<'a>,
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
        match mmio_read(&mut self.apics, gpa.raw(), size, self.now) {
            Some(v) => v & size.mask(),
            None => self.next.read(gpa, size),
        }
    }
    fn write(&mut self, gpa: GuestPhysAddr, size: AccessSize, value: u64) {
        if !mmio_write(&mut self.apics, gpa.raw(), size, value & size.mask(), self.now) {
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
