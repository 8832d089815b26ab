//! A fake 82574 for the driver's tests: a register file with the reset, status and
//! interrupt-cause behaviour the driver relies on, DMA memory that fails the test on
//! any access outside an allocation, and a small model of the rings. On a TDT write it
//! sends the frames between TDH and TDT to `wire` (padding short ones when TCTL.PSP is
//! set) and writes DD back; `inject` stores a frame in the next receive descriptor the
//! driver gave it, with a write-back the test may falsify.

mod bring_up;
mod misbehaving;
mod round_trip;

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::descriptors::{DESCRIPTOR_SIZE, RxDescriptor, TxDescriptor, rx_status, tx_cmd, tx_status};
use super::regs::{self, ctrl, eecd, rah, rctl, rxcsum, status, tctl};
use super::{DmaMemory, E1000e, NicRegisters};

/// Device addresses of the fake DMA memory start here, so an address of 0 or an
/// offset passed as an address shows up as outside every region.
const DMA_BASE: u64 = 0x8_4000_0000;
const PERMANENT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Debug)]
struct Fake82574 {
    regs: Vec<u32>,
    /// Every register write, in order.
    writes: Vec<(u32, u32)>,
    /// Microseconds the driver asked to wait.
    waited_us: u64,
    memory: Vec<u8>,
    /// (device address, length) of each allocation.
    regions: Vec<(u64, usize)>,
    dma_limit: usize,
    permanent_mac: [u8; 6],
    /// Cable plugged in: STATUS.LU follows CTRL.SLU.
    cable: bool,
    /// CTRL.RST never clears.
    stuck_in_reset: bool,
    /// CTRL.RST reloads only the station address, as QEMU 7.2's model does (later
    /// versions reset the other registers too, as the datasheet says).
    reset_reloads_only_the_address: bool,
    /// No device: every read is all ones.
    absent: bool,
    /// Transmit descriptors are left alone until `send_pending`.
    hold_transmit: bool,
    /// Frames sent, as they would leave on the wire (without the CRC).
    wire: Vec<Vec<u8>>,
    /// Frames `inject` could not store: no receive descriptor given.
    missed: usize,
}

/// What the fake writes back into a receive descriptor; by default what a sane NIC does.
#[derive(Clone, Copy, Debug)]
struct WriteBack {
    length: Option<u16>,
    status: u8,
    errors: u8,
    /// Overwrites the buffer address in the descriptor, as a device may do.
    buffer: Option<u64>,
}

impl Default for WriteBack {
    fn default() -> Self {
        WriteBack { length: None, status: rx_status::DD | rx_status::EOP, errors: 0, buffer: None }
    }
}

type Shared = Rc<RefCell<Fake82574>>;

#[derive(Debug)]
struct FakeRegisters(Shared);
#[derive(Debug)]
struct FakeDma(Shared);

#[derive(Clone, Copy, Debug)]
struct FakeDmaRegion {
    address: u64,
    len: usize,
}

impl Fake82574 {
    fn new() -> Shared {
        let mut fake = Fake82574 {
            regs: vec![0; 0x20000 / 4],
            writes: Vec::new(),
            waited_us: 0,
            memory: Vec::new(),
            regions: Vec::new(),
            dma_limit: 4 << 20,
            permanent_mac: PERMANENT_MAC,
            cable: true,
            stuck_in_reset: false,
            reset_reloads_only_the_address: false,
            absent: false,
            hold_transmit: false,
            wire: Vec::new(),
            missed: 0,
        };
        fake.power_on();
        Rc::new(RefCell::new(fake))
    }

    /// The register values after power-on or CTRL.RST: the NVM's station address in
    /// RAL0/RAH0, auto-read done, everything the driver programs back at zero.
    fn power_on(&mut self) {
        self.regs.fill(0);
        self.load_station_address();
        self.regs[reg(regs::EECD)] = eecd::AUTO_RD;
        self.regs[reg(regs::ICR)] = 1 << 2; // a link status change pending, as after reset
        if self.stuck_in_reset {
            self.regs[reg(regs::CTRL)] = ctrl::RST;
        }
    }

    fn load_station_address(&mut self) {
        let m = self.permanent_mac;
        self.regs[reg(regs::RAL0)] = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
        self.regs[reg(regs::RAH0)] = u32::from(u16::from_le_bytes([m[4], m[5]])) | rah::AV;
    }

    fn read(&mut self, offset: u32) -> u32 {
        if self.absent {
            return u32::MAX;
        }
        let value = self.regs[reg(offset)];
        match offset {
            regs::STATUS => {
                let c = self.regs[reg(regs::CTRL)];
                let mut s = status::FD | 2 << status::SPEED_SHIFT;
                if self.cable && c & ctrl::SLU != 0 {
                    s |= status::LU;
                }
                if c & ctrl::GIO_MDIS == 0 {
                    s |= status::GIO_MEN;
                }
                s
            }
            regs::ICR => {
                self.regs[reg(regs::ICR)] = 0;
                value
            }
            _ => value,
        }
    }

    fn write(&mut self, offset: u32, value: u32) {
        self.writes.push((offset, value));
        match offset {
            regs::CTRL if value & ctrl::RST != 0 && self.reset_reloads_only_the_address => {
                self.regs[reg(offset)] = value & !ctrl::RST;
                self.load_station_address();
            }
            regs::CTRL if value & ctrl::RST != 0 => self.power_on(),
            regs::TDT => {
                self.regs[reg(offset)] = value;
                if !self.hold_transmit {
                    self.send_pending();
                }
            }
            _ => self.regs[reg(offset)] = value,
        }
    }

    fn ring_size(&self, len_register: u32) -> u32 {
        self.regs[reg(len_register)] / DESCRIPTOR_SIZE as u32
    }

    fn ring_base(&self, low: u32, high: u32) -> u64 {
        u64::from(self.regs[reg(low)]) | u64::from(self.regs[reg(high)]) << 32
    }

    /// Sends every descriptor from TDH to TDT, as the NIC does once the tail moves.
    fn send_pending(&mut self) {
        if self.regs[reg(regs::TCTL)] & tctl::EN == 0 {
            return;
        }
        let size = self.ring_size(regs::TDLEN);
        let base = self.ring_base(regs::TDBAL, regs::TDBAH);
        let tail = self.regs[reg(regs::TDT)];
        assert!(tail < size, "TDT {tail} outside a ring of {size}");
        while self.regs[reg(regs::TDH)] != tail {
            let head = self.regs[reg(regs::TDH)];
            let at = base + u64::from(head) * DESCRIPTOR_SIZE as u64;
            let d = TxDescriptor::from_bytes(&self.dma_bytes(at, DESCRIPTOR_SIZE).try_into().unwrap());
            assert_eq!(d.cmd & tx_cmd::EOP, tx_cmd::EOP, "one frame per descriptor");
            let mut frame = self.dma_bytes(d.buffer, usize::from(d.length)).to_vec();
            if self.regs[reg(regs::TCTL)] & tctl::PSP != 0 && frame.len() < 60 {
                frame.resize(60, 0);
            }
            self.wire.push(frame);
            if d.cmd & tx_cmd::RS != 0 {
                self.dma_bytes_mut(at + 12, 1)[0] |= tx_status::DD;
            }
            self.regs[reg(regs::TDH)] = (head + 1) % size;
        }
    }

    /// Receives `frame` into the descriptor at RDH, if the driver gave the NIC one.
    fn inject(&mut self, frame: &[u8], write_back: WriteBack) -> bool {
        let size = self.ring_size(regs::RDLEN);
        let head = self.regs[reg(regs::RDH)];
        if self.regs[reg(regs::RCTL)] & rctl::EN == 0 || head == self.regs[reg(regs::RDT)] {
            self.missed += 1;
            return false;
        }
        let at = self.ring_base(regs::RDBAL, regs::RDBAH) + u64::from(head) * DESCRIPTOR_SIZE as u64;
        let mut d = RxDescriptor::from_bytes(&self.dma_bytes(at, DESCRIPTOR_SIZE).try_into().unwrap());
        assert_eq!(d.status, 0, "receive descriptor {head} given to the NIC without being re-armed");
        assert!(frame.len() <= 2048);
        self.dma_bytes_mut(d.buffer, frame.len()).copy_from_slice(frame);
        d.length = write_back.length.unwrap_or(frame.len() as u16);
        d.status = write_back.status;
        d.errors = write_back.errors;
        d.buffer = write_back.buffer.unwrap_or(d.buffer);
        self.dma_bytes_mut(at, DESCRIPTOR_SIZE).copy_from_slice(&d.to_bytes());
        self.regs[reg(regs::RDH)] = (head + 1) % size;
        true
    }

    /// The bytes at device address `at`, which must lie inside one allocation.
    fn dma_bytes(&self, at: u64, len: usize) -> &[u8] {
        let start = self.checked(at, len);
        &self.memory[start..start + len]
    }

    fn dma_bytes_mut(&mut self, at: u64, len: usize) -> &mut [u8] {
        let start = self.checked(at, len);
        &mut self.memory[start..start + len]
    }

    fn checked(&self, at: u64, len: usize) -> usize {
        let inside = self.regions.iter().any(|&(base, size)| at >= base && at + len as u64 <= base + size as u64);
        assert!(inside, "DMA of {len} bytes at {at:#x} outside every allocation");
        (at - DMA_BASE) as usize
    }

    /// The receive descriptor `i` as it is in memory.
    fn rx_descriptor(&self, i: u64) -> RxDescriptor {
        let at = self.ring_base(regs::RDBAL, regs::RDBAH) + i * DESCRIPTOR_SIZE as u64;
        RxDescriptor::from_bytes(&self.dma_bytes(at, DESCRIPTOR_SIZE).try_into().unwrap())
    }

    fn value(&self, offset: u32) -> u32 {
        self.regs[reg(offset)]
    }
}

fn reg(offset: u32) -> usize {
    assert_eq!(offset % 4, 0, "unaligned register {offset:#x}");
    offset as usize / 4
}

impl NicRegisters for FakeRegisters {
    fn read32(&mut self, offset: u32) -> u32 {
        self.0.borrow_mut().read(offset)
    }
    fn write32(&mut self, offset: u32, value: u32) {
        self.0.borrow_mut().write(offset, value);
    }
    fn delay_us(&mut self, micros: u32) {
        self.0.borrow_mut().waited_us += u64::from(micros);
    }
}

impl DmaMemory for FakeDma {
    type Region = FakeDmaRegion;

    fn allocate(&mut self, len: usize, align: usize) -> Option<FakeDmaRegion> {
        let mut fake = self.0.borrow_mut();
        let start = fake.memory.len().next_multiple_of(align);
        if start + len > fake.dma_limit {
            return None;
        }
        fake.memory.resize(start + len, 0);
        let region = FakeDmaRegion { address: DMA_BASE + start as u64, len };
        fake.regions.push((region.address, len));
        Some(region)
    }
    fn device_address(&self, region: &FakeDmaRegion) -> u64 {
        region.address
    }
    fn read(&self, region: &FakeDmaRegion, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= region.len, "read past the end of a DMA region");
        out.copy_from_slice(self.0.borrow().dma_bytes(region.address + offset as u64, out.len()));
    }
    fn write(&mut self, region: &FakeDmaRegion, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= region.len, "write past the end of a DMA region");
        self.0.borrow_mut().dma_bytes_mut(region.address + offset as u64, data.len()).copy_from_slice(data);
    }
}

/// A driver brought up on a fresh fake.
fn up() -> (E1000e<FakeRegisters, FakeDma>, Shared) {
    let fake = Fake82574::new();
    let nic = E1000e::new(FakeRegisters(fake.clone()), FakeDma(fake.clone())).expect("bring-up");
    (nic, fake)
}

/// A frame of `len` bytes whose contents tell it apart: broadcast destination, the
/// fake's address as source, then `tag` and a counting pattern.
fn frame(len: usize, tag: u32) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(tag as u8)).collect();
    let header = [[0xff; 6], PERMANENT_MAC].concat();
    let n = header.len().min(len);
    f[..n].copy_from_slice(&header[..n]);
    if len >= 16 {
        f[12..16].copy_from_slice(&tag.to_be_bytes());
    }
    f
}

/// Receives everything pending, each frame copied out.
fn drain(nic: &mut E1000e<FakeRegisters, FakeDma>, budget: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    nic.receive(budget, |f, _| got.push(f.to_vec()));
    got
}
