//! The VM's PCI host bridge: configuration mechanism #1 (ports 0xCF8/0xCFC) and ECAM
//! over MMIO, routing configuration accesses to [`VirtualPciFunction`]s. Functions
//! nobody registered read as all-ones, as an empty slot does.
//!
//! [`ConfigSpace`] does the bookkeeping every function needs: a 256-byte or 4 KiB
//! configuration space with per-byte write masks, read-only IDs, write-1-to-clear status
//! bits, BAR sizing and a capability list. Function 00.0 is a host bridge using the
//! Q35 MCH's IDs (8086:29C0), which Linux guests have long run against under QEMU; it
//! has no BARs and Linux binds no driver that needs more than its header.
//!
//! References: PCI Local Bus Specification 3.0 §3.2.2.3.2 (mechanism #1), §6.1–6.2
//! (type 0 header), §6.2.5 (BARs), §6.7 (capabilities); PCI Express Base 4.0 §7.2.2
//! (ECAM). AMD's extended mechanism #1 (address bits 27:24 = register bits 11:8, BKDG
//! "IOCF8") is decoded as well, so extended registers never alias the header.
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::arithmetic_side_effects)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::bus::{MmioDevice, PortDevice};
use super::power::{PowerSignal, ResetControl};
use crate::vcpu::exit::AccessSize;

/// A bus/device/function address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    bus: u8,
    device: u8,
    function: u8,
}

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Memory32 {
        prefetchable: bool,
    },
    /// Takes this BAR and the next one (the upper 32 bits).
    Memory64 {
        prefetchable: bool,
    },
}

/// A BAR as the device defines it: its kind and size (a power of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarDef {
    pub kind: BarKind,
    pub size: u64,
}

/// A BAR as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRegion {
    pub index: u8,
    pub kind: BarKind,
    pub address: u64,
    pub size: u64,
    /// The command register enables decoding of this BAR's space.
    pub enabled: bool,
}

/// A PCI function the host bridge routes configuration accesses to. The host only
/// issues naturally aligned byte, word and dword accesses inside 0..4096.
pub trait VirtualPciFunction {
    fn config_read(&mut self, offset: u16, size: AccessSize) -> u32;
    fn config_write(&mut self, offset: u16, size: AccessSize, value: u32);
    /// The function's BARs as currently programmed (for mapping them on the buses).
    fn bars(&self) -> Vec<BarRegion>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciError {
    /// Another function already sits at this address.
    Occupied(Bdf),
    /// BAR index out of range, or a 64-bit BAR in slot 5, or the slot is taken.
    BadBar(u8),
    /// BAR size is not a power of two, or too large for its kind.
    BadBarSize(u64),
    /// No room left for a capability.
    NoCapabilitySpace,
}

/// Size of a function's configuration space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSize {
    /// Conventional PCI: 256 bytes.
    Legacy = 256,
    /// PCI Express: 4 KiB.
    Extended = 4096,
}

/// A type-0 configuration space with write masks.
pub struct ConfigSpace {
    data: Box<[u8]>,
    /// Bits the guest may write.
    wmask: Box<[u8]>,
    /// Bits the guest clears by writing 1.
    w1c: Box<[u8]>,
    bars: [Option<BarDef>; 6],
    /// The `next` byte of the last capability, or `None` before the first.
    last_cap_next: Option<u16>,
    next_cap_offset: u16,
}

// Type-0 header offsets, PCI 3.0 §6.1 Figure 6-1.
pub const VENDOR_ID: u16 = 0x00;
pub const DEVICE_ID: u16 = 0x02;
pub const COMMAND: u16 = 0x04;
pub const STATUS: u16 = 0x06;
pub const REVISION_ID: u16 = 0x08;
pub const CLASS_CODE: u16 = 0x09;
pub const CACHE_LINE_SIZE: u16 = 0x0C;
pub const HEADER_TYPE: u16 = 0x0E;
pub const BAR0: u16 = 0x10;
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2C;
pub const SUBSYSTEM_ID: u16 = 0x2E;
pub const CAPABILITIES_POINTER: u16 = 0x34;
pub const INTERRUPT_LINE: u16 = 0x3C;
pub const INTERRUPT_PIN: u16 = 0x3D;
/// Capabilities start after the standard header (§6.7).
const FIRST_CAPABILITY: u16 = 0x40;

// Command register, §6.2.2.
pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
const CMD_PARITY: u16 = 1 << 6;
const CMD_SERR: u16 = 1 << 8;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
const CMD_WRITABLE: u16 = CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | CMD_PARITY | CMD_SERR | CMD_INTX_DISABLE;
// Status register, §6.2.3: bit 4 capabilities list; bits 8, 11..15 are RW1C error bits.
pub const STS_CAPABILITIES: u16 = 1 << 4;
pub const STS_ERRORS_RW1C: u16 = (1 << 8) | (0x1F << 11);

// BAR low bits, §6.2.5.1.
const BAR_IO: u32 = 1 << 0;
const BAR_MEM64: u32 = 0b10 << 1;
const BAR_PREFETCH: u32 = 1 << 3;

impl Bdf {
    /// `None` unless `device < 32` and `function < 8`.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device < 32 && function < 8 { Some(Bdf { bus, device, function }) } else { None }
    }
    pub const fn bus(&self) -> u8 {
        self.bus
    }
    pub const fn device(&self) -> u8 {
        self.device
    }
    pub const fn function(&self) -> u8 {
        self.function
    }
    /// Bus in bits 15:8, device in 7:3, function in 2:0.
    const fn key(&self) -> u16 {
        ((self.bus as u16) << 8) | ((self.device as u16) << 3) | self.function as u16
    }
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

impl core::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("vendor", &self.u16_at(VENDOR_ID))
            .field("device", &self.u16_at(DEVICE_ID))
            .field("len", &self.data.len())
            .field("bars", &self.bars)
            .finish_non_exhaustive()
    }
}

impl ConfigSpace {
    /// A type-0 header with the given IDs; `class` is base class, subclass and
    /// programming interface (`0x06_00_00` for a host bridge).
    pub fn new(size: ConfigSize, vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let len = size as usize;
        let mut cs = ConfigSpace {
            data: alloc::vec![0; len].into_boxed_slice(),
            wmask: alloc::vec![0; len].into_boxed_slice(),
            w1c: alloc::vec![0; len].into_boxed_slice(),
            bars: [None; 6],
            last_cap_next: None,
            next_cap_offset: FIRST_CAPABILITY,
        };
        cs.set_u16(VENDOR_ID, vendor);
        cs.set_u16(DEVICE_ID, device);
        cs.set_u8(REVISION_ID, revision);
        for (i, b) in class.to_le_bytes().into_iter().take(3).enumerate() {
            cs.set_u8(CLASS_CODE.wrapping_add(i as u16), b);
        }
        cs.set_masks(COMMAND, &CMD_WRITABLE.to_le_bytes(), &[0, 0]);
        cs.set_masks(STATUS, &[0, 0], &STS_ERRORS_RW1C.to_le_bytes());
        cs.set_masks(CACHE_LINE_SIZE, &[0xFF], &[0]);
        cs.set_masks(INTERRUPT_LINE, &[0xFF], &[0]);
        cs
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn set_masks(&mut self, offset: u16, wmask: &[u8], w1c: &[u8]) {
        let start = usize::from(offset);
        for (i, (&w, &c)) in wmask.iter().zip(w1c.iter()).enumerate() {
            let at = start.saturating_add(i);
            if let Some(slot) = self.wmask.get_mut(at) {
                *slot = w;
            }
            if let Some(slot) = self.w1c.get_mut(at) {
                *slot = c;
            }
        }
    }

    /// Device-side writes, ignoring the guest's write masks.
    pub fn set_u8(&mut self, offset: u16, value: u8) {
        if let Some(slot) = self.data.get_mut(usize::from(offset)) {
            *slot = value;
        }
    }
    pub fn set_u16(&mut self, offset: u16, value: u16) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_u8(offset.wrapping_add(i as u16), b);
        }
    }
    pub fn set_u32(&mut self, offset: u16, value: u32) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_u8(offset.wrapping_add(i as u16), b);
        }
    }
    pub fn u8_at(&self, offset: u16) -> u8 {
        self.data.get(usize::from(offset)).copied().unwrap_or(0)
    }
    pub fn u16_at(&self, offset: u16) -> u16 {
        u16::from_le_bytes([self.u8_at(offset), self.u8_at(offset.wrapping_add(1))])
    }
    pub fn u32_at(&self, offset: u16) -> u32 {
        u32::from(self.u16_at(offset)) | (u32::from(self.u16_at(offset.wrapping_add(2))) << 16)
    }

    /// Marks the function multi-function (header type bit 7).
    pub fn set_multifunction(&mut self, multi: bool) {
        let ht = self.u8_at(HEADER_TYPE);
        self.set_u8(HEADER_TYPE, if multi { ht | 0x80 } else { ht & 0x7F });
    }

    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.set_u16(SUBSYSTEM_VENDOR_ID, vendor);
        self.set_u16(SUBSYSTEM_ID, id);
    }

    /// INTA# = 1 .. INTD# = 4; 0 for none.
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set_u8(INTERRUPT_PIN, pin);
    }

    /// Sets status bits from the device side (for example an error the guest then clears).
    pub fn raise_status(&mut self, bits: u16) {
        let status = self.u16_at(STATUS);
        self.set_u16(STATUS, status | bits);
    }

    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    /// Defines BAR `index`. Memory BARs are at least 16 bytes, I/O BARs 4 bytes; I/O BARs
    /// decode 16-bit port addresses.
    pub fn add_bar(&mut self, index: u8, bar: BarDef) -> Result<(), PciError> {
        let slot = usize::from(index);
        let is64 = matches!(bar.kind, BarKind::Memory64 { .. });
        let upper = slot.checked_add(1);
        let taken = |s: Option<usize>| s.and_then(|s| self.bars.get(s)).is_none_or(|b| b.is_some());
        if taken(Some(slot)) || (is64 && taken(upper)) {
            return Err(PciError::BadBar(index));
        }
        // A 64-bit BAR's upper half is recorded as taken through the lower one.
        if slot > 0
            && self
                .bars
                .get(slot.wrapping_sub(1))
                .copied()
                .flatten()
                .is_some_and(|b| matches!(b.kind, BarKind::Memory64 { .. }))
        {
            return Err(PciError::BadBar(index));
        }
        let min = if bar.kind == BarKind::Io { 4 } else { 16 };
        let size = bar.size.max(min);
        let max = match bar.kind {
            BarKind::Io => 1 << 16,
            BarKind::Memory32 { .. } => 1 << 31,
            BarKind::Memory64 { .. } => 1 << 63,
        };
        if !size.is_power_of_two() || size > max {
            return Err(PciError::BadBarSize(bar.size));
        }
        let addr_mask = !size.wrapping_sub(1);
        let offset = BAR0.wrapping_add(u16::from(index).wrapping_mul(4));
        let (low_bits, low_mask) = match bar.kind {
            BarKind::Io => (BAR_IO, (addr_mask as u32) & 0xFFFC),
            BarKind::Memory32 { prefetchable } => {
                (if prefetchable { BAR_PREFETCH } else { 0 }, (addr_mask as u32) & 0xFFFF_FFF0)
            }
            BarKind::Memory64 { prefetchable } => {
                (BAR_MEM64 | if prefetchable { BAR_PREFETCH } else { 0 }, (addr_mask as u32) & 0xFFFF_FFF0)
            }
        };
        self.set_u32(offset, low_bits);
        self.set_masks(offset, &low_mask.to_le_bytes(), &[0; 4]);
        if is64 {
            let high = offset.wrapping_add(4);
            self.set_u32(high, 0);
            self.set_masks(high, &((addr_mask >> 32) as u32).to_le_bytes(), &[0; 4]);
        }
        if let Some(b) = self.bars.get_mut(slot) {
            *b = Some(BarDef { kind: bar.kind, size });
        }
        Ok(())
    }

    /// Appends a capability with `id` and `body` (the bytes after ID and next pointer);
    /// `writable` gives the guest-writable bits of `body` (missing bytes: read-only).
    /// Returns the capability's offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> Result<u8, PciError> {
        let offset = self.next_cap_offset;
        let len = u16::try_from(body.len()).ok().and_then(|l| l.checked_add(2)).ok_or(PciError::NoCapabilitySpace)?;
        let end = offset.checked_add(len).ok_or(PciError::NoCapabilitySpace)?;
        if end > 0x100 {
            return Err(PciError::NoCapabilitySpace);
        }
        let cap = offset as u8;
        self.set_u8(offset, id);
        self.set_u8(offset.wrapping_add(1), 0);
        for (i, &b) in body.iter().enumerate() {
            let at = offset.wrapping_add(2).wrapping_add(i as u16);
            self.set_u8(at, b);
            self.set_masks(at, &[writable.get(i).copied().unwrap_or(0)], &[0]);
        }
        match self.last_cap_next {
            Some(next) => self.set_u8(next, cap),
            None => self.set_u8(CAPABILITIES_POINTER, cap),
        }
        self.last_cap_next = Some(offset.wrapping_add(1));
        self.raise_status(STS_CAPABILITIES);
        // Keep capabilities dword-aligned (§6.7).
        self.next_cap_offset = end.wrapping_add(3) & !3;
        Ok(cap)
    }

    /// A guest read; beyond the space it reads 0.
    pub fn read(&self, offset: u16, size: AccessSize) -> u32 {
        let mut value = 0u32;
        for i in 0..size.bytes().min(4) {
            let byte = self.u8_at(offset.wrapping_add(u16::from(i)));
            value |= u32::from(byte) << (u32::from(i) * 8);
        }
        value
    }

    /// A guest write, through the write and write-1-to-clear masks.
    pub fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
        for (i, byte) in value.to_le_bytes().into_iter().take(usize::from(size.bytes())).enumerate() {
            let at = usize::from(offset).saturating_add(i);
            let (Some(&old), Some(&wmask), Some(&w1c)) = (self.data.get(at), self.wmask.get(at), self.w1c.get(at))
            else {
                continue;
            };
            let new = ((old & !wmask) | (byte & wmask)) & !(byte & w1c);
            if let Some(slot) = self.data.get_mut(at) {
                *slot = new;
            }
        }
    }

    /// The BARs with the addresses the guest programmed.
    pub fn bar_regions(&self) -> Vec<BarRegion> {
        let command = self.command();
        let mut out = Vec::new();
        for (index, bar) in self.bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            let offset = BAR0.wrapping_add((index as u16).wrapping_mul(4));
            let low = self.u32_at(offset);
            let (address, enabled) = match bar.kind {
                BarKind::Io => (u64::from(low & !0x3), command & CMD_IO != 0),
                BarKind::Memory32 { .. } => (u64::from(low & !0xF), command & CMD_MEMORY != 0),
                BarKind::Memory64 { .. } => {
                    let high = self.u32_at(offset.wrapping_add(4));
                    ((u64::from(high) << 32) | u64::from(low & !0xF), command & CMD_MEMORY != 0)
                }
            };
            out.push(BarRegion { index: index as u8, kind: bar.kind, address, size: bar.size, enabled });
        }
        out
    }
}

/// Function 00.0: the host bridge.
#[derive(Debug)]
pub struct HostBridge {
    config: ConfigSpace,
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
            ConfigSpace::new(ConfigSize::Legacy, HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE, CLASS_HOST_BRIDGE, 0);
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
pub struct PciHost {
    /// The mechanism #1 address register (0xCF8).
    address: u32,
    functions: BTreeMap<u16, Box<dyn VirtualPciFunction + Send>>,
    ecam_buses: u16,
    reset_control: Option<ResetControl>,
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

impl core::fmt::Debug for PciHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let bdfs: Vec<u16> = self.functions.keys().copied().collect();
        f.debug_struct("PciHost")
            .field("address", &self.address)
            .field("functions", &bdfs)
            .field("ecam_buses", &self.ecam_buses)
            .field("reset_control", &self.reset_control)
            .finish()
    }
}

impl PciHost {
    /// A host with the host bridge at 00.0 and an ECAM window for `ecam_buses` buses.
    pub fn new(ecam_buses: u16) -> Self {
        let mut functions: BTreeMap<u16, Box<dyn VirtualPciFunction + Send>> = BTreeMap::new();
        functions.insert(0, Box::new(HostBridge::new()));
        PciHost { address: 0, functions, ecam_buses: ecam_buses.clamp(1, 256), reset_control: None }
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

    pub fn add_function(&mut self, bdf: Bdf, function: Box<dyn VirtualPciFunction + Send>) -> Result<(), PciError> {
        if self.functions.contains_key(&bdf.key()) {
            return Err(PciError::Occupied(bdf));
        }
        self.functions.insert(bdf.key(), function);
        Ok(())
    }

    pub fn function_mut(&mut self, bdf: Bdf) -> Option<&mut (dyn VirtualPciFunction + Send + 'static)> {
        self.functions.get_mut(&bdf.key()).map(|f| &mut **f)
    }

    /// Every function's BARs, for mapping them.
    pub fn all_bars(&self) -> Vec<(Bdf, BarRegion)> {
        let mut out = Vec::new();
        for (&key, function) in &self.functions {
            let bdf = Bdf { bus: (key >> 8) as u8, device: ((key >> 3) & 0x1F) as u8, function: (key & 7) as u8 };
            out.extend(function.bars().into_iter().map(|bar| (bdf, bar)));
        }
        out
    }

    /// A configuration read of any width at any offset below 4096; absent functions and
    /// out-of-range offsets read all-ones.
    pub fn config_read(&mut self, bdf: Bdf, offset: u16, size: AccessSize) -> u32 {
        let len = u16::from(size.bytes());
        let Some(function) = self.functions.get_mut(&bdf.key()) else {
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

    /// A configuration write; see [`Self::config_read`]. Writes to absent functions drop.
    pub fn config_write(&mut self, bdf: Bdf, offset: u16, size: AccessSize, value: u32) {
        let len = u16::from(size.bytes());
        let Some(function) = self.functions.get_mut(&bdf.key()) else { return };
        if size == AccessSize::Qword || offset.checked_add(len).is_none_or(|end| end > 0x1000) {
            return;
        }
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
        let bdf = Bdf { bus: (a >> 16) as u8, device: ((a >> 11) & 0x1F) as u8, function: ((a >> 8) & 0x7) as u8 };
        let register = (a & 0xFC) as u16 | (((a >> 24) & 0xF) << 8) as u16;
        Some((bdf, register))
    }

    fn ecam_target(&self, offset: u64) -> Option<(Bdf, u16)> {
        if offset >= self.ecam_len() {
            return None;
        }
        let bdf = Bdf {
            bus: (offset >> ECAM_BUS_SHIFT) as u8,
            device: ((offset >> 15) & 0x1F) as u8,
            function: ((offset >> ECAM_FUNCTION_SHIFT) & 0x7) as u8,
        };
        Some((bdf, (offset & 0xFFF) as u16))
    }
}

impl PortDevice for PciHost {
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

impl MmioDevice for PciHost {
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
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::devices::bus::{BusRange, MemBus, MmioBus, PioBus, PortBus};
    use crate::devices::layout;
    use crate::devices::power::PowerEvent;
    use crate::memory::addr::GuestPhysAddr;
    use alloc::rc::Rc;
    use core::cell::RefCell;

    /// A test function: a ConfigSpace with three BARs and two capabilities.
    struct TestFunction(ConfigSpace);

    impl TestFunction {
        fn new() -> Self {
            let mut cs = ConfigSpace::new(ConfigSize::Extended, 0x1AF4, 0x1041, 0x02_00_00, 1);
            cs.set_interrupt_pin(1);
            cs.add_bar(0, BarDef { kind: BarKind::Memory32 { prefetchable: false }, size: 0x1000 }).unwrap();
            cs.add_bar(2, BarDef { kind: BarKind::Memory64 { prefetchable: true }, size: 1 << 20 }).unwrap();
            cs.add_bar(4, BarDef { kind: BarKind::Io, size: 32 }).unwrap();
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
    struct Shared(Rc<RefCell<PciHost>>);

    impl PortDevice for Shared {
        fn read(&mut self, offset: u16, size: AccessSize) -> u32 {
            PortDevice::read(&mut *self.0.borrow_mut(), offset, size)
        }
        fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
            PortDevice::write(&mut *self.0.borrow_mut(), offset, size, value)
        }
    }

    impl MmioDevice for Shared {
        fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
            MmioDevice::read(&mut *self.0.borrow_mut(), offset, size)
        }
        fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
            MmioDevice::write(&mut *self.0.borrow_mut(), offset, size, value)
        }
    }

    struct Machine {
        pio: PioBus,
        mmio: MemBus,
        host: Rc<RefCell<PciHost>>,
        power: PowerSignal,
    }

    fn machine() -> Machine {
        let power = PowerSignal::new();
        let mut host = PciHost::new(layout::PCI_ECAM_BUSES).with_reset_control(power.clone());
        host.add_function(Bdf::new(0, 3, 0).unwrap(), Box::new(TestFunction::new())).unwrap();
        let host = Rc::new(RefCell::new(host));
        let mut pio = PioBus::new("pio");
        pio.insert_ports(
            layout::PCI_CONFIG_ADDRESS_PORT,
            layout::PCI_CONFIG_PORT_COUNT,
            Box::new(Shared(host.clone())),
        )
        .unwrap();
        let mut mmio = MemBus::new("mmio");
        let len = host.borrow().ecam_len();
        assert_eq!(len, layout::PCI_ECAM_LEN);
        mmio.insert(BusRange::new(layout::PCI_ECAM_BASE, len).unwrap(), Box::new(Shared(host.clone()))).unwrap();
        Machine { pio, mmio, host, power }
    }

    fn cf8(bus: u8, dev: u8, func: u8, reg: u16) -> u32 {
        0x8000_0000
            | (u32::from(bus) << 16)
            | (u32::from(dev) << 11)
            | (u32::from(func) << 8)
            | u32::from(reg & 0xFC)
            | (u32::from(reg >> 8) << 24)
    }

    impl Machine {
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
        let write = |m: &mut Machine, reg: u16, v: u32| {
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
        assert!(bars.iter().all(|(bdf, b)| *bdf == Bdf::new(0, 3, 0).unwrap() && !b.enabled));
        m.conf1_write(3, COMMAND, AccessSize::Word, u32::from(CMD_IO | CMD_MEMORY | CMD_BUS_MASTER));
        let bars: Vec<BarRegion> = m.host.borrow().all_bars().into_iter().map(|(_, b)| b).collect();
        assert_eq!(
            bars,
            [
                BarRegion {
                    index: 0,
                    kind: BarKind::Memory32 { prefetchable: false },
                    address: 0xFEB4_1000,
                    size: 0x1000,
                    enabled: true
                },
                BarRegion {
                    index: 2,
                    kind: BarKind::Memory64 { prefetchable: true },
                    address: 0x80_0010_0000,
                    size: 1 << 20,
                    enabled: true
                },
                BarRegion { index: 4, kind: BarKind::Io, address: 0xC040, size: 32, enabled: true },
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
        let f = host.function_mut(Bdf::new(0, 3, 0).unwrap()).unwrap();
        assert_eq!(f.config_read(STATUS, AccessSize::Word), 0);
        drop(host);
        let mut cs = ConfigSpace::new(ConfigSize::Legacy, 1, 2, 0, 0);
        cs.raise_status((1 << 13) | (1 << 14) | STS_CAPABILITIES);
        cs.write(STATUS, AccessSize::Word, 1 << 13);
        assert_eq!(cs.u16_at(STATUS), (1 << 14) | STS_CAPABILITIES);
        cs.write(STATUS, AccessSize::Word, 0xFFFF);
        assert_eq!(cs.u16_at(STATUS), STS_CAPABILITIES, "capabilities bit is read-only");
        // A word write at an odd offset through conf1 is split into bytes.
        m.conf1_write(3, INTERRUPT_LINE, AccessSize::Word, 0x0505);
        assert_eq!(m.conf1_read(3, INTERRUPT_LINE, AccessSize::Word), 0x0105);
        assert_eq!(m.ecam_read(3, 0x3B, AccessSize::Word), 0x0500, "unaligned read");
        // Through conf1 the same word would straddle port 0xD00: nobody claims it.
        assert_eq!(m.conf1_read(3, 0x3B, AccessSize::Word), 0xFFFF);
    }

    #[test]
    fn capability_list_walks() {
        let mut cs = ConfigSpace::new(ConfigSize::Legacy, 0x1AF4, 0x1041, 0x02_00_00, 1);
        assert_eq!(cs.u16_at(STATUS) & STS_CAPABILITIES, 0);
        let msix = cs.add_capability(0x11, &[0x03, 0x00, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0], &[0x00, 0xC0]).unwrap();
        let vendor = cs.add_capability(0x09, &[0x05, 0xAA, 0xBB], &[]).unwrap();
        assert_eq!((msix, vendor), (0x40, 0x4C));
        assert_ne!(cs.u16_at(STATUS) & STS_CAPABILITIES, 0);
        // Walk as Linux's pci_find_capability does.
        let mut found = Vec::new();
        let mut pos = cs.read(CAPABILITIES_POINTER, AccessSize::Byte) as u16;
        while pos != 0 && found.len() < 48 {
            found.push((pos, cs.read(pos, AccessSize::Byte) as u8));
            pos = cs.read(pos + 1, AccessSize::Byte) as u16 & !3;
        }
        assert_eq!(found, [(0x40, 0x11), (0x4C, 0x09)]);
        // Only the masked bits of the body are writable (MSI-X enable/mask).
        cs.write(0x42, AccessSize::Word, 0xFFFF);
        assert_eq!(cs.read(0x42, AccessSize::Word), 0xC003);
        cs.write(0x4E, AccessSize::Byte, 0);
        assert_eq!(cs.read(0x4E, AccessSize::Dword), 0x00BB_AA05);
        // Space runs out before 0x100.
        assert_eq!(cs.add_capability(0x09, &[0; 200], &[]), Err(PciError::NoCapabilitySpace));
    }

    #[test]
    fn bar_definitions_are_checked() {
        let mut cs = ConfigSpace::new(ConfigSize::Legacy, 1, 2, 0, 0);
        let mem = |size| BarDef { kind: BarKind::Memory32 { prefetchable: false }, size };
        assert_eq!(cs.add_bar(6, mem(0x1000)), Err(PciError::BadBar(6)));
        assert_eq!(cs.add_bar(0, mem(0x1800)), Err(PciError::BadBarSize(0x1800)));
        assert_eq!(cs.add_bar(0, BarDef { kind: BarKind::Io, size: 1 << 17 }), Err(PciError::BadBarSize(1 << 17)));
        assert_eq!(
            cs.add_bar(5, BarDef { kind: BarKind::Memory64 { prefetchable: false }, size: 16 }),
            Err(PciError::BadBar(5))
        );
        cs.add_bar(0, BarDef { kind: BarKind::Memory64 { prefetchable: false }, size: 1 << 33 }).unwrap();
        assert_eq!(cs.add_bar(1, mem(16)), Err(PciError::BadBar(1)), "upper half of BAR0");
        assert_eq!(cs.add_bar(0, mem(16)), Err(PciError::BadBar(0)));
        cs.add_bar(2, mem(4)).unwrap(); // rounded up to 16
        cs.write(BAR0, AccessSize::Dword, 0xFFFF_FFFF);
        cs.write(BAR0 + 4, AccessSize::Dword, 0xFFFF_FFFF);
        cs.write(BAR0 + 8, AccessSize::Dword, 0xFFFF_FFFF);
        assert_eq!(cs.u32_at(BAR0), 0x0000_0004);
        assert_eq!(cs.u32_at(BAR0 + 4), 0xFFFF_FFFE, "8 GiB BAR");
        assert_eq!(cs.u32_at(BAR0 + 8), 0xFFFF_FFF0);
    }

    #[test]
    fn functions_are_placed_once() {
        let mut host = PciHost::new(1);
        let bdf = Bdf::new(0, 0, 0).unwrap();
        assert_eq!(host.add_function(bdf, Box::new(HostBridge::new())), Err(PciError::Occupied(bdf)));
        assert!(Bdf::new(0, 32, 0).is_none());
        assert!(Bdf::new(0, 1, 8).is_none());
        let f = Bdf::new(0, 1, 2).unwrap();
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
        let mut bare = PciHost::new(1);
        PortDevice::write(&mut bare, RESET_CONTROL_OFFSET, AccessSize::Byte, 0x06);
        assert_eq!(PortDevice::read(&mut bare, RESET_CONTROL_OFFSET, AccessSize::Byte), 0xFF);
    }
}
