//! What each CPU owns: its index, APIC id, start state, timer figure, SVM host save
//! area and mailbox. One slot per CPU in a static array, indexed by the CPU's index
//! (0 is the boot CPU); a CPU finds its own by its local APIC id ([`current`]).
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use alloc::boxed::Box;
use spin::Once;

use super::mailbox::Mailbox;

/// CPUs the hypervisor runs at most; the MADT's others are reported and left out.
pub const MAX_CPUS: usize = 64;

/// A work item for a CPU's mailbox.
pub type WorkItem = Box<dyn FnOnce() + Send>;

/// Where a CPU is in its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CpuState {
    /// Being started (INIT and startup IPIs sent).
    Starting = 0,
    /// Reached the hypervisor's code and left the trampoline.
    CheckedIn = 1,
    /// Set up (tables, LAPIC, SVM) and waiting for work.
    Online = 2,
    /// Did not check in in time: left out (parked with INIT).
    Failed = 3,
}

/// One CPU's state, shared: every field is atomic or behind a lock.
pub struct PerCpu {
    pub index: usize,
    pub apic_id: u32,
    state: AtomicU8,
    /// Its LAPIC timer's ticks per millisecond (divide-by-16), as it measured them.
    pub timer_ticks_per_ms: AtomicU64,
    /// Its SVM host save area (VM_HSAVE_PA), 0 while SVM is off on it.
    pub host_save_area: AtomicU64,
    /// Its stack and IST stacks: (base, bytes), 0 for the boot CPU's static ones.
    pub stacks: (u64, u64),
    pub mailbox: Mailbox<WorkItem>,
}

impl core::fmt::Debug for PerCpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PerCpu")
            .field("index", &self.index)
            .field("apic_id", &self.apic_id)
            .field("state", &self.state())
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

impl PerCpu {
    pub fn state(&self) -> CpuState {
        match self.state.load(Ordering::Acquire) {
            0 => CpuState::Starting,
            1 => CpuState::CheckedIn,
            2 => CpuState::Online,
            _ => CpuState::Failed,
        }
    }

    pub fn set_state(&self, state: CpuState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Moves from `from` to `to` only if the state is still `from`: the boot CPU
    /// giving up on an AP and the AP checking in race, and exactly one of them wins.
    pub fn transition(&self, from: CpuState, to: CpuState) -> bool {
        self.state.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

static CPUS: [Once<PerCpu>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

/// Gives the next index to a CPU with APIC id `apic_id` (the boot CPU first), or
/// `None` when [`MAX_CPUS`] are taken. Only the boot CPU registers CPUs.
pub fn register(apic_id: u32, state: CpuState, stacks: (u64, u64)) -> Option<&'static PerCpu> {
    let index = REGISTERED.load(Ordering::Acquire);
    let slot = CPUS.get(index)?;
    let cpu = slot.call_once(|| PerCpu {
        index,
        apic_id,
        state: AtomicU8::new(state as u8),
        timer_ticks_per_ms: AtomicU64::new(0),
        host_save_area: AtomicU64::new(0),
        stacks,
        mailbox: Mailbox::new(),
    });
    REGISTERED.store(index.saturating_add(1), Ordering::Release);
    Some(cpu)
}

/// The CPU with index `index`.
pub fn get(index: usize) -> Option<&'static PerCpu> {
    CPUS.get(index)?.get()
}

/// Every registered CPU, in index order.
pub fn all() -> impl Iterator<Item = &'static PerCpu> {
    (0..REGISTERED.load(Ordering::Acquire)).filter_map(get)
}

/// The CPU with local APIC id `apic_id`.
pub fn by_apic_id(apic_id: u32) -> Option<&'static PerCpu> {
    all().find(|cpu| cpu.apic_id == apic_id)
}

/// The executing CPU's slot (found by its local APIC id).
pub fn current() -> Option<&'static PerCpu> {
    by_apic_id(super::super::lapic::id())
}

/// CPUs that are online (the boot CPU counts once registered online).
pub fn online_count() -> usize {
    all().filter(|cpu| cpu.state() == CpuState::Online).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> PerCpu {
        PerCpu {
            index: 1,
            apic_id: 1,
            state: AtomicU8::new(CpuState::Starting as u8),
            timer_ticks_per_ms: AtomicU64::new(0),
            host_save_area: AtomicU64::new(0),
            stacks: (0, 0),
            mailbox: Mailbox::new(),
        }
    }

    #[test]
    fn giving_up_and_checking_in_exclude_each_other() {
        // The AP checks in first: the boot CPU can no longer give up on it.
        let late_giver = cpu();
        assert!(late_giver.transition(CpuState::Starting, CpuState::CheckedIn));
        assert!(!late_giver.transition(CpuState::Starting, CpuState::Failed));
        assert_eq!(late_giver.state(), CpuState::CheckedIn);
        // The boot CPU gives up first: the AP's check-in fails and it halts.
        let late_ap = cpu();
        assert!(late_ap.transition(CpuState::Starting, CpuState::Failed));
        assert!(!late_ap.transition(CpuState::Starting, CpuState::CheckedIn));
        assert_eq!(late_ap.state(), CpuState::Failed);
    }

    #[test]
    fn every_state_reads_back_as_stored() {
        let c = cpu();
        for state in [CpuState::Starting, CpuState::CheckedIn, CpuState::Online, CpuState::Failed] {
            c.set_state(state);
            assert_eq!(c.state(), state);
        }
    }
}
