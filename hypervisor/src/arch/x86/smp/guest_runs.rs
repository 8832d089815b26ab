//! Guest runs on application processors. The boot CPU (the control CPU: switcher,
//! devices, every exit handler) hands an AP one vCPU; the AP enters the guest once,
//! until the next exit, and hands the vCPU back with the exit. Exits are handled on the
//! boot CPU, so a VM's devices, local APICs and page tables are only ever touched by
//! one CPU, while its guest code runs on as many cores as it has vCPUs.
//!
//! One [`RunCell`] per CPU carries the hand-over. Its state moves
//! `Idle → Given` (boot CPU, then an IPI on the work vector wakes the AP),
//! `Given → Running → Done` (the AP, which then sends the boot CPU an IPI) and
//! `Done → Idle` (boot CPU, taking the vCPU and the exit back). Whoever moves the state
//! owns the cell's other fields until the next move, so the fields need no lock.
//!
//! The boot CPU ends a run early with [`kick`]: an IPI makes the guest exit (the VMCB
//! intercepts physical interrupts) and the AP hands the vCPU back at once.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::percpu::{self, CpuState, MAX_CPUS};
use crate::arch::backend::Arch;
use crate::arch::exit::Exit;
use crate::arch::x86::{instr, lapic, tsc};

/// What came back from one run on an AP.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    pub exit: Exit,
    /// Host TSC just before entering and just after the exit.
    pub entered: u64,
    pub exited: u64,
}

/// The vCPU on its way: type-erased, so the per-CPU cells need no backend type.
#[derive(Clone, Copy)]
struct Job {
    vcpu: *mut (),
    enter: unsafe fn(*mut ()) -> Exit,
    /// Host TSC at which the AP's timer ends the run (0: no timer).
    deadline: u64,
}

const IDLE: u8 = 0;
const GIVEN: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// The hand-over of one vCPU between the boot CPU and one AP.
struct RunCell {
    state: AtomicU8,
    /// A kick asked for the current run to end (set before the kick's IPI). The AP
    /// takes stray IPIs just before entering the guest, so that one meant to wake it
    /// does not end the run at once; this flag keeps a kick among them from being lost.
    kicked: AtomicBool,
    job: UnsafeCell<Option<Job>>,
    ran: UnsafeCell<Option<Ran>>,
}

// SAFETY: the fields behind `UnsafeCell` are only read or written by the CPU that
// owns the cell in its current state (see the module comment); the state moves with
// Release stores and is read with Acquire loads, which order those accesses.
unsafe impl Sync for RunCell {}

impl RunCell {
    const fn new() -> RunCell {
        RunCell {
            state: AtomicU8::new(IDLE),
            kicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            ran: UnsafeCell::new(None),
        }
    }
}

static CELLS: [RunCell; MAX_CPUS] = [const { RunCell::new() }; MAX_CPUS];

/// Set by an AP when it hands a vCPU back; the boot CPU's scheduler clears it.
pub static EXITS_WAITING: AtomicBool = AtomicBool::new(false);

/// Whether CPU `cpu` can take guest runs (an online AP).
pub fn available(cpu: usize) -> bool {
    cpu != 0 && percpu::get(cpu).is_some_and(|c| c.state() == CpuState::Online)
}

/// Whether CPU `cpu` holds no vCPU (it may be given one).
pub fn idle(cpu: usize) -> bool {
    CELLS.get(cpu).is_some_and(|c| c.state.load(Ordering::Acquire) == IDLE)
}

/// Enters `A`'s vCPU behind `vcpu`.
///
/// # Safety
/// `vcpu` must come from `Box::<A::Vcpu>::into_raw` and nobody else may use it until
/// this returns.
unsafe fn enter<A: Arch>(vcpu: *mut ()) -> Exit {
    // SAFETY: the caller's contract: a live, exclusively owned `A::Vcpu`.
    A::run(unsafe { &mut *vcpu.cast::<A::Vcpu>() })
}

/// Gives `vcpu` to AP `cpu` for one run that ends at its next exit or at host TSC
/// `deadline` (0: no deadline). Hands the vCPU back if the AP cannot take it.
pub fn give<A: Arch>(cpu: usize, vcpu: Box<A::Vcpu>, deadline: u64) -> Result<(), Box<A::Vcpu>> {
    let (Some(cell), Some(target)) = (CELLS.get(cpu), percpu::get(cpu)) else { return Err(vcpu) };
    if !available(cpu) || cell.state.load(Ordering::Acquire) != IDLE {
        return Err(vcpu);
    }
    let job = Job { vcpu: Box::into_raw(vcpu).cast(), enter: enter::<A>, deadline };
    // SAFETY: the cell is idle, so the boot CPU (the only caller) owns its fields.
    unsafe { *cell.job.get() = Some(job) };
    // A kick of an earlier run is not this run's.
    cell.kicked.store(false, Ordering::Relaxed);
    cell.state.store(GIVEN, Ordering::Release);
    if lapic::send_ipi(target.apic_id, lapic::icr::FIXED | u32::from(lapic::WORK_VECTOR)).is_err()
        && cell.state.compare_exchange(GIVEN, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok()
    {
        // SAFETY: the AP never took it (the state was still Given): the pointer came
        // from `into_raw` above and is still exclusively ours.
        return Err(unsafe { Box::from_raw(job.vcpu.cast::<A::Vcpu>()) });
    }
    Ok(())
}

/// Takes the vCPU and its exit back from AP `cpu` once its run has ended.
pub fn collect<A: Arch>(cpu: usize) -> Option<(Box<A::Vcpu>, Ran)> {
    let cell = CELLS.get(cpu)?;
    if cell.state.load(Ordering::Acquire) != DONE {
        return None;
    }
    // SAFETY: Done: the AP has finished with the fields and the boot CPU owns them.
    let (job, ran) = unsafe { ((*cell.job.get()).take(), (*cell.ran.get()).take()) };
    cell.state.store(IDLE, Ordering::Release);
    let (job, ran) = (job?, ran?);
    // SAFETY: the pointer came from `Box::into_raw` in `give::<A>` (one backend per
    // boot) and the AP no longer uses it (Done).
    Some((unsafe { Box::from_raw(job.vcpu.cast::<A::Vcpu>()) }, ran))
}

/// Makes the guest running on AP `cpu` exit soon (an IPI: the VMCB intercepts
/// physical interrupts). Harmless when the AP holds no vCPU.
pub fn kick(cpu: usize) {
    if let Some(cell) = CELLS.get(cpu) {
        cell.kicked.store(true, Ordering::Release);
    }
    if let Some(target) = percpu::get(cpu) {
        let _ = lapic::send_ipi(target.apic_id, lapic::icr::FIXED | u32::from(lapic::WORK_VECTOR));
    }
}

/// Ends the run on AP `cpu` and waits (at most `timeout_ms`) for the vCPU to come
/// back. `None` if the AP held nothing or did not answer in time (the vCPU then stays
/// with it and a later [`collect`] takes it back).
pub fn recall<A: Arch>(cpu: usize, timeout_ms: u64) -> Option<(Box<A::Vcpu>, Ran)> {
    if idle(cpu) {
        return None;
    }
    kick(cpu);
    let ticks = tsc::cached_ticks_per_ms().max(1).saturating_mul(timeout_ms);
    let start = instr::rdtsc();
    let were_enabled = x86_64::instructions::interrupts::are_enabled();
    // Halted rather than spinning: the AP's "run ended" IPI wakes this CPU, and
    // under emulation a spinning CPU would take the host core the AP needs. The
    // kick goes again every millisecond: one sent while the AP was still waking from
    // the IPI that gave it the vCPU merges with that one and is lost.
    let per_ms = tsc::cached_ticks_per_ms().max(1);
    let mut kicked = start;
    lapic::arm_oneshot_us(1000);
    let back = loop {
        x86_64::instructions::interrupts::disable();
        if let Some(back) = collect::<A>(cpu) {
            break Some(back);
        }
        let now = instr::rdtsc();
        if now.wrapping_sub(start) > ticks {
            break None;
        }
        if now.wrapping_sub(kicked) >= per_ms {
            kicked = now;
            kick(cpu);
            lapic::arm_oneshot_us(1000);
        }
        x86_64::instructions::interrupts::enable_and_hlt();
    };
    lapic::disarm();
    if were_enabled {
        x86_64::instructions::interrupts::enable();
    }
    back
}

/// On AP `cpu`, with interrupts off: runs the vCPU it was given, if any, and hands it
/// back; whether there was one. Its LAPIC timer (on the work vector) ends the run at
/// the deadline; an IPI from the boot CPU ends it earlier.
pub(super) fn run_given(cpu: &percpu::PerCpu) -> bool {
    let Some(cell) = CELLS.get(cpu.index) else { return false };
    if cell.state.compare_exchange(GIVEN, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return false;
    }
    // SAFETY: Running: this AP owns the fields until it stores Done.
    let Some(job) = (unsafe { *cell.job.get() }) else {
        cell.state.store(DONE, Ordering::Release);
        return true;
    };
    // IPIs that arrived while this AP was busy (the one that gave this run, when it
    // came before the AP halted; a kick of the last run) are taken now: left pending,
    // each would end the run the moment the guest is entered.
    x86_64::instructions::interrupts::enable();
    core::hint::spin_loop();
    x86_64::instructions::interrupts::disable();
    let entered = instr::rdtsc();
    if cell.kicked.swap(false, Ordering::AcqRel) {
        // A kick for this run was among them: the run ends at once.
        lapic::arm_oneshot_on(lapic::WORK_VECTOR, 1);
    } else if job.deadline != 0 {
        let per_us = (tsc::cached_ticks_per_ms() / 1000).max(1);
        let micros = job.deadline.saturating_sub(entered).checked_div(per_us).unwrap_or(0).saturating_add(1);
        lapic::arm_oneshot_on(lapic::WORK_VECTOR, micros);
    }
    // SAFETY: `give` stored a pointer from `Box::into_raw` with the matching `enter`,
    // and the boot CPU does not touch the vCPU until this AP stores Done.
    let exit = unsafe { (job.enter)(job.vcpu) };
    let exited = instr::rdtsc();
    lapic::disarm();
    // The interrupt that made the guest exit (a kick, the deadline) is still pending:
    // take it now, or it would end the next run at once.
    x86_64::instructions::interrupts::enable();
    core::hint::spin_loop();
    x86_64::instructions::interrupts::disable();
    // SAFETY: still Running: the fields are this AP's.
    unsafe { *cell.ran.get() = Some(Ran { exit, entered, exited }) };
    cell.state.store(DONE, Ordering::Release);
    EXITS_WAITING.store(true, Ordering::Release);
    if let Some(boot) = percpu::get(0) {
        let _ = lapic::send_ipi(boot.apic_id, lapic::icr::FIXED | u32::from(lapic::WORK_VECTOR));
    }
    true
}
