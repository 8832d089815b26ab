//! Port I/O and MMIO buses: a sorted registry of half-open, non-overlapping ranges,
//! each owned by one device model. Exit handling talks to the [`PortBus`] and
//! [`MmioBus`] traits; [`DeviceBus`] is the standard implementation.
//!
//! Accesses nobody claims behave like an empty slot on a PC: reads return all-ones,
//! writes are dropped. They are logged with a rate limit (at counts 1, 2, 4, 8, ...).
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::hw::AccessSize;
use crate::memory::addr::GuestPhysAddr;

/// A half-open range `[start, end)` of port numbers or guest-physical addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BusRange {
    start: u64,
    end: u64,
}

impl BusRange {
    /// `None` if `len` is 0 or the end overflows.
    pub const fn new(start: u64, len: u64) -> Option<BusRange> {
        if len == 0 {
            return None;
        }
        match start.checked_add(len) {
            Some(end) => Some(BusRange { start, end }),
            None => None,
        }
    }
    pub const fn start(&self) -> u64 {
        self.start
    }
    pub const fn end(&self) -> u64 {
        self.end
    }
    /// Whether `[addr, addr + len)` lies completely inside this range.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.start && addr.checked_add(len).is_some_and(|e| e <= self.end)
    }
    pub fn overlaps(&self, other: &BusRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps a registered one.
    Overlap { existing: BusRange },
    /// Port ranges must lie below 0x10000.
    OutOfRange,
}

/// A device on the port I/O bus. `offset` is relative to its range's start.
pub trait PortDevice {
    fn read(&mut self, offset: u16, size: AccessSize) -> u32;
    fn write(&mut self, offset: u16, size: AccessSize, value: u32);
}

/// A device on the MMIO bus. `offset` is relative to its range's start.
pub trait MmioDevice {
    fn read(&mut self, offset: u64, size: AccessSize) -> u64;
    fn write(&mut self, offset: u64, size: AccessSize, value: u64);
}

/// What port-I/O exit handling needs.
pub trait PortBus {
    /// Reads a port; unclaimed ports read as all-ones of `size`.
    fn read(&mut self, port: u16, size: AccessSize) -> u32;
    /// Writes a port; writes to unclaimed ports are dropped.
    fn write(&mut self, port: u16, size: AccessSize, value: u32);
}

/// What MMIO exit handling needs.
pub trait MmioBus {
    /// Reads guest-physical MMIO; unclaimed addresses read as all-ones of `size`.
    fn read(&mut self, gpa: GuestPhysAddr, size: AccessSize) -> u64;
    /// Writes guest-physical MMIO; writes to unclaimed addresses are dropped.
    fn write(&mut self, gpa: GuestPhysAddr, size: AccessSize, value: u64);
    /// Whether a device claims `gpa`.
    fn claims(&self, gpa: GuestPhysAddr) -> bool;
}

/// A registry of devices of type `D` (`dyn PortDevice` or `dyn MmioDevice`).
pub struct DeviceBus<D: ?Sized> {
    /// Sorted by range start.
    entries: Vec<(BusRange, Box<D>)>,
    unclaimed: u64,
    name: &'static str,
}

impl<D: ?Sized> core::fmt::Debug for DeviceBus<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceBus")
            .field("name", &self.name)
            .field("ranges", &self.entries.iter().map(|e| e.0).collect::<Vec<_>>())
            .field("unclaimed", &self.unclaimed)
            .finish()
    }
}

pub type PioBus = DeviceBus<dyn PortDevice>;
pub type MemBus = DeviceBus<dyn MmioDevice>;

impl<D: ?Sized> DeviceBus<D> {
    pub const fn new(name: &'static str) -> Self {
        DeviceBus { entries: Vec::new(), unclaimed: 0, name }
    }

    /// Registers `device` for `range`; rejects overlaps.
    pub fn insert(&mut self, range: BusRange, device: Box<D>) -> Result<(), BusError> {
        let pos = self.entries.partition_point(|(r, _)| r.start < range.start);
        for neighbour in [pos.checked_sub(1), Some(pos)].into_iter().flatten() {
            if let Some((existing, _)) = self.entries.get(neighbour)
                && existing.overlaps(&range)
            {
                return Err(BusError::Overlap { existing: *existing });
            }
        }
        self.entries.insert(pos, (range, device));
        Ok(())
    }

    /// The device whose range holds all of `[addr, addr + len)`, and the offset.
    fn find(&mut self, addr: u64, len: u64) -> Option<(&mut D, u64)> {
        let pos = self.entries.partition_point(|(r, _)| r.start <= addr);
        let (range, dev) = self.entries.get_mut(pos.checked_sub(1)?)?;
        range.contains(addr, len).then(|| (&mut **dev, addr.wrapping_sub(range.start)))
    }

    fn claims_addr(&self, addr: u64) -> bool {
        let pos = self.entries.partition_point(|(r, _)| r.start <= addr);
        pos.checked_sub(1).and_then(|i| self.entries.get(i)).is_some_and(|(r, _)| r.contains(addr, 1))
    }

    fn note_unclaimed(&mut self, what: &str, addr: u64, size: AccessSize) {
        self.unclaimed = self.unclaimed.wrapping_add(1);
        if self.unclaimed.is_power_of_two() {
            log::warn!(
                target: "vcpu",
                "{} {what} {addr:#x} ({} bytes) hits no device ({} so far)",
                self.name,
                size.bytes(),
                self.unclaimed
            );
        }
    }

    /// How many accesses hit no device.
    pub fn unclaimed_accesses(&self) -> u64 {
        self.unclaimed
    }
}

impl PioBus {
    /// Registers a port device for `[first, first + count)`.
    pub fn insert_ports(&mut self, first: u16, count: u16, device: Box<dyn PortDevice>) -> Result<(), BusError> {
        let range = BusRange::new(u64::from(first), u64::from(count)).ok_or(BusError::OutOfRange)?;
        if range.end > 0x1_0000 {
            return Err(BusError::OutOfRange);
        }
        self.insert(range, device)
    }
}

impl PortBus for PioBus {
    fn read(&mut self, port: u16, size: AccessSize) -> u32 {
        match self.find(u64::from(port), u64::from(size.bytes())) {
            Some((dev, off)) => dev.read(off as u16, size) & size.mask() as u32,
            None => {
                self.note_unclaimed("read of port", u64::from(port), size);
                size.mask() as u32
            }
        }
    }

    fn write(&mut self, port: u16, size: AccessSize, value: u32) {
        match self.find(u64::from(port), u64::from(size.bytes())) {
            Some((dev, off)) => dev.write(off as u16, size, value & size.mask() as u32),
            None => self.note_unclaimed("write to port", u64::from(port), size),
        }
    }
}

impl MmioBus for MemBus {
    fn read(&mut self, gpa: GuestPhysAddr, size: AccessSize) -> u64 {
        match self.find(gpa.raw(), u64::from(size.bytes())) {
            Some((dev, off)) => dev.read(off, size) & size.mask(),
            None => {
                self.note_unclaimed("read of", gpa.raw(), size);
                size.mask()
            }
        }
    }

    fn write(&mut self, gpa: GuestPhysAddr, size: AccessSize, value: u64) {
        match self.find(gpa.raw(), u64::from(size.bytes())) {
            Some((dev, off)) => dev.write(off, size, value & size.mask()),
            None => self.note_unclaimed("write to", gpa.raw(), size),
        }
    }

    fn claims(&self, gpa: GuestPhysAddr) -> bool {
        self.claims_addr(gpa.raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use core::cell::RefCell;

    /// Records accesses; reads return `0x1234_5678_9abc_def0 + offset`.
    struct Probe(Rc<RefCell<Vec<(u64, u8, u64)>>>);

    impl PortDevice for Probe {
        fn read(&mut self, offset: u16, _size: AccessSize) -> u32 {
            0x9abc_def0 + u32::from(offset)
        }
        fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
            self.0.borrow_mut().push((u64::from(offset), size.bytes(), u64::from(value)));
        }
    }

    impl MmioDevice for Probe {
        fn read(&mut self, offset: u64, _size: AccessSize) -> u64 {
            0x1234_5678_9abc_def0 + offset
        }
        fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
            self.0.borrow_mut().push((offset, size.bytes(), value));
        }
    }

    #[test]
    fn ranges_are_checked() {
        assert!(BusRange::new(0, 0).is_none());
        assert!(BusRange::new(u64::MAX, 2).is_none());
        let r = BusRange::new(0x3f8, 8).unwrap();
        assert!(r.contains(0x3ff, 1));
        assert!(!r.contains(0x3ff, 2));
        assert!(!r.contains(u64::MAX, 2));
    }

    #[test]
    fn overlaps_are_rejected() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut bus = PioBus::new("pio");
        bus.insert_ports(0x3f8, 8, Box::new(Probe(log.clone()))).unwrap();
        bus.insert_ports(0x2f8, 8, Box::new(Probe(log.clone()))).unwrap();
        assert_eq!(
            bus.insert_ports(0x3f0, 9, Box::new(Probe(log.clone()))),
            Err(BusError::Overlap { existing: BusRange::new(0x3f8, 8).unwrap() })
        );
        assert_eq!(
            bus.insert_ports(0x3ff, 1, Box::new(Probe(log.clone()))),
            Err(BusError::Overlap { existing: BusRange::new(0x3f8, 8).unwrap() })
        );
        assert_eq!(bus.insert_ports(0xfff0, 0x20, Box::new(Probe(log.clone()))), Err(BusError::OutOfRange));
        // Adjacent is fine.
        bus.insert_ports(0x400, 4, Box::new(Probe(log))).unwrap();
    }

    #[test]
    fn ports_route_by_offset_and_unknown_reads_are_all_ones() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut bus = PioBus::new("pio");
        bus.insert_ports(0x3f8, 8, Box::new(Probe(log.clone()))).unwrap();
        assert_eq!(bus.read(0x3fd, AccessSize::Byte), 0xf5);
        bus.write(0x3f8, AccessSize::Byte, 0x141);
        assert_eq!(log.borrow()[0], (0, 1, 0x41));
        assert_eq!(bus.read(0x80, AccessSize::Byte), 0xff);
        assert_eq!(bus.read(0x80, AccessSize::Word), 0xffff);
        assert_eq!(bus.read(0xcfc, AccessSize::Dword), 0xffff_ffff);
        // Straddling the end of a device is unclaimed.
        assert_eq!(bus.read(0x3fe, AccessSize::Dword), 0xffff_ffff);
        bus.write(0x80, AccessSize::Byte, 1);
        assert_eq!(log.borrow().len(), 1);
        assert_eq!(bus.unclaimed_accesses(), 5);
    }

    #[test]
    fn mmio_routes_and_claims() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut bus = MemBus::new("mmio");
        bus.insert(BusRange::new(0xfee0_0000, 0x1000).unwrap(), Box::new(Probe(log.clone()))).unwrap();
        let gpa = GuestPhysAddr::new(0xfee0_0030);
        assert!(bus.claims(gpa));
        assert!(!bus.claims(GuestPhysAddr::new(0xfee0_1000)));
        assert_eq!(bus.read(gpa, AccessSize::Dword), 0x9abc_df20);
        bus.write(gpa, AccessSize::Word, 0xdead_beef);
        assert_eq!(log.borrow()[0], (0x30, 2, 0xbeef));
        assert_eq!(bus.read(GuestPhysAddr::new(0xdead_0000), AccessSize::Qword), u64::MAX);
    }
}
