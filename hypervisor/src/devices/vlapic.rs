//! A local APIC for one vCPU (SDM Vol. 3 ch. 11), in both of its access forms:
//! xAPIC over MMIO (a 4 KiB page at [`LAPIC_BASE`](super::layout::LAPIC_BASE), 32-bit
//! registers at 16-byte aligned offsets) and x2APIC over MSRs 0x800-0x8FF, switched by
//! IA32_APIC_BASE (MSR 0x1B). The timer runs in one-shot, periodic and TSC-deadline
//! modes (IA32_TSC_DEADLINE, MSR 0x6E0) on guest time.
//!
//! What the vCPU loop does with it:
//! - before entry, [`Vlapic::pending_vector`] says which vector (if any) is deliverable
//!   given IRR, ISR and TPR; when the vector is injected, [`Vlapic::acknowledge`] moves
//!   it from IRR to ISR;
//! - a guest EOI (MMIO 0xB0 or MSR 0x80B) retires the highest ISR vector; for a
//!   level-triggered one the vector is queued for [`Vlapic::take_eoi_broadcast`] so the
//!   VM can pass it to the IOAPIC (the [`InterruptController`] does this itself);
//! - [`Vlapic::next_deadline`] / [`Vlapic::tick`] drive the timer;
//! - CR8 is TPR[7:4]: [`Vlapic::tpr`]/[`Vlapic::set_tpr`] keep it in sync with V_TPR.
//!
//! The timer's input clock is [`APIC_TIMER_HZ`] (1 GHz, KVM's choice) before the
//! divider; CPUID 0x15/0x16 and kvmclock must report values consistent with it.
//!
//! Self-IPIs (shorthand, own destination, x2APIC SELF_IPI) are delivered here; the
//! part of an IPI meant for other APICs waits in [`Vlapic::take_outgoing`] for the
//! VM's interrupt controller, which offers it to the VM's other vCPUs (`super::ipi`)
//! and counts it as dropped when none takes it. INIT and STARTUP are never taken by
//! the sender itself; a receiver records them for the VM ([`Vlapic::take_startup`]). The APIC does not advertise EOI
//! broadcast suppression (version bit 24), so every level EOI reaches the IOAPIC.
//!
//! [`InterruptController`]: super::platform_irq::InterruptController
#![forbid(unsafe_code)]

use crate::devices::bus::MmioDevice;
use crate::devices::clock::GuestClock;
use crate::devices::irq::{ApicMessage, ApicSink, DeliveryMode};
use crate::devices::layout::LAPIC_BASE;
use crate::hw::AccessSize;

/// The local APIC's state.
#[derive(Debug, Clone)]
pub struct Vlapic {
    /// Initial APIC ID (CPUID.1:EBX[31:24], CPUID.0xB:EDX); the x2APIC ID.
    initial_id: u32,
    bsp: bool,
    mode: ApicMode,
    clock: GuestClock,
    /// The latest guest time seen, for the [`MmioDevice`] form, which has no `now`.
    now: u64,
    /// xAPIC ID register (bits 31:24 writable).
    id_reg: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    irr: VectorSet,
    isr: VectorSet,
    tmr: VectorSet,
    /// ESR as last latched by a write, and errors seen since.
    esr: u32,
    esr_pending: u32,
    icr_lo: u32,
    icr_hi: u32,
    lvt_timer: u32,
    lvt_thermal: u32,
    lvt_perf: u32,
    lvt_lint0: u32,
    lvt_lint1: u32,
    lvt_error: u32,
    timer: ApicTimer,
    /// Level-triggered vectors EOI'd by the guest and not yet given to the IOAPIC.
    eoi_broadcasts: VectorSet,
    nmi_pending: bool,
    dropped_ipis: u64,
    /// The part of the last ICR write meant for other APICs, until the controller takes it.
    outgoing: Option<OutgoingIpi>,
    /// INIT and STARTUP received from another vCPU, until the VM takes them.
    startup: StartupSignals,
    /// Timing of fixed IPIs from other vCPUs (send → injection → EOI).
    ipi_latency: IpiLatency,
}

/// An IPI for APICs other than its sender (see [`Vlapic::take_outgoing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingIpi {
    /// Vector, delivery mode and destination as the ICR gave them.
    pub msg: ApicMessage,
    /// The all-excluding-self or all-including-self shorthand: every other APIC.
    pub all_others: bool,
    /// The sender took it itself (a lowest-priority IPI then goes nowhere else).
    pub self_took: bool,
}

/// INIT and STARTUP IPIs an APIC received, for the VM to act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupSignals {
    /// An INIT arrived: the vCPU waits for a STARTUP.
    pub init: bool,
    /// The vector of the last STARTUP (the vCPU starts at `vector << 12`).
    pub sipi: Option<u8>,
}

/// IA32_APIC_BASE[11:10] (SDM Vol. 3 11.12.1, Table 11-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMode {
    /// EN = 0: globally disabled; the 8259's INTR goes straight to the CPU.
    Disabled,
    XApic,
    X2Apic,
}

/// The access must raise #GP(0) in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApicFault;

/// A retired in-service vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eoi {
    pub vector: u8,
    /// The TMR bit was set: the IOAPIC must see this EOI.
    pub level: bool,
}

/// LVT timer mode, bits 18:17 (SDM Vol. 3 11.5.1, Figure 11-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

#[derive(Debug, Clone, Copy, Default)]
struct ApicTimer {
    /// Initial count register.
    initial: u32,
    /// Divide configuration register.
    dcr: u32,
    /// Guest TSC at which the current count was last (re)loaded or re-timed.
    start: u64,
    /// Counts already done at `start` (non-zero only after a divider change).
    done_at_start: u32,
    /// When the timer next fires, in guest TSC.
    deadline: Option<u64>,
    /// IA32_TSC_DEADLINE as the guest sees it (0 once fired or disarmed).
    tsc_deadline: u64,
}

/// The timer's input clock before the divide configuration, in Hz.
pub const APIC_TIMER_HZ: u64 = 1_000_000_000;
/// Periodic mode never fires more often than this (10 kHz), whatever the guest
/// programs; the reported current count still follows the programmed rate.
pub const MIN_PERIODIC_NS: u64 = 100_000;

/// Register offsets in the xAPIC page (SDM Vol. 3 11.4.1, Table 11-1). The x2APIC MSR
/// of a register is `0x800 + offset / 16` (SDM Vol. 3 11.12.1.2, Table 11-6).
pub mod reg {
    pub const ID: u32 = 0x020;
    pub const VERSION: u32 = 0x030;
    pub const TPR: u32 = 0x080;
    pub const APR: u32 = 0x090;
    pub const PPR: u32 = 0x0A0;
    pub const EOI: u32 = 0x0B0;
    pub const RRD: u32 = 0x0C0;
    pub const LDR: u32 = 0x0D0;
    pub const DFR: u32 = 0x0E0;
    pub const SVR: u32 = 0x0F0;
    pub const ISR0: u32 = 0x100;
    pub const ISR7: u32 = 0x170;
    pub const TMR0: u32 = 0x180;
    pub const TMR7: u32 = 0x1F0;
    pub const IRR0: u32 = 0x200;
    pub const IRR7: u32 = 0x270;
    pub const ESR: u32 = 0x280;
    pub const ICR_LO: u32 = 0x300;
    pub const ICR_HI: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERF: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3E0;
    /// x2APIC only (MSR 0x83F).
    pub const SELF_IPI: u32 = 0x3F0;
}

/// MSR numbers (SDM Vol. 4 Table 2-2).
pub mod msr {
    pub const APIC_BASE: u32 = 0x1B;
    pub const TSC_DEADLINE: u32 = 0x6E0;
    pub const X2APIC_FIRST: u32 = 0x800;
    pub const X2APIC_LAST: u32 = 0x8FF;
    /// The one 64-bit x2APIC register.
    pub const X2APIC_ICR: u32 = 0x830;
}

/// Version 0x14 (integrated APIC), max LVT entry 5 (timer, thermal, perf, LINT0,
/// LINT1, error; no CMCI), no EOI-broadcast suppression (SDM Vol. 3 11.4.8).
pub const VERSION_VALUE: u32 = 0x14 | (5 << 16);

const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_EN: u64 = 1 << 11;
/// Base address bits 51:12.
const APIC_BASE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

const SVR_ENABLE: u32 = 1 << 8;
/// Vector and APIC software enable and focus checking (bit 9).
const SVR_WRITABLE: u32 = 0x3FF;

const LVT_MASKED: u32 = 1 << 16;
const LVT_VECTOR: u32 = 0xFF;
const LVT_TIMER_MODE_SHIFT: u32 = 17;
/// Writable LVT bits by register (SDM Vol. 3 11.5.1, Figure 11-8). Delivery status
/// and remote IRR are read-only.
const LVT_TIMER_WRITABLE: u32 = LVT_VECTOR | LVT_MASKED | (3 << LVT_TIMER_MODE_SHIFT);
const LVT_LINT_WRITABLE: u32 = LVT_VECTOR | 0x700 | (1 << 13) | (1 << 15) | LVT_MASKED;
const LVT_THERMAL_WRITABLE: u32 = LVT_VECTOR | 0x700 | LVT_MASKED;
const LVT_ERROR_WRITABLE: u32 = LVT_VECTOR | LVT_MASKED;

/// ICR low: vector, delivery mode, destination mode, level, trigger, shorthand (SDM
/// Vol. 3 11.6.1). Delivery status (bit 12) always reads 0: delivery is immediate.
const ICR_LO_WRITABLE: u32 = 0xFF | 0x700 | (1 << 11) | (1 << 14) | (1 << 15) | (3 << 18);
const ICR_LOGICAL: u32 = 1 << 11;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_SHORTHAND_SHIFT: u32 = 18;
const ICR_SHORTHAND_SELF: u32 = 1 << ICR_SHORTHAND_SHIFT;

/// ESR bits (SDM Vol. 3 11.5.3).
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

const TDCR_WRITABLE: u32 = 0xB;
/// DFR model field, bits 31:28: flat (0xF) or cluster (0x0).
const DFR_FLAT: u32 = 0xF;

/// The divisor selected by the divide configuration register (SDM Vol. 3 11.5.4,
/// Figure 11-10): bits 3 and 1:0 encode 2, 4, ..., 128, and 0b111 means 1.
pub fn timer_divisor(dcr: u32) -> u32 {
    let code = (dcr & 3) | ((dcr >> 1) & 4);
    if code == 7 { 1 } else { 2u32.wrapping_shl(code) }
}

/// How often a rate-limited message has been logged: at counts 1, 2, 4, 8, ...
fn log_now(count: u64) -> bool {
    count.is_power_of_two()
}

impl Vlapic {
    /// A local APIC after power-up: xAPIC mode, software-disabled, LVTs masked.
    pub fn new(initial_id: u32, bsp: bool, clock: GuestClock) -> Vlapic {
        let mut lapic = Vlapic {
            initial_id,
            bsp,
            mode: ApicMode::XApic,
            clock,
            now: 0,
            id_reg: 0,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xFF,
            irr: VectorSet::default(),
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            esr: 0,
            esr_pending: 0,
            icr_lo: 0,
            icr_hi: 0,
            lvt_timer: LVT_MASKED,
            lvt_thermal: LVT_MASKED,
            lvt_perf: LVT_MASKED,
            lvt_lint0: LVT_MASKED,
            lvt_lint1: LVT_MASKED,
            lvt_error: LVT_MASKED,
            timer: ApicTimer::default(),
            eoi_broadcasts: VectorSet::default(),
            nmi_pending: false,
            dropped_ipis: 0,
            outgoing: None,
            startup: StartupSignals::default(),
            ipi_latency: IpiLatency::default(),
        };
        lapic.reset_registers();
        lapic
    }

    /// Power-up register state (SDM Vol. 3 11.4.7.1); the mode and ID stay.
    fn reset_registers(&mut self) {
        self.id_reg = self.initial_id.wrapping_shl(24);
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = u32::MAX;
        self.svr = 0xFF;
        self.irr = VectorSet::default();
        self.isr = VectorSet::default();
        self.tmr = VectorSet::default();
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_lo = 0;
        self.icr_hi = 0;
        self.lvt_timer = LVT_MASKED;
        self.lvt_thermal = LVT_MASKED;
        self.lvt_perf = LVT_MASKED;
        self.lvt_lint0 = LVT_MASKED;
        self.lvt_lint1 = LVT_MASKED;
        self.lvt_error = LVT_MASKED;
        self.timer = ApicTimer::default();
        self.eoi_broadcasts = VectorSet::default();
        self.nmi_pending = false;
        self.outgoing = None;
        self.ipi_latency.forget();
        if self.mode == ApicMode::X2Apic {
            self.ldr = self.x2apic_ldr();
        }
    }

    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    pub fn initial_id(&self) -> u32 {
        self.initial_id
    }

    /// Globally and software enabled: the APIC accepts and delivers interrupts.
    pub fn is_enabled(&self) -> bool {
        self.mode != ApicMode::Disabled && self.svr & SVR_ENABLE != 0
    }

    /// The latest guest time this APIC saw (an exit that reached it, or a tick).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// A fixed IPI another vCPU wrote into its ICR at guest time `sent_at` reached
    /// this APIC's IRR: timed until it is taken and retired.
    pub fn note_ipi_arrived(&mut self, vector: u8, sent_at: u64) {
        self.ipi_latency.arrived(vector, sent_at);
    }

    /// How long the IPIs this APIC received took to be taken and retired.
    pub fn ipi_latency(&self) -> IpiLatency {
        self.ipi_latency
    }

    /// IPIs to other APICs that no APIC took, so far.
    pub fn dropped_ipis(&self) -> u64 {
        self.dropped_ipis
    }

    /// The part of the last ICR write meant for other APICs, if any.
    pub fn take_outgoing(&mut self) -> Option<OutgoingIpi> {
        self.outgoing.take()
    }

    /// The controller found no APIC for an outgoing IPI.
    pub fn note_dropped_ipi(&mut self, ipi: &OutgoingIpi) {
        self.dropped_ipis = self.dropped_ipis.wrapping_add(1);
        if log_now(self.dropped_ipis) {
            log::debug!(
                target: "apic",
                "IPI {:?} vector {:#x} to {:#x} reached no APIC ({} dropped)",
                ipi.msg.delivery,
                ipi.msg.vector,
                ipi.msg.dest,
                self.dropped_ipis
            );
        }
    }

    /// An INIT from another vCPU (SDM Vol. 3 11.4.7.3, 9.4.4): the APIC's registers go
    /// back to their power-up state (its ID and mode stay) and the vCPU waits for a
    /// STARTUP. A STARTUP received earlier is forgotten.
    pub fn receive_init(&mut self) {
        self.reset_registers();
        self.startup = StartupSignals { init: true, sipi: None };
    }

    /// A STARTUP from another vCPU; only a vCPU waiting after an INIT acts on it.
    pub fn receive_sipi(&mut self, vector: u8) {
        self.startup.sipi = Some(vector);
    }

    /// The INIT and STARTUP received since the last call.
    pub fn take_startup(&mut self) -> StartupSignals {
        core::mem::take(&mut self.startup)
    }

    /// The spurious-interrupt vector (SVR[7:0]).
    pub fn spurious_vector(&self) -> u8 {
        self.svr as u8
    }

    // ---- IA32_APIC_BASE -------------------------------------------------------------

    /// IA32_APIC_BASE: base 0xFEE00000, BSP, EXTD and EN.
    pub fn apic_base(&self) -> u64 {
        let mut v = LAPIC_BASE;
        if self.bsp {
            v |= APIC_BASE_BSP;
        }
        match self.mode {
            ApicMode::Disabled => {}
            ApicMode::XApic => v |= APIC_BASE_EN,
            ApicMode::X2Apic => v |= APIC_BASE_EN | APIC_BASE_EXTD,
        }
        v
    }

    /// WRMSR IA32_APIC_BASE with the mode transitions of SDM Vol. 3 11.12.5 (Figure
    /// 11-26): xAPIC ↔ disabled, xAPIC → x2APIC, x2APIC → disabled. x2APIC → xAPIC,
    /// disabled → x2APIC, EN=0 with EXTD=1, reserved bits and a moved base fault.
    /// Disabling resets the registers; entering x2APIC mode derives the x2APIC LDR.
    pub fn set_apic_base(&mut self, value: u64) -> Result<(), ApicFault> {
        let allowed = APIC_BASE_ADDR_MASK | APIC_BASE_BSP | APIC_BASE_EXTD | APIC_BASE_EN;
        if value & !allowed != 0 || value & APIC_BASE_ADDR_MASK != LAPIC_BASE {
            return Err(ApicFault);
        }
        let new = match (value & APIC_BASE_EN != 0, value & APIC_BASE_EXTD != 0) {
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
            (false, true) => return Err(ApicFault),
        };
        match (self.mode, new) {
            (old, new) if old == new => {}
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic) => return Err(ApicFault),
            (_, ApicMode::Disabled) => {
                self.reset_registers();
                self.mode = ApicMode::Disabled;
            }
            (_, ApicMode::XApic) => self.mode = ApicMode::XApic,
            (_, ApicMode::X2Apic) => {
                self.mode = ApicMode::X2Apic;
                self.ldr = self.x2apic_ldr();
            }
        }
        // The BSP flag is fixed for this vCPU; writes of either value are accepted.
        Ok(())
    }

    /// x2APIC logical ID: cluster (ID[19:4]) in bits 31:16, 1 << ID[3:0] below (SDM
    /// Vol. 3 11.12.10.2).
    fn x2apic_ldr(&self) -> u32 {
        ((self.initial_id >> 4) << 16) | 1u32.wrapping_shl(self.initial_id & 0xF)
    }

    // ---- Priorities and delivery ----------------------------------------------------

    /// Task priority (TPR[7:0]); CR8 is TPR[7:4].
    pub fn tpr(&self) -> u8 {
        self.tpr as u8
    }

    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = u32::from(tpr);
    }

    /// Processor priority (SDM Vol. 3 11.8.3.1): TPR if its class is at least that of
    /// the highest in-service vector, else that vector's class.
    pub fn ppr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        let tpr = self.tpr();
        if tpr >> 4 >= isrv >> 4 { tpr } else { isrv & 0xF0 }
    }

    /// The vector the vCPU should take next: the highest IRR vector whose priority
    /// class is above the PPR's; `None` while the APIC is disabled.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.is_enabled() {
            return None;
        }
        let v = self.irr.highest()?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// The vCPU takes `vector` (the INTA cycle): IRR → ISR. `false`, with nothing
    /// changed, if `vector` was not requested; the caller must then not inject it.
    pub fn acknowledge(&mut self, vector: u8) -> bool {
        if !self.irr.contains(vector) {
            return false;
        }
        self.irr.clear(vector);
        self.isr.set(vector);
        self.ipi_latency.taken(vector, self.now);
        true
    }

    /// End of interrupt: retires the highest in-service vector. Returns it, with
    /// whether it was level-triggered (then the IOAPIC must see it). Does not queue an
    /// EOI broadcast; a guest write of the EOI register does.
    pub fn eoi(&mut self) -> Option<Eoi> {
        let vector = self.isr.take_highest()?;
        Some(Eoi { vector, level: self.tmr.contains(vector) })
    }

    /// An EOI the guest signalled without writing the register (paravirtual EOI),
    /// seen by the hypervisor at guest time `now`: as [`Self::eoi`].
    pub fn paravirtual_eoi(&mut self, now: u64) -> Option<Eoi> {
        let eoi = self.eoi()?;
        self.ipi_latency.retired(eoi.vector, now, EoiKind::Paravirtual);
        Some(eoi)
    }

    /// What the guest's next EOI would retire (for the paravirtual EOI offer).
    pub fn eoi_outlook(&self) -> EoiOutlook {
        let top = self.isr.highest();
        EoiOutlook {
            in_service: top.is_some(),
            requested: self.irr.highest().is_some(),
            level: top.is_some_and(|v| self.tmr.contains(v)),
        }
    }

    /// The next level-triggered vector the guest EOI'd, for `Ioapic::eoi`.
    pub fn take_eoi_broadcast(&mut self) -> Option<u8> {
        self.eoi_broadcasts.take_highest()
    }

    /// Whether an NMI waits for this vCPU.
    pub fn nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    /// Whether the guest asked for an NMI (ICR/LVT NMI delivery); clears the request.
    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.nmi_pending)
    }

    /// A fixed interrupt arrives: sets IRR (and TMR for level-triggered). Dropped,
    /// returning `false`, while the APIC is disabled; vectors 0-15 are illegal and
    /// raise a receive-illegal-vector error instead (SDM Vol. 3 11.5.3).
    pub fn accept_interrupt(&mut self, vector: u8, level_triggered: bool) -> bool {
        if !self.is_enabled() {
            return false;
        }
        if vector < 16 {
            self.signal_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.irr.set(vector);
        if level_triggered {
            self.tmr.set(vector);
        } else {
            self.tmr.clear(vector);
        }
        true
    }

    /// Records an APIC error and raises the LVT error interrupt if it is unmasked.
    fn signal_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let vector = self.lvt_error as u8;
        if self.lvt_error & LVT_MASKED == 0 && vector >= 16 && self.is_enabled() {
            self.irr.set(vector);
            self.tmr.clear(vector);
        }
    }

    /// Whether the LINT0 pin passes the 8259's INTR through as ExtINT: LVT LINT0
    /// unmasked with delivery mode ExtINT, or the whole APIC globally disabled (SDM
    /// Vol. 3 11.4.3: the processor then has no APIC between it and the 8259).
    pub fn accepts_extint(&self) -> bool {
        match self.mode {
            ApicMode::Disabled => true,
            _ => {
                self.is_enabled()
                    && self.lvt_lint0 & LVT_MASKED == 0
                    && DeliveryMode::from_bits(self.lvt_lint0 >> 8) == DeliveryMode::ExtInt
            }
        }
    }

    /// Whether a message addressed to `dest` reaches this APIC (SDM Vol. 3 11.6.2;
    /// 11.12.10 for x2APIC).
    pub fn matches_destination(&self, dest: u32, logical: bool, short_dest: bool) -> bool {
        match self.mode {
            ApicMode::Disabled => false,
            ApicMode::X2Apic => {
                let broadcast = if short_dest { 0xFF } else { u32::MAX };
                if dest == broadcast {
                    true
                } else if !logical {
                    dest == self.initial_id
                } else {
                    dest >> 16 == self.ldr >> 16 && dest & self.ldr & 0xFFFF != 0
                }
            }
            ApicMode::XApic => {
                let dest = dest & 0xFF;
                let ldr = self.ldr >> 24;
                if dest == 0xFF {
                    true
                } else if !logical {
                    dest == self.id_reg >> 24
                } else if self.dfr >> 28 == DFR_FLAT {
                    dest & ldr != 0
                } else {
                    dest >> 4 == ldr >> 4 && dest & ldr & 0xF != 0
                }
            }
        }
    }

    /// Sends the IPI in ICR (SDM Vol. 3 11.6.1). `dest` is ICR[63:56] in xAPIC mode,
    /// ICR[63:32] in x2APIC mode. This APIC's own share is delivered at once; the rest
    /// waits in [`Self::take_outgoing`]. An INIT level de-assert does nothing (SDM
    /// Vol. 3 11.6.1: not supported by Pentium 4 and later).
    fn send_ipi(&mut self, lo: u32, dest: u32) {
        let vector = lo as u8;
        let delivery = DeliveryMode::from_bits(lo >> 8);
        let logical = lo & ICR_LOGICAL != 0;
        let short_dest = self.mode != ApicMode::X2Apic;
        let (to_self, all_others) = match (lo >> ICR_SHORTHAND_SHIFT) & 3 {
            0 => (self.matches_destination(dest, logical, short_dest), false),
            1 => (true, false),
            2 => (true, true),
            _ => (false, true),
        };
        let level_assert = lo & ICR_LEVEL_ASSERT != 0;
        if delivery == DeliveryMode::Init && !level_assert {
            return;
        }
        let to_others = all_others || (lo >> ICR_SHORTHAND_SHIFT) & 3 == 0;
        let self_took = to_self && self.deliver_own_ipi(vector, delivery);
        if to_others {
            let msg = ApicMessage { vector, delivery, logical, dest, short_dest, level: false };
            self.outgoing = Some(OutgoingIpi { msg, all_others, self_took });
        }
    }

    /// This APIC's own share of an IPI it sends; whether it took it.
    fn deliver_own_ipi(&mut self, vector: u8, delivery: DeliveryMode) -> bool {
        match delivery {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if vector < 16 {
                    self.signal_error(ESR_SEND_ILLEGAL_VECTOR);
                    false
                } else {
                    self.accept_interrupt(vector, false)
                }
            }
            DeliveryMode::Nmi => {
                self.nmi_pending = true;
                true
            }
            other => {
                log::debug!(target: "apic", "self-IPI with delivery mode {other:?} ignored");
                false
            }
        }
    }

    /// Takes an IPI another vCPU of the VM sent (fixed, lowest priority, NMI, INIT,
    /// STARTUP); whether it was taken. Other delivery modes are ignored.
    pub fn receive_ipi(&mut self, msg: &ApicMessage) -> bool {
        match msg.delivery {
            DeliveryMode::Init => {
                self.receive_init();
                true
            }
            DeliveryMode::StartUp => {
                self.receive_sipi(msg.vector);
                true
            }
            _ => self.accept_message(msg),
        }
    }

    /// A fixed, lowest-priority or NMI message whose destination matched.
    fn accept_message(&mut self, msg: &ApicMessage) -> bool {
        match msg.delivery {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => self.accept_interrupt(msg.vector, msg.level),
            DeliveryMode::Nmi => {
                self.nmi_pending = true;
                true
            }
            other => {
                log::debug!(target: "apic", "message with delivery mode {other:?} not handled by the APIC");
                false
            }
        }
    }

    // ---- Registers ------------------------------------------------------------------

    /// An LVT value with read-only bits dropped, forced masked while software-disabled.
    fn lvt_value(&self, value: u32, writable: u32) -> u32 {
        let v = value & writable;
        if self.svr & SVR_ENABLE == 0 { v | LVT_MASKED } else { v }
    }

    /// Reads the register at xAPIC `offset`; `Err` if it does not exist (or is
    /// write-only) in the current mode.
    fn read_reg(&self, offset: u32, now: u64) -> Result<u32, ApicFault> {
        let x2 = self.mode == ApicMode::X2Apic;
        let index = (offset.wrapping_sub(reg::ISR0) >> 4) & 7;
        Ok(match offset {
            reg::ID if x2 => self.initial_id,
            reg::ID => self.id_reg,
            reg::VERSION => VERSION_VALUE,
            reg::TPR => self.tpr,
            reg::APR | reg::RRD if !x2 => 0,
            reg::PPR => u32::from(self.ppr()),
            reg::EOI if !x2 => 0,
            reg::LDR => self.ldr,
            reg::DFR if !x2 => self.dfr,
            reg::SVR => self.svr,
            reg::ISR0..=reg::ISR7 if offset & 0xF == 0 => self.isr.word(index),
            reg::TMR0..=reg::TMR7 if offset & 0xF == 0 => self.tmr.word(index),
            reg::IRR0..=reg::IRR7 if offset & 0xF == 0 => self.irr.word(index),
            reg::ESR => self.esr,
            reg::ICR_LO => self.icr_lo,
            reg::ICR_HI if !x2 => self.icr_hi,
            reg::LVT_TIMER => self.lvt_timer,
            reg::LVT_THERMAL => self.lvt_thermal,
            reg::LVT_PERF => self.lvt_perf,
            reg::LVT_LINT0 => self.lvt_lint0,
            reg::LVT_LINT1 => self.lvt_lint1,
            reg::LVT_ERROR => self.lvt_error,
            reg::TIMER_INITIAL => self.timer.initial,
            reg::TIMER_CURRENT => self.current_count(now),
            reg::TIMER_DIVIDE => self.timer.dcr,
            _ => return Err(ApicFault),
        })
    }

    /// Writes the register at xAPIC `offset`; `Err` if it does not exist, is read-only,
    /// or the value is invalid in the current mode. The xAPIC form ignores the `Err`.
    fn write_reg(&mut self, offset: u32, value: u32, now: u64) -> Result<(), ApicFault> {
        let x2 = self.mode == ApicMode::X2Apic;
        match offset {
            reg::ID if !x2 => self.id_reg = value & 0xFF00_0000,
            reg::TPR => self.tpr = value & 0xFF,
            reg::EOI => {
                // x2APIC: "WRMSR of a non-zero value causes #GP(0)" (Table 11-6).
                if x2 && value != 0 {
                    return Err(ApicFault);
                }
                if let Some(eoi) = self.eoi() {
                    self.ipi_latency.retired(eoi.vector, now, EoiKind::Register);
                    if eoi.level {
                        self.eoi_broadcasts.set(eoi.vector);
                    }
                }
            }
            reg::LDR if !x2 => self.ldr = value & 0xFF00_0000,
            reg::DFR if !x2 => self.dfr = value | 0x0FFF_FFFF,
            reg::SVR => {
                self.svr = value & SVR_WRITABLE;
                if self.svr & SVR_ENABLE == 0 {
                    for lvt in [
                        &mut self.lvt_timer,
                        &mut self.lvt_thermal,
                        &mut self.lvt_perf,
                        &mut self.lvt_lint0,
                        &mut self.lvt_lint1,
                        &mut self.lvt_error,
                    ] {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            reg::ESR => {
                if x2 && value != 0 {
                    return Err(ApicFault);
                }
                self.esr = core::mem::take(&mut self.esr_pending);
            }
            reg::ICR_LO if !x2 => {
                self.icr_lo = value & ICR_LO_WRITABLE;
                self.send_ipi(self.icr_lo, self.icr_hi >> 24);
            }
            reg::ICR_HI if !x2 => self.icr_hi = value & 0xFF00_0000,
            reg::LVT_TIMER => self.write_lvt_timer(value),
            reg::LVT_THERMAL => self.lvt_thermal = self.lvt_value(value, LVT_THERMAL_WRITABLE),
            reg::LVT_PERF => self.lvt_perf = self.lvt_value(value, LVT_THERMAL_WRITABLE),
            reg::LVT_LINT0 => self.lvt_lint0 = self.lvt_value(value, LVT_LINT_WRITABLE),
            reg::LVT_LINT1 => self.lvt_lint1 = self.lvt_value(value, LVT_LINT_WRITABLE),
            reg::LVT_ERROR => self.lvt_error = self.lvt_value(value, LVT_ERROR_WRITABLE),
            reg::TIMER_INITIAL => self.write_initial_count(value, now),
            reg::TIMER_DIVIDE => self.write_divide(value, now),
            reg::SELF_IPI if x2 => {
                if value > 0xFF {
                    return Err(ApicFault);
                }
                self.send_ipi(value | ICR_SHORTHAND_SELF, 0);
            }
            _ => return Err(ApicFault),
        }
        Ok(())
    }

    // ---- MSR form -------------------------------------------------------------------

    /// Whether RDMSR/WRMSR of `msr` belongs to the local APIC.
    pub fn handles_msr(msr: u32) -> bool {
        matches!(msr, msr::APIC_BASE | msr::TSC_DEADLINE | msr::X2APIC_FIRST..=msr::X2APIC_LAST)
    }

    /// RDMSR of IA32_APIC_BASE, IA32_TSC_DEADLINE or an x2APIC register.
    pub fn read_msr(&mut self, msr: u32, now: u64) -> Result<u64, ApicFault> {
        self.now = now;
        match msr {
            msr::APIC_BASE => Ok(self.apic_base()),
            msr::TSC_DEADLINE => Ok(self.tsc_deadline()),
            msr::X2APIC_FIRST..=msr::X2APIC_LAST if self.mode == ApicMode::X2Apic => {
                if msr == msr::X2APIC_ICR {
                    return Ok(u64::from(self.icr_hi) << 32 | u64::from(self.icr_lo));
                }
                self.read_reg(x2apic_offset(msr), now).map(u64::from)
            }
            _ => Err(ApicFault),
        }
    }

    /// WRMSR of IA32_APIC_BASE, IA32_TSC_DEADLINE or an x2APIC register.
    pub fn write_msr(&mut self, msr: u32, value: u64, now: u64) -> Result<(), ApicFault> {
        self.now = now;
        match msr {
            msr::APIC_BASE => self.set_apic_base(value),
            msr::TSC_DEADLINE => {
                self.set_tsc_deadline(value, now);
                Ok(())
            }
            msr::X2APIC_ICR if self.mode == ApicMode::X2Apic => {
                let lo = value as u32 & ICR_LO_WRITABLE;
                self.icr_lo = lo;
                self.icr_hi = (value >> 32) as u32;
                self.send_ipi(lo, self.icr_hi);
                Ok(())
            }
            msr::X2APIC_FIRST..=msr::X2APIC_LAST if self.mode == ApicMode::X2Apic => {
                let value = u32::try_from(value).map_err(|_| ApicFault)?;
                self.write_reg(x2apic_offset(msr), value, now)
            }
            _ => Err(ApicFault),
        }
    }

    // ---- MMIO form ------------------------------------------------------------------

    /// A read of the xAPIC page at `offset`. Registers are 32 bits at 16-byte aligned
    /// offsets; narrower reads inside those 4 bytes see the matching bytes, the rest of
    /// each 16-byte slot reads 0. Outside xAPIC mode the page reads all-ones.
    pub fn mmio_read(&mut self, offset: u64, size: AccessSize, now: u64) -> u64 {
        self.now = now;
        if self.mode != ApicMode::XApic {
            return size.mask();
        }
        let within = offset & 0xF;
        let Ok(reg_offset) = u32::try_from(offset & 0xFF0) else { return 0 };
        if offset >= 0x1000 || within >= 4 {
            return 0;
        }
        let value = self.read_reg(reg_offset, now).unwrap_or(0);
        u64::from(value.wrapping_shr((within as u32).wrapping_mul(8))) & size.mask()
    }

    /// A write to the xAPIC page. Only aligned 32-bit writes reach a register; others
    /// are dropped, as are writes to read-only or absent registers.
    pub fn mmio_write(&mut self, offset: u64, size: AccessSize, value: u64, now: u64) {
        self.now = now;
        if self.mode != ApicMode::XApic {
            return;
        }
        let reg_offset = match u32::try_from(offset) {
            Ok(o) if o < 0x1000 && o & 0xF == 0 && size == AccessSize::Dword => o,
            _ => {
                log::debug!(target: "apic", "dropping {}-byte APIC write at {offset:#x}", size.bytes());
                return;
            }
        };
        if self.write_reg(reg_offset, value as u32, now).is_err() {
            log::debug!(target: "apic", "ignoring write of {value:#x} to APIC register {reg_offset:#x}");
        }
    }
}

/// The xAPIC offset of an x2APIC MSR.
fn x2apic_offset(msr: u32) -> u32 {
    (msr & 0xFF) << 4
}

impl ApicSink for Vlapic {
    fn deliver(&mut self, msg: &ApicMessage) -> bool {
        self.matches_destination(msg.dest, msg.logical, msg.short_dest) && self.accept_message(msg)
    }
}

/// The xAPIC page, for a [`MmioDevice`] bus. Times are the latest `now` the APIC saw
/// (through `tick`, MSR or explicit MMIO calls), so the VM should `tick` it on every
/// exit before dispatching; the explicit `mmio_read`/`mmio_write` take `now`.
impl MmioDevice for Vlapic {
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        self.mmio_read(offset, size, self.now)
    }
    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        self.mmio_write(offset, size, value, self.now)
    }
}

pub mod ipi_latency;
mod timer;
mod vector_set;

use ipi_latency::{EoiKind, IpiLatency};
use vector_set::VectorSet;

/// What the next EOI would retire: decided by the local APIC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EoiOutlook {
    /// A vector is in service.
    pub in_service: bool,
    /// Some interrupt is requested but not yet delivered.
    pub requested: bool,
    /// The highest in-service vector is level-triggered.
    pub level: bool,
}

impl EoiOutlook {
    pub fn allows_skipping(self) -> bool {
        self.in_service && !self.requested && !self.level
    }
}

#[cfg(test)]
mod tests;
