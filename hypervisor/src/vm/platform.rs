//! What kind of machine a VM is, in one place: a test payload has only a set of
//! pending vectors; a desktop VM has a whole virtual PC ([`DesktopPlatform`]). Every
//! difference between the two that the exit loop and the VM care about is a method
//! here, so the rest of the code asks once instead of branching on the kind.

use alloc::boxed::Box;

use crate::devices::bus::{MemBus, MmioBus, PioBus, PortBus};
use crate::devices::irq::{ApicSink, GsiSink};
use crate::devices::power::PowerEvent;
use crate::memory::guest::GuestMemoryAccess;
use crate::vcpu::dispatch::{InterruptSink, MsrDevices, NoMsrDevices};
use crate::vm::desktop::{DesktopMmio, DesktopMsrs, DesktopPlatform, DesktopPorts};
use crate::vm::passthrough::host_vectors::GuestTarget;
use crate::vm::payload_irqs::PendingIrqs;

/// The virtual platform of a VM.
#[derive(Debug)]
pub enum Platform {
    /// A test payload: no interrupt controller, only pending vectors (highest first).
    Payload(PendingIrqs),
    /// A desktop (Linux) VM's virtual PC.
    Desktop(Box<DesktopPlatform>),
}

impl Default for Platform {
    fn default() -> Self {
        Platform::Payload(PendingIrqs::default())
    }
}

impl Platform {
    /// The desktop platform (keyboard, serial port, PCI host), if the VM has one.
    pub fn desktop(&self) -> Option<&DesktopPlatform> {
        match self {
            Platform::Desktop(p) => Some(p),
            Platform::Payload(_) => None,
        }
    }

    /// A device line of a payload-style VM is asserted: it wakes from `SLEEP`. Desktops
    /// take device lines through their I/O APIC instead.
    pub fn wake_for_line(&mut self) {
        if let Platform::Payload(irqs) = self {
            irqs.wake();
        }
    }

    /// Whether an interrupt waits for vCPU `vcpu` (a payload has only vCPU 0).
    pub fn interrupt_pending(&self, vcpu: usize) -> bool {
        match self {
            Platform::Desktop(p) => p.irq.borrow().pending_vector(vcpu).is_some(),
            Platform::Payload(irqs) => vcpu == 0 && irqs.any(),
        }
    }

    /// Whether an NMI waits for vCPU `vcpu` (desktops: an NMI IPI or message).
    pub fn nmi_pending(&self, vcpu: usize) -> bool {
        self.desktop().is_some_and(|p| p.irq.borrow().lapic(vcpu).is_some_and(|l| l.nmi_pending()))
    }

    /// Takes the NMI waiting for vCPU `vcpu`, if one does.
    pub fn take_nmi(&self, vcpu: usize) -> bool {
        self.desktop().is_some_and(|p| p.irq.borrow_mut().take_nmi(vcpu))
    }

    /// The vCPUs that received an interrupt or IPI since the last call (bit per vCPU).
    pub fn take_kicked(&self) -> u32 {
        self.desktop().map_or(0, |p| p.irq.borrow_mut().take_kicked())
    }

    /// The INIT and STARTUP vCPU `vcpu` received since the last call.
    pub fn take_startup(&self, vcpu: usize) -> crate::devices::vlapic::StartupSignals {
        self.desktop().map(|p| p.irq.borrow_mut().take_startup(vcpu)).unwrap_or_default()
    }

    /// Moves device lines into the interrupt controllers and fires the timers that
    /// expired by host TSC `host_tsc` (a payload has neither).
    pub fn update(&mut self, host_tsc: u64) {
        match self {
            Platform::Desktop(p) => p.update(host_tsc.wrapping_sub(p.start_tsc())),
            Platform::Payload(irqs) => irqs.poll_wake(host_tsc),
        }
    }

    /// Takes the interrupt to inject next into vCPU `vcpu`: the controller's choice,
    /// or the highest pending vector of a payload.
    pub fn take_interrupt(&mut self, vcpu: usize) -> Option<u8> {
        match self {
            Platform::Desktop(p) => p.irq.borrow_mut().take_interrupt(vcpu),
            Platform::Payload(irqs) if vcpu == 0 => irqs.take_highest(),
            Platform::Payload(_) => None,
        }
    }

    /// Raises an interrupt of an assigned device where the guest asked for it: an
    /// MSI in the local APIC (desktop) or the pending set (payload); an INTx line on
    /// the desktop VM's I/O APIC input. Whether it was accepted; each accepted one
    /// counts in `delivered`.
    pub fn deliver_device_interrupt(&mut self, vm: u32, target: GuestTarget, delivered: &mut u64) -> bool {
        let accepted = match (target, &mut *self) {
            (GuestTarget::Msi(route), Platform::Desktop(p)) => {
                p.irq.borrow_mut().deliver_message(&route.apic_message())
            }
            (GuestTarget::Msi(route), Platform::Payload(irqs)) => irqs.deliver(&route.apic_message()),
            (GuestTarget::Intx { guest_gsi, .. }, Platform::Desktop(p)) => {
                p.irq.borrow_mut().set_level(u32::from(guest_gsi), true);
                true
            }
            // A payload VM has no I/O APIC; its devices use MSI.
            (GuestTarget::Intx { .. }, Platform::Payload(_)) => false,
        };
        if accepted {
            *delivered = delivered.saturating_add(1);
        } else {
            log::debug!(target: "msi", "vm {vm}: device interrupt {target:?} not accepted");
        }
        accepted
    }

    /// The guest I/O APIC inputs driven by host INTx lines that the guest ended with
    /// an EOI since the last call (bit per GSI).
    pub fn take_resampled(&self) -> u32 {
        match self {
            Platform::Desktop(p) => p.irq.borrow_mut().ioapic.take_resampled(),
            Platform::Payload(_) => 0,
        }
    }

    /// Before an entry of vCPU `vcpu`: offers the paravirtual EOI.
    pub fn before_entry(&self, vcpu: usize, memory: &mut dyn GuestMemoryAccess) {
        if let Platform::Desktop(p) = self {
            p.offer_pv_eoi(vcpu, memory);
        }
    }

    /// After an exit of vCPU `vcpu`: retires an interrupt it ended through the
    /// paravirtual EOI.
    pub fn after_exit(&self, vcpu: usize, memory: &mut dyn GuestMemoryAccess) {
        if let Platform::Desktop(p) = self {
            p.collect_pv_eoi(vcpu, memory);
        }
    }

    /// A power-off or reset the guest asked for since the last call.
    pub fn take_power_event(&self) -> Option<PowerEvent> {
        self.desktop().and_then(DesktopPlatform::take_power_event)
    }

    /// Logs what the guest left unterminated on its serial line (it stopped).
    pub fn flush_console(&self) {
        if let Some(p) = self.desktop() {
            p.uart.lock().flush_line();
        }
    }

    /// Host TSC at which the next guest timer fires, if one is armed.
    pub fn wake_deadline(&self) -> Option<u64> {
        self.wake_deadline_among(|_| true)
    }

    /// Host TSC of the earliest timer that can interrupt a vCPU for which `counts`
    /// holds (its own local APIC timer, or the PIT).
    pub fn wake_deadline_among(&self, counts: impl Fn(usize) -> bool) -> Option<u64> {
        match self {
            Platform::Desktop(p) => {
                p.irq.borrow().next_deadline_among(counts).map(|guest| guest.wrapping_add(p.start_tsc()))
            }
            Platform::Payload(irqs) => irqs.wake_at(),
        }
    }

    /// EOIs the guest signalled without an exit, so far.
    pub fn pv_eois(&self) -> u64 {
        self.desktop().map_or(0, DesktopPlatform::pv_eois)
    }

    /// How long the IPIs between the VM's vCPUs took, so far (none in a payload VM).
    pub fn ipi_latency(&self) -> crate::devices::vlapic::ipi_latency::IpiLatency {
        self.desktop().map(DesktopPlatform::ipi_latency).unwrap_or_default()
    }

    /// The VM's devices as vCPU `vcpu`'s exit handler sees them at host TSC
    /// `host_tsc`: a desktop VM's interrupt controllers answer before its buses.
    pub fn devices<'a>(
        &'a mut self,
        vcpu: usize,
        ports: &'a mut PioBus,
        mmio: &'a mut MemBus,
        host_tsc: u64,
    ) -> Devices<'a> {
        match self {
            Platform::Payload(irqs) => Devices::Payload { ports, mmio, irqs, msrs: NoMsrDevices },
            Platform::Desktop(p) => {
                let now = host_tsc.wrapping_sub(p.start_tsc());
                Devices::Desktop {
                    ports: DesktopPorts { irq: &p.irq, now, next: ports },
                    mmio: DesktopMmio { irq: &p.irq, vcpu, now, next: mmio },
                    msrs: DesktopMsrs(p, vcpu),
                    irqs: ControllerOnly,
                }
            }
        }
    }
}

/// A desktop VM's interrupts come from its interrupt controller; the payloads'
/// RAISE_INTERRUPT hypercall raises nothing there.
#[derive(Debug)]
pub struct ControllerOnly;

impl InterruptSink for ControllerOnly {
    fn raise(&mut self, _vector: u8) {}
}

/// A VM's devices for one exit (see [`Platform::devices`]).
#[derive(Debug)]
pub enum Devices<'a> {
    Payload { ports: &'a mut PioBus, mmio: &'a mut MemBus, irqs: &'a mut PendingIrqs, msrs: NoMsrDevices },
    Desktop { ports: DesktopPorts<'a>, mmio: DesktopMmio<'a>, msrs: DesktopMsrs<'a>, irqs: ControllerOnly },
}

/// The trait objects the exit handler's environment takes.
pub struct AttachedDevices<'b> {
    pub ports: &'b mut dyn PortBus,
    pub mmio: &'b mut dyn MmioBus,
    pub msr_devices: &'b mut dyn MsrDevices,
    pub interrupts: &'b mut dyn InterruptSink,
}

impl core::fmt::Debug for AttachedDevices<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttachedDevices").finish_non_exhaustive()
    }
}

impl Devices<'_> {
    pub fn attach(&mut self) -> AttachedDevices<'_> {
        match self {
            Devices::Payload { ports, mmio, irqs, msrs } => {
                AttachedDevices { ports: *ports, mmio: *mmio, msr_devices: msrs, interrupts: *irqs }
            }
            Devices::Desktop { ports, mmio, msrs, irqs } => {
                AttachedDevices { ports, mmio, msr_devices: msrs, interrupts: irqs }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::vpci::msi::MsiRoute;

    fn msi(vector: u8, dest: u32) -> GuestTarget {
        GuestTarget::Msi(MsiRoute { vector, dest, logical: false, delivery: 0 })
    }

    #[test]
    fn a_payload_takes_msis_for_its_cpu_and_counts_only_accepted_ones() {
        let mut platform = Platform::default();
        let mut delivered = 0;
        assert!(platform.deliver_device_interrupt(1, msi(0x41, 0), &mut delivered));
        assert!(!platform.deliver_device_interrupt(1, msi(0x42, 5), &mut delivered), "another APIC id");
        assert!(
            !platform.deliver_device_interrupt(1, GuestTarget::Intx { host_gsi: 16, guest_gsi: 10 }, &mut delivered),
            "a payload has no I/O APIC"
        );
        assert_eq!(delivered, 1);
        assert!(platform.interrupt_pending(0));
        assert!(!platform.interrupt_pending(1), "a payload has one vCPU");
        assert_eq!(platform.take_interrupt(1), None);
        assert_eq!((platform.take_interrupt(0), platform.take_interrupt(0)), (Some(0x41), None));
        assert!(!platform.interrupt_pending(0));
    }

    #[test]
    fn a_payload_has_no_timers_power_or_resampled_lines() {
        let mut platform = Platform::default();
        platform.update(u64::MAX);
        assert!(!platform.interrupt_pending(0));
        assert_eq!(platform.wake_deadline(), None);
        assert_eq!(platform.take_power_event(), None);
        assert_eq!(platform.take_resampled(), 0);
        assert!(platform.desktop().is_none());
    }
}
