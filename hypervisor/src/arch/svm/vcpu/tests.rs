//! Host tests of vCPU setup, register access and action application (everything but
//! the world switch itself).

use super::*;
use crate::arch::exit::{Event, StopReason};
use crate::memory::fake_frames::FakeFrames;

fn features() -> SvmFeatures {
    SvmFeatures { npt: true, asids: 16, ..SvmFeatures::default() }
}

fn config(initial: InitialState) -> VcpuConfig {
    VcpuConfig {
        tag: 1,
        stage2_root: HostPhysAddr::new(0x1234_5000),
        io_bitmap: HostPhysAddr::new(0x10_0000),
        msr_bitmap: HostPhysAddr::new(0x10_3000),
        initial,
    }
}

const LONG: InitialState = InitialState::Long64 { rip: 0x10_0000, rsp: 0x8_0000, cr3: 0x9000, rsi: 0x7000 };

#[test]
fn vmcb_setup_long_mode() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(LONG), &mut frames).unwrap();
    let c = v.vmcb().control;
    assert_ne!(c.intercept_misc2 & InterceptMisc2::VMRUN.bits(), 0);
    assert_ne!(c.intercept_misc1 & InterceptMisc1::INTR.bits(), 0);
    assert_ne!(c.intercept_misc1 & InterceptMisc1::SHUTDOWN.bits(), 0);
    assert_eq!(c.int_ctl & int_ctl::V_INTR_MASKING, int_ctl::V_INTR_MASKING);
    assert_eq!((c.nested_ctl, c.ncr3, c.guest_asid), (1, 0x1234_5000, 1));
    assert_eq!((c.iopm_base_pa, c.msrpm_base_pa), (0x10_0000, 0x10_3000));
    assert_eq!(c.tlb_control, tlb_control::FLUSH_ALL);
    let s = v.vmcb().save;
    assert_eq!(s.efer & cr::EFER_SVME, cr::EFER_SVME);
    assert_eq!((s.cr3, s.cs.attrib), (0x9000, 0xa9b));
    assert_eq!(v.registers().rip, 0x10_0000);
    let r = v.regs_view();
    assert_eq!(r.mode(), CpuMode::Long64);
    assert_eq!(r.gpr(Gpr::Rsi), 0x7000);
    // The guest does not see SVME; writes cannot clear it.
    assert_eq!(r.msr(VendorMsr::Efer) & cr::EFER_SVME, 0);
    let mut r = v.regs_view();
    r.set_msr(VendorMsr::Efer, cr::EFER_LME);
    assert_eq!(v.vmcb().save.efer, cr::EFER_LME | cr::EFER_SVME);
    // Three frames: VMCB, host save, extended state.
    assert_eq!(frames.live(), 3);
    v.destroy(&mut frames);
    assert_eq!(frames.live(), 0);
}

#[test]
fn vmcb_setup_reset_state() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(InitialState::Reset), &mut frames).unwrap();
    let s = v.vmcb().save;
    assert_eq!((s.cs.selector, s.cs.base), (0xf000, 0xffff_0000));
    assert_eq!(v.registers().rip, 0xfff0);
    assert_eq!(v.regs_view().mode(), CpuMode::Real);
    v.destroy(&mut frames);
}

#[test]
fn vmcb_setup_startup_ipi_state() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(InitialState::Startup { vector: 0x9A }), &mut frames).unwrap();
    let s = v.vmcb().save;
    assert_eq!((s.cs.selector, s.cs.base, s.cs.limit), (0x9A00, 0x9_A000, 0xffff));
    assert_eq!(v.registers().rip, 0);
    assert_eq!(v.regs_view().mode(), CpuMode::Real);
    v.destroy(&mut frames);
}

#[test]
fn vmcb_setup_multiboot_protected_mode() {
    let mut frames = FakeFrames::new();
    let initial = InitialState::Protected32 { eip: 0x20_0020, eax: 0x2BAD_B002, ebx: 0x1000 };
    let mut v = SvmVcpu::new(&features(), &config(initial), &mut frames).unwrap();
    let s = v.vmcb().save;
    // PE without PG, no long mode, flat 4 GiB 32-bit code and data.
    assert_eq!((s.cr0 & 0x8000_0001, s.efer & (cr::EFER_LME | cr::EFER_LMA)), (1, 0));
    assert_eq!((s.cs.attrib, s.cs.base, s.cs.limit), (0xc9b, 0, 0xffff_ffff));
    for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
        assert_eq!((seg.attrib, seg.base, seg.limit), (0xc93, 0, 0xffff_ffff));
    }
    let regs = v.registers();
    assert_eq!((regs.rip, regs.rax, regs.rbx), (0x20_0020, 0x2BAD_B002, 0x1000));
    // IF and VM clear.
    assert_eq!(regs.rflags & 0x2_0200, 0);
    assert_eq!(v.regs_view().mode(), CpuMode::Protected32);
    v.destroy(&mut frames);
}

#[test]
fn bad_configs_and_exhaustion_leak_nothing() {
    let mut frames = FakeFrames::new();
    let mut bad = config(LONG);
    bad.tag = 0;
    assert_eq!(SvmVcpu::new(&features(), &bad, &mut frames).err(), Some(SvmError::BadConfig));
    bad.tag = 16;
    assert!(SvmVcpu::new(&features(), &bad, &mut frames).is_err());
    frames.limit = Some(frames.live() + 2);
    assert_eq!(SvmVcpu::new(&features(), &config(LONG), &mut frames).err(), Some(SvmError::OutOfFrames));
    let big = SvmFeatures { xsave_bytes: 8192, ..features() };
    assert_eq!(SvmVcpu::new(&big, &config(LONG), &mut frames).err(), Some(SvmError::XsaveAreaTooLarge));
    assert_eq!(frames.live(), 0);
}

#[test]
fn advancing_16_and_32_bit_code_wraps_rip() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(InitialState::Reset), &mut frames).unwrap();
    v.regs.rip = 0xffff;
    v.apply(&ExitAction::Advance(NextRip::By(2)));
    assert_eq!(v.registers().rip, 1);
    v.destroy(&mut frames);
    let initial = InitialState::Protected32 { eip: 0xffff_fffe, eax: 0, ebx: 0 };
    let mut v = SvmVcpu::new(&features(), &config(initial), &mut frames).unwrap();
    v.apply(&ExitAction::Advance(NextRip::By(3)));
    assert_eq!(v.registers().rip, 1);
    v.destroy(&mut frames);
}

#[test]
fn apply_advances_injects_and_reinjects() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(LONG), &mut frames).unwrap();
    v.vmcb_mut().control.int_state = int_state::INTERRUPT_SHADOW;
    assert_eq!(v.apply(&ExitAction::Advance(NextRip::By(3))), Flow::Continue);
    assert_eq!(v.registers().rip, 0x10_0003);
    assert_eq!(v.vmcb().control.int_state, 0);
    assert_eq!(v.apply(&ExitAction::Halt(NextRip::To(0x20_0000))), Flow::WaitForInterrupt);
    assert_eq!(v.registers().rip, 0x20_0000);
    v.apply(&ExitAction::Inject(Event::gp(0)));
    assert_eq!(v.vmcb().control.event_inj, 0x8000_0b0d);
    assert_eq!(v.apply(&ExitAction::Stop(StopReason::TripleFault)), Flow::Stop(StopReason::TripleFault));

    // Simulate an exit during delivery of vector 0x30 (NPF while vectoring).
    {
        let c = &mut v.vmcb_mut().control;
        c.exit_code = code::NPF;
        c.exit_info1 = 0x1_0000_0006;
        c.exit_info2 = 0xfee0_0000;
        c.exit_int_info = 0x8000_0030 | (0x1234 << 32);
        c.event_inj = 0x8000_0b0d;
    }
    v.vmcb_mut().save.rip = 0x30_0000;
    let exit = v.after_exit();
    assert!(matches!(exit.reason, ExitReason::NestedPageFault { .. }));
    assert_eq!(v.registers().rip, 0x30_0000);
    assert_eq!(v.vmcb().control.event_inj, 0, "EVENTINJ cleared as a whole");
    v.apply(&ExitAction::Resume);
    assert_eq!(v.vmcb().control.event_inj, 0, "an interrupt goes back through V_IRQ");
    assert_eq!(v.vmcb().control.int_ctl & !int_ctl::V_INTR_MASKING, int_ctl::virtual_interrupt(0x30, 0xf));
    // Stale error code with the valid bit clear is not re-injected.
    v.vmcb_mut().control.int_ctl = int_ctl::V_INTR_MASKING;
    v.vmcb_mut().control.exit_int_info = 0x1234_0000_0000;
    v.after_exit();
    v.apply(&ExitAction::Resume);
    assert_eq!(v.vmcb().control.event_inj, 0);
    assert_eq!(v.vmcb().control.int_ctl, int_ctl::V_INTR_MASKING);
    // An exception cut short is re-injected through EVENTINJ with its error code.
    v.vmcb_mut().control.exit_int_info = 0x1234_8000_0b0e;
    v.after_exit();
    v.apply(&ExitAction::Resume);
    assert_eq!(v.vmcb().control.event_inj, 0x1234_8000_0b0e);
    v.destroy(&mut frames);
}

#[test]
fn vintr_exit_clears_the_window_request() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(LONG), &mut frames).unwrap();
    {
        let c = &mut v.vmcb_mut().control;
        c.int_ctl |= int_ctl::virtual_interrupt(0x41, 0xf);
        c.intercept_misc1 |= InterceptMisc1::VINTR.bits();
        c.exit_code = code::VINTR;
    }
    assert_eq!(v.after_exit().reason, ExitReason::InterruptWindow);
    let c = v.vmcb().control;
    assert_eq!(c.int_ctl & int_ctl::V_IRQ, 0);
    assert_eq!(c.intercept_misc1 & InterceptMisc1::VINTR.bits(), 0);
    v.request_tlb_flush();
    assert_eq!(v.vmcb().control.tlb_control, tlb_control::FLUSH_ALL);
    v.destroy(&mut frames);
}

#[test]
fn an_injected_nmi_blocks_the_next_until_the_guests_iret() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(LONG), &mut frames).unwrap();
    assert!(v.nmi_window_open());
    v.inject_nmi();
    let c = v.vmcb().control;
    assert_eq!(c.event_inj, encode_event(&Event { kind: EventKind::Nmi, vector: vector::NMI, error_code: None }));
    assert_ne!(c.intercept_misc1 & InterceptMisc1::IRET.bits(), 0);
    assert!(!v.nmi_window_open(), "queued, then in the guest's handler");
    v.vmcb_mut().control.exit_code = code::HLT;
    assert_eq!(v.after_exit().reason, ExitReason::Hlt);
    assert!(!v.nmi_window_open(), "no IRET yet");
    v.vmcb_mut().control.exit_code = code::IRET;
    assert_eq!(v.after_exit().reason, ExitReason::InterruptWindow);
    assert!(v.nmi_window_open());
    assert_eq!(v.vmcb().control.intercept_misc1 & InterceptMisc1::IRET.bits(), 0);
    v.destroy(&mut frames);
}

#[test]
fn ac_and_db_are_intercepted_and_db_reflection_clears_gd() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(LONG), &mut frames).unwrap();
    let e = v.vmcb().control.intercept_exceptions;
    for vec in [vector::AC, vector::DB, vector::MC] {
        assert_ne!(e & (1 << vec), 0, "vector {vec} not intercepted");
    }
    // A data breakpoint hit: the CPU wrote DR6 (B0) into the VMCB at the exit; the guest
    // had DR7.GD and L0 set. Reflecting keeps DR6 and clears GD, as delivery would.
    {
        let c = &mut v.vmcb_mut().control;
        c.exit_code = code::EXCEPTION_BASE + u64::from(vector::DB);
    }
    v.vmcb_mut().save.dr6 = 0xffff_0ff1;
    v.vmcb_mut().save.dr7 = 0x400 | DR7_GD | 1;
    let exit = v.after_exit();
    assert_eq!(exit.reason, ExitReason::Exception { vector: vector::DB, error_code: None, fault_address: 0 });
    v.apply(&ExitAction::Inject(Event::exception(vector::DB, None)));
    assert_eq!(v.vmcb().control.event_inj, 0x8000_0301);
    assert_eq!((v.vmcb().save.dr6, v.vmcb().save.dr7), (0xffff_0ff1, 0x401));
    // Other exceptions leave DR7 alone.
    v.vmcb_mut().save.dr7 = 0x400 | DR7_GD;
    v.apply(&ExitAction::Inject(Event::exception(vector::AC, Some(0))));
    assert_eq!(v.vmcb().control.event_inj, 0x8000_0b11);
    assert_eq!(v.vmcb().save.dr7, 0x400 | DR7_GD);
    // A #DB that is not delivered (an interrupted exception goes first) leaves GD set.
    v.vmcb_mut().control.exit_int_info = 0x8000_0b0e;
    v.after_exit();
    v.apply(&ExitAction::Inject(Event::exception(vector::DB, None)));
    assert_eq!(v.vmcb().control.event_inj, 0x8000_0b0e);
    assert_eq!(v.vmcb().save.dr7, 0x400 | DR7_GD);
    // An interrupted interrupt waits in V_IRQ behind the #DB, which is delivered.
    v.vmcb_mut().control.exit_int_info = 0x8000_0030;
    v.after_exit();
    v.apply(&ExitAction::Inject(Event::exception(vector::DB, None)));
    assert_eq!(v.vmcb().control.event_inj, 0x8000_0301);
    assert_eq!(v.vmcb().control.int_ctl & int_ctl::V_IRQ, int_ctl::V_IRQ);
    assert_eq!(v.vmcb().save.dr7, 0x400);
    v.destroy(&mut frames);
}

#[test]
fn ac_while_delivering_ac_stops_instead_of_looping() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(LONG), &mut frames).unwrap();
    // #AC intercepted while the CPU delivered #AC (EXITINTINFO: valid, exception, 17,
    // error code 0): re-injecting it can only fault the same way again.
    let ac_delivery = 0x8000_0b11;
    {
        let c = &mut v.vmcb_mut().control;
        c.exit_code = code::EXCEPTION_BASE + u64::from(vector::AC);
        c.exit_int_info = ac_delivery;
    }
    assert_eq!(v.after_exit().reason, ExitReason::Shutdown);
    v.apply(&ExitAction::Stop(StopReason::TripleFault));
    assert_eq!(v.vmcb().control.event_inj, 0, "nothing re-injected");
    // #AC while delivering an interrupt, or #GP while delivering #AC, is reflected.
    v.vmcb_mut().control.exit_int_info = 0x8000_0030;
    assert_eq!(v.after_exit().reason, ExitReason::Exception { vector: 17, error_code: Some(0), fault_address: 0 });
    {
        let c = &mut v.vmcb_mut().control;
        c.exit_code = code::EXCEPTION_BASE + u64::from(vector::GP);
        c.exit_int_info = ac_delivery;
    }
    assert!(matches!(v.after_exit().reason, ExitReason::Exception { vector: 13, .. }));
    v.destroy(&mut frames);
}

#[test]
fn tsc_aux_is_vcpu_state() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(LONG), &mut frames).unwrap();
    let mut r = v.regs_view();
    assert_eq!(r.msr(VendorMsr::TscAux), 0);
    r.set_msr(VendorMsr::TscAux, 0x1234);
    assert_eq!(r.msr(VendorMsr::TscAux), 0x1234);
    assert_eq!(v.switched.tsc_aux, 0x1234);
    v.destroy(&mut frames);
}

#[test]
fn external_interrupts_wait_in_v_irq_until_the_guest_takes_them() {
    let mut frames = FakeFrames::new();
    let mut v = SvmVcpu::new(&features(), &config(LONG), &mut frames).unwrap();
    v.vmcb_mut().save.rflags = 0x202;
    v.vmcb_mut().control.exit_code = code::HLT;
    v.after_exit();
    // A window request is open; the interrupt replaces it and drops the VINTR intercept.
    v.request_interrupt_window();
    assert!(v.interrupt_window_open());
    v.inject_interrupt(0x41);
    let c = v.vmcb().control;
    assert_eq!(c.event_inj, 0, "never through EVENTINJ");
    assert_eq!(c.int_ctl, int_ctl::V_INTR_MASKING | int_ctl::virtual_interrupt(0x41, 0xf));
    assert_eq!(c.intercept_misc1 & InterceptMisc1::VINTR.bits(), 0);
    // A host interrupt ended the run before the guest took it: it stays queued, the
    // window counts as closed, and a window request leaves it alone.
    v.vmcb_mut().control.exit_code = code::INTR;
    v.after_exit();
    assert!(!v.interrupt_window_open());
    v.request_interrupt_window();
    let c = v.vmcb().control;
    assert_eq!(c.int_ctl, int_ctl::V_INTR_MASKING | int_ctl::virtual_interrupt(0x41, 0xf));
    assert_eq!(c.intercept_misc1 & InterceptMisc1::VINTR.bits(), 0);
    // The CPU took it (cleared V_IRQ): the window is open again.
    v.vmcb_mut().control.int_ctl &= !int_ctl::V_IRQ;
    v.vmcb_mut().control.exit_code = code::INTR;
    v.after_exit();
    assert!(v.interrupt_window_open());
    v.destroy(&mut frames);
}
