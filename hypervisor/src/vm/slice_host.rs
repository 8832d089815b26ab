//! What the exit loop reads from the machine outside its VM: the TSC, the device
//! interrupts the IDT recorded, the timer and keyboard flags, and the host I/O APIC
//! pins of a VM's INTx lines. [`Machine`] is the real one; tests drive the loop
//! through a fake.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::arch::x86::{device_vectors, idt};
use crate::vm::passthrough::host_vectors::Fired;
use crate::vm::passthrough::interrupts;

/// The host side of a running slice.
pub trait SliceHost {
    /// The host TSC now.
    fn now_tsc(&self) -> u64;
    /// Takes the device interrupts that fired for `vm`; those of other VMs stay
    /// pending. Returns them and whether another VM has some waiting.
    fn take_fired_for(&self, vm: u32) -> (Vec<Fired>, bool);
    /// Lets the host interrupt that ended the guest's run be taken now.
    fn take_host_interrupt(&self);
    /// Whether the slice timer fired since the last call (the flag is cleared).
    fn timer_expired(&self) -> bool;
    /// Whether a keyboard interrupt is waiting for the switcher (not cleared).
    fn key_pending(&self) -> bool;
    /// Unmasks the host pins of `vm`'s INTx lines whose guest GSIs are set in
    /// `guest_gsis` (the guest ended them with an EOI).
    fn resample_intx(&self, vm: u32, guest_gsis: u32);
}

/// The machine the hypervisor runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Machine;

impl SliceHost for Machine {
    fn now_tsc(&self) -> u64 {
        crate::arch::x86::instr::rdtsc()
    }

    fn take_fired_for(&self, vm: u32) -> (Vec<Fired>, bool) {
        if !device_vectors::PENDING.any() {
            return (Vec::new(), false);
        }
        interrupts::take_fired_for(vm)
    }

    fn take_host_interrupt(&self) {
        // Interrupts on for one instruction: the pending one is taken then.
        x86_64::instructions::interrupts::enable();
        core::hint::spin_loop();
        x86_64::instructions::interrupts::disable();
    }

    fn timer_expired(&self) -> bool {
        idt::TIMER_FIRED.swap(false, Ordering::AcqRel)
    }

    fn key_pending(&self) -> bool {
        idt::KEYBOARD_FIRED.load(Ordering::Acquire)
    }

    fn resample_intx(&self, vm: u32, guest_gsis: u32) {
        if let Some(ioapics) = crate::host::ioapic::HOST_IOAPICS.get() {
            crate::vm::passthrough::intx_routing::resample(
                &interrupts::VECTORS.lock(),
                &mut ioapics.lock(),
                vm,
                guest_gsis,
            );
        }
    }
}

/// The machine as seen while handling the exit of a vCPU that runs on another CPU
/// (`vm/instance/remote.rs`): that CPU already took the interrupt that ended its run,
/// and the boot CPU's slice timer and keyboard do not concern it (the scheduler reads
/// them between its own steps).
#[derive(Debug, Clone, Copy, Default)]
pub struct Elsewhere;

impl SliceHost for Elsewhere {
    fn now_tsc(&self) -> u64 {
        Machine.now_tsc()
    }

    fn take_fired_for(&self, vm: u32) -> (Vec<Fired>, bool) {
        // Other VMs' interrupts are the scheduler's to deliver; they end nothing here.
        (Machine.take_fired_for(vm).0, false)
    }

    fn take_host_interrupt(&self) {}

    fn timer_expired(&self) -> bool {
        false
    }

    fn key_pending(&self) -> bool {
        false
    }

    fn resample_intx(&self, vm: u32, guest_gsis: u32) {
        Machine.resample_intx(vm, guest_gsis);
    }
}
