//! The bookkeeping of one queue pair (NVMe Base 2.0 §3.3.1 "Memory-based Transport
//! Queue Model"): the submission tail the host advances, the head the controller
//! reports in each completion, and the completion head with its phase tag, which
//! flips each time the completion queue wraps (§4.6, Phase Tag). Pure; the controller
//! code reads and writes the entries and rings the doorbells.
#![forbid(unsafe_code)]

use super::cmd::{CQE_BYTES, Cqe, SQE_BYTES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePair {
    /// Queue id (0 = admin).
    pub qid: u16,
    pub entries: u16,
    pub sq_base: u64,
    pub cq_base: u64,
    sq_tail: u16,
    /// The controller's SQ head, from the last completion.
    sq_head: u16,
    cq_head: u16,
    /// The phase tag a new completion carries.
    phase: bool,
}

impl QueuePair {
    /// A queue pair of `entries` (≥ 2) entries in both queues; the completion queue
    /// memory must be zeroed (so no entry carries phase 1 before the controller
    /// writes it).
    pub fn new(qid: u16, entries: u16, sq_base: u64, cq_base: u64) -> Self {
        QueuePair { qid, entries: entries.max(2), sq_base, cq_base, sq_tail: 0, sq_head: 0, cq_head: 0, phase: true }
    }

    fn next(&self, i: u16) -> u16 {
        let n = i.wrapping_add(1);
        if n >= self.entries { 0 } else { n }
    }

    /// Where the next submission entry goes and the tail to write to the doorbell
    /// after it; `None` when the queue is full (one slot always stays empty).
    pub fn submit_slot(&self) -> Option<(u64, u16)> {
        let new_tail = self.next(self.sq_tail);
        if new_tail == self.sq_head {
            return None;
        }
        let at = self.sq_base.checked_add(u64::from(self.sq_tail).checked_mul(SQE_BYTES as u64)?)?;
        Some((at, new_tail))
    }

    /// Records that the entry at the slot from [`submit_slot`] was written.
    pub fn submitted(&mut self, new_tail: u16) {
        self.sq_tail = new_tail;
    }

    /// Where the completion entry the driver waits for will appear.
    pub fn completion_slot(&self) -> u64 {
        self.cq_base.saturating_add(u64::from(self.cq_head).saturating_mul(CQE_BYTES as u64))
    }

    /// Whether the entry at [`completion_slot`] whose status field is `status` is new
    /// (its phase tag is the one this pass over the queue expects).
    pub fn completion_ready(&self, status: u16) -> bool {
        (status & 1 == 1) == self.phase
    }

    /// Whether `cqe` (read at [`completion_slot`]) is new. If so it is consumed:
    /// returns the completion head to write to the doorbell.
    pub fn take_completion(&mut self, cqe: &Cqe) -> Option<u16> {
        if cqe.phase() != self.phase {
            return None;
        }
        // A controller reporting a head outside the queue is ignored (the driver only
        // uses it to know a slot is free, and keeps at most two commands in flight).
        if cqe.sq_head < self.entries {
            self.sq_head = cqe.sq_head;
        }
        let next = self.next(self.cq_head);
        if next == 0 {
            self.phase = !self.phase;
        }
        self.cq_head = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(q: &QueuePair, phase: bool) -> Cqe {
        let _ = q;
        Cqe { status: u16::from(phase), sq_head: 0, ..Cqe::default() }
    }

    #[test]
    fn the_phase_flips_when_the_completion_queue_wraps() {
        let mut q = QueuePair::new(1, 3, 0x1000, 0x2000);
        for round in 0..4 {
            for i in 0..3u16 {
                let phase = round % 2 == 0;
                assert_eq!(q.completion_slot(), 0x2000 + 16 * u64::from(i));
                // A stale entry (last round's phase) is not new, by its status alone.
                assert!(!q.completion_ready(u16::from(!phase) | 0x8000));
                assert!(q.completion_ready(u16::from(phase) | 0x8000));
                assert_eq!(q.take_completion(&done(&q, !phase)), None);
                let (slot, tail) = q.submit_slot().unwrap();
                assert_eq!(slot, 0x1000 + 64 * u64::from(i));
                q.submitted(tail);
                let mut c = done(&q, phase);
                c.sq_head = tail;
                assert_eq!(q.take_completion(&c), Some((i + 1) % 3));
            }
        }
    }

    #[test]
    fn a_full_queue_refuses_more() {
        let mut q = QueuePair::new(1, 2, 0x1000, 0x2000);
        let (_, tail) = q.submit_slot().unwrap();
        q.submitted(tail);
        assert_eq!(q.submit_slot(), None, "one slot stays empty");
        let mut c = done(&q, true);
        c.sq_head = 1;
        q.take_completion(&c).unwrap();
        assert!(q.submit_slot().is_some());
        // A head beyond the queue does not move the bookkeeping.
        c.sq_head = 99;
        c.status = 1;
        let before = q.clone();
        q.take_completion(&c).unwrap();
        assert_eq!(q.sq_head, before.sq_head);
    }
}
