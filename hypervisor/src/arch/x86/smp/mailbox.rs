//! A CPU's mailbox: a short queue of work items other CPUs post for it to run. Pure
//! (a lock and a bounded queue), so its rules are tested on the host; `work.rs` puts
//! closures in it and wakes the CPU with an IPI.
#![forbid(unsafe_code)]

use heapless::Deque;
use spin::Mutex;

/// Items a mailbox holds at once; a full mailbox refuses more (the poster sees it
/// and decides), so a slow CPU never makes another allocate without bound.
pub const MAILBOX_SLOTS: usize = 8;

/// The queue and its counters.
struct Slots<T> {
    queue: Deque<T, MAILBOX_SLOTS>,
    posted: u64,
    taken: u64,
}

/// A bounded first-in first-out mailbox, safe to share between CPUs.
pub struct Mailbox<T> {
    slots: Mutex<Slots<T>>,
}

/// The mailbox was full; the item comes back to the poster.
#[derive(Debug, PartialEq, Eq)]
pub struct MailboxFull<T>(pub T);

impl<T> Mailbox<T> {
    pub const fn new() -> Self {
        Mailbox { slots: Mutex::new(Slots { queue: Deque::new(), posted: 0, taken: 0 }) }
    }

    /// Queues `item` behind the others.
    pub fn post(&self, item: T) -> Result<(), MailboxFull<T>> {
        let mut slots = self.slots.lock();
        slots.queue.push_back(item).map_err(MailboxFull)?;
        slots.posted = slots.posted.wrapping_add(1);
        Ok(())
    }

    /// The oldest item, taken out (the owning CPU calls this).
    pub fn take(&self) -> Option<T> {
        let mut slots = self.slots.lock();
        let item = slots.queue.pop_front()?;
        slots.taken = slots.taken.wrapping_add(1);
        Some(item)
    }

    /// Items waiting.
    pub fn waiting(&self) -> usize {
        self.slots.lock().queue.len()
    }

    /// Items ever posted and taken.
    pub fn counts(&self) -> (u64, u64) {
        let slots = self.slots.lock();
        (slots.posted, slots.taken)
    }
}

impl<T> core::fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (posted, taken) = self.counts();
        f.debug_struct("Mailbox").field("posted", &posted).field("taken", &taken).finish()
    }
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_the_order_they_went_in() {
        let mailbox = Mailbox::new();
        assert_eq!(mailbox.take(), None);
        for i in 0..3 {
            mailbox.post(i).unwrap();
        }
        assert_eq!(mailbox.waiting(), 3);
        assert_eq!([mailbox.take(), mailbox.take()], [Some(0), Some(1)]);
        mailbox.post(3).unwrap();
        assert_eq!([mailbox.take(), mailbox.take(), mailbox.take()], [Some(2), Some(3), None]);
        assert_eq!(mailbox.counts(), (4, 4));
    }

    #[test]
    fn a_full_mailbox_hands_the_item_back_and_takes_more_once_emptied() {
        let mailbox = Mailbox::new();
        for i in 0..MAILBOX_SLOTS {
            mailbox.post(i).unwrap();
        }
        assert_eq!(mailbox.post(99), Err(MailboxFull(99)));
        assert_eq!(mailbox.counts(), (MAILBOX_SLOTS as u64, 0));
        assert_eq!(mailbox.take(), Some(0));
        mailbox.post(100).unwrap();
        let rest: Vec<usize> = core::iter::from_fn(|| mailbox.take()).collect();
        assert_eq!(rest.len(), MAILBOX_SLOTS);
        assert_eq!(rest.last(), Some(&100));
    }

    #[test]
    fn posters_on_several_threads_lose_nothing() {
        let mailbox = std::sync::Arc::new(Mailbox::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = mailbox.clone();
                std::thread::spawn(move || {
                    let mut sent = 0;
                    while sent < 100 {
                        if m.post(t * 1000 + sent).is_ok() {
                            sent += 1;
                        } else {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 400 {
            match mailbox.take() {
                Some(item) => got.push(item),
                None => std::thread::yield_now(),
            }
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        // Each poster's items arrive in its own order, and none twice.
        for t in 0..4 {
            let mine: Vec<_> = got.iter().filter(|&&i| i / 1000 == t).map(|&i| i % 1000).collect();
            assert_eq!(mine, (0..100).collect::<Vec<_>>());
        }
        assert_eq!(mailbox.counts(), (400, 400));
    }
}
