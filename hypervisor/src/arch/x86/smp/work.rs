//! Running work on a given CPU: the work item goes into that CPU's mailbox and an IPI
//! on [`lapic::WORK_VECTOR`] wakes it; an idle AP takes its mailbox's items in order
//! with interrupts on. [`call_on`] waits (bounded) for the result.

use alloc::boxed::Box;
use alloc::sync::Arc;
use spin::Mutex;

use super::percpu::{self, CpuState, PerCpu};
use crate::arch::x86::lapic::{self, IpiError};
use crate::arch::x86::{instr, tsc};

/// Why a work item did not run (or its result did not come back in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    NoSuchCpu,
    NotOnline,
    MailboxFull,
    Ipi(IpiError),
    /// No result within the time given; the item may still run later (its result is
    /// then dropped).
    TimedOut,
}

/// Queues `work` for CPU `index` and wakes it. The item runs on that CPU, outside
/// interrupt context, after the items queued before it.
pub fn post(index: usize, work: Box<dyn FnOnce() + Send>) -> Result<(), CallError> {
    let cpu = percpu::get(index).ok_or(CallError::NoSuchCpu)?;
    if cpu.state() != CpuState::Online {
        return Err(CallError::NotOnline);
    }
    cpu.mailbox.post(work).map_err(|_| CallError::MailboxFull)?;
    lapic::send_ipi(cpu.apic_id, lapic::icr::FIXED | u32::from(lapic::WORK_VECTOR)).map_err(CallError::Ipi)
}

/// Runs `f` on CPU `index` and returns its result, waiting at most `timeout_ms`.
/// On the executing CPU itself `f` runs at once.
pub fn call_on<R: Send + 'static>(
    index: usize,
    f: impl FnOnce() -> R + Send + 'static,
    timeout_ms: u64,
) -> Result<R, CallError> {
    if percpu::current().is_some_and(|me| me.index == index) {
        return Ok(f());
    }
    let slot: Arc<Mutex<Option<R>>> = Arc::new(Mutex::new(None));
    let answer = slot.clone();
    post(index, Box::new(move || *answer.lock() = Some(f())))?;
    let ticks = tsc::cached_ticks_per_ms().max(1).saturating_mul(timeout_ms);
    let start = instr::rdtsc();
    loop {
        if let Some(result) = slot.lock().take() {
            return Ok(result);
        }
        if instr::rdtsc().wrapping_sub(start) > ticks {
            return Err(CallError::TimedOut);
        }
        core::hint::spin_loop();
    }
}

/// An AP's life once online: run the vCPU it was given (`guest_runs`), then what its
/// mailbox holds, otherwise halt with interrupts on until an IPI arrives. Interrupts
/// are off between looking and `sti; hlt` (one instruction's shadow), so a wake-up is
/// never lost; a guest runs with them off (its exit leaves the host interrupt
/// pending, taken at the next `sti`).
pub(super) fn idle(cpu: &'static PerCpu) -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        if super::guest_runs::run_given(cpu) {
            continue;
        }
        match cpu.mailbox.take() {
            Some(work) => {
                x86_64::instructions::interrupts::enable();
                work();
            }
            None => x86_64::instructions::interrupts::enable_and_hlt(),
        }
    }
}

/// Asks every online AP, through its mailbox, for its local APIC id and checks the
/// answer against the id it was started as. Returns (answered correctly, asked).
pub fn self_test() -> (usize, usize) {
    let (mut good, mut asked) = (0usize, 0usize);
    for cpu in percpu::all().filter(|c| c.index != 0 && c.state() == CpuState::Online) {
        asked = asked.saturating_add(1);
        let index = cpu.index;
        let answer = call_on(
            index,
            move || {
                let id = lapic::id();
                log::info!(target: "smp", "cpu{index}: work item running on APIC id {id}");
                id
            },
            100,
        );
        match answer {
            Ok(id) if id == cpu.apic_id => {
                good = good.saturating_add(1);
                log::info!(target: "smp", "self-test: cpu{index} reported APIC id {id} (expected {})", cpu.apic_id);
            }
            Ok(id) => log::error!(
                target: "smp",
                "self-test: cpu{index} reported APIC id {id}, expected {}",
                cpu.apic_id
            ),
            Err(e) => {
                log::error!(target: "smp", "self-test: cpu{index} (APIC id {}) did not answer: {e:?}", cpu.apic_id)
            }
        }
    }
    (good, asked)
}
