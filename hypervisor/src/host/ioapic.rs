//! The machine's I/O APIC, for the interrupts the hypervisor takes itself (the
//! keyboard). Register interface: Intel 82093AA I/O APIC datasheet §3.0-3.2 (an index
//! register IOREGSEL at +0x00 and a data window IOWIN at +0x10); redirection entries in
//! compatibility format (§3.2.4) or, under VT-d interrupt remapping, in remappable
//! format (VT-d spec §5.1.5.1).
//!
//! At boot every entry is masked: firmware may leave pins unmasked, and no interrupt
//! reaches the hypervisor unless it routed it here.

use crate::hw::mmio::MmioRegion;
use core::sync::atomic::{AtomicBool, Ordering};

use log::{info, warn};

use crate::host::acpi::PlatformTables;
use crate::host::iommu::{IoapicPin, IommuError, MsiTarget};

/// IOREGSEL / IOWIN offsets (§3.0).
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// IOAPICVER (§3.2.2): bits 23:16 hold the index of the last redirection entry.
const REG_VERSION: u32 = 0x01;
/// Redirection entry `n`: low dword at 0x10 + 2n, high at 0x11 + 2n (§3.2.4).
const REG_REDIRECTION: u32 = 0x10;

const MASKED: u64 = 1 << 16;
const LEVEL: u64 = 1 << 15;
const ACTIVE_LOW: u64 = 1 << 13;
const REMAPPABLE: u64 = 1 << 48;

/// Indexed register access to one I/O APIC.
pub trait IoapicRegs {
    fn read(&mut self, index: u32) -> u32;
    fn write(&mut self, index: u32, value: u32);
}

/// How a pin signals (from the MADT's interrupt source overrides; ISA default edge,
/// active high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinMode {
    pub level: bool,
    pub active_low: bool,
}

impl PinMode {
    fn bits(self) -> u64 {
        (if self.level { LEVEL } else { 0 }) | (if self.active_low { ACTIVE_LOW } else { 0 })
    }
}

/// A redirection entry: fixed delivery of `vector` to the CPU with APIC id `dest`
/// (physical destination mode; IDs up to 255 in compatibility format).
pub fn compatibility_entry(vector: u8, dest: u8, mode: PinMode) -> u64 {
    u64::from(vector) | mode.bits() | (u64::from(dest) << 56)
}

/// A redirection entry in VT-d remappable format: interrupt index `handle` of the
/// remapping table (bits 63:49 hold index 14:0, bit 11 index 15); `vector` must match
/// the remapping entry's for EOIs of level-triggered pins.
pub fn remappable_entry(handle: u16, vector: u8, mode: PinMode) -> u64 {
    let index = u64::from(handle);
    u64::from(vector) | mode.bits() | REMAPPABLE | ((index & 0x7fff) << 49) | (((index >> 15) & 1) << 11)
}

/// One I/O APIC.
#[derive(Debug)]
pub struct HostIoapic<R: IoapicRegs> {
    regs: R,
    gsi_base: u32,
    pins: u32,
    /// Each pin's entry as last written, so masking rewrites one half only.
    entries: alloc::vec::Vec<u64>,
}

impl<R: IoapicRegs> HostIoapic<R> {
    /// Takes the I/O APIC whose first pin is `gsi_base` and masks every pin.
    pub fn new(mut regs: R, gsi_base: u32) -> Self {
        let last = (regs.read(REG_VERSION) >> 16) & 0xff;
        // `last` is 8 bits wide, so this is at most 256.
        let pins = last.wrapping_add(1);
        let mut ioapic = HostIoapic { regs, gsi_base, pins, entries: alloc::vec![MASKED; pins as usize] };
        for pin in 0..ioapic.pins {
            ioapic.write_entry(pin, MASKED);
        }
        ioapic
    }

    /// Number of pins.
    pub fn pins(&self) -> u32 {
        self.pins
    }

    /// Whether `gsi` is one of this I/O APIC's pins.
    pub fn handles(&self, gsi: u32) -> bool {
        self.pin_of(gsi).is_some()
    }

    fn pin_of(&self, gsi: u32) -> Option<u32> {
        gsi.checked_sub(self.gsi_base).filter(|p| *p < self.pins)
    }

    /// Programs `gsi` with `entry` (masked while the halves are written). Returns
    /// `false` if the pin is not this I/O APIC's.
    pub fn route(&mut self, gsi: u32, entry: u64) -> bool {
        let Some(pin) = self.pin_of(gsi) else { return false };
        self.write_entry(pin, MASKED);
        self.write_entry(pin, entry);
        info!(target: "ioapic", "GSI {gsi} -> entry {entry:#018x}");
        true
    }

    /// Masks or unmasks `gsi` as it was routed (one register write). Returns `false`
    /// if the pin is not this I/O APIC's.
    pub fn set_masked(&mut self, gsi: u32, masked: bool) -> bool {
        let Some(pin) = self.pin_of(gsi) else { return false };
        let Some(&entry) = self.entries.get(pin as usize) else { return false };
        let entry = if masked { entry | MASKED } else { entry & !MASKED };
        self.regs.write(redirection_reg(pin), entry as u32);
        if let Some(e) = self.entries.get_mut(pin as usize) {
            *e = entry;
        }
        true
    }

    fn write_entry(&mut self, pin: u32, entry: u64) {
        let low = redirection_reg(pin);
        let high = low.wrapping_add(1);
        // Low half first when masking (the pin stops at once), high half first when
        // unmasking (the destination is in place before the pin can fire).
        if entry & MASKED != 0 {
            self.regs.write(low, entry as u32);
            self.regs.write(high, (entry >> 32) as u32);
        } else {
            self.regs.write(high, (entry >> 32) as u32);
            self.regs.write(low, entry as u32);
        }
        if let Some(e) = self.entries.get_mut(pin as usize) {
            *e = entry;
        }
    }
}

/// Register index of the low dword of pin `pin`'s redirection entry. Callers pass a
/// pin below `pins`, which is at most 256, so this cannot overflow.
fn redirection_reg(pin: u32) -> u32 {
    REG_REDIRECTION.wrapping_add(pin.wrapping_mul(2))
}

/// Why a GSI could not be routed through the I/O APICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoapicRouteError {
    /// No I/O APIC of the MADT has an input for this GSI.
    NoIoapic { gsi: u32 },
    /// The target CPU's APIC id does not fit the compatibility format's 8-bit
    /// destination, and the pin is not remapped.
    ApicIdNeedsRemapping { apic_id: u32 },
    /// The IOMMU gave no remapping entry for the pin.
    NoRemapEntry { ioapic: u8, pin: u8, error: IommuError },
    /// The chip the MADT names for the GSI has fewer pins.
    BeyondPins { gsi: u32, ioapic: u8 },
}

impl core::fmt::Display for IoapicRouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoIoapic { gsi } => write!(f, "no I/O APIC serves GSI {gsi}"),
            Self::ApicIdNeedsRemapping { .. } => f.write_str("APIC id above 255 needs interrupt remapping"),
            Self::NoRemapEntry { ioapic, pin, error } => {
                write!(f, "no remapping entry for I/O APIC {ioapic} pin {pin}: {error}")
            }
            Self::BeyondPins { gsi, ioapic } => write!(f, "GSI {gsi} is beyond I/O APIC {ioapic}'s pins"),
        }
    }
}

/// Every I/O APIC of the machine (MADT), each pin masked when taken: the
/// hypervisor's one handle on them.
#[derive(Debug)]
pub struct HostIoapics<R: IoapicRegs> {
    /// (I/O APIC id, the chip).
    chips: alloc::vec::Vec<(u8, HostIoapic<R>)>,
}

impl<R: IoapicRegs> HostIoapics<R> {
    pub fn new(chips: alloc::vec::Vec<(u8, HostIoapic<R>)>) -> Self {
        HostIoapics { chips }
    }

    /// The I/O APIC id and pin that serve `gsi`.
    pub fn locate(&self, gsi: u32) -> Option<(u8, u8)> {
        self.chips.iter().find_map(|(id, c)| c.pin_of(gsi).and_then(|p| u8::try_from(p).ok()).map(|p| (*id, p)))
    }

    /// Routes `gsi` to `vector` on the CPU with APIC id `cpu`, signalling as `mode`,
    /// unmasked unless `masked`. `remap` asks the IOMMU for a remapping entry for the
    /// pin (`None`: its interrupts are not remapped; compatibility format).
    pub fn route(
        &mut self,
        gsi: u32,
        mode: PinMode,
        target: MsiTarget,
        masked: bool,
        remap: &mut dyn FnMut(IoapicPin, MsiTarget) -> Result<Option<u16>, IommuError>,
    ) -> Result<(), IoapicRouteError> {
        let (id, pin) = self.locate(gsi).ok_or(IoapicRouteError::NoIoapic { gsi })?;
        let entry = match remap(IoapicPin { ioapic_id: id, pin, level: mode.level }, target) {
            Ok(Some(handle)) => remappable_entry(handle, target.vector, mode),
            Ok(None) => {
                let dest = u8::try_from(target.dest_apic_id)
                    .map_err(|_| IoapicRouteError::ApicIdNeedsRemapping { apic_id: target.dest_apic_id })?;
                compatibility_entry(target.vector, dest, mode)
            }
            Err(error) => return Err(IoapicRouteError::NoRemapEntry { ioapic: id, pin, error }),
        };
        let entry = if masked { entry | MASKED } else { entry };
        let chip = self.chips.iter_mut().find(|(i, c)| *i == id && c.handles(gsi)).map(|(_, c)| c);
        if !chip.is_some_and(|c| c.route(gsi, entry)) {
            return Err(IoapicRouteError::BeyondPins { gsi, ioapic: id });
        }
        Ok(())
    }

    /// Masks or unmasks `gsi` as last routed.
    pub fn set_masked(&mut self, gsi: u32, masked: bool) -> bool {
        self.chips.iter_mut().any(|(_, c)| c.set_masked(gsi, masked))
    }
}

/// The machine's I/O APICs, taken at boot by [`take_ioapics`].
pub static HOST_IOAPICS: spin::Once<spin::Mutex<HostIoapics<IoapicMmio>>> = spin::Once::new();

/// Takes every I/O APIC the MADT lists and masks all their pins (firmware may leave
/// some unmasked). Once, at boot.
pub fn take_ioapics(tables: &PlatformTables) -> &'static spin::Mutex<HostIoapics<IoapicMmio>> {
    HOST_IOAPICS.call_once(|| {
        let chips = tables
            .io_apics()
            .iter()
            .map(|a| {
                // SAFETY: the address is the I/O APIC's register window from the MADT,
                // identity mapped like all MMIO below 4 GiB; this set is the only user.
                let regs = unsafe { IoapicMmio::new(u64::from(a.address)) };
                (a.id, HostIoapic::new(regs, a.gsi_base))
            })
            .collect();
        spin::Mutex::new(HostIoapics::new(chips))
    })
}

/// Set once IRQ1 reaches the keyboard vector.
static KEYBOARD_ROUTED: AtomicBool = AtomicBool::new(false);

/// Whether the keyboard's interrupt is routed (else the switcher polls it).
pub fn keyboard_routed() -> bool {
    KEYBOARD_ROUTED.load(Ordering::Acquire)
}

/// ISA IRQ1's GSI and signalling, after the MADT's interrupt source overrides (ACPI
/// 6.5 §5.2.12.5); ISA interrupts default to edge-triggered, active high.
fn keyboard_gsi(tables: &PlatformTables) -> (u32, PinMode) {
    match tables.interrupt_overrides().iter().find(|o| o.bus == 0 && o.source_irq == 1) {
        Some(o) => (o.gsi, PinMode { level: o.level_triggered(), active_low: o.active_low() }),
        None => (1, PinMode::default()),
    }
}

/// Routes the keyboard's IRQ1 through the I/O APIC that serves it to `vector` on the
/// CPU with APIC id `cpu`. `remap` asks the IOMMU for a remapping entry for the pin
/// (`None`: its interrupts are not remapped). The 8259 PICs are masked first, so IRQ1
/// cannot also arrive through them.
pub fn route_keyboard(
    tables: &PlatformTables,
    vector: u8,
    cpu: u32,
    remap: &mut dyn FnMut(IoapicPin, MsiTarget) -> Result<Option<u16>, IommuError>,
) -> Result<(), IoapicRouteError> {
    if tables.madt().pcat_compat {
        mask_legacy_pics();
    }
    let (gsi, mode) = keyboard_gsi(tables);
    let mut ioapics = take_ioapics(tables).lock();
    ioapics.route(gsi, mode, MsiTarget { vector, dest_apic_id: cpu }, false, remap)?;
    KEYBOARD_ROUTED.store(true, Ordering::Release);
    let (id, pin) = ioapics.locate(gsi).unwrap_or_default();
    info!(target: "ioapic", "keyboard IRQ1: I/O APIC {id} pin {pin} -> vector {vector:#x} on APIC {cpu}");
    Ok(())
}

/// Masks every input of both 8259s (ports 0x21 and 0xA1, OCW1).
fn mask_legacy_pics() {
    // SAFETY: the 8259 data ports exist on PC-compatible machines (MADT PCAT_COMPAT);
    // writing OCW1 = 0xFF only masks their inputs, and the hypervisor uses neither.
    unsafe {
        crate::arch::x86::instr::outb(0x21, 0xff);
        crate::arch::x86::instr::outb(0xa1, 0xff);
    }
}

/// Logs why the keyboard stays polled.
pub fn keyboard_not_routed(why: &IoapicRouteError) {
    warn!(target: "ioapic", "keyboard IRQ1 not routed ({why}); the keyboard is polled");
}

/// The real register window, identity-mapped uncacheable.
#[derive(Debug)]
pub struct IoapicMmio {
    window: MmioRegion,
}

impl IoapicMmio {
    /// # Safety
    /// `base` must be an I/O APIC's register window as the MADT gives it, identity
    /// mapped, and used by nothing but the returned value.
    pub unsafe fn new(base: u64) -> Self {
        // SAFETY: the caller's contract; IOREGSEL and IOWIN lie in the first 0x20
        // bytes (§3.0).
        IoapicMmio { window: unsafe { MmioRegion::new(base, 0x20) } }
    }
}

impl IoapicRegs for IoapicMmio {
    fn read(&mut self, index: u32) -> u32 {
        self.window.write(IOREGSEL, index);
        self.window.read(IOWIN)
    }

    fn write(&mut self, index: u32, value: u32) {
        self.window.write(IOREGSEL, index);
        self.window.write(IOWIN, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A 24-pin I/O APIC's register file.
    struct FakeIoapicRegs {
        regs: Vec<u32>,
        writes: Vec<(u32, u32)>,
    }

    impl FakeIoapicRegs {
        fn new() -> FakeIoapicRegs {
            let mut regs = vec![0u32; 0x40];
            regs[REG_VERSION as usize] = (23 << 16) | 0x20;
            // Firmware left pin 4 unmasked.
            regs[0x18] = 0x31;
            FakeIoapicRegs { regs, writes: Vec::new() }
        }
        fn entry(&self, pin: usize) -> u64 {
            u64::from(self.regs[0x10 + 2 * pin]) | (u64::from(self.regs[0x11 + 2 * pin]) << 32)
        }
    }

    impl IoapicRegs for &mut FakeIoapicRegs {
        fn read(&mut self, index: u32) -> u32 {
            self.regs[index as usize]
        }
        fn write(&mut self, index: u32, value: u32) {
            self.writes.push((index, value));
            self.regs[index as usize] = value;
        }
    }

    #[test]
    fn every_pin_starts_masked() {
        let mut fake = FakeIoapicRegs::new();
        let ioapic = HostIoapic::new(&mut fake, 0);
        assert_eq!(ioapic.pins(), 24);
        assert!((0..24).all(|pin| fake.entry(pin) & MASKED != 0));
    }

    #[test]
    fn routing_a_pin() {
        let mut fake = FakeIoapicRegs::new();
        let entry = compatibility_entry(0x21, 3, PinMode { level: true, active_low: true });
        assert_eq!(entry, 0x0300_0000_0000_a021);
        {
            let mut ioapic = HostIoapic::new(&mut fake, 24);
            assert!(!ioapic.handles(23) && ioapic.handles(24) && ioapic.handles(47) && !ioapic.handles(48));
            assert!(!ioapic.route(1, compatibility_entry(0x21, 0, PinMode::default())), "not this I/O APIC's GSI");
            assert!(ioapic.route(25, entry));
        }
        assert_eq!(fake.entry(1), entry);
        // The destination went in before the unmasking low half.
        let last_two: Vec<_> = fake.writes.iter().rev().take(2).copied().collect();
        assert_eq!(last_two, [(0x12, 0x0000_a021), (0x13, 0x0300_0000)]);
    }

    #[test]
    fn a_set_routes_through_the_right_chip_and_masks_with_one_write() {
        let (mut a, mut b) = (FakeIoapicRegs::new(), FakeIoapicRegs::new());
        {
            let mut set = HostIoapics::new(vec![(1, HostIoapic::new(&mut a, 0)), (2, HostIoapic::new(&mut b, 24))]);
            assert_eq!(set.locate(3), Some((1, 3)));
            assert_eq!(set.locate(40), Some((2, 16)));
            assert_eq!(set.locate(48), None);
            let mode = PinMode { level: true, active_low: true };
            let target = MsiTarget { vector: 0x61, dest_apic_id: 0 };
            let mut asked = Vec::new();
            let mut remap = |p: IoapicPin, _t: MsiTarget| {
                asked.push((p.ioapic_id, p.pin, p.level));
                Ok(Some(7))
            };
            set.route(40, mode, target, true, &mut remap).unwrap();
            assert_eq!(set.route(48, mode, target, false, &mut remap), Err(IoapicRouteError::NoIoapic { gsi: 48 }));
            assert_eq!(asked, [(2, 16, true)]);
            assert!(set.set_masked(40, false));
            assert!(!set.set_masked(48, false));
        }
        let routed = remappable_entry(7, 0x61, PinMode { level: true, active_low: true });
        assert_eq!(b.entry(16), routed, "unmasked as routed");
        assert_eq!(b.writes.last(), Some(&(0x30, routed as u32)), "unmasking writes the low half only");
        assert!((0..24).all(|pin| a.entry(pin) & MASKED != 0), "the other chip untouched");
    }

    #[test]
    fn refusals_say_which_pin_and_why() {
        let mut fake = FakeIoapicRegs::new();
        let mut set = HostIoapics::new(vec![(2, HostIoapic::new(&mut fake, 0))]);
        let mode = PinMode::default();
        let far_cpu = MsiTarget { vector: 0x61, dest_apic_id: 300 };
        let e = set.route(5, mode, far_cpu, false, &mut |_, _| Ok(None)).unwrap_err();
        assert_eq!(e, IoapicRouteError::ApicIdNeedsRemapping { apic_id: 300 });
        assert_eq!(e.to_string(), "APIC id above 255 needs interrupt remapping");
        let target = MsiTarget { vector: 0x61, dest_apic_id: 0 };
        let e = set.route(5, mode, target, false, &mut |_, _| Err(IommuError::NoInterruptEntries)).unwrap_err();
        assert_eq!(e, IoapicRouteError::NoRemapEntry { ioapic: 2, pin: 5, error: IommuError::NoInterruptEntries });
        assert_eq!(
            e.to_string(),
            alloc::format!("no remapping entry for I/O APIC 2 pin 5: {}", IommuError::NoInterruptEntries)
        );
        assert_eq!(IoapicRouteError::NoIoapic { gsi: 48 }.to_string(), "no I/O APIC serves GSI 48");
        assert_eq!(
            IoapicRouteError::BeyondPins { gsi: 30, ioapic: 2 }.to_string(),
            "GSI 30 is beyond I/O APIC 2's pins"
        );
    }

    #[test]
    fn remappable_entries_carry_the_index() {
        let e = remappable_entry(0x8001, 0x21, PinMode::default());
        assert_eq!(e & 0xff, 0x21);
        assert_ne!(e & REMAPPABLE, 0);
        assert_eq!((e >> 49) & 0x7fff, 1);
        assert_eq!((e >> 11) & 1, 1);
        assert_eq!(e & MASKED, 0);
    }
}
