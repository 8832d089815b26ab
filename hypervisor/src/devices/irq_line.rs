//! One interrupt request line from a device model to the interrupt controllers.
//!
//! Device models only say whether their output is asserted; the VM glue decides what
//! that means (an ISA edge on a GSI, a level on an IOAPIC pin). Models call
//! [`IrqLine::set_level`] only when their output changes, except where a real device
//! drops and re-raises its line (see the i8042 output buffer), which they model as a
//! low/high pair so that an edge-triggered input sees a new edge.
#![forbid(unsafe_code)]

/// A device's interrupt output.
pub trait IrqLine {
    /// Drives the line: `true` asserted, `false` deasserted.
    fn set_level(&mut self, high: bool);
}

/// A line connected to nothing (a device whose interrupt is not wired up).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoIrq;

impl IrqLine for NoIrq {
    fn set_level(&mut self, _high: bool) {}
}

/// A line that records its level and its rising edges, for unit tests.
#[cfg(test)]
pub(crate) mod test_line {
    use super::IrqLine;
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    #[derive(Debug, Default, Clone)]
    pub(crate) struct TestLine {
        level: Arc<AtomicBool>,
        rises: Arc<AtomicU32>,
    }

    impl TestLine {
        pub(crate) fn new() -> Self {
            Self::default()
        }
        pub(crate) fn high(&self) -> bool {
            self.level.load(Ordering::SeqCst)
        }
        /// Rising edges seen so far.
        pub(crate) fn rises(&self) -> u32 {
            self.rises.load(Ordering::SeqCst)
        }
    }

    impl IrqLine for TestLine {
        fn set_level(&mut self, high: bool) {
            if high && !self.level.swap(high, Ordering::SeqCst) {
                self.rises.fetch_add(1, Ordering::SeqCst);
            }
            self.level.store(high, Ordering::SeqCst);
        }
    }
}
