//! One SVM vCPU: its VMCB, host save page, guest GPRs and extended-state area; VMCB
//! setup (`setup_vmcb`), the run step around the world switch, and applying exit
//! actions in VMCB terms.
//!
//! Conservative choices, because QEMU cannot validate the optimisations (svm-spike):
//! VMCB clean bits are always 0, TLB_CONTROL flushes everything on the first run and
//! whenever [`SvmVcpu::request_tlb_flush`] is called, and EVENTINJ is written as a
//! whole 64-bit value on every entry.

use core::ptr::NonNull;

use super::enable::{self, SvmError, SvmFeatures};
use super::entry::svm_run;
use super::exit::{self, RawExit, code};
use super::instr;
use super::vmcb::{
    InterceptMisc1, InterceptMisc2, Vmcb, VmcbControl, VmcbSegment, encode_event, event, int_ctl, int_state,
    intercept_exception, nested_ctl, tlb_control,
};
use crate::arch::backend::{InitialState, VcpuConfig};
use crate::arch::exit::{Event, EventKind, Exit, ExitAction, ExitReason, Flow, NextRip, vector};
use crate::arch::regs::{ControlRegs, CpuMode, Gpr, GuestRegisters, RegisterFile, SegReg, Segment, VendorMsr, cr};
use crate::arch::x86::exit_stages::{self, Stage};
use crate::arch::x86::ext_state::HostSwitched;
use crate::arch::x86::switched::GuestSwitched;
use crate::memory::addr::HostPhysAddr;
use crate::memory::frames::FrameSource;

/// Power-on PAT (APM Vol. 2 7.8.2).
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// Extended-state area: one frame.
const XSAVE_AREA_BYTES: u32 = 4096;
/// DR7 general detect enable (APM Vol. 2 13.1.1.5).
const DR7_GD: u64 = 1 << 13;

/// An #AC intercepted while the CPU was delivering an #AC (EXITINTINFO): re-injecting
/// it faults again in exactly the same state, forever. Returns the vector.
fn endless_delivery(raw: &RawExit) -> Option<u8> {
    let delivering = raw.int_info & event::VALID != 0
        && (raw.int_info >> event::TYPE_SHIFT) & 7 == event::TYPE_EXCEPTION
        && raw.int_info & event::VECTOR_MASK == u64::from(vector::AC);
    (delivering && raw.code == code::EXCEPTION_BASE + u64::from(vector::AC)).then_some(vector::AC)
}

/// Fills a zeroed VMCB for a new vCPU and sets the GPRs of its initial state.
pub fn setup_vmcb(
    vmcb: &mut Vmcb,
    regs: &mut GuestRegisters,
    features: &SvmFeatures,
    config: &VcpuConfig,
) -> Result<(), SvmError> {
    if config.tag == 0 || (features.asids != 0 && config.tag >= features.asids) {
        return Err(SvmError::BadConfig);
    }
    let c = &mut vmcb.control;
    // #AC and #DB are always intercepted and reflected: delivering either can raise it
    // again (#AC on a misaligned stack, #DB from a breakpoint on the #DB gate or stack),
    // which a real CPU retries in microcode forever without taking an interrupt
    // (CVE-2015-5307, CVE-2015-8104); as an intercept each round is an exit.
    c.intercept_exceptions =
        intercept_exception(vector::MC) | intercept_exception(vector::AC) | intercept_exception(vector::DB);
    c.intercept_misc1 = (InterceptMisc1::INTR
        | InterceptMisc1::NMI
        | InterceptMisc1::SMI
        | InterceptMisc1::CPUID
        | InterceptMisc1::INVD
        | InterceptMisc1::HLT
        | InterceptMisc1::INVLPGA
        | InterceptMisc1::IOIO_PROT
        | InterceptMisc1::MSR_PROT
        | InterceptMisc1::SHUTDOWN)
        .bits();
    c.intercept_misc2 = (InterceptMisc2::VMRUN
        | InterceptMisc2::VMMCALL
        | InterceptMisc2::VMLOAD
        | InterceptMisc2::VMSAVE
        | InterceptMisc2::STGI
        | InterceptMisc2::CLGI
        | InterceptMisc2::SKINIT
        | InterceptMisc2::RDTSCP
        | InterceptMisc2::WBINVD
        | InterceptMisc2::MONITOR
        | InterceptMisc2::MWAIT
        | InterceptMisc2::MWAIT_ARMED
        | InterceptMisc2::XSETBV
        | InterceptMisc2::RDPRU)
        .bits();
    c.iopm_base_pa = config.io_bitmap.raw();
    c.msrpm_base_pa = config.msr_bitmap.raw();
    c.guest_asid = config.tag;
    c.tlb_control = tlb_control::FLUSH_ALL;
    c.int_ctl = int_ctl::V_INTR_MASKING;
    c.nested_ctl = nested_ctl::NP_ENABLE;
    c.ncr3 = config.stage2_root.raw();
    c.vmcb_clean = 0;
    c.event_inj = 0;

    let s = &mut vmcb.save;
    s.g_pat = PAT_DEFAULT;
    s.dr6 = 0xffff_0ff0;
    s.dr7 = 0x400;
    *regs = GuestRegisters { rflags: 0x2, ..GuestRegisters::default() };
    match config.initial {
        InitialState::Reset | InitialState::Startup { .. } => {
            let data = VmcbSegment { selector: 0, attrib: 0x93, limit: 0xffff, base: 0 };
            (s.es, s.ss, s.ds, s.fs, s.gs) = (data, data, data, data, data);
            s.cs = match config.initial {
                InitialState::Startup { vector } => {
                    let selector = u16::from(vector) << 8;
                    VmcbSegment { selector, attrib: 0x9b, limit: 0xffff, base: u64::from(selector) << 4 }
                }
                _ => VmcbSegment { selector: 0xf000, attrib: 0x9b, limit: 0xffff, base: 0xffff_0000 },
            };
            s.gdtr = VmcbSegment { limit: 0xffff, ..VmcbSegment::default() };
            s.idtr = s.gdtr;
            s.ldtr = VmcbSegment { attrib: 0x82, limit: 0xffff, ..VmcbSegment::default() };
            s.tr = VmcbSegment { attrib: 0x83, limit: 0xffff, ..VmcbSegment::default() };
            // CD | NW | ET (APM Vol. 2 Table 14-1).
            s.cr0 = 0x6000_0010;
            s.efer = cr::EFER_SVME;
            regs.rip = if matches!(config.initial, InitialState::Startup { .. }) { 0 } else { 0xfff0 };
            // Family/model/stepping in EDX after reset; 0 is acceptable to firmware.
            regs.rdx = 0;
        }
        InitialState::Long64 { rip, rsp, cr3, rsi } => {
            let data = VmcbSegment { selector: 0x18, attrib: 0xc93, limit: 0xffff_ffff, base: 0 };
            (s.es, s.ss, s.ds, s.fs, s.gs) = (data, data, data, data, data);
            s.cs = VmcbSegment { selector: 0x10, attrib: 0xa9b, limit: 0xffff_ffff, base: 0 };
            s.ldtr = VmcbSegment { attrib: 0x82, ..VmcbSegment::default() };
            s.tr = VmcbSegment { attrib: 0x8b, limit: 0x67, ..VmcbSegment::default() };
            // PE | MP | ET | NE | WP | PG.
            s.cr0 = 0x8005_0033;
            s.cr3 = cr3;
            s.cr4 = cr::CR4_PAE;
            s.efer = cr::EFER_SVME | cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;
            regs.rip = rip;
            regs.rsp = rsp;
            regs.rsi = rsi;
        }
        InitialState::Protected32 { eip, eax, ebx } => {
            // Flat 32-bit segments: code execute/read (D=1), data read/write, both
            // 4 GiB (G=1) at base 0 (APM Vol. 2 4.7, 4.8).
            let data = VmcbSegment { selector: 0x18, attrib: 0xc93, limit: 0xffff_ffff, base: 0 };
            (s.es, s.ss, s.ds, s.fs, s.gs) = (data, data, data, data, data);
            s.cs = VmcbSegment { selector: 0x10, attrib: 0xc9b, limit: 0xffff_ffff, base: 0 };
            s.ldtr = VmcbSegment { attrib: 0x82, ..VmcbSegment::default() };
            s.tr = VmcbSegment { attrib: 0x8b, limit: 0x67, ..VmcbSegment::default() };
            // PE | ET; PG clear. EFLAGS stays 0x2 (IF=0, VM=0).
            s.cr0 = 0x0000_0011;
            s.cr4 = 0;
            s.efer = cr::EFER_SVME;
            regs.rip = u64::from(eip);
            regs.rax = u64::from(eax);
            regs.rbx = u64::from(ebx);
        }
    }
    Ok(())
}

/// A vCPU. Its frames come from a [`FrameSource`] whose `table_mut` view of a frame is
/// a stable, 4 KiB-aligned mapping for as long as the frame is allocated.
#[derive(Debug)]
pub struct SvmVcpu {
    vmcb: NonNull<Vmcb>,
    vmcb_pa: HostPhysAddr,
    host_save_pa: HostPhysAddr,
    xsave: NonNull<u8>,
    xsave_pa: HostPhysAddr,
    regs: GuestRegisters,
    xcr0: u64,
    /// DR0-3 and TSC_AUX, which VMRUN does not switch.
    switched: GuestSwitched,
    features: SvmFeatures,
    /// EXITINTINFO of the last exit if its valid bit was set: re-injected on entry.
    pending_event: u64,
    /// An injected NMI is being handled: NMIs stay blocked until the guest's IRET
    /// (intercepted while this is set, APM Vol. 2 15.21.4).
    nmi_blocked: bool,
}

/// Queues `vector` as the virtual interrupt (priority 15, ignoring V_TPR: the
/// virtual local APIC already applied the guest's TPR) without the VINTR intercept.
fn set_virtual_interrupt(c: &mut VmcbControl, vector: u8) {
    c.int_ctl = (c.int_ctl & !(int_ctl::V_INTR_VECTOR_MASK | int_ctl::V_INTR_PRIO_MASK))
        | int_ctl::virtual_interrupt(vector, 0xf);
    c.intercept_misc1 &= !InterceptMisc1::VINTR.bits();
}

/// A real interrupt waits in V_IRQ (a window request has the VINTR intercept set). The
/// CPU clears V_IRQ when the guest takes it (APM Vol. 2 15.21.4); an exit during its
/// delivery reports it in EXITINTINFO, and `apply` queues it again.
fn virtual_interrupt_queued(c: &VmcbControl) -> bool {
    c.int_ctl & int_ctl::V_IRQ != 0 && c.intercept_misc1 & InterceptMisc1::VINTR.bits() == 0
}

/// A frame's mapping as a pointer to `T`, checked for 4 KiB alignment.
fn frame_ptr<T, F: FrameSource>(frames: &mut F, pa: HostPhysAddr) -> Result<NonNull<T>, SvmError> {
    let ptr = frames.table_mut(pa).as_mut_ptr().cast::<T>();
    if !(ptr as usize).is_multiple_of(4096) {
        return Err(SvmError::MisalignedFrame);
    }
    NonNull::new(ptr).ok_or(SvmError::MisalignedFrame)
}

impl SvmVcpu {
    pub fn new<F: FrameSource>(
        features: &SvmFeatures,
        config: &VcpuConfig,
        frames: &mut F,
    ) -> Result<SvmVcpu, SvmError> {
        if features.xsave_bytes > XSAVE_AREA_BYTES {
            return Err(SvmError::XsaveAreaTooLarge);
        }
        let mut got: heapless::Vec<HostPhysAddr, 3> = heapless::Vec::new();
        let result = Self::build(features, config, frames, &mut got);
        if result.is_err() {
            for pa in got {
                frames.free(pa);
            }
        }
        result
    }

    fn build<F: FrameSource>(
        features: &SvmFeatures,
        config: &VcpuConfig,
        frames: &mut F,
        got: &mut heapless::Vec<HostPhysAddr, 3>,
    ) -> Result<SvmVcpu, SvmError> {
        for _ in 0..3 {
            let pa = frames.alloc_zeroed().ok_or(SvmError::OutOfFrames)?;
            got.push(pa).map_err(|_| SvmError::OutOfFrames)?;
        }
        let &[vmcb_pa, host_save_pa, xsave_pa] = got.as_slice() else {
            return Err(SvmError::OutOfFrames);
        };
        let vmcb = frame_ptr::<Vmcb, F>(frames, vmcb_pa)?;
        let xsave = frame_ptr::<u8, F>(frames, xsave_pa)?;
        let mut vcpu = SvmVcpu {
            vmcb,
            vmcb_pa,
            host_save_pa,
            xsave,
            xsave_pa,
            regs: GuestRegisters::default(),
            xcr0: 1,
            switched: GuestSwitched::new(features.tsc_aux),
            features: *features,
            pending_event: 0,
            nmi_blocked: false,
        };
        // Initial x87/SSE control words for the FXSAVE path (the XSAVE path starts from
        // the init state because XSTATE_BV = 0): FCW = 0x37F, MXCSR = 0x1F80.
        let area = frames.table_mut(xsave_pa);
        area[0] = 0x37f;
        area[3] = 0x1f80;
        let (vmcb, regs) = vcpu.parts();
        setup_vmcb(vmcb, regs, features, config)?;
        log::debug!(target: "svm", "vcpu created: VMCB {vmcb_pa}, ASID {}", config.tag);
        Ok(vcpu)
    }

    /// Returns the vCPU's frames.
    pub fn destroy<F: FrameSource>(self, frames: &mut F) {
        for pa in [self.vmcb_pa, self.host_save_pa, self.xsave_pa] {
            frames.free(pa);
        }
    }

    pub fn vmcb(&self) -> &Vmcb {
        // SAFETY: `vmcb` points at a 4 KiB-aligned frame this vCPU owns exclusively
        // (allocated in `new`, freed only by `destroy`, which consumes the vCPU); the
        // frame was zeroed, and every bit pattern is a valid `Vmcb` (integers only).
        unsafe { self.vmcb.as_ref() }
    }

    fn parts(&mut self) -> (&mut Vmcb, &mut GuestRegisters) {
        // SAFETY: as in `vmcb`; `&mut self` makes this the only reference.
        (unsafe { self.vmcb.as_mut() }, &mut self.regs)
    }

    pub fn vmcb_mut(&mut self) -> &mut Vmcb {
        self.parts().0
    }

    pub fn registers(&self) -> &GuestRegisters {
        &self.regs
    }

    /// Flush this guest's TLB entries on the next entry (after changing its stage-2
    /// tables).
    pub fn request_tlb_flush(&mut self) {
        let flush = if self.features.flush_by_asid { tlb_control::FLUSH_GUEST } else { tlb_control::FLUSH_ALL };
        self.vmcb_mut().control.tlb_control = flush;
    }

    /// Enters the guest and returns the decoded exit. Host interrupts that caused an
    /// INTR exit are still pending (IF = 0): the caller opens a window for them.
    pub fn run(&mut self) -> Exit {
        if !enable::is_enabled() {
            log::error!(target: "svm", "run without EFER.SVME on this CPU");
            return Exit::new(ExitReason::InvalidGuestState { raw: code::INVALID });
        }
        let (vmcb, regs) = self.parts();
        vmcb.save.rax = regs.rax;
        vmcb.save.rsp = regs.rsp;
        vmcb.save.rip = regs.rip;
        vmcb.save.rflags = regs.rflags;
        let area = self.xsave.as_ptr();
        let guest_xcr0 = self.xcr0;
        let offered = self.features.xcr0_mask;
        let xsave = self.features.xsave;
        // Every component the CPU has is the guest's, whatever its XCR0 says now: it
        // may enable more without an exit (see `SvmFeatures::xsave_switch_mask`).
        let switch = self.features.xsave_switch_mask;
        if xsave {
            // XCR0 normally still holds the switch mask from the previous exit, and
            // XGETBV is cheap where XSETBV serialises: write only what differs.
            // SAFETY: `enable` set CR4.OSXSAVE on this CPU when the CPU has XSAVE.
            if unsafe { instr::xcr0() } != switch {
                // SAFETY: CR4.OSXSAVE as above; the switch mask is the CPU's own
                // supported set (a valid XCR0), and the hypervisor (soft-float) keeps
                // no extended state that XCR0 could disturb.
                unsafe { instr::set_xcr0(switch) };
            }
            // SAFETY: `area` is this vCPU's own 4 KiB-aligned frame, large enough for
            // every supported component (`new` checked `xsave_bytes`), holding either
            // zeroes (the init state) or the image saved after the previous run; the
            // mask only names components XCR0 (now the switch mask) enables.
            unsafe { instr::xrstor(area, switch) };
            if guest_xcr0 != switch {
                // SAFETY: `guest_xcr0` has bit 0 set and only offered components
                // (checked by the XSETBV handler, or read back from the CPU after a
                // previous run); the hypervisor has no extended state of its own.
                unsafe { instr::set_xcr0(guest_xcr0) };
            }
        } else {
            // SAFETY: `enable` set CR4.OSFXSR; `area` is this vCPU's 4 KiB-aligned
            // frame holding a valid image (initialised in `new`, then saved below).
            unsafe { instr::fxrstor(area) };
        }
        self.switched.load(&mut HostSwitched);
        exit_stages::checkpoint(Stage::Entry);
        // SAFETY: SVME is set (checked above) and `enable` set VM_HSAVE_PA on this CPU;
        // the VMCB was built by `setup_vmcb` and intercepts VMRUN; the VMCB and host
        // save frames belong to this vCPU alone and are 4 KiB-aligned; `self.regs` is
        // a valid, exclusively borrowed register block.
        unsafe { svm_run(self.vmcb_pa.raw(), &raw mut self.regs, self.host_save_pa.raw()) };
        exit_stages::checkpoint(Stage::Guest);
        self.switched.save(&mut HostSwitched);
        if xsave {
            // The guest's XCR0 is whatever the CPU holds now: where XSETBV is not
            // intercepted (QEMU's emulated SVM) the guest changed it directly.
            // SAFETY: CR4.OSXSAVE is set on this CPU.
            let now = unsafe { instr::xcr0() };
            self.xcr0 = if now & 1 != 0 && now & !offered == 0 { now } else { guest_xcr0 };
            if now != switch {
                // SAFETY: as for the first XSETBV above.
                unsafe { instr::set_xcr0(switch) };
            }
            // SAFETY: as for XRSTOR above.
            unsafe { instr::xsave(area, switch) };
        } else {
            // SAFETY: as for FXRSTOR above.
            unsafe { instr::fxsave(area) };
        }
        self.after_exit()
    }

    /// Bookkeeping after #VMEXIT (separate from `run` so it is testable).
    fn after_exit(&mut self) -> Exit {
        let (nrip, assists) = (self.features.nrip_save, self.features.decode_assists);
        let (vmcb, regs) = self.parts();
        regs.rax = vmcb.save.rax;
        regs.rsp = vmcb.save.rsp;
        regs.rip = vmcb.save.rip;
        regs.rflags = vmcb.save.rflags;
        let c = &mut vmcb.control;
        c.tlb_control = tlb_control::DO_NOTHING;
        c.event_inj = 0;
        let raw = RawExit::from_vmcb(vmcb, regs.rcx, regs.rdx, nrip, assists);
        if let Some(v) = endless_delivery(&raw) {
            // Delivering it again can only raise it again: the guest state is the same.
            log::warn!(target: "svm", "exception {v} raised while delivering exception {v}: the guest cannot make progress");
            self.pending_event = 0;
            return Exit::new(ExitReason::Shutdown);
        }
        let c = &mut vmcb.control;
        if raw.code == code::VINTR {
            c.int_ctl &= !(int_ctl::V_IRQ | int_ctl::V_INTR_VECTOR_MASK);
            c.intercept_misc1 &= !InterceptMisc1::VINTR.bits();
        }
        if raw.code == code::IRET {
            // The IRET that ends the NMI handler runs on the next entry; the next NMI
            // may be injected after it (one instruction early at worst, as KVM does).
            c.intercept_misc1 &= !InterceptMisc1::IRET.bits();
            self.nmi_blocked = false;
        }
        self.pending_event = if raw.int_info & event::VALID != 0 { raw.int_info } else { 0 };
        exit::decode(&raw)
    }

    /// Carries out `action` in the VMCB (see `Arch::apply`).
    pub fn apply(&mut self, action: &ExitAction) -> Flow {
        let pending = self.pending_event;
        self.pending_event = 0;
        // An interrupt cut short goes back to V_IRQ, like every external interrupt (see
        // `inject_interrupt`), and lets a decided injection go first; any other event
        // cut short takes EVENTINJ (APM 15.7.2).
        let interrupted_interrupt = (pending & event::VALID != 0
            && (pending >> event::TYPE_SHIFT) & 7 == event::TYPE_INTR)
            .then_some((pending & event::VECTOR_MASK) as u8);
        let redeliver = if interrupted_interrupt.is_some() { 0 } else { pending };
        let (vmcb, regs) = self.parts();
        match action {
            ExitAction::Advance(next) | ExitAction::Yield(next) | ExitAction::Halt(next) => {
                regs.rip = match *next {
                    // Only a length needs the mode (16- and 32-bit code wraps RIP).
                    NextRip::By(n) => regs.rip.wrapping_add(u64::from(n)) & vmcb_mode(vmcb).ip_mask(),
                    NextRip::To(rip) => rip,
                };
                vmcb.control.int_state &= !int_state::INTERRUPT_SHADOW;
            }
            ExitAction::Inject(e) => {
                // Reflecting an intercepted #DB: the CPU already wrote DR6 into the VMCB;
                // what delivery would also do is clear DR7.GD (APM Vol. 2 13.1.1.5), which
                // an injected event does not.
                if e.kind == EventKind::Exception && e.vector == vector::DB && redeliver == 0 {
                    vmcb.save.dr7 &= !DR7_GD;
                }
                vmcb.control.event_inj = encode_event(e);
            }
            ExitAction::Resume | ExitAction::Stop(_) => {}
        }
        if let Some(vector) = interrupted_interrupt {
            set_virtual_interrupt(&mut vmcb.control, vector);
        } else if redeliver != 0 {
            // An exit during event delivery is not an instruction intercept, so a
            // decided injection here would be unusual.
            if let ExitAction::Inject(e) = action {
                // Debug only: a guest can make this happen on every exit.
                log::debug!(target: "svm", "dropping injection of {e:?}: re-injecting {redeliver:#x}");
            }
            vmcb.control.event_inj = redeliver;
        }
        Flow::of(action)
    }

    /// See `Arch::interrupt_window_open`.
    pub fn interrupt_window_open(&mut self) -> bool {
        let (vmcb, regs) = self.parts();
        regs.rflags & (1 << 9) != 0
            && vmcb.control.int_state & int_state::INTERRUPT_SHADOW == 0
            && vmcb.control.event_inj & event::VALID == 0
            && !virtual_interrupt_queued(&vmcb.control)
            && self.pending_event == 0
    }

    /// See `Arch::nmi_window_open`.
    pub fn nmi_window_open(&mut self) -> bool {
        let (blocked, pending) = (self.nmi_blocked, self.pending_event);
        let vmcb = self.vmcb_mut();
        !blocked
            && vmcb.control.int_state & int_state::INTERRUPT_SHADOW == 0
            && vmcb.control.event_inj & event::VALID == 0
            && pending == 0
    }

    /// See `Arch::inject_nmi`: the IRET intercept tells when the guest's handler ends.
    pub fn inject_nmi(&mut self) {
        let event = Event { kind: EventKind::Nmi, vector: vector::NMI, error_code: None };
        let c = &mut self.vmcb_mut().control;
        c.event_inj = encode_event(&event);
        c.intercept_misc1 |= InterceptMisc1::IRET.bits();
        self.nmi_blocked = true;
    }

    /// See `Arch::inject_interrupt`. External interrupts go through the virtual
    /// interrupt (V_IRQ), not EVENTINJ: QEMU 7.2's emulated SVM delivers an EVENTINJ
    /// interrupt but leaves its vector as the CPU's pending exception, so a later exit
    /// request delivers it a second time whatever the guest's IF says. The window is
    /// open, so the CPU takes V_IRQ before the guest's first instruction; an exit that
    /// comes first (a host interrupt) leaves V_IRQ set in the VMCB for the next entry.
    pub fn inject_interrupt(&mut self, vector: u8) {
        set_virtual_interrupt(&mut self.vmcb_mut().control, vector);
    }

    /// See `Arch::request_interrupt_window`: a dummy virtual interrupt (V_IRQ with
    /// V_IGN_TPR) plus the VINTR intercept exits exactly when the guest could take it;
    /// `after_exit` clears both again (APM 15.21.4). A queued real interrupt is not
    /// replaced: the guest takes it first, and the next exit offers the next one.
    pub fn request_interrupt_window(&mut self) {
        let c = &mut self.vmcb_mut().control;
        if virtual_interrupt_queued(c) {
            return;
        }
        c.int_ctl = (c.int_ctl & !(int_ctl::V_INTR_VECTOR_MASK | int_ctl::V_INTR_PRIO_MASK))
            | int_ctl::virtual_interrupt(0, 0xf);
        c.intercept_misc1 |= InterceptMisc1::VINTR.bits();
    }

    /// The register view used by decision code.
    pub fn regs_view(&mut self) -> SvmRegs<'_> {
        SvmRegs { vcpu: self }
    }
}

/// [`RegisterFile`] over a vCPU: GPRs, RIP and RFLAGS from the register block (synced
/// with the VMCB around each run), everything else from the VMCB.
#[derive(Debug)]
pub struct SvmRegs<'a> {
    vcpu: &'a mut SvmVcpu,
}

impl SvmRegs<'_> {
    fn vmcb(&self) -> &Vmcb {
        self.vcpu.vmcb()
    }
    fn vmcb_mut(&mut self) -> &mut Vmcb {
        self.vcpu.vmcb_mut()
    }
}

impl RegisterFile for SvmRegs<'_> {
    fn gpr(&self, r: Gpr) -> u64 {
        self.vcpu.regs.get(r)
    }
    fn set_gpr(&mut self, r: Gpr, value: u64) {
        self.vcpu.regs.set(r, value)
    }
    fn rip(&self) -> u64 {
        self.vcpu.regs.rip
    }
    fn rflags(&self) -> u64 {
        self.vcpu.regs.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        // Bit 1 is always set.
        self.vcpu.regs.rflags = value | 2;
    }
    fn control(&self) -> ControlRegs {
        let s = &self.vmcb().save;
        ControlRegs { cr0: s.cr0, cr2: s.cr2, cr3: s.cr3, cr4: s.cr4, efer: s.efer }
    }
    fn set_cr2(&mut self, value: u64) {
        self.vmcb_mut().save.cr2 = value;
    }
    fn segment(&self, seg: SegReg) -> Segment {
        let s = &self.vmcb().save;
        Segment::from(match seg {
            SegReg::Es => s.es,
            SegReg::Cs => s.cs,
            SegReg::Ss => s.ss,
            SegReg::Ds => s.ds,
            SegReg::Fs => s.fs,
            SegReg::Gs => s.gs,
        })
    }
    fn cpl(&self) -> u8 {
        self.vmcb().save.cpl
    }
    fn msr(&self, msr: VendorMsr) -> u64 {
        let s = &self.vmcb().save;
        match msr {
            VendorMsr::Efer => s.efer & !cr::EFER_SVME,
            VendorMsr::Star => s.star,
            VendorMsr::Lstar => s.lstar,
            VendorMsr::Cstar => s.cstar,
            VendorMsr::Sfmask => s.sfmask,
            VendorMsr::FsBase => s.fs.base,
            VendorMsr::GsBase => s.gs.base,
            VendorMsr::KernelGsBase => s.kernel_gs_base,
            VendorMsr::SysenterCs => s.sysenter_cs,
            VendorMsr::SysenterEsp => s.sysenter_esp,
            VendorMsr::SysenterEip => s.sysenter_eip,
            VendorMsr::Pat => s.g_pat,
            VendorMsr::TscAux => self.vcpu.switched.tsc_aux,
        }
    }
    fn set_msr(&mut self, msr: VendorMsr, value: u64) {
        if msr == VendorMsr::TscAux {
            self.vcpu.switched.tsc_aux = value;
            return;
        }
        let s = &mut self.vmcb_mut().save;
        let slot = match msr {
            // SVME must stay set while the guest runs (VMRUN consistency check).
            VendorMsr::Efer => {
                s.efer = value | cr::EFER_SVME;
                return;
            }
            VendorMsr::Star => &mut s.star,
            VendorMsr::Lstar => &mut s.lstar,
            VendorMsr::Cstar => &mut s.cstar,
            VendorMsr::Sfmask => &mut s.sfmask,
            VendorMsr::FsBase => &mut s.fs.base,
            VendorMsr::GsBase => &mut s.gs.base,
            VendorMsr::KernelGsBase => &mut s.kernel_gs_base,
            VendorMsr::SysenterCs => &mut s.sysenter_cs,
            VendorMsr::SysenterEsp => &mut s.sysenter_esp,
            VendorMsr::SysenterEip => &mut s.sysenter_eip,
            VendorMsr::Pat => &mut s.g_pat,
            // Stored above, outside the VMCB.
            VendorMsr::TscAux => return,
        };
        *slot = value;
    }
    fn tsc_offset(&self) -> u64 {
        self.vmcb().control.tsc_offset
    }
    fn set_tsc_offset(&mut self, value: u64) {
        self.vmcb_mut().control.tsc_offset = value;
    }
    fn xcr0(&self) -> u64 {
        self.vcpu.xcr0
    }
    fn set_xcr0(&mut self, value: u64) {
        self.vcpu.xcr0 = value;
    }
    fn mode(&self) -> CpuMode {
        vmcb_mode(self.vmcb())
    }
}

/// The guest's execution mode from the VMCB's CR0, EFER and CS.
fn vmcb_mode(vmcb: &Vmcb) -> CpuMode {
    let s = &vmcb.save;
    CpuMode::from_state(s.cr0, s.efer, &Segment::from(s.cs))
}

#[cfg(test)]
mod tests;
