//! Where vCPUs run when the machine has application processors, and in which order
//! each processor runs its own. The boot CPU keeps the switcher, the devices and
//! every exit handler (`vm/instance/remote.rs`); the guests' code runs on the APs.
//!
//! **Placement** (at launch, never changed: vCPUs are pinned, as most client
//! hypervisors do): the vCPUs in VM order, each VM's in vCPU order, go round robin
//! over the APs, so the vCPUs of one VM land on different cores and the VMs spread
//! out; with more vCPUs than APs, an AP holds several.
//!
//! **Run queue** (one per AP): the vCPU it runs keeps it while it has work, or for a
//! slice of [`SLICE_TSC`]-worth of time when others on the same AP wait; a vCPU that
//! halts, yields or stops gives the AP to the next runnable one, in queue order.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

/// Set from the command line (`guests=boot-cpu`): no vCPU goes to an AP.
static BOOT_CPU_ONLY: AtomicBool = AtomicBool::new(false);

/// Keeps every vCPU on the boot CPU (called by boot, before the VMs start).
pub fn set_boot_cpu_only(yes: bool) {
    BOOT_CPU_ONLY.store(yes, Ordering::Relaxed);
}

/// Whether every vCPU stays on the boot CPU whatever CPUs are online.
pub fn boot_cpu_only() -> bool {
    BOOT_CPU_ONLY.load(Ordering::Relaxed)
}

/// One vCPU of one VM: the scheduler's slot index and the vCPU's index in its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub slot: usize,
    pub vcpu: usize,
}

/// The CPU of every vCPU, `placement[vm][vcpu]`; `None` everywhere without APs.
pub fn place(vcpu_counts: &[usize], aps: &[usize]) -> Vec<Vec<Option<usize>>> {
    let mut next = 0usize;
    vcpu_counts
        .iter()
        .map(|&count| {
            (0..count)
                .map(|_| {
                    let cpu = next.checked_rem(aps.len()).and_then(|i| aps.get(i)).copied();
                    next = next.wrapping_add(1);
                    cpu
                })
                .collect()
        })
        .collect()
}

/// The vCPUs one AP runs, and which runs now.
#[derive(Debug)]
pub struct RunQueue {
    pub cpu: usize,
    pub members: Vec<Member>,
    /// The member that holds the CPU (running, or between two runs of its slice).
    current: Option<usize>,
    /// Host TSC at which the current member's slice ends.
    slice_end: u64,
    /// The member that ran there last (its VM's ASID may be in that CPU's TLB).
    last: Option<Member>,
    /// Whether the current run was already cut short with an IPI.
    pub kicked: bool,
}

/// The next run on an AP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub member: Member,
    /// Another vCPU of the same VM ran there last: flush its guest TLB first.
    pub flush: bool,
    /// When the run must end so the others get their turn (0: no one else waits).
    pub slice_end: u64,
}

impl RunQueue {
    pub fn new(cpu: usize) -> RunQueue {
        RunQueue { cpu, members: Vec::new(), current: None, slice_end: 0, last: None, kicked: false }
    }

    /// The member that holds the CPU.
    pub fn current(&self) -> Option<Member> {
        self.current.and_then(|i| self.members.get(i).copied())
    }

    /// The current member's run ended for now: the next pick starts after it.
    pub fn yield_current(&mut self) {
        self.slice_end = 0;
    }

    /// Forgets a VM's members' claims (it stopped or restarted): its vCPUs are home.
    pub fn forget_slot(&mut self, slot: usize) {
        if self.current().is_some_and(|m| m.slot == slot) {
            self.slice_end = 0;
        }
        if self.last.is_some_and(|m| m.slot == slot) {
            self.last = None;
        }
    }

    /// Who runs next at host TSC `now`: the current member while its slice lasts (or
    /// while nobody else can run), else the next runnable member after it.
    pub fn pick(&mut self, now: u64, slice_tsc: u64, runnable: impl Fn(Member) -> bool) -> Option<Pick> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let others_wait = |queue: &RunQueue, except: usize| {
            queue.members.iter().enumerate().any(|(i, m)| i != except && runnable(*m))
        };
        let keep = self.current.filter(|&i| {
            self.members.get(i).is_some_and(|m| runnable(*m)) && (now < self.slice_end || !others_wait(self, i))
        });
        let chosen = match keep {
            Some(i) => i,
            None => {
                let start = self.current.map_or(0, |i| i.wrapping_add(1));
                let i = (0..n)
                    .filter_map(|k| start.wrapping_add(k).checked_rem(n))
                    .find(|&i| self.members.get(i).is_some_and(|m| runnable(*m)))?;
                self.slice_end = now.saturating_add(slice_tsc);
                i
            }
        };
        self.current = Some(chosen);
        let member = *self.members.get(chosen)?;
        let flush = self.last.is_some_and(|last| last.slot == member.slot && last.vcpu != member.vcpu);
        self.last = Some(member);
        self.kicked = false;
        let slice_end = if others_wait(self, chosen) || n > 1 { self.slice_end } else { 0 };
        Some(Pick { member, flush, slice_end })
    }
}

/// One run queue per AP that holds a vCPU, from a placement.
pub fn queues(placement: &[Vec<Option<usize>>]) -> Vec<RunQueue> {
    let mut queues: Vec<RunQueue> = Vec::new();
    for (slot, vcpus) in placement.iter().enumerate() {
        for (vcpu, cpu) in vcpus.iter().enumerate() {
            let Some(cpu) = *cpu else { continue };
            let member = Member { slot, vcpu };
            match queues.iter_mut().find(|q| q.cpu == cpu) {
                Some(q) => q.members.push(member),
                None => {
                    let mut q = RunQueue::new(cpu);
                    q.members.push(member);
                    queues.push(q);
                }
            }
        }
    }
    queues
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn m(slot: usize, vcpu: usize) -> Member {
        Member { slot, vcpu }
    }

    #[test]
    fn vcpus_go_round_robin_so_a_vms_vcpus_get_different_cores() {
        // A 2-vCPU desktop and a 1-vCPU one on three APs: one core each.
        assert_eq!(place(&[2, 1], &[1, 2, 3]), vec![vec![Some(1), Some(2)], vec![Some(3)]]);
        // More vCPUs than APs: they share, still spread.
        assert_eq!(place(&[2, 1, 1], &[1, 2]), vec![vec![Some(1), Some(2)], vec![Some(1)], vec![Some(2)]]);
        // No AP: everything stays on the boot CPU.
        assert_eq!(place(&[2, 1], &[]), vec![vec![None, None], vec![None]]);
        let q = queues(&place(&[2, 1, 1], &[1, 2]));
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].cpu, q[0].members.as_slice()), (1, &[m(0, 0), m(1, 0)][..]));
        assert_eq!((q[1].cpu, q[1].members.as_slice()), (2, &[m(0, 1), m(2, 0)][..]));
    }

    #[test]
    fn a_vcpu_alone_on_its_core_keeps_it_without_a_slice_limit() {
        let mut q = queues(&place(&[1], &[1])).remove(0);
        let pick = q.pick(100, 10, |_| true).unwrap();
        assert_eq!(pick, Pick { member: m(0, 0), flush: false, slice_end: 0 });
        assert_eq!(q.pick(1_000_000, 10, |_| true).unwrap().member, m(0, 0));
        assert_eq!(q.pick(1_000_001, 10, |_| false), None, "halted: nothing to run");
    }

    #[test]
    fn vcpus_sharing_a_core_take_turns_by_slice_and_give_it_up_when_halted() {
        let mut q = queues(&place(&[1, 1], &[1])).remove(0);
        let first = q.pick(0, 10, |_| true).unwrap();
        assert_eq!((first.member, first.slice_end), (m(0, 0), 10));
        assert_eq!(q.pick(5, 10, |_| true).unwrap().member, m(0, 0), "within its slice");
        let second = q.pick(10, 10, |_| true).unwrap();
        assert_eq!((second.member, second.slice_end), (m(1, 0), 20));
        // The second halts: the first gets the core at once.
        assert_eq!(q.pick(12, 10, |x| x == m(0, 0)).unwrap().member, m(0, 0));
        // A yield ends the slice early.
        q.yield_current();
        assert_eq!(q.pick(13, 10, |_| true).unwrap().member, m(1, 0));
    }

    #[test]
    fn siblings_on_one_core_flush_the_shared_asid_between_them() {
        let mut q = queues(&place(&[2], &[1])).remove(0);
        assert!(!q.pick(0, 10, |_| true).unwrap().flush);
        let next = q.pick(10, 10, |_| true).unwrap();
        assert_eq!((next.member, next.flush), (m(0, 1), true));
        assert!(!q.pick(11, 10, |_| true).unwrap().flush, "the same vCPU again");
        q.forget_slot(0);
        assert!(!q.pick(30, 10, |_| true).unwrap().flush, "a restarted VM's vCPUs are new");
    }
}
