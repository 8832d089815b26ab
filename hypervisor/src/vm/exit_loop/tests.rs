//! The exit loop driven through a scripted vCPU and a fake host: what the loop does
//! with interrupts before each entry, and what ends its slice.

use super::*;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::arch::backend::{InitialState, PermissionMaps, VcpuConfig};
use crate::arch::exit::{Flow, StopReason};
use crate::arch::regs::{ControlRegs, FakeRegs, SegReg, Segment, VendorMsr};
use crate::arch::x86::cpuid::FakeCpuid;
use crate::devices::vpci::msi::MsiRoute;
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr};
use crate::memory::frames::FrameSource;
use crate::memory::guest::{GuestMemory, GuestMemoryMap, GuestRegion, Perms, VecHostMemory};
use crate::vm::config::Restart;
use crate::vm::instance::VmState;
use crate::vm::passthrough::host_vectors::Fired;
use crate::vm::passthrough::host_vectors::GuestTarget;
use bulkhead_abi::hypercall as abi;

const VM: u32 = 1;
const OTHER_VM: u32 = 2;

/// One run of the guest: the exit it ends in, the registers it leaves, and whether
/// it can take an interrupt afterwards (`None`: unchanged).
struct Step {
    reason: ExitReason,
    regs: &'static [(Gpr, u64)],
    window_open: Option<bool>,
}

fn exit(reason: ExitReason) -> Step {
    Step { reason, regs: &[], window_open: None }
}

fn hypercall(regs: &'static [(Gpr, u64)]) -> Step {
    Step { reason: ExitReason::Hypercall, regs, window_open: None }
}

const RAISE_0X40: &[(Gpr, u64)] = &[(Gpr::Rax, abi::RAISE_INTERRUPT), (Gpr::Rbx, 0x40)];
const RAISE_0X50: &[(Gpr, u64)] = &[(Gpr::Rax, abi::RAISE_INTERRUPT), (Gpr::Rbx, 0x50)];
const YIELD: &[(Gpr, u64)] = &[(Gpr::Rax, abi::YIELD)];

/// A vCPU that plays a script of exits and records what the loop asked of it.
#[derive(Default)]
struct FakeVcpu {
    regs: FakeRegs,
    script: VecDeque<Step>,
    window_open: bool,
    /// The interrupt to deliver on the next entry.
    queued: Option<u8>,
    /// For each entry, the interrupt delivered on it.
    entries: Vec<Option<u8>>,
    window_requests: u32,
}

struct RegsOf<'a>(&'a mut FakeRegs);

impl RegisterFile for RegsOf<'_> {
    fn gpr(&self, r: Gpr) -> u64 {
        self.0.gpr(r)
    }
    fn set_gpr(&mut self, r: Gpr, value: u64) {
        self.0.set_gpr(r, value)
    }
    fn rip(&self) -> u64 {
        self.0.rip()
    }
    fn rflags(&self) -> u64 {
        self.0.rflags()
    }
    fn set_rflags(&mut self, value: u64) {
        self.0.set_rflags(value)
    }
    fn control(&self) -> ControlRegs {
        self.0.control()
    }
    fn set_cr2(&mut self, value: u64) {
        self.0.set_cr2(value)
    }
    fn segment(&self, seg: SegReg) -> Segment {
        self.0.segment(seg)
    }
    fn cpl(&self) -> u8 {
        self.0.cpl()
    }
    fn msr(&self, msr: VendorMsr) -> u64 {
        self.0.msr(msr)
    }
    fn set_msr(&mut self, msr: VendorMsr, value: u64) {
        self.0.set_msr(msr, value)
    }
    fn tsc_offset(&self) -> u64 {
        self.0.tsc_offset()
    }
    fn set_tsc_offset(&mut self, value: u64) {
        self.0.set_tsc_offset(value)
    }
    fn xcr0(&self) -> u64 {
        self.0.xcr0()
    }
    fn set_xcr0(&mut self, value: u64) {
        self.0.set_xcr0(value)
    }
}

struct FakeArch;

impl Arch for FakeArch {
    const NAME: &'static str = "fake";
    const RUNS_ON_ANY_CPU: bool = false;
    type Features = ();
    type Vcpu = FakeVcpu;
    type Regs<'a> = RegsOf<'a>;
    type Error = ();
    type Stage2 = crate::memory::page_table::npt::Npt;
    const STAGE2: crate::memory::page_table::Geometry = crate::memory::page_table::npt::GEOMETRY;

    fn probe() -> Option<()> {
        Some(())
    }
    fn enable_cpu<F: FrameSource>(_: &(), _: &mut F) -> Result<(), ()> {
        Ok(())
    }
    fn create_vcpu<F: FrameSource>(_: &(), config: &VcpuConfig, _: &mut F) -> Result<FakeVcpu, ()> {
        let InitialState::Long64 { rip, cr3, .. } = config.initial else { return Err(()) };
        let mut regs = FakeRegs::long_mode(cr3);
        regs.regs.rip = rip;
        Ok(FakeVcpu { regs, ..FakeVcpu::default() })
    }
    fn destroy_vcpu<F: FrameSource>(_: FakeVcpu, _: &mut F) {}

    /// Enters with the queued interrupt; out of script, the guest triple-faults
    /// (so a test that runs too far sees a stop it does not expect).
    fn run(vcpu: &mut FakeVcpu) -> Exit {
        vcpu.entries.push(vcpu.queued.take());
        let Some(step) = vcpu.script.pop_front() else { return Exit::new(ExitReason::Shutdown) };
        for &(r, v) in step.regs {
            vcpu.regs.set_gpr(r, v);
        }
        if let Some(open) = step.window_open {
            vcpu.window_open = open;
        }
        let mut exit = Exit::new(step.reason);
        exit.next_rip = Some(vcpu.regs.rip() + 3);
        exit
    }
    fn regs(vcpu: &mut FakeVcpu) -> RegsOf<'_> {
        RegsOf(&mut vcpu.regs)
    }
    fn apply(_: &mut FakeVcpu, action: &ExitAction) -> Flow {
        Flow::of(action)
    }
    fn interrupt_window_open(vcpu: &mut FakeVcpu) -> bool {
        vcpu.window_open
    }
    fn inject_interrupt(vcpu: &mut FakeVcpu, vector: u8) {
        vcpu.queued = Some(vector);
    }
    fn nmi_window_open(_: &mut FakeVcpu) -> bool {
        false
    }
    fn inject_nmi(_: &mut FakeVcpu) {}
    fn request_interrupt_window(vcpu: &mut FakeVcpu) {
        vcpu.window_requests += 1;
    }
    fn request_tlb_flush(_: &mut FakeVcpu) {}
    fn permission_maps() -> PermissionMaps {
        PermissionMaps { io: Vec::new(), msr: Vec::new() }
    }
}

/// The host: device interrupts recorded for any VM, the slice timer (fires at the
/// Nth check), the keyboard flag.
#[derive(Default)]
struct FakeHost {
    tsc: Cell<u64>,
    fired: RefCell<Vec<Fired>>,
    timer_in: Cell<Option<u32>>,
    key: Cell<bool>,
    host_interrupts_taken: Cell<u32>,
}

impl FakeHost {
    fn fire(&self, vm: u32, vector: u8) {
        let route = MsiRoute { vector, dest: 0, logical: false, delivery: 0 };
        self.fired.borrow_mut().push(Fired { host_vector: 0x30 + vector, vm, target: GuestTarget::Msi(route) });
    }
}

impl SliceHost for FakeHost {
    fn now_tsc(&self) -> u64 {
        self.tsc.set(self.tsc.get() + 1000);
        self.tsc.get()
    }
    fn take_fired_for(&self, vm: u32) -> (Vec<Fired>, bool) {
        let all = core::mem::take(&mut *self.fired.borrow_mut());
        let (mine, others): (Vec<Fired>, Vec<Fired>) = all.into_iter().partition(|f| f.vm == vm);
        let waiting = !others.is_empty();
        *self.fired.borrow_mut() = others;
        (mine, waiting)
    }
    fn take_host_interrupt(&self) {
        self.host_interrupts_taken.set(self.host_interrupts_taken.get() + 1);
    }
    fn timer_expired(&self) -> bool {
        match self.timer_in.get() {
            Some(n) if n <= 1 => {
                self.timer_in.set(None);
                true
            }
            Some(n) => {
                self.timer_in.set(Some(n - 1));
                false
            }
            None => false,
        }
    }
    fn key_pending(&self) -> bool {
        self.key.get()
    }
    fn resample_intx(&self, _vm: u32, _guest_gsis: u32) {}
}

/// A payload VM's parts, as `Vm` lends them to the loop.
struct Guest {
    vcpu: FakeVcpu,
    platform: Platform,
    ports: PioBus,
    mmio: MemBus,
    msrs: MsrState,
    cpuid: FakeCpuid,
    policy: CpuidPolicy,
    map: GuestMemoryMap,
    console: spin::Mutex<VmConsole>,
    counters: ExitCounters,
    device_interrupts: u64,
}

impl Guest {
    fn new(script: Vec<Step>) -> Guest {
        let mut regs = FakeRegs::long_mode(0x1000);
        regs.regs.rip = 0x8000;
        let mut vcpu = FakeVcpu { regs, ..FakeVcpu::default() };
        vcpu.script = script.into();
        vcpu.window_open = true;
        let cpuid = FakeCpuid::all_ones();
        let policy = CpuidPolicy::new(&cpuid);
        let region = GuestRegion::new(GuestPhysAddr::new(0), HostPhysAddr::new(0), 0x1_0000, Perms::RWX).unwrap();
        Guest {
            vcpu,
            platform: Platform::default(),
            ports: PioBus::new("pio"),
            mmio: MemBus::new("mmio"),
            msrs: MsrState::new(true),
            cpuid,
            policy,
            map: GuestMemoryMap::new(vec![region]).unwrap(),
            console: spin::Mutex::new(VmConsole::new("payload")),
            counters: ExitCounters::default(),
            device_interrupts: 0,
        }
    }

    /// One slice through the real loop.
    fn run(&mut self, host: &FakeHost) -> SliceEnd {
        let mut memory = GuestMemory::new(&self.map, VecHostMemory::new(HostPhysAddr::new(0), 0x1_0000));
        let mut sync_bars = || false;
        ExitLoop::<FakeArch, _> {
            vm: VmIdentity { id: VM, name: "payload", memory_bytes: 0x1_0000 },
            vcpu: &mut self.vcpu,
            vcpu_index: 0,
            platform: &mut self.platform,
            ports: &mut self.ports,
            mmio: &mut self.mmio,
            msrs: &mut self.msrs,
            policy: &self.policy,
            cpuid: &self.cpuid,
            memory: &mut memory,
            console: &self.console,
            counters: &mut self.counters,
            device_interrupts: &mut self.device_interrupts,
            host,
            sync_bars: &mut sync_bars,
            net_ports: &[],
            disk: None,
            network: None,
        }
        .run()
    }
}

#[test]
fn pending_interrupts_are_injected_before_entry_highest_first() {
    let mut guest = Guest::new(vec![
        hypercall(RAISE_0X40),
        hypercall(RAISE_0X50),
        Step { reason: ExitReason::InterruptWindow, regs: &[], window_open: Some(true) },
        exit(ExitReason::ExternalInterrupt),
        hypercall(YIELD),
    ]);
    guest.vcpu.window_open = false;
    let host = FakeHost::default();
    assert_eq!(guest.run(&host), SliceEnd::Yielded);
    // Window closed: the loop asks for it (twice) instead of injecting; once open,
    // the highest vector goes first, one per entry.
    assert_eq!(guest.vcpu.entries, [None, None, None, Some(0x50), Some(0x40)]);
    assert_eq!(guest.vcpu.window_requests, 2);
    assert!(!guest.platform.interrupt_pending(0));
    assert_eq!(host.host_interrupts_taken.get(), 1, "the host interrupt that ended a run is taken");
    assert_eq!(guest.counters.total(), 5);
}

#[test]
fn a_device_interrupt_for_another_vm_ends_the_slice_before_entry() {
    let mut guest = Guest::new(vec![hypercall(YIELD)]);
    let host = FakeHost::default();
    host.fire(OTHER_VM, 0x61);
    host.fire(VM, 0x62);
    assert_eq!(guest.run(&host), SliceEnd::Preempted);
    assert!(guest.vcpu.entries.is_empty(), "the guest did not run");
    // Its own interrupt was delivered; the other VM's stays for the scheduler.
    assert_eq!(guest.device_interrupts, 1);
    assert!(guest.platform.interrupt_pending(0));
    assert_eq!(host.fired.borrow().iter().map(|f| f.vm).collect::<Vec<_>>(), [OTHER_VM]);
    // Once the scheduler took it, the VM runs and gets its own interrupt at once.
    host.fired.borrow_mut().clear();
    assert_eq!(guest.run(&host), SliceEnd::Yielded);
    assert_eq!(guest.vcpu.entries, [Some(0x62)]);
}

#[test]
fn a_device_interrupt_during_the_slice_goes_in_on_the_next_entry() {
    let mut guest = Guest::new(vec![exit(ExitReason::ExternalInterrupt), hypercall(YIELD)]);
    let host = FakeHost::default();
    assert_eq!(guest.run(&host), SliceEnd::Yielded);
    assert_eq!(guest.vcpu.entries, [None, None]);
    let mut guest = Guest::new(vec![exit(ExitReason::ExternalInterrupt), hypercall(YIELD)]);
    host.fire(VM, 0x45);
    assert_eq!(guest.run(&host), SliceEnd::Yielded);
    assert_eq!(guest.vcpu.entries, [Some(0x45), None]);
}

#[test]
fn a_halted_vm_wakes_on_its_interrupt() {
    let mut guest = Guest::new(vec![exit(ExitReason::Hlt), hypercall(YIELD)]);
    let host = FakeHost::default();
    assert_eq!(guest.run(&host), SliceEnd::Halted);
    let mut state = VmState::Halted;
    assert_eq!(slice_rules::wake(state, guest.platform.interrupt_pending(0)), VmState::Halted, "nothing pending");
    // Its device interrupts while it sleeps: delivered by the scheduler as `Vm` does.
    host.fire(VM, 0x70);
    let (mine, others) = host.take_fired_for(VM);
    assert!(!others);
    for fired in mine {
        assert!(guest.platform.deliver_device_interrupt(VM, fired.target, &mut guest.device_interrupts));
    }
    state = slice_rules::wake(state, guest.platform.interrupt_pending(0));
    assert_eq!(state, VmState::Runnable);
    assert_eq!(guest.run(&host), SliceEnd::Yielded);
    assert_eq!(guest.vcpu.entries, [None, Some(0x70)], "woken, it takes the interrupt on entry");
}

#[test]
fn hlt_with_an_interrupt_pending_goes_on() {
    let mut guest = Guest::new(vec![
        hypercall(RAISE_0X40),
        Step { reason: ExitReason::Hlt, regs: &[], window_open: Some(true) },
        hypercall(YIELD),
    ]);
    guest.vcpu.window_open = false;
    let host = FakeHost::default();
    assert_eq!(guest.run(&host), SliceEnd::Yielded);
    assert_eq!(guest.vcpu.entries, [None, None, Some(0x40)]);
}

#[test]
fn the_slice_timer_and_a_key_preempt_after_an_exit() {
    let script = || (0..4).map(|_| exit(ExitReason::ExternalInterrupt)).collect::<Vec<_>>();
    let mut guest = Guest::new(script());
    let host = FakeHost::default();
    host.timer_in.set(Some(2));
    assert_eq!(guest.run(&host), SliceEnd::Preempted);
    assert_eq!(guest.vcpu.entries.len(), 2, "ended at the second exit");
    let mut guest = Guest::new(script());
    host.key.set(true);
    assert_eq!(guest.run(&host), SliceEnd::Preempted);
    assert_eq!(guest.vcpu.entries.len(), 1);
    assert!(host.key.get(), "the key stays for the switcher");
}

#[test]
fn stops_end_the_slice_and_restart_by_policy() {
    // A triple fault is a crash: restarted while the rule allows.
    let mut guest = Guest::new(vec![exit(ExitReason::Shutdown)]);
    let host = FakeHost::default();
    let SliceEnd::Stopped(reason) = guest.run(&host) else { panic!("the VM should stop") };
    assert_eq!(reason, StopReason::TripleFault);
    assert!(slice_rules::should_restart(reason, Restart::Times(1), 1));
    assert!(!slice_rules::should_restart(reason, Restart::Times(1), 2));
    assert!(!slice_rules::should_restart(reason, Restart::Never, 1));
    // A shutdown the guest asked for is not restarted, whatever the rule.
    const SHUTDOWN_3: &[(Gpr, u64)] = &[(Gpr::Rax, abi::SHUTDOWN), (Gpr::Rbx, 3)];
    let mut guest = Guest::new(vec![hypercall(SHUTDOWN_3)]);
    let SliceEnd::Stopped(reason) = guest.run(&host) else { panic!("the VM should stop") };
    assert_eq!(reason, StopReason::GuestShutdown { status: 3 });
    assert!(!slice_rules::should_restart(reason, Restart::Always, 1));
}
