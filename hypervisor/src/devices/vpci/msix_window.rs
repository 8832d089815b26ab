//! The guest-physical pages of an assigned device's BAR that hold its MSI-X table.
//! They are left out of the VM's nested page tables, so every guest access traps
//! here: table bytes go to the hypervisor's copy of the table (which routes the
//! vectors), the other bytes of those pages (often the Pending Bit Array, sometimes
//! device registers) go through to the device.
#![forbid(unsafe_code)]

use crate::devices::bus::MmioDevice;
use crate::devices::shared::Shared;
use crate::hw::AccessSize;
use crate::memory::addr::PAGE_SIZE;

/// The pages `[start, end)` of a BAR `bar_len` bytes long that hold a table at
/// `[offset, offset + len)`; `None` if the table does not start inside the BAR.
pub fn trapped_pages(bar_len: u64, offset: u64, len: u64) -> Option<(u64, u64)> {
    let start = offset & !(PAGE_SIZE - 1);
    let end = offset.saturating_add(len).next_multiple_of(PAGE_SIZE).min(bar_len);
    (start < end).then_some((start, end))
}

/// What the window needs from the function that owns the table.
pub trait MsixTableOwner {
    /// A read at `offset` from the table's start.
    fn msix_table_read(&self, offset: u64, size: AccessSize) -> u32;
    /// A write at `offset` from the table's start.
    fn msix_table_write(&mut self, offset: u64, size: AccessSize, value: u32);
}

/// The device's own bytes in the trapped pages, by offset from the BAR's start.
pub trait DeviceBytes {
    fn read(&self, offset: u64, bytes: u8) -> u64;
    fn write(&self, offset: u64, bytes: u8, value: u64);
}

/// The trapped pages as an MMIO device on the VM's bus (offsets from the window's
/// start, which is BAR offset `start`).
#[derive(Debug)]
pub struct MsixWindow<F, D> {
    function: Shared<F>,
    device: Option<D>,
    /// BAR offset of the window's first byte.
    start: u64,
    /// The table, as BAR offsets.
    table: (u64, u64),
}

impl<F: MsixTableOwner, D: DeviceBytes> MsixWindow<F, D> {
    /// `device` is `None` when the BAR cannot be reached by the hypervisor: the
    /// other bytes then read all-ones and writes are dropped.
    pub fn new(function: Shared<F>, device: Option<D>, start: u64, table_offset: u64, table_len: u64) -> Self {
        Self { function, device, start, table: (table_offset, table_offset.saturating_add(table_len)) }
    }

    fn in_table(&self, bar_offset: u64) -> Option<u64> {
        (self.table.0..self.table.1).contains(&bar_offset).then(|| bar_offset.saturating_sub(self.table.0))
    }
}

impl<F: MsixTableOwner, D: DeviceBytes> MmioDevice for MsixWindow<F, D> {
    fn read(&mut self, offset: u64, size: AccessSize) -> u64 {
        let at = self.start.saturating_add(offset);
        match self.in_table(at) {
            // Entries are dwords; a quadword access is two of them (address low/high).
            Some(t) if size == AccessSize::Qword => {
                let f = self.function.lock();
                let lo = f.msix_table_read(t, AccessSize::Dword);
                let hi = f.msix_table_read(t.saturating_add(4), AccessSize::Dword);
                u64::from(hi) << 32 | u64::from(lo)
            }
            Some(t) => u64::from(self.function.lock().msix_table_read(t, size)),
            None => self.device.as_ref().map_or(size.mask(), |d| d.read(at, size.bytes())),
        }
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        let at = self.start.saturating_add(offset);
        match self.in_table(at) {
            Some(t) if size == AccessSize::Qword => {
                let mut f = self.function.lock();
                f.msix_table_write(t, AccessSize::Dword, value as u32);
                f.msix_table_write(t.saturating_add(4), AccessSize::Dword, (value >> 32) as u32);
            }
            Some(t) => self.function.lock().msix_table_write(t, size, value as u32),
            None => {
                if let Some(d) = &self.device {
                    d.write(at, size.bytes(), value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    #[derive(Default)]
    struct TableWrites(Vec<(u64, u32)>);

    impl MsixTableOwner for TableWrites {
        fn msix_table_read(&self, offset: u64, _size: AccessSize) -> u32 {
            0x1000 + offset as u32
        }
        fn msix_table_write(&mut self, offset: u64, _size: AccessSize, value: u32) {
            self.0.push((offset, value));
        }
    }

    #[derive(Default)]
    struct Device(RefCell<Vec<(u64, u8, u64)>>);

    impl DeviceBytes for &Device {
        fn read(&self, offset: u64, _bytes: u8) -> u64 {
            offset | 0xd000_0000
        }
        fn write(&self, offset: u64, bytes: u8, value: u64) {
            self.0.borrow_mut().push((offset, bytes, value));
        }
    }

    #[test]
    fn pages_around_the_table() {
        assert_eq!(trapped_pages(0x4000, 0x2010, 0x30), Some((0x2000, 0x3000)));
        assert_eq!(trapped_pages(0x4000, 0x0ff0, 0x20), Some((0, 0x2000)), "table across a page boundary");
        assert_eq!(trapped_pages(0x1000, 0, 0x8000), Some((0, 0x1000)), "clipped to the BAR");
        assert_eq!(trapped_pages(0x1000, 0x8000, 0x10), None, "outside the BAR");
    }

    #[test]
    fn table_bytes_go_to_the_table_and_the_rest_to_the_device() {
        // A 16 KiB BAR with a 5-entry table at 0x2010 and the PBA at 0x2800: the window
        // is the page 0x2000-0x2fff.
        let table = Shared::new(TableWrites::default());
        let device = Device::default();
        let mut w = MsixWindow::new(table.clone(), Some(&device), 0x2000, 0x2010, 80);
        assert_eq!(w.read(0x10, AccessSize::Dword), 0x1000);
        assert_eq!(w.read(0x1c, AccessSize::Dword), 0x100c);
        assert_eq!(w.read(0x10, AccessSize::Qword), 0x1004_0000_1000);
        w.write(0x20, AccessSize::Qword, 0x0000_0001_fee0_0000);
        w.write(0x2c, AccessSize::Dword, 1);
        assert_eq!(table.lock().0, [(0x10, 0xfee0_0000), (0x14, 1), (0x1c, 1)]);
        // The PBA and the bytes before the table are the device's.
        assert_eq!(w.read(0x800, AccessSize::Qword), 0xd000_2800);
        assert_eq!(w.read(0x0, AccessSize::Dword), 0xd000_2000);
        w.write(0x60, AccessSize::Dword, 7);
        assert_eq!(device.0.borrow().as_slice(), [(0x2060, 4, 7)], "first byte after the table");
        // Without a reachable BAR the other bytes read all-ones and writes vanish.
        let mut blind = MsixWindow::<TableWrites, &Device>::new(table, None, 0x2000, 0x2010, 80);
        assert_eq!(blind.read(0x800, AccessSize::Dword), 0xffff_ffff);
        blind.write(0x800, AccessSize::Dword, 1);
    }
}
