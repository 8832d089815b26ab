//! The virtual platform of a desktop VM running an unmodified Linux: interrupt
//! controllers and timers, a 16550 serial console, an i8042 keyboard, the CMOS clock,
//! a PCI host bridge, ACPI power control, kvmclock, per-VM ACPI tables and a linear
//! framebuffer in the VM's own memory. Also the guest-physical layout those need.

use crate::devices::layout::{FRAMEBUFFER_GPA, HIGH_RAM_GPA, LOW_RAM_MAX};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::devices::bus::{BusRange, MemBus, MmioBus, PioBus, PortBus};
use crate::devices::clock::GuestClock;
use crate::devices::i8042::I8042;
use crate::devices::irq::{GsiLines, GsiSink, isa_irq_to_gsi};
use crate::devices::irq_line::IrqLine;
use crate::devices::layout;
use crate::devices::platform_irq::InterruptController;
use crate::devices::power::{AcpiPowerPorts, PowerEvent, PowerSignal};
use crate::devices::rtc::Rtc;
use crate::devices::shared::Shared;
use crate::devices::uart16550::{ConsoleSink, Uart16550};
use crate::devices::vlapic::ipi_latency::IpiLatency;
use crate::devices::vpci::host_bridge::VpciHost;
use crate::hw::AccessSize;
use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::GuestMemoryAccess;
use crate::vcpu::dispatch::MsrDevices;
use crate::vcpu::msr::{self, MsrRoute};
use crate::vcpu::pv_eoi::PvEoi;
use crate::vcpu::pvclock::{PvClock, PvClockConfig, WallClock};
use crate::vm::console::VmConsole;
use crate::vm::start_error::PlatformError;

/// How `ram` bytes of a desktop VM are laid out: `(gpa, offset into the VM's host
/// block, length)` for the low block and the high one (empty when the VM fits below
/// the hole).
pub fn ram_blocks(ram: u64) -> [(u64, u64, u64); 2] {
    let low = ram.min(LOW_RAM_MAX);
    [(0, 0, low), (HIGH_RAM_GPA, low, ram.saturating_sub(low))]
}

/// The RAM blocks of any VM, as [`ram_blocks`] gives them: a desktop VM gets a PC's
/// layout (a hole below 4 GiB), a payload one block from 0. Empty blocks are skipped.
pub fn vm_ram_blocks(kind: crate::vm::config::Kind, ram: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    let blocks = match kind {
        crate::vm::config::Kind::Linux => ram_blocks(ram),
        crate::vm::config::Kind::Payload | crate::vm::config::Kind::Multiboot | crate::vm::config::Kind::Service => {
            [(0, 0, ram), (0, 0, 0)]
        }
    };
    blocks.into_iter().filter(|b| b.2 != 0)
}
/// Where the reserved low area starts (EBDA-like, never RAM for Linux).
pub const LOW_RESERVED_START: u64 = 0x9_F000;
pub const LOW_RESERVED_END: u64 = 0x10_0000;

/// The x86 reset vector, F000:FFF0 (SDM Vol. 3A §9.1.4): where a CPU starts after a
/// reset, and where an OS jumps to reboot "through the BIOS".
pub const RESET_VECTOR_GPA: u64 = 0xF_FFF0;
const _: () = assert!(RESET_VECTOR_GPA + 16 == LOW_RESERVED_END && RESET_VECTOR_GPA >= LOW_RESERVED_START);

/// What a desktop finds at the reset vector instead of a BIOS: 16-bit code that
/// writes the ACPI reset value to the reset register, which restarts the VM.
///
/// Linux 6.1 on a hardware-reduced ACPI platform picks EFI reboot
/// (`/sys/kernel/reboot/type` says `efi`); without EFI runtime services it falls
/// through to a BIOS reboot, which leaves long mode and jumps here. With nothing here
/// it would run zeroed memory for ever, and `reboot` would hang the desktop.
pub fn reset_vector_code() -> [u8; 16] {
    let [port_lo, port_hi] = layout::ACPI_RESET_PORT.to_le_bytes();
    let nop = 0x90;
    [
        0xBA,
        port_lo,
        port_hi, // mov dx, ACPI_RESET_PORT
        0xB0,
        layout::ACPI_RESET_VALUE, // mov al, ACPI_RESET_VALUE
        0xEE,                     // out dx, al
        0xFA,                     // cli
        0xF4,                     // hlt (not reached: the write restarts the VM)
        0xEB,
        0xFD, // jmp back to hlt
        nop,
        nop,
        nop,
        nop,
        nop,
        nop,
    ]
}

/// The real time when the hypervisor booted, from the host CMOS clock.
#[derive(Debug, Clone, Copy)]
pub struct HostTime {
    pub unix_secs: u64,
    /// Host TSC at that moment, and the host TSC frequency.
    pub tsc: u64,
    pub tsc_hz: u64,
}

/// The host time the hypervisor read at boot (set once by the boot path).
pub static HOST_TIME: spin::Once<HostTime> = spin::Once::new();

impl HostTime {
    /// Local wall-clock hours and minutes now (the CMOS clock holds UTC on the
    /// machines Bulkhead targets; a time-zone policy comes later).
    pub fn clock_now(&self) -> (u8, u8) {
        let secs = self.at(crate::arch::x86::instr::rdtsc()).sec % 86_400;
        ((secs / 3600) as u8, ((secs / 60) % 60) as u8)
    }

    /// Unix time at host TSC `tsc`.
    pub fn at(&self, tsc: u64) -> WallClock {
        let ticks = tsc.saturating_sub(self.tsc);
        let hz = self.tsc_hz.max(1);
        let secs = ticks.checked_div(hz).unwrap_or(0);
        let rem = ticks.checked_rem(hz).unwrap_or(0);
        // rem < hz <= u64::MAX, so rem * 10^9 fits a u128.
        let nsec = u128::from(rem).wrapping_mul(1_000_000_000).checked_div(u128::from(hz)).unwrap_or(0) as u32;
        WallClock { sec: self.unix_secs.saturating_add(secs), nsec }
    }
}

/// A device's interrupt output wired to one GSI through the shared latch.
struct GsiLine {
    lines: GsiLines,
    gsi: u32,
}

impl IrqLine for GsiLine {
    fn set_level(&mut self, high: bool) {
        self.lines.set_level(self.gsi, high);
    }
}

/// Serial lines go to the VM's console (hypervisor log + ring + markers).
/// A serial port's lines, into the VM's console (logged under the VM's name).
#[derive(Debug)]
pub struct ConsoleLines(pub Arc<spin::Mutex<VmConsole>>);

impl ConsoleSink for ConsoleLines {
    fn line(&mut self, _vm_name: &str, line: &[u8]) {
        let mut console = self.0.lock();
        console.write(line);
        console.write(b"\n");
    }
}

/// The devices of one desktop VM.
pub struct DesktopPlatform {
    /// Reached from the MMIO, port and MSR paths of one exit; each access borrows it
    /// briefly and none re-enters another, so a `RefCell` never finds it taken.
    pub irq: RefCell<InterruptController>,
    lines: GsiLines,
    /// kvmclock and the paravirtual EOI are per vCPU (each has its own MSRs and page).
    pvclock: RefCell<Vec<PvClock>>,
    pv_eoi: RefCell<Vec<PvEoi>>,
    pub uart: Shared<Uart16550>,
    pub keyboard: Shared<I8042>,
    /// The VM's PCI host (assigned devices are added to it).
    pub pci: Shared<VpciHost>,
    power: PowerSignal,
    host_time: HostTime,
    /// Host TSC when the VM started (guest TSC 0).
    start_tsc: u64,
}

impl core::fmt::Debug for DesktopPlatform {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DesktopPlatform").finish_non_exhaustive()
    }
}

impl DesktopPlatform {
    /// Builds the devices for `vcpus` vCPUs and registers them on the VM's buses.
    pub fn new(
        vcpus: u8,
        name: &str,
        console: Arc<spin::Mutex<VmConsole>>,
        host_time: HostTime,
        start_tsc: u64,
        ports: &mut PioBus,
        mmio: &mut MemBus,
    ) -> Result<DesktopPlatform, PlatformError> {
        let tsc_hz = host_time.tsc_hz;
        let clock = GuestClock::new(tsc_hz).ok_or(PlatformError::NoTscFrequency)?;
        let lines = GsiLines::new();
        let power = PowerSignal::new();
        let line = |irq: u8| -> Box<dyn IrqLine + Send> {
            Box::new(GsiLine { lines: lines.clone(), gsi: isa_irq_to_gsi(irq).unwrap_or(u32::from(irq)) })
        };
        let uart = Shared::new(Uart16550::new(name, line(layout::COM1_IRQ), Box::new(ConsoleLines(console))));
        let keyboard = Shared::new(I8042::new(line(layout::I8042_KBD_IRQ)).with_power_signal(power.clone()));
        let wall = host_time.at(start_tsc);
        let rtc =
            Rtc::new(wall.sec, 0, tsc_hz, Box::new(move || crate::arch::x86::instr::rdtsc().wrapping_sub(start_tsc)));
        let pci = Shared::new(VpciHost::new(layout::PCI_ECAM_BUSES).with_reset_control(power.clone()));
        let pci_handle = pci.clone();
        let bad = PlatformError::AddressClash;
        ports.insert_ports(layout::COM1_PORT, layout::COM1_PORT_COUNT, Box::new(uart.clone())).map_err(bad)?;
        // 0x60..=0x64; port 0x61 (PIT gate, speaker) is answered by the interrupt
        // controller's port layer before the bus is asked.
        ports.insert_ports(layout::I8042_DATA_PORT, 5, Box::new(keyboard.clone())).map_err(bad)?;
        ports.insert_ports(layout::RTC_INDEX_PORT, 2, Box::new(rtc)).map_err(bad)?;
        ports
            .insert_ports(layout::PCI_CONFIG_ADDRESS_PORT, layout::PCI_CONFIG_PORT_COUNT, Box::new(pci.clone()))
            .map_err(bad)?;
        ports
            .insert_ports(
                layout::ACPI_SLEEP_CONTROL_PORT,
                layout::ACPI_POWER_PORT_COUNT,
                Box::new(AcpiPowerPorts::new(power.clone())),
            )
            .map_err(bad)?;
        let ecam = BusRange::new(layout::PCI_ECAM_BASE, layout::PCI_ECAM_LEN).ok_or(PlatformError::BadEcamWindow)?;
        mmio.insert(ecam, Box::new(pci)).map_err(bad)?;
        let pvclock = PvClock::new(PvClockConfig { tsc_hz, tsc_stable: true, epoch_tsc: 0 })
            .map_err(PlatformError::KvmclockScale)?;
        let vcpus = vcpus.max(1);
        Ok(DesktopPlatform {
            irq: RefCell::new(InterruptController::new(clock, vcpus)),
            lines,
            pvclock: RefCell::new((0..vcpus).map(|_| pvclock.clone()).collect()),
            pv_eoi: RefCell::new((0..vcpus).map(|_| PvEoi::default()).collect()),
            uart,
            keyboard,
            pci: pci_handle,
            power,
            host_time,
            start_tsc,
        })
    }

    /// Moves device interrupt lines into the controllers and fires expired timers.
    pub fn update(&self, guest_tsc: u64) {
        let mut irq = self.irq.borrow_mut();
        self.lines.drain_into(&mut *irq);
        irq.tick(guest_tsc);
        self.lines.drain_into(&mut *irq);
    }

    /// After an exit of vCPU `vcpu`: retires the interrupt whose EOI it signalled
    /// through the paravirtual flag, if it did.
    pub fn collect_pv_eoi(&self, vcpu: usize, memory: &mut dyn GuestMemoryAccess) {
        let taken = self.pv_eoi.borrow_mut().get_mut(vcpu).is_some_and(|p| p.take_guest_eoi(memory));
        if taken {
            // The guest time it is seen at, for the IPI timing (`IpiLatency`).
            let now = crate::arch::x86::instr::rdtsc().wrapping_sub(self.start_tsc);
            self.irq.borrow_mut().eoi(vcpu, now);
        }
    }

    /// Before an entry of vCPU `vcpu`: lets its next EOI skip its exit when that is safe.
    pub fn offer_pv_eoi(&self, vcpu: usize, memory: &mut dyn GuestMemoryAccess) {
        let mut all = self.pv_eoi.borrow_mut();
        if let Some(pv_eoi) = all.get_mut(vcpu)
            && pv_eoi.enabled()
        {
            pv_eoi.offer(self.irq.borrow().eoi_outlook(vcpu), memory);
        }
    }

    /// EOIs that took no exit, so far (all vCPUs).
    pub fn pv_eois(&self) -> u64 {
        self.pv_eoi.borrow().iter().map(PvEoi::skipped_exits).fold(0, u64::saturating_add)
    }

    /// How long the IPIs between the VM's vCPUs took, so far.
    pub fn ipi_latency(&self) -> IpiLatency {
        self.irq.borrow().ipi_latency()
    }

    /// A power-off or reset the guest asked for since the last call.
    pub fn take_power_event(&self) -> Option<PowerEvent> {
        self.power.take()
    }

    fn wall_clock(&self) -> WallClock {
        self.host_time.at(crate::arch::x86::instr::rdtsc())
    }

    /// Host TSC at guest TSC 0.
    pub fn start_tsc(&self) -> u64 {
        self.start_tsc
    }
}

/// The platform's MSRs (local APIC, kvmclock) as vCPU `.1` sees them, for the exit handler.
#[derive(Debug)]
pub struct DesktopMsrs<'a>(pub &'a DesktopPlatform, pub usize);

impl MsrDevices for DesktopMsrs<'_> {
    fn read(&mut self, msr: u32, guest_tsc: u64) -> Option<Result<u64, ()>> {
        let vcpu = self.1;
        if let Some(r) = self.0.irq.borrow_mut().read_msr(vcpu, msr, guest_tsc) {
            return Some(r.map_err(|_| ()));
        }
        match msr::route(msr) {
            MsrRoute::PvClock => {
                Some(self.0.pvclock.borrow().get(vcpu).ok_or(()).and_then(|c| c.read_msr(msr).map_err(|_| ())))
            }
            MsrRoute::PvEoi => Some(self.0.pv_eoi.borrow().get(vcpu).map(PvEoi::read_msr).ok_or(())),
            MsrRoute::State => None,
        }
    }

    fn write(
        &mut self,
        msr: u32,
        value: u64,
        guest_tsc: u64,
        memory: &mut dyn GuestMemoryAccess,
    ) -> Option<Result<(), ()>> {
        let vcpu = self.1;
        if let Some(r) = self.0.irq.borrow_mut().write_msr(vcpu, msr, value, guest_tsc) {
            return Some(r.map_err(|_| ()));
        }
        match msr::route(msr) {
            MsrRoute::PvClock => {
                let wall = self.0.wall_clock();
                let mut clocks = self.0.pvclock.borrow_mut();
                let clock = clocks.get_mut(vcpu)?;
                Some(clock.write_msr(msr, value, memory, guest_tsc, wall).map_err(|e| {
                    log::warn!(target: "vm", "kvmclock MSR {msr:#x} <- {value:#x} refused: {e:?}");
                }))
            }
            MsrRoute::PvEoi => {
                let mut all = self.0.pv_eoi.borrow_mut();
                Some(all.get_mut(vcpu)?.write_msr(value, memory).map_err(|e| {
                    log::warn!(target: "vm", "PV EOI MSR <- {value:#x} refused: {e:?}");
                }))
            }
            MsrRoute::State => None,
        }
    }
}

/// MMIO of a desktop VM as vCPU `vcpu` sees it: its local APIC and the IOAPIC
/// first, then the VM's bus.
#[derive(Debug)]
pub struct DesktopMmio<'a> {
    pub irq: &'a RefCell<InterruptController>,
    pub vcpu: usize,
    pub now: u64,
    pub next: &'a mut MemBus,
}

impl MmioBus for DesktopMmio<'_> {
    fn read(&mut self, gpa: GuestPhysAddr, size: AccessSize) -> u64 {
        let own = self.irq.borrow_mut().mmio_read(self.vcpu, gpa.raw(), size, self.now);
        own.unwrap_or_else(|| self.next.read(gpa, size))
    }
    fn write(&mut self, gpa: GuestPhysAddr, size: AccessSize, value: u64) {
        if !self.irq.borrow_mut().mmio_write(self.vcpu, gpa.raw(), size, value, self.now) {
            self.next.write(gpa, size, value);
        }
    }
    fn claims(&self, gpa: GuestPhysAddr) -> bool {
        InterruptController::claims_mmio(gpa.raw()) || self.next.claims(gpa)
    }
}

/// Ports of a desktop VM: the 8259s, ELCR, PIT and port 0x61 first, then the VM's bus.
#[derive(Debug)]
pub struct DesktopPorts<'a> {
    pub irq: &'a RefCell<InterruptController>,
    pub now: u64,
    pub next: &'a mut PioBus,
}

impl PortBus for DesktopPorts<'_> {
    fn read(&mut self, port: u16, size: AccessSize) -> u32 {
        let own = self.irq.borrow_mut().port_read(port, size, self.now);
        own.unwrap_or_else(|| self.next.read(port, size))
    }
    fn write(&mut self, port: u16, size: AccessSize, value: u32) {
        if !self.irq.borrow_mut().port_write(port, size, value, self.now) {
            self.next.write(port, size, value);
        }
    }
}

/// The e820 map of a desktop VM with `ram` bytes of RAM and a framebuffer of `fb_len`.
pub fn e820(ram: u64, fb_len: u64) -> Vec<crate::vm::linux::BootE820Entry> {
    use crate::vm::linux::{BootE820Entry, E820Type};
    let g = GuestPhysAddr::new;
    let [(_, _, low), (high_gpa, _, high)] = ram_blocks(ram);
    let mut map = alloc::vec![
        BootE820Entry::new(g(0), LOW_RESERVED_START, E820Type::Ram),
        BootE820Entry::new(g(LOW_RESERVED_START), LOW_RESERVED_END - LOW_RESERVED_START, E820Type::Reserved),
        BootE820Entry::new(g(LOW_RESERVED_END), low.saturating_sub(LOW_RESERVED_END), E820Type::Ram),
        BootE820Entry::new(g(FRAMEBUFFER_GPA), fb_len, E820Type::Reserved),
        BootE820Entry::new(g(layout::PCI_ECAM_BASE), layout::PCI_ECAM_LEN, E820Type::Reserved),
    ];
    if high != 0 {
        map.push(BootE820Entry::new(g(high_gpa), high, E820Type::Ram));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_vector_writes_the_reset_register_then_halts() {
        let code = reset_vector_code();
        assert_eq!(&code[..3], &[0xBA, 0x04, 0x06], "mov dx, 0x604");
        assert_eq!(&code[3..5], &[0xB0, layout::ACPI_RESET_VALUE], "mov al, reset value");
        assert_eq!(code[5], 0xEE, "out dx, al");
        // The short jump at 8 lands on the hlt at 7.
        assert_eq!((code[7], code[8]), (0xF4, 0xEB));
        assert_eq!(10 + i64::from(code[9] as i8), 7);
    }

    #[test]
    fn small_vms_have_one_ram_block() {
        let blocks = ram_blocks(384 << 20);
        assert_eq!(blocks, [(0, 0, 384 << 20), (HIGH_RAM_GPA, 384 << 20, 0)]);
        let map = e820(384 << 20, 4 << 20);
        assert_eq!(map.len(), 5);
        assert!(map.iter().all(|e| e.addr < LOW_RAM_MAX || e.addr >= FRAMEBUFFER_GPA));
    }

    #[test]
    fn large_vms_continue_above_4_gib() {
        let ram = 6u64 << 30;
        let blocks = ram_blocks(ram);
        assert_eq!(blocks[0], (0, 0, LOW_RAM_MAX));
        assert_eq!(blocks[1], (HIGH_RAM_GPA, LOW_RAM_MAX, ram - LOW_RAM_MAX));
        let map = e820(ram, 4 << 20);
        let ram_total: u64 =
            map.iter().filter(|e| e.typ == crate::vm::linux::E820Type::Ram as u32).map(|e| e.size).sum();
        assert_eq!(ram_total, ram - (LOW_RESERVED_END - LOW_RESERVED_START));
        let last = map.last().unwrap();
        assert_eq!((last.addr, last.size), (HIGH_RAM_GPA, ram - LOW_RAM_MAX));
        // Exactly at the limit: no high block.
        assert_eq!(ram_blocks(LOW_RAM_MAX)[1].2, 0);
    }
}
