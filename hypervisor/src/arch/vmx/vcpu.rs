//! One VMX vCPU: its VMCS and extended-state area, guest GPRs, the guest MSRs VM
//! entry does not switch, VMCS setup, the run step around the world switch, and
//! applying exit actions in VMCS terms.
//!
//! Conservative choices, as on SVM: after every stage-2 change the next entry runs
//! INVEPT (single context) and INVVPID for this vCPU's tags; event injection is
//! written whole on every entry.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use super::caps::{Controls, VmxError, VmxFeatures};
use super::entry::{outcome, vmx_run};
use super::exit::{self, VmcsExit};
use super::fields::*;
use super::guest_state;
use super::instr;
use crate::arch::backend::VcpuConfig;
use crate::arch::exit::{Event, EventKind, Exit, ExitAction, ExitReason, Flow, NextRip, vector};
use crate::arch::regs::{CpuMode, GuestRegisters, Segment, cr};
use crate::arch::x86::exit_stages::{self, Stage};
use crate::arch::x86::ext_state::{self, HostSwitched};
use crate::arch::x86::switched::GuestSwitched;
use crate::hw::msr;
use crate::memory::addr::HostPhysAddr;
use crate::memory::frames::FrameSource;
use crate::memory::page_table::ept;

/// DR6 after reset (SDM Vol. 3 18.2.3).
const DR6_INIT: u64 = 0xffff_0ff0;
/// The DR6 bits a #DB exit qualification reports: B0-B3, BD, BS (SDM Vol. 3 Table 28-1).
const DR6_FROM_QUALIFICATION: u64 = 0x600f;
/// DR7 general detect.
const DR7_GD: u64 = 1 << 13;

/// Extended-state area: one frame.
const XSAVE_AREA_BYTES: u32 = 4096;

/// The VMCS current on this (single) CPU, so VMPTRLD runs only on a change.
static CURRENT_VMCS: AtomicU64 = AtomicU64::new(0);

/// The guest's syscall MSRs: VM entry does not switch them, so the vCPU keeps them,
/// intercepts their accesses, and loads them into the CPU before entry (the
/// hypervisor uses none of them itself). TSC_AUX and DR0-3 go through the switch
/// SVM uses too (`arch::x86::switched`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoftMsrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
}

/// A vCPU. Its frames come from a [`FrameSource`] whose `table_mut` view of a frame is
/// a stable, 4 KiB-aligned mapping for as long as the frame is allocated.
#[derive(Debug)]
pub struct VmxVcpu {
    pub(super) vmcs_pa: HostPhysAddr,
    xsave: NonNull<u8>,
    xsave_pa: HostPhysAddr,
    pub(super) regs: GuestRegisters,
    launched: bool,
    pub(super) xcr0: u64,
    pub(super) features: VmxFeatures,
    pub(super) controls: Controls,
    eptp: u64,
    vpid: u16,
    flush: bool,
    pub(super) msrs: SoftMsrs,
    /// DR0-3 and TSC_AUX, switched around each run.
    pub(super) switched: GuestSwitched,
    /// The guest's DR6: not in the VMCS, and not touched by VM entry or exit.
    dr6: u64,
    /// The exit qualification of the last #DB exit (B0-B3, BD, BS): the DR6 bits a
    /// reflected #DB must show.
    debug_qualification: Option<u64>,
    /// IDT-vectoring information of the last exit when valid (with its error code and
    /// instruction length): re-injected on the next entry.
    pending_event: Option<(u32, u32, u32)>,
}

/// Fails a VMCS access with the VM-instruction error.
pub(super) fn write(field: u32, value: u64) -> Result<(), VmxError> {
    // SAFETY: only called while VMX is on with this vCPU's VMCS current; guest and
    // control fields are checked by VM entry, host fields are the host's own state.
    unsafe { instr::vmwrite(field, value) }
        .map_err(|_| VmxError::VmcsAccess { field, error: read(VM_INSTRUCTION_ERROR) as u32 })
}

pub(super) fn read(field: u32) -> u64 {
    // SAFETY: VMX is on (every caller holds a vCPU, which exists only after enable);
    // VMREAD only reads the current VMCS and yields 0 when there is none.
    unsafe { instr::vmread(field) }
}

/// Writes a field that cannot fail once the VMCS is current (the field exists and
/// the value is in range); a failure is logged, and VM entry then reports it.
pub(super) fn set(field: u32, value: u64) {
    if let Err(e) = write(field, value) {
        log::error!(target: "vmx", "VMWRITE {field:#x} = {value:#x} failed: {e:?}");
    }
}

/// One of the MSRs the host-state area names, or KernelGsBase.
fn host_msr(msr: u32) -> u64 {
    // SAFETY: only called with FS_BASE, GS_BASE, EFER, PAT and KERNEL_GS_BASE, which
    // every 64-bit CPU with VMX has; reading them has no side effect.
    unsafe { instr::rdmsr(msr) }
}

/// The host state VM exit loads: this CPU's control registers, the hypervisor's
/// segments, descriptor tables and EFER/PAT.
fn write_host_state() -> Result<(), VmxError> {
    use x86_64::instructions::tables::{sgdt, sidt};
    use x86_64::registers::control::{Cr0, Cr3, Cr4};
    let (code, data) = crate::arch::x86::gdt::selectors().ok_or(VmxError::BadConfig)?;
    let (tss_sel, tss_base) = crate::arch::x86::gdt::tss().ok_or(VmxError::BadConfig)?;
    let (cr3_frame, cr3_flags) = Cr3::read_raw();
    let fields = [
        (HOST_CR0, Cr0::read_raw()),
        (HOST_CR3, cr3_frame.start_address().as_u64() | u64::from(cr3_flags)),
        (HOST_CR4, Cr4::read_raw()),
        (HOST_CS_SELECTOR, u64::from(code.0)),
        (HOST_SS_SELECTOR, u64::from(data.0)),
        (HOST_DS_SELECTOR, u64::from(data.0)),
        (HOST_ES_SELECTOR, u64::from(data.0)),
        (HOST_FS_SELECTOR, 0),
        (HOST_GS_SELECTOR, 0),
        (HOST_TR_SELECTOR, u64::from(tss_sel.0)),
        (HOST_FS_BASE, host_msr(msr::FS_BASE)),
        (HOST_GS_BASE, host_msr(msr::GS_BASE)),
        (HOST_TR_BASE, tss_base),
        (HOST_GDTR_BASE, sgdt().base.as_u64()),
        (HOST_IDTR_BASE, sidt().base.as_u64()),
        (HOST_SYSENTER_CS, 0),
        (HOST_SYSENTER_ESP, 0),
        (HOST_SYSENTER_EIP, 0),
        (HOST_IA32_EFER, host_msr(msr::EFER)),
        (HOST_IA32_PAT, host_msr(msr::PAT)),
    ];
    for (field, value) in fields {
        write(field, value)?;
    }
    Ok(())
}

impl VmxVcpu {
    pub fn new<F: FrameSource>(
        features: &VmxFeatures,
        config: &VcpuConfig,
        frames: &mut F,
    ) -> Result<VmxVcpu, VmxError> {
        if features.xsave_bytes > XSAVE_AREA_BYTES {
            return Err(VmxError::XsaveAreaTooLarge);
        }
        let vpid = u16::try_from(config.tag).ok().filter(|t| *t != 0).ok_or(VmxError::BadConfig)?;
        let controls = features.controls()?;
        let vmcs_pa = frames.alloc_zeroed().ok_or(VmxError::OutOfFrames)?;
        let Some(xsave_pa) = frames.alloc_zeroed() else {
            frames.free(vmcs_pa);
            return Err(VmxError::OutOfFrames);
        };
        let xsave_ptr = frames.table_mut(xsave_pa).as_mut_ptr().cast::<u8>();
        let Some(xsave) = NonNull::new(xsave_ptr).filter(|p| (p.as_ptr() as usize).is_multiple_of(4096)) else {
            frames.free(vmcs_pa);
            frames.free(xsave_pa);
            return Err(VmxError::MisalignedFrame);
        };
        // Initial x87/SSE control words for the FXSAVE path: FCW = 0x37F, MXCSR = 0x1F80.
        let area = frames.table_mut(xsave_pa);
        area[0] = 0x37f;
        area[3] = 0x1f80;
        frames.table_mut(vmcs_pa)[0] = u64::from(features.revision);
        let mut vcpu = VmxVcpu {
            vmcs_pa,
            xsave,
            xsave_pa,
            regs: GuestRegisters::default(),
            launched: false,
            xcr0: 1,
            features: *features,
            controls,
            eptp: ept::eptp(config.stage2_root, features.ept_accessed_dirty()),
            vpid,
            flush: true,
            msrs: SoftMsrs::default(),
            switched: GuestSwitched::new(features.tsc_aux),
            dr6: DR6_INIT,
            debug_qualification: None,
            pending_event: None,
        };
        if let Err(e) = vcpu.setup(config) {
            vcpu.destroy(frames);
            return Err(e);
        }
        log::debug!(target: "vmx", "vcpu created: VMCS {vmcs_pa}, VPID {vpid}");
        Ok(vcpu)
    }

    fn setup(&mut self, config: &VcpuConfig) -> Result<(), VmxError> {
        // SAFETY: VMX is on (a vCPU is created only after `enable`); the VMCS frame is
        // this vCPU's own, zeroed with the revision id written.
        unsafe { instr::vmclear(self.vmcs_pa.raw()) }.map_err(|_| VmxError::VmcsAccess { field: 0, error: 0 })?;
        CURRENT_VMCS.store(0, Ordering::Relaxed);
        self.make_current();
        let c = self.controls;
        let f = &self.features;
        let mut proc2 = c.proc2;
        if !f.vpid() {
            proc2 &= !proc2::ENABLE_VPID;
        }
        let mut entry = c.entry;
        let (writes, control) = guest_state::initial(config.initial, f, &mut self.regs);
        if control.efer & cr::EFER_LMA != 0 {
            entry |= entry_ctl::IA32E_MODE_GUEST;
        }
        let fields = [
            (PIN_BASED_CONTROLS, u64::from(c.pin)),
            (PRIMARY_PROC_CONTROLS, u64::from(c.proc1)),
            (SECONDARY_PROC_CONTROLS, u64::from(proc2)),
            (EXIT_CONTROLS, u64::from(c.exit)),
            (ENTRY_CONTROLS, u64::from(entry)),
            // #AC, #DB and #MC always exit, as on SVM: a guest can make #AC or #DB
            // delivery raise the same exception again, which a CPU retries without an
            // interrupt window forever (CVE-2015-5307, CVE-2015-8104); as an exit each
            // round ends. #UD too, so that VMMCALL, the AMD hypercall instruction guests
            // may use, becomes a hypercall (common code decodes it).
            (EXCEPTION_BITMAP, (1 << vector::AC) | (1 << vector::MC) | (1 << vector::UD) | (1 << vector::DB)),
            (CR3_TARGET_COUNT, 0),
            (EXIT_MSR_STORE_COUNT, 0),
            (EXIT_MSR_LOAD_COUNT, 0),
            (ENTRY_MSR_LOAD_COUNT, 0),
            (ENTRY_INTERRUPTION_INFO, 0),
            (IO_BITMAP_A, config.io_bitmap.raw()),
            (IO_BITMAP_B, config.io_bitmap.raw().wrapping_add(4096)),
            (MSR_BITMAP, config.msr_bitmap.raw()),
            (EPT_POINTER, self.eptp),
            (VPID, u64::from(self.vpid)),
            (CR0_GUEST_HOST_MASK, guest_state::cr0_host_mask(f)),
            (CR4_GUEST_HOST_MASK, guest_state::cr4_host_mask(f)),
            (TSC_OFFSET, 0),
        ];
        for (field, value) in fields {
            write(field, value)?;
        }
        for (field, value) in writes {
            write(field, value)?;
        }
        write_host_state()
    }

    /// Makes this vCPU's VMCS current on this CPU.
    pub(super) fn make_current(&self) {
        if CURRENT_VMCS.load(Ordering::Relaxed) == self.vmcs_pa.raw() {
            return;
        }
        // SAFETY: VMX is on; the VMCS is this vCPU's own, initialised by VMCLEAR.
        match unsafe { instr::vmptrld(self.vmcs_pa.raw()) } {
            Ok(()) => CURRENT_VMCS.store(self.vmcs_pa.raw(), Ordering::Relaxed),
            Err(e) => log::error!(target: "vmx", "VMPTRLD {} failed: {e:?}", self.vmcs_pa),
        }
    }

    /// Returns the vCPU's frames (after VMCLEAR, so the CPU holds nothing of it).
    pub fn destroy<F: FrameSource>(self, frames: &mut F) {
        // SAFETY: VMX is on; the VMCS is this vCPU's own.
        if unsafe { instr::vmclear(self.vmcs_pa.raw()) }.is_err() {
            log::error!(target: "vmx", "VMCLEAR {} failed", self.vmcs_pa);
        }
        let _ = CURRENT_VMCS.compare_exchange(self.vmcs_pa.raw(), 0, Ordering::Relaxed, Ordering::Relaxed);
        frames.free(self.vmcs_pa);
        frames.free(self.xsave_pa);
    }

    pub fn request_tlb_flush(&mut self) {
        self.flush = true;
    }

    /// The guest's execution mode from the VMCS.
    pub(super) fn mode(&self) -> CpuMode {
        self.make_current();
        let cr0 = read(GUEST_CR0);
        let efer = read(GUEST_IA32_EFER);
        let cs = Segment { attrib: guest_state::attrib_from_ar(read(GUEST_CS_AR) as u32), ..Segment::default() };
        CpuMode::from_state(cr0, efer, &cs)
    }

    /// Loads the guest's syscall MSRs into the CPU.
    fn load_soft_msrs(&self) {
        let m = &self.msrs;
        // SAFETY: these MSRs exist on every 64-bit CPU; the values passed the common MSR
        // policy's checks (canonical addresses, reserved bits), and the hypervisor uses
        // none of them (no SYSCALL, no SWAPGS).
        unsafe {
            instr::wrmsr(msr::STAR, m.star);
            instr::wrmsr(msr::LSTAR, m.lstar);
            instr::wrmsr(msr::CSTAR, m.cstar);
            instr::wrmsr(msr::SFMASK, m.sfmask);
            instr::wrmsr(msr::KERNEL_GS_BASE, m.kernel_gs_base);
        }
    }

    /// Enters the guest and returns the decoded exit. A failed VM entry comes back as
    /// [`ExitReason::InvalidGuestState`] with the VM-instruction error, never a panic.
    pub fn run(&mut self) -> Exit {
        if !super::enable::is_enabled() {
            log::error!(target: "vmx", "run without VMX operation on this CPU");
            return Exit::new(ExitReason::InvalidGuestState { raw: 0 });
        }
        self.make_current();
        set(GUEST_RSP, self.regs.rsp);
        set(GUEST_RIP, self.regs.rip);
        set(GUEST_RFLAGS, self.regs.rflags);
        if let Some((info, error, len)) = self.pending_event.take() {
            set(ENTRY_INTERRUPTION_INFO, u64::from(info));
            set(ENTRY_EXCEPTION_ERROR_CODE, u64::from(error));
            set(ENTRY_INSTRUCTION_LENGTH, u64::from(len));
        }
        if self.flush {
            // SAFETY: VMX is on; single-context INVEPT is required by `controls()`,
            // single-context INVVPID by `vpid()`.
            unsafe {
                let _ = instr::invept(self.eptp);
                if self.features.vpid() {
                    let _ = instr::invvpid(self.vpid);
                }
            }
            self.flush = false;
        }
        self.load_soft_msrs();
        self.switched.load(&mut HostSwitched);
        // SAFETY: CPL 0; DR6 only reports debug conditions, the hypervisor reads it
        // nowhere but here.
        unsafe { instr::write_dr6(self.dr6) };
        let area = self.xsave.as_ptr();
        let switch = self.features.xsave_switch_mask;
        if self.features.xsave {
            // SAFETY: `enable` set CR4.OSXSAVE; the switch mask is the CPU's own set.
            unsafe { ext_state::set_xcr0(switch) };
            // SAFETY: `area` is this vCPU's own 4 KiB-aligned frame, large enough for
            // every supported component (`new` checked), holding zeroes or the image
            // saved after the previous run.
            unsafe { ext_state::xrstor(area, switch) };
            // SAFETY: the guest's XCR0 passed the XSETBV handler's checks (bit 0 set,
            // only offered components); the hypervisor keeps no extended state.
            unsafe { ext_state::set_xcr0(self.xcr0) };
        } else {
            // SAFETY: `enable` set CR4.OSFXSR; `area` holds a valid image.
            unsafe { ext_state::fxrstor(area) };
        }
        exit_stages::checkpoint(Stage::Entry);
        let status = loop {
            // SAFETY: VMX is on, this vCPU's VMCS is current with host state written in
            // `setup` (the hypervisor's tables and control registers do not change
            // afterwards); `launched` follows the VMCS's launch state; `regs` is ours.
            let status = unsafe { vmx_run(&raw mut self.regs, u64::from(self.launched)) };
            if status != outcome::EXITED {
                break status;
            }
            self.launched = true;
            // Control-register writes that touch bits the hypervisor owns are finished
            // here and the guest re-entered: they mean nothing to common code.
            if read(EXIT_REASON) as u32 == reason::CR_ACCESS && self.handle_cr_access() {
                continue;
            }
            break status;
        };
        exit_stages::checkpoint(Stage::Guest);
        self.switched.save(&mut HostSwitched);
        // SAFETY: as for the write above.
        self.dr6 = unsafe { instr::read_dr6() };
        // SWAPGS exchanges GS base with KernelGsBase without an exit: the CPU's value is
        // the guest's now. (The other syscall MSRs change only through WRMSR, which
        // exits.)
        self.msrs.kernel_gs_base = host_msr(msr::KERNEL_GS_BASE);
        if self.features.xsave {
            // SAFETY: as for XRSTOR above, with XCR0 back to the switch mask first.
            unsafe {
                ext_state::set_xcr0(switch);
                ext_state::xsave(area, switch);
            }
        } else {
            // SAFETY: as for FXRSTOR above.
            unsafe { ext_state::fxsave(area) };
        }
        if status != outcome::EXITED {
            let error = read(VM_INSTRUCTION_ERROR);
            log::error!(target: "vmx", "VM entry failed ({}), VM-instruction error {error}",
                if status == outcome::FAIL_INVALID { "VMfailInvalid" } else { "VMfailValid" });
            return Exit::new(ExitReason::InvalidGuestState { raw: (status << 32) | error });
        }
        self.after_exit()
    }

    fn after_exit(&mut self) -> Exit {
        self.regs.rsp = read(GUEST_RSP);
        self.regs.rip = read(GUEST_RIP);
        self.regs.rflags = read(GUEST_RFLAGS);
        let raw = VmcsExit {
            reason: read(EXIT_REASON) as u32,
            qualification: read(EXIT_QUALIFICATION),
            intr_info: read(EXIT_INTERRUPTION_INFO) as u32,
            intr_error: read(EXIT_INTERRUPTION_ERROR_CODE) as u32,
            guest_phys: read(GUEST_PHYSICAL_ADDRESS),
            insn_len: read(EXIT_INSTRUCTION_LENGTH) as u32,
            rip: self.regs.rip,
            rax: self.regs.rax,
            rcx: self.regs.rcx,
            rdx: self.regs.rdx,
        };
        let basic = raw.reason & 0xffff;
        let is_db = basic == reason::EXCEPTION_OR_NMI
            && raw.intr_info & intr_info::VECTOR_MASK == u32::from(vector::DB)
            && (raw.intr_info & intr_info::TYPE_MASK) >> intr_info::TYPE_SHIFT == intr_info::TYPE_HW_EXCEPTION;
        self.debug_qualification = is_db.then_some(raw.qualification);
        if raw.reason & reason::ENTRY_FAILURE != 0 {
            log::error!(target: "vmx", "VM entry failed: exit reason {:#x}, qualification {:#x}", raw.reason, raw.qualification);
        }
        if basic == reason::INTERRUPT_WINDOW {
            self.controls.proc1 &= !proc1::INTERRUPT_WINDOW_EXITING;
            set(PRIMARY_PROC_CONTROLS, u64::from(self.controls.proc1));
        }
        let idt = read(IDT_VECTORING_INFO) as u32;
        self.pending_event = (idt & intr_info::VALID != 0)
            .then(|| (idt & !intr_info::NMI_UNBLOCKING, read(IDT_VECTORING_ERROR_CODE) as u32, raw.insn_len));
        // An #AC raised while delivering #AC: re-injecting it faults again forever.
        let ac = u32::from(vector::AC);
        if basic == reason::EXCEPTION_OR_NMI
            && raw.intr_info & intr_info::VECTOR_MASK == ac
            && idt & intr_info::VALID != 0
            && idt & intr_info::VECTOR_MASK == ac
        {
            log::warn!(target: "vmx", "exception 17 raised while delivering exception 17: the guest cannot make progress");
            self.pending_event = None;
            return Exit::new(ExitReason::Shutdown);
        }
        exit::decode(&raw, self.mode().ip_mask())
    }

    /// Carries out `action` in the VMCS (see `Arch::apply`).
    pub fn apply(&mut self, action: &ExitAction) -> Flow {
        self.make_current();
        match action {
            ExitAction::Advance(next) | ExitAction::Yield(next) | ExitAction::Halt(next) => {
                self.regs.rip = match *next {
                    NextRip::By(n) => self.regs.rip.wrapping_add(u64::from(n)) & self.mode().ip_mask(),
                    NextRip::To(rip) => rip,
                };
                let state = read(GUEST_INTERRUPTIBILITY) as u32;
                if state & (interruptibility::STI | interruptibility::MOV_SS) != 0 {
                    set(GUEST_INTERRUPTIBILITY, u64::from(state & !(interruptibility::STI | interruptibility::MOV_SS)));
                }
            }
            ExitAction::Inject(e) => {
                if self.pending_event.is_none() {
                    // Reflecting an intercepted #DB: delivery would have set DR6 from the
                    // exit qualification and cleared DR7.GD, which an injected event
                    // does not (SDM Vol. 3 28.1, 18.2.4).
                    if let Some(q) = self.debug_qualification.take()
                        && e.kind == EventKind::Exception
                        && e.vector == vector::DB
                    {
                        self.dr6 = (self.dr6 & !DR6_FROM_QUALIFICATION) | (q & DR6_FROM_QUALIFICATION);
                        set(GUEST_DR7, read(GUEST_DR7) & !DR7_GD);
                    }
                    self.inject(e);
                } else {
                    // Debug only: a guest can make this happen on every exit.
                    log::debug!(target: "vmx", "dropping injection of {e:?}: re-injecting an interrupted event");
                }
            }
            ExitAction::Resume | ExitAction::Stop(_) => {}
        }
        Flow::of(action)
    }

    fn inject(&mut self, e: &Event) {
        let kind = match e.kind {
            EventKind::ExternalInterrupt => intr_info::TYPE_EXTERNAL,
            EventKind::Nmi => intr_info::TYPE_NMI,
            EventKind::Exception if matches!(e.vector, vector::BP | 4) => intr_info::TYPE_SW_EXCEPTION,
            EventKind::Exception => intr_info::TYPE_HW_EXCEPTION,
            EventKind::SoftwareInterrupt => intr_info::TYPE_SW_INTERRUPT,
        };
        let mut info = u32::from(e.vector) | (kind << intr_info::TYPE_SHIFT) | intr_info::VALID;
        // Real mode delivers no error code; VM entry refuses one there (SDM 27.2.1.3).
        let protected = read(GUEST_CR0) & cr::CR0_PE != 0;
        if let Some(code) = e.error_code
            && e.kind == EventKind::Exception
            && Event::exception_has_error_code(e.vector)
            && protected
        {
            info |= intr_info::ERROR_CODE_VALID;
            set(ENTRY_EXCEPTION_ERROR_CODE, u64::from(code));
        }
        if matches!(kind, intr_info::TYPE_SW_INTERRUPT | intr_info::TYPE_SW_EXCEPTION) {
            set(ENTRY_INSTRUCTION_LENGTH, read(EXIT_INSTRUCTION_LENGTH).clamp(1, 15));
        }
        set(ENTRY_INTERRUPTION_INFO, u64::from(info));
    }

    pub fn interrupt_window_open(&mut self) -> bool {
        self.make_current();
        self.regs.rflags & (1 << 9) != 0
            && read(GUEST_INTERRUPTIBILITY) as u32 & (interruptibility::STI | interruptibility::MOV_SS) == 0
            && read(ENTRY_INTERRUPTION_INFO) as u32 & intr_info::VALID == 0
            && self.pending_event.is_none()
    }

    /// Without virtual NMIs an injected NMI blocks NMIs in the guest until its IRET,
    /// which the processor tracks in the interruptibility state (SDM Vol. 3 24.4.2).
    pub fn nmi_window_open(&mut self) -> bool {
        self.make_current();
        let blocking = interruptibility::STI | interruptibility::MOV_SS | interruptibility::NMI;
        read(GUEST_INTERRUPTIBILITY) as u32 & blocking == 0
            && read(ENTRY_INTERRUPTION_INFO) as u32 & intr_info::VALID == 0
            && self.pending_event.is_none()
    }

    pub fn inject_nmi(&mut self) {
        self.make_current();
        self.inject(&Event { kind: EventKind::Nmi, vector: vector::NMI, error_code: None });
    }

    pub fn inject_interrupt(&mut self, vector: u8) {
        self.make_current();
        self.inject(&Event::interrupt(vector));
    }

    /// Interrupt-window exiting: an exit as soon as the guest can take an interrupt;
    /// `after_exit` turns it off again (SDM Vol. 3 26.7.5).
    pub fn request_interrupt_window(&mut self) {
        self.make_current();
        self.controls.proc1 |= proc1::INTERRUPT_WINDOW_EXITING;
        set(PRIMARY_PROC_CONTROLS, u64::from(self.controls.proc1));
    }

    pub fn regs_view(&mut self) -> super::regs::VmxRegs<'_> {
        self.make_current();
        super::regs::VmxRegs { vcpu: self }
    }
}
