//! The VM's PCI host bridge: configuration mechanism #1 (ports 0xCF8/0xCFC) and ECAM
//! over MMIO, routing configuration accesses to [`VirtualPciFunction`]s. Functions
//! nobody registered read as all-ones, as an empty slot does.
//!
//! Functions keep their registers in a [`VConfigSpace`] (see `pci_config`, re-exported
//! here). Function 00.0 is a host bridge using the Q35 MCH's IDs (8086:29C0), which Linux guests have long run against under QEMU; it
//! has no BARs and Linux binds no driver that needs more than its header.
//!
//! References: PCI Local Bus Specification 3.0 §3.2.2.3.2 (mechanism #1), §6.1–6.2
//! (type 0 header), §6.2.5 (BARs), §6.7 (capabilities); PCI Express Base 4.0 §7.2.2
//! (ECAM). AMD's extended mechanism #1 (address bits 27:24 = register bits 11:8, BKDG
//! "IOCF8") is decoded as well, so extended registers never alias the header.
#![forbid(unsafe_code)]

use crate::hw::Bdf;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::devices::bus::{MmioDevice, PortDevice};
use crate::devices::power::{PowerSignal, ResetControl};
pub use crate::devices::vpci::config_space::*;
use crate::hw::AccessSize;

/// A PCI function the host bridge routes configuration accesses to. The host only
/// issues naturally aligned byte, word and dword accesses inside 0..4096.
pub trait VirtualPciFunction {
    fn config_read(&mut self, offset: u16, size: AccessSize) -> u32;
    fn config_write(&mut self, offset: u16, size: AccessSize, value: u32);
    /// The function's BARs as currently programmed (for mapping them on the buses).
    fn bars(&self) -> Vec<BarRegion>;
    /// Work that configuration writes left for the end of the exit, done once however
    /// many writes one string instruction made (see [`PciHost::settle`]).
    fn settle(&mut self) {}
}

/// Function 00.0: the host bridge.
#[derive(Debug)]
pub struct HostBridge {
    config: VConfigSpace,
}

/// Intel's vendor ID and the Q35/G33 MCH device ID (as QEMU's q35 machine uses).
pub const HOST_BRIDGE_VENDOR: u16 = 0x8086;
pub const HOST_BRIDGE_DEVICE: u16 = 0x29C0;
/// Base class 06 (bridge), subclass 00 (host), interface 00.
pub const CLASS_HOST_BRIDGE: u32 = 0x06_00_00;

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBridge {
    pub fn new() -> Self {
        let mut config =
            VConfigSpace::new(ConfigSize::Legacy, HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE, CLASS_HOST_BRIDGE, 0);
        // A host bridge always decodes memory and forwards DMA.
        config.set_u16(COMMAND, CMD_MEMORY | CMD_BUS_MASTER);
        HostBridge { config }
    }
}

impl VirtualPciFunction for HostBridge {
    fn config_read(&mut self, offset: u16, size: AccessSize) -> u32 {
        self.config.read(offset, size)
    }
    fn config_write(&mut self, offset: u16, size: AccessSize, value: u32) {
        self.config.write(offset, size, value);
    }
    fn bars(&self) -> Vec<BarRegion> {
        Vec::new()
    }
}

/// The host bridge and everything behind it.
pub struct VpciHost {
    /// The mechanism #1 address register (0xCF8).
    address: u32,
    functions: BTreeMap<u16, Box<dyn VirtualPciFunction + Send>>,
    ecam_buses: u16,
    reset_control: Option<ResetControl>,
    /// Configuration writes that reached a function (wrapping): the VM compares it to
    /// know when BARs or decode bits may have changed.
    writes: u64,
}

/// Mechanism #1 address register, PCI 3.0 §3.2.2.3.2: enable bit, bus, device,
/// function, register; bits 27:24 are AMD's extended register bits 11:8.
const CF8_ENABLE: u32 = 1 << 31;
const CF8_MASK: u32 = CF8_ENABLE | 0x0FFF_FFFC;
/// Port offsets from 0xCF8.
pub const ADDRESS_OFFSET: u16 = 0;
pub const RESET_CONTROL_OFFSET: u16 = 1;
pub const DATA_OFFSET: u16 = 4;
/// ECAM: 1 MiB per bus, 32 KiB per device, 4 KiB per function (PCIe 4.0 §7.2.2).
const ECAM_BUS_SHIFT: u32 = 20;
const ECAM_FUNCTION_SHIFT: u32 = 12;

impl core::fmt::Debug for VpciHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let bdfs: Vec<u16> = self.functions.keys().copied().collect();
        f.debug_struct("VpciHost")
            .field("address", &self.address)
            .field("functions", &bdfs)
            .field("ecam_buses", &self.ecam_buses)
            .field("reset_control", &self.reset_control)
            .finish()
    }
}

impl VpciHost {
    /// A host with the host bridge at 00.0 and an ECAM window for `ecam_buses` buses.
    pub fn new(ecam_buses: u16) -> Self {
        let mut functions: BTreeMap<u16, Box<dyn VirtualPciFunction + Send>> = BTreeMap::new();
        functions.insert(0, Box::new(HostBridge::new()));
        VpciHost { address: 0, functions, ecam_buses: ecam_buses.clamp(1, 256), reset_control: None, writes: 0 }
    }

    /// Also serve the 0xCF9 reset control register, reporting to `signal`.
    pub fn with_reset_control(mut self, signal: PowerSignal) -> Self {
        self.reset_control = Some(ResetControl::new(signal));
        self
    }

    /// The ECAM window's size in bytes.
    pub fn ecam_len(&self) -> u64 {
        u64::from(self.ecam_buses) << ECAM_BUS_SHIFT
    }

    pub fn add_function(&mut self, bdf: Bdf, function: Box<dyn VirtualPciFunction + Send>) -> Result<(), VpciError> {
        if self.functions.contains_key(&bdf.requester_id()) {
            return Err(VpciError::Occupied(bdf));
        }
        self.functions.insert(bdf.requester_id(), function);
        Ok(())
    }

    pub fn function_mut(&mut self, bdf: Bdf) -> Option<&mut (dyn VirtualPciFunction + Send + 'static)> {
        self.functions.get_mut(&bdf.requester_id()).map(|f| &mut **f)
    }

    /// Every function's BARs, for mapping them.
    pub fn all_bars(&self) -> Vec<(Bdf, BarRegion)> {
        let mut out = Vec::new();
        for (&key, function) in &self.functions {
            let bdf = Bdf::masked((key >> 8) as u8, (key >> 3) as u8, key as u8);
            out.extend(function.bars().into_iter().map(|bar| (bdf, bar)));
        }
        out
    }

    /// A configuration read of any width at any offset below 4096; absent functions and
    /// out-of-range offsets read all-ones.
    pub fn config_read(&mut self, bdf: Bdf, offset: u16, size: AccessSize) -> u32 {
        let len = u16::from(size.bytes());
        let Some(function) = self.functions.get_mut(&bdf.requester_id()) else {
            return size.mask() as u32;
        };
        if offset.checked_add(len).is_none_or(|end| end > 0x1000) {
            return size.mask() as u32;
        }
        match size {
            AccessSize::Qword => size.mask() as u32,
            _ if offset.is_multiple_of(len) => function.config_read(offset, size),
            _ => {
                let mut value = 0u32;
                for i in 0..len {
                    let byte = function.config_read(offset.wrapping_add(i), AccessSize::Byte) & 0xFF;
                    value |= byte << (u32::from(i) * 8);
                }
                value
            }
        }
    }

    /// Lets every function finish work its configuration writes deferred; the VM calls
    /// it once after each exit that may have written configuration space.
    pub fn settle(&mut self) {
        for function in self.functions.values_mut() {
            function.settle();
        }
    }

    /// How many configuration writes reached a function so far (wrapping).
    pub fn config_writes(&self) -> u64 {
        self.writes
    }

    /// A configuration write; see [`Self::config_read`]. Writes to absent functions drop.
    pub fn config_write(&mut self, bdf: Bdf, offset: u16, size: AccessSize, value: u32) {
        let len = u16::from(size.bytes());
        let Some(function) = self.functions.get_mut(&bdf.requester_id()) else { return };
        if size == AccessSize::Qword || offset.checked_add(len).is_none_or(|end| end > 0x1000) {
            return;
        }
        self.writes = self.writes.wrapping_add(1);
        if offset.is_multiple_of(len) {
            function.config_write(offset, size, value);
        } else {
            for (i, byte) in value.to_le_bytes().into_iter().take(usize::from(len)).enumerate() {
                function.config_write(offset.wrapping_add(i as u16), AccessSize::Byte, u32::from(byte));
            }
        }
    }

    /// The function and register selected by the address register, if enabled.
    fn cf8_target(&self) -> Option<(Bdf, u16)> {
        if self.address & CF8_ENABLE == 0 {
            return None;
        }
        let a = self.address;
        let bdf = Bdf::masked((a >> 16) as u8, (a >> 11) as u8, (a >> 8) as u8);
        let register = (a & 0xFC) as u16 | (((a >> 24) & 0xF) << 8) as u16;
        Some((bdf, register))
    }

    fn ecam_target(&self, offset: u64) -> Option<(Bdf, u16)> {
        if offset >= self.ecam_len() {
            return None;
        }
        let bdf =
            Bdf::masked((offset >> ECAM_BUS_SHIFT) as u8, (offset >> 15) as u8, (offset >> ECAM_FUNCTION_SHIFT) as u8);
        Some((bdf, (offset & 0xFFF) as u16))
    }
}

impl PortDevice for VpciHost {
    fn read(&mut self, offset: u16, size: AccessSize) -> u32 {
        match (offset, size) {
            (ADDRESS_OFFSET, AccessSize::Dword) => self.address,
            (RESET_CONTROL_OFFSET, AccessSize::Byte) => match &self.reset_control {
                Some(rc) => u32::from(rc.read()),
                None => 0xFF,
            },
            (DATA_OFFSET..=7, _) => match self.cf8_target() {
                Some((bdf, register)) => {
                    self.config_read(bdf, register.wrapping_add(offset.wrapping_sub(DATA_OFFSET)), size)
                }
                None => size.mask() as u32,
            },
            // Narrow accesses to 0xCF8..0xCFB are not the address register.
            _ => size.mask() as u32,
        }
    }

    fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
        match (offset, size) {
            (ADDRESS_OFFSET, AccessSize::Dword) => self.address = value & CF8_MASK,
            (RESET_CONTROL_OFFSET, AccessSize::Byte) => {
                if let Some(rc) = &mut self.reset_control {
                    rc.write(value as u8);
                }
            }
            (DATA_OFFSET..=7, _) => {
                if let Some((bdf, register)) = self.cf8_target() {
                    self.config_write(bdf, register.wrapping_add(offset.wrapping_sub(DATA_OFFSET)), size, value);
                }
            }
            _ => {}
        }
    }
}

impl MmioDevice for VpciHost {
    /// A quadword access is two dword accesses.
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        let Some((bdf, register)) = self.ecam_target(offset) else {
            return size.mask();
        };
        if size == AccessSize::Qword {
            if register % 8 != 0 {
                return size.mask();
            }
            let low = self.config_read(bdf, register, AccessSize::Dword);
            let high = self.config_read(bdf, register.wrapping_add(4), AccessSize::Dword);
            return (u64::from(high) << 32) | u64::from(low);
        }
        u64::from(self.config_read(bdf, register, size))
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        let Some((bdf, register)) = self.ecam_target(offset) else { return };
        if size == AccessSize::Qword {
            if register % 8 == 0 {
                self.config_write(bdf, register, AccessSize::Dword, value as u32);
                self.config_write(bdf, register.wrapping_add(4), AccessSize::Dword, (value >> 32) as u32);
            }
            return;
        }
        self.config_write(bdf, register, size, value as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::{BusRange, MemBus, MmioBus, PioBus, PortBus};
    use crate::devices::layout;
    use crate::devices::power::PowerEvent;
    use crate::memory::addr::GuestPhysAddr;
    use alloc::rc::Rc;
    use core::cell::RefCell;

    /// A test function: a VConfigSpace with three BARs and two capabilities.
    struct TestFunction(VConfigSpace);

    impl TestFunction {
        fn new() -> Self {
            let mut cs = VConfigSpace::new(ConfigSize::Extended, 0x1AF4, 0x1041, 0x02_00_00, 1);
            cs.set_interrupt_pin(1);
            cs.add_bar(0, BarDef { kind: VBarKind::Memory32 { prefetchable: false }, size: 0x1000 }).unwrap();
            cs.add_bar(2, BarDef { kind: VBarKind::Memory64 { prefetchable: true }, size: 1 << 20 }).unwrap();
            cs.add_bar(4, BarDef { kind: VBarKind::Io, size: 32 }).unwrap();
            TestFunction(cs)
        }
    }

    impl VirtualPciFunction for TestFunction {
        fn config_read(&mut self, offset: u16, size: AccessSize) -> u32 {
            self.0.read(offset, size)
        }
        fn config_write(&mut self, offset: u16, size: AccessSize, value: u32) {
            self.0.write(offset, size, value);
        }
        fn bars(&self) -> Vec<BarRegion> {
            self.0.bar_regions()
        }
    }

    /// Lets a test keep a handle on the host while buses own it.
    struct SharedBridge(Rc<RefCell<VpciHost>>);

    impl PortDevice for SharedBridge {
        fn read(&mut self, offset: u16, size: AccessSize) -> u32 {
            PortDevice::read(&mut *self.0.borrow_mut(), offset, size)
        }
        fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
            PortDevice::write(&mut *self.0.borrow_mut(), offset, size, value)
        }
    }

    impl MmioDevice for SharedBridge {
        fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
            MmioDevice::read(&mut *self.0.borrow_mut(), offset, size)
        }
        fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
            MmioDevice::write(&mut *self.0.borrow_mut(), offset, size, value)
        }
    }

    struct TestMachine {
        pio: PioBus,
        mmio: MemBus,
        host: Rc<RefCell<VpciHost>>,
        power: PowerSignal,
    }

    fn machine() -> TestMachine {
        let power = PowerSignal::new();
        let mut host = VpciHost::new(layout::PCI_ECAM_BUSES).with_reset_control(power.clone());
        host.add_function(Bdf::checked(0, 3, 0).unwrap(), Box::new(TestFunction::new())).unwrap();
        let host = Rc::new(RefCell::new(host));
        let mut pio = PioBus::new("pio");
        pio.insert_ports(
            layout::PCI_CONFIG_ADDRESS_PORT,
            layout::PCI_CONFIG_PORT_COUNT,
            Box::new(SharedBridge(host.clone())),
        )
        .unwrap();
        let mut mmio = MemBus::new("mmio");
        let len = host.borrow().ecam_len();
        assert_eq!(len, layout::PCI_ECAM_LEN);
        mmio.insert(BusRange::new(layout::PCI_ECAM_BASE, len).unwrap(), Box::new(SharedBridge(host.clone()))).unwrap();
        TestMachine { pio, mmio, host, power }
    }

    fn cf8(bus: u8, dev: u8, func: u8, reg: u16) -> u32 {
        0x8000_0000
            | (u32::from(bus) << 16)
            | (u32::from(dev) << 11)
            | (u32::from(func) << 8)
            | u32::from(reg & 0xFC)
            | (u32::from(reg >> 8) << 24)
    }

    impl TestMachine {
        fn conf1_read(&mut self, dev: u8, reg: u16, size: AccessSize) -> u32 {
            self.pio.write(0xCF8, AccessSize::Dword, cf8(0, dev, 0, reg));
            self.pio.read(0xCFC + (reg & 3), size)
        }
        fn conf1_write(&mut self, dev: u8, reg: u16, size: AccessSize, value: u32) {
            self.pio.write(0xCF8, AccessSize::Dword, cf8(0, dev, 0, reg));
            self.pio.write(0xCFC + (reg & 3), size, value);
        }
        fn ecam(&self, bus: u64, dev: u64, func: u64, reg: u64) -> GuestPhysAddr {
            GuestPhysAddr::new(layout::PCI_ECAM_BASE + (bus << 20) + (dev << 15) + (func << 12) + reg)
        }
        fn ecam_read(&mut self, dev: u8, reg: u16, size: AccessSize) -> u32 {
            let gpa = self.ecam(0, u64::from(dev), 0, u64::from(reg));
            self.mmio.read(gpa, size) as u32
        }
    }

    #[test]
    fn host_bridge_reads_the_same_through_both_mechanisms() {
        let mut m = machine();
        assert_eq!(m.conf1_read(0, VENDOR_ID, AccessSize::Dword), 0x29C0_8086);
        assert_eq!(m.conf1_read(0, CLASS_CODE - 1, AccessSize::Dword) >> 8, CLASS_HOST_BRIDGE);
        for dev in [0u8, 3, 4] {
            for reg in (0..0x100u16).step_by(4) {
                assert_eq!(
                    m.conf1_read(dev, reg, AccessSize::Dword),
                    m.ecam_read(dev, reg, AccessSize::Dword),
                    "{dev:02x}.0 register {reg:#x}"
                );
            }
            for reg in 0..0x40u16 {
                assert_eq!(m.conf1_read(dev, reg, AccessSize::Byte), m.ecam_read(dev, reg, AccessSize::Byte));
            }
            for reg in (0..0x40u16).step_by(2) {
                assert_eq!(m.conf1_read(dev, reg, AccessSize::Word), m.ecam_read(dev, reg, AccessSize::Word));
            }
        }
        // Word at 0xCFE is the upper half of the dword.
        assert_eq!(m.conf1_read(0, DEVICE_ID, AccessSize::Word), u32::from(HOST_BRIDGE_DEVICE));
    }

    #[test]
    fn absent_functions_read_all_ones() {
        let mut m = machine();
        assert_eq!(m.conf1_read(4, VENDOR_ID, AccessSize::Dword), 0xFFFF_FFFF);
        assert_eq!(m.conf1_read(31, VENDOR_ID, AccessSize::Word), 0xFFFF);
        assert_eq!(m.ecam_read(7, VENDOR_ID, AccessSize::Word), 0xFFFF);
        m.pio.write(0xCF8, AccessSize::Dword, cf8(5, 0, 0, 0));
        assert_eq!(m.pio.read(0xCFC, AccessSize::Dword), 0xFFFF_FFFF, "other buses are empty");
        m.conf1_write(4, COMMAND, AccessSize::Word, 0x7);
        // Without the enable bit nothing is selected.
        m.pio.write(0xCF8, AccessSize::Dword, 0x0000_0000);
        assert_eq!(m.pio.read(0xCFC, AccessSize::Dword), 0xFFFF_FFFF);
        // Beyond the ECAM window's buses, and qword access.
        let beyond = GuestPhysAddr::new(layout::PCI_ECAM_BASE + layout::PCI_ECAM_LEN);
        assert!(!m.mmio.claims(beyond));
        assert_eq!(m.host.borrow_mut().ecam_target(layout::PCI_ECAM_LEN), None);
        let low = u64::from(m.conf1_read(0, VENDOR_ID, AccessSize::Dword));
        let high = u64::from(m.conf1_read(0, COMMAND, AccessSize::Dword));
        assert_eq!(m.mmio.read(m.ecam(0, 0, 0, 0), AccessSize::Qword), (high << 32) | low);
        assert_eq!(m.mmio.read(m.ecam(0, 0, 0, 4), AccessSize::Qword), u64::MAX, "misaligned qword");
    }

    #[test]
    fn address_register_is_dword_only() {
        let mut m = machine();
        m.pio.write(0xCF8, AccessSize::Dword, 0xFFFF_FFFF);
        assert_eq!(m.pio.read(0xCF8, AccessSize::Dword), 0x8FFF_FFFC);
        assert_eq!(m.pio.read(0xCF8, AccessSize::Byte), 0xFF);
        m.pio.write(0xCF8, AccessSize::Word, 0);
        assert_eq!(m.pio.read(0xCF8, AccessSize::Dword), 0x8FFF_FFFC);
    }

    #[test]
    fn extended_registers_do_not_alias_the_header() {
        let mut m = machine();
        // The host bridge is conventional PCI: 0x100 and up read 0 (no extended caps).
        assert_eq!(m.conf1_read(0, 0x100, AccessSize::Dword), 0);
        assert_eq!(m.ecam_read(0, 0x100, AccessSize::Dword), 0);
        assert_eq!(m.ecam_read(0, 0xFFC, AccessSize::Dword), 0);
    }

    #[test]
    fn bar_sizing_returns_the_size_mask() {
        let mut m = machine();
        let expect = [
            (0u16, 0xFFFF_F000u32, 0x0000_0000u32),
            (1, 0x0000_0000, 0x0000_0000), // unimplemented
            (2, 0xFFF0_000C, 0x0000_000C),
            (3, 0xFFFF_FFFF, 0x0000_0000), // upper half of the 64-bit BAR
            (4, 0x0000_FFE1, 0x0000_0001),
            (5, 0x0000_0000, 0x0000_0000),
        ];
        for (bar, sized, initial) in expect {
            let reg = BAR0 + bar * 4;
            assert_eq!(m.conf1_read(3, reg, AccessSize::Dword), initial, "BAR{bar} before sizing");
            // Linux's __pci_read_base: save, write ~0, read, restore.
            let saved = m.conf1_read(3, reg, AccessSize::Dword);
            m.conf1_write(3, reg, AccessSize::Dword, 0xFFFF_FFFF);
            assert_eq!(m.conf1_read(3, reg, AccessSize::Dword), sized, "BAR{bar}");
            m.conf1_write(3, reg, AccessSize::Dword, saved);
        }
        // Program the BARs through ECAM this time and enable decoding.
        let write = |m: &mut TestMachine, reg: u16, v: u32| {
            let gpa = m.ecam(0, 3, 0, u64::from(reg));
            m.mmio.write(gpa, AccessSize::Dword, u64::from(v));
        };
        write(&mut m, BAR0, 0xFEB4_1000);
        write(&mut m, BAR0 + 8, 0x0010_0000 | 0xFFF);
        write(&mut m, BAR0 + 12, 0x0000_0080);
        write(&mut m, BAR0 + 16, 0xC040);
        assert_eq!(m.conf1_read(3, BAR0 + 8, AccessSize::Dword), 0x0010_000C, "low bits are read-only");
        let bars = m.host.borrow().all_bars();
        assert_eq!(bars.len(), 3);
        assert!(bars.iter().all(|(bdf, b)| *bdf == Bdf::checked(0, 3, 0).unwrap() && !b.enabled));
        let writes = m.host.borrow().config_writes();
        m.conf1_write(3, COMMAND, AccessSize::Word, u32::from(CMD_IO | CMD_MEMORY | CMD_BUS_MASTER));
        assert_eq!(m.host.borrow().config_writes(), writes + 1, "the VM learns that decode may have changed");
        m.conf1_write(9, COMMAND, AccessSize::Word, 0);
        assert_eq!(m.host.borrow().config_writes(), writes + 1, "writes to absent functions do not count");
        let bars: Vec<BarRegion> = m.host.borrow().all_bars().into_iter().map(|(_, b)| b).collect();
        assert_eq!(
            bars,
            [
                BarRegion {
                    index: 0,
                    kind: VBarKind::Memory32 { prefetchable: false },
                    address: 0xFEB4_1000,
                    size: 0x1000,
                    enabled: true
                },
                BarRegion {
                    index: 2,
                    kind: VBarKind::Memory64 { prefetchable: true },
                    address: 0x80_0010_0000,
                    size: 1 << 20,
                    enabled: true
                },
                BarRegion { index: 4, kind: VBarKind::Io, address: 0xC040, size: 32, enabled: true },
            ]
        );
    }

    #[test]
    fn ids_are_read_only_and_status_errors_clear_on_one() {
        let mut m = machine();
        m.conf1_write(3, VENDOR_ID, AccessSize::Dword, 0);
        assert_eq!(m.conf1_read(3, VENDOR_ID, AccessSize::Dword), 0x1041_1AF4);
        m.conf1_write(3, INTERRUPT_PIN, AccessSize::Byte, 4);
        assert_eq!(m.conf1_read(3, INTERRUPT_PIN, AccessSize::Byte), 1);
        m.conf1_write(3, INTERRUPT_LINE, AccessSize::Byte, 11);
        assert_eq!(m.conf1_read(3, INTERRUPT_LINE, AccessSize::Byte), 11);
        // Command: only the defined bits stick.
        m.conf1_write(3, COMMAND, AccessSize::Word, 0xFFFF);
        assert_eq!(m.conf1_read(3, COMMAND, AccessSize::Word), u32::from(CMD_WRITABLE));
        // Status: the device raises errors; writing 1 clears exactly those bits.
        let mut host = m.host.borrow_mut();
        let f = host.function_mut(Bdf::checked(0, 3, 0).unwrap()).unwrap();
        assert_eq!(f.config_read(STATUS, AccessSize::Word), 0);
        drop(host);
        let mut cs = VConfigSpace::new(ConfigSize::Legacy, 1, 2, 0, 0);
        cs.raise_status((1 << 13) | (1 << 14) | STS_CAP_LIST);
        cs.write(STATUS, AccessSize::Word, 1 << 13);
        assert_eq!(cs.u16_at(STATUS), (1 << 14) | STS_CAP_LIST);
        cs.write(STATUS, AccessSize::Word, 0xFFFF);
        assert_eq!(cs.u16_at(STATUS), STS_CAP_LIST, "capabilities bit is read-only");
        // A word write at an odd offset through conf1 is split into bytes.
        m.conf1_write(3, INTERRUPT_LINE, AccessSize::Word, 0x0505);
        assert_eq!(m.conf1_read(3, INTERRUPT_LINE, AccessSize::Word), 0x0105);
        assert_eq!(m.ecam_read(3, 0x3B, AccessSize::Word), 0x0500, "unaligned read");
        // Through conf1 the same word would straddle port 0xD00: nobody claims it.
        assert_eq!(m.conf1_read(3, 0x3B, AccessSize::Word), 0xFFFF);
    }

    #[test]
    fn functions_are_placed_once() {
        let mut host = VpciHost::new(1);
        let bdf = Bdf::checked(0, 0, 0).unwrap();
        assert_eq!(host.add_function(bdf, Box::new(HostBridge::new())), Err(VpciError::Occupied(bdf)));
        assert!(Bdf::checked(0, 32, 0).is_none());
        assert!(Bdf::checked(0, 1, 8).is_none());
        let f = Bdf::checked(0, 1, 2).unwrap();
        host.add_function(f, Box::new(TestFunction::new())).unwrap();
        assert_eq!(host.config_read(f, VENDOR_ID, AccessSize::Word), 0x1AF4);
        assert_eq!(host.config_read(f, 0xFFE, AccessSize::Dword), 0xFFFF_FFFF, "past 4 KiB");
        assert_eq!(alloc::format!("{f}"), "00:01.2");
    }

    #[test]
    fn cf9_reset_control_lives_in_the_address_dword() {
        let mut m = machine();
        m.pio.write(0xCF8, AccessSize::Dword, cf8(0, 0, 0, 0));
        m.pio.write(layout::RESET_CONTROL_PORT, AccessSize::Byte, 0x02);
        assert_eq!(m.power.peek(), None);
        assert_eq!(m.pio.read(layout::RESET_CONTROL_PORT, AccessSize::Byte), 0x02);
        assert_eq!(m.pio.read(0xCF8, AccessSize::Dword), cf8(0, 0, 0, 0), "address untouched");
        m.pio.write(layout::RESET_CONTROL_PORT, AccessSize::Byte, 0x06);
        assert_eq!(m.power.take(), Some(PowerEvent::Reset));
        // Without reset control the byte is simply ignored.
        let mut bare = VpciHost::new(1);
        PortDevice::write(&mut bare, RESET_CONTROL_OFFSET, AccessSize::Byte, 0x06);
        assert_eq!(PortDevice::read(&mut bare, RESET_CONTROL_OFFSET, AccessSize::Byte), 0xFF);
    }
}
