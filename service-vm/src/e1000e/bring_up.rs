//! Bring-up: stop and reset the NIC, read its station address, program both rings and
//! turn receive and transmit on. Every wait is bounded in polls and in time.

use alloc::vec;

use super::counters::NicCounters;
use super::descriptors::{RxDescriptor, TxDescriptor};
use super::driver::E1000e;
use super::regs::{self, ctrl, eecd, rah, rctl, rxcsum, status, tctl, txdctl};
use super::rings::{RING_BYTES, RING_SIZE, RingMemory, RxRing, TxRing, previous_index};
use super::{DmaMemory, NicRegisters};

/// After receive and transmit are turned off, time for DMA already under way to end.
const QUIESCE_US: u32 = 10_000;
/// GIO master disable: polls of STATUS.GIO_MEN, 100 µs apart (80 ms in all).
const MASTER_DISABLE_POLLS: u32 = 800;
const MASTER_DISABLE_STEP_US: u32 = 100;
/// Reset: the NIC is not read for 1 ms after CTRL.RST, then CTRL.RST is polled every
/// millisecond for at most 100 ms.
const RESET_SETTLE_US: u32 = 1_000;
const RESET_POLLS: u32 = 100;
const RESET_STEP_US: u32 = 1_000;
/// The NVM auto-read after reset: polls of EECD.AUTO_RD, 1 ms apart.
const AUTO_READ_POLLS: u32 = 10;
const AUTO_READ_STEP_US: u32 = 1_000;

/// Why bring-up failed. The NIC is left with interrupts masked and receive and
/// transmit off (or in reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// BAR0 reads all ones: no device behind it (or it fell off the bus).
    DeviceAbsent,
    /// CTRL.RST did not clear within the bound.
    ResetTimeout,
    /// RAL0/RAH0 hold no usable unicast address (zero, multicast or broadcast).
    NoStationAddress([u8; 6]),
    /// The DMA allocator had no room for the rings or buffers.
    OutOfDmaMemory,
}

impl<R: NicRegisters, D: DmaMemory> E1000e<R, D> {
    /// Resets the NIC and brings it up: interrupts masked, link up, both rings
    /// programmed, receive and transmit on. The kernel then polls.
    pub fn new(mut regs: R, mut dma: D) -> Result<Self, InitError> {
        if regs.read32(regs::STATUS) == u32::MAX {
            return Err(InitError::DeviceAbsent);
        }
        reset(&mut regs)?;
        let mac = station_address(&mut regs)?;

        let rx_memory = RingMemory::allocate(&mut dma).ok_or(InitError::OutOfDmaMemory)?;
        let tx_memory = RingMemory::allocate(&mut dma).ok_or(InitError::OutOfDmaMemory)?;
        let mut nic = E1000e {
            regs,
            dma,
            mac,
            rx: RxRing { memory: rx_memory, next: 0, discarding: false },
            tx: TxRing { memory: tx_memory, used: 0, clean: 0, tail: 0, lengths: vec![0; usize::from(RING_SIZE)] },
            counters: NicCounters::default(),
            scratch: vec![0; super::BUFFER_SIZE],
        };
        nic.configure();
        log::info!(target: "e1000e", "82574 up, station address {:02x?}, {} descriptors each way", mac, RING_SIZE);
        Ok(nic)
    }

    /// Link, filters and both rings, then receive and transmit on.
    fn configure(&mut self) {
        // Link: the internal PHY autonegotiates; the MAC follows it. Flow control and
        // VLAN offloads off: the NIC never sends PAUSE frames and tags pass as bytes.
        let c = self.regs.read32(regs::CTRL);
        let c = (c | ctrl::SLU)
            & !(ctrl::FRCSPD | ctrl::FRCDPLX | ctrl::RFCE | ctrl::TFCE | ctrl::VME | ctrl::PHY_RST | ctrl::GIO_MDIS);
        self.regs.write32(regs::CTRL, c);

        // Filters: our unicast address and broadcast, no multicast group.
        for word in 0..regs::MTA_WORDS {
            self.regs.write32(regs::MTA + 4 * word, 0);
        }
        let m = self.mac;
        self.regs.write32(regs::RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.regs.write32(regs::RAH0, u32::from(u16::from_le_bytes([m[4], m[5]])) | rah::AV);
        self.regs.write32(regs::RXCSUM, rxcsum::IPOFL | rxcsum::TUOFL);

        // Receive ring: every descriptor armed, all but the last one given to the NIC.
        for i in 0..RING_SIZE {
            let d = RxDescriptor::armed(self.rx.memory.buffer_address(i));
            self.dma.write(&self.rx.memory.descriptors, RingMemory::<D::Region>::descriptor_offset(i), &d.to_bytes());
        }
        let rx_base = self.rx.memory.descriptors_address;
        self.regs.write32(regs::RDBAL, rx_base as u32);
        self.regs.write32(regs::RDBAH, (rx_base >> 32) as u32);
        self.regs.write32(regs::RDLEN, RING_BYTES as u32);
        self.regs.write32(regs::RDH, 0);
        self.regs.write32(regs::RDT, u32::from(previous_index(0)));

        // Transmit ring: empty (head = tail = 0); descriptors are written when used.
        for i in 0..RING_SIZE {
            let empty = TxDescriptor::default().to_bytes();
            self.dma.write(&self.tx.memory.descriptors, RingMemory::<D::Region>::descriptor_offset(i), &empty);
        }
        let tx_base = self.tx.memory.descriptors_address;
        self.regs.write32(regs::TDBAL, tx_base as u32);
        self.regs.write32(regs::TDBAH, (tx_base >> 32) as u32);
        self.regs.write32(regs::TDLEN, RING_BYTES as u32);
        self.regs.write32(regs::TDH, 0);
        self.regs.write32(regs::TDT, 0);
        self.regs.write32(regs::TXDCTL, txdctl::WTHRESH_1 | txdctl::RESERVED_ONE | txdctl::GRAN);
        self.regs.write32(regs::TIPG, regs::TIPG_COPPER);

        // On: transmit (short frames padded), then receive (broadcasts, CRC stripped).
        self.regs.write32(regs::TCTL, tctl::EN | tctl::PSP | tctl::CT_15 | tctl::COLD_63);
        self.regs.write32(regs::RCTL, rctl::EN | rctl::BAM | rctl::SECRC);
    }

    /// Stops the NIC: no DMA into the rings after this returns (receive and transmit
    /// off, DMA mastering stopped, the NIC reset), so the memory may be reused. For a
    /// service VM about to restart or hand the NIC back.
    pub fn stop(mut self) -> (R, D) {
        if let Err(e) = reset(&mut self.regs) {
            log::warn!(target: "e1000e", "stopping: {e:?}");
        }
        (self.regs, self.dma)
    }
}

/// Masks interrupts, stops receive, transmit and DMA, resets the NIC and waits for its
/// NVM auto-read (which loads RAL0/RAH0 on real hardware).
fn reset<R: NicRegisters>(regs: &mut R) -> Result<(), InitError> {
    regs.write32(regs::IMC, u32::MAX);
    regs.write32(regs::RCTL, 0);
    regs.write32(regs::TCTL, tctl::PSP);
    let _ = regs.read32(regs::STATUS); // flushes the posted writes
    regs.delay_us(QUIESCE_US);

    // Stop DMA mastering before the reset, so no transfer is cut in half (the
    // datasheet's reset procedure). The reset goes ahead even if the NIC stays busy.
    let c = regs.read32(regs::CTRL);
    regs.write32(regs::CTRL, c | ctrl::GIO_MDIS);
    if !poll(regs, MASTER_DISABLE_POLLS, MASTER_DISABLE_STEP_US, |r| r.read32(regs::STATUS) & status::GIO_MEN == 0) {
        log::warn!(target: "e1000e", "DMA master still enabled after {} ms; resetting anyway",
            MASTER_DISABLE_POLLS * MASTER_DISABLE_STEP_US / 1000);
    }

    let c = regs.read32(regs::CTRL);
    regs.write32(regs::CTRL, c | ctrl::RST);
    regs.delay_us(RESET_SETTLE_US);
    if !poll(regs, RESET_POLLS, RESET_STEP_US, |r| r.read32(regs::CTRL) & ctrl::RST == 0) {
        regs.write32(regs::IMC, u32::MAX);
        return Err(InitError::ResetTimeout);
    }
    // The reset unmasks nothing, but mask again and clear what is pending regardless.
    regs.write32(regs::IMC, u32::MAX);
    let _ = regs.read32(regs::ICR);

    if !poll(regs, AUTO_READ_POLLS, AUTO_READ_STEP_US, |r| r.read32(regs::EECD) & eecd::AUTO_RD != 0) {
        log::warn!(target: "e1000e", "NVM auto-read not done after reset; the station address may be stale");
    }
    Ok(())
}

/// The station address from RAL0/RAH0, where the NIC put it from its NVM after reset.
fn station_address<R: NicRegisters>(regs: &mut R) -> Result<[u8; 6], InitError> {
    let low = regs.read32(regs::RAL0).to_le_bytes();
    let high = regs.read32(regs::RAH0).to_le_bytes();
    let mac = [low[0], low[1], low[2], low[3], high[0], high[1]];
    let multicast = mac[0] & 1 != 0; // broadcast included
    if mac == [0; 6] || multicast {
        return Err(InitError::NoStationAddress(mac));
    }
    Ok(mac)
}

/// Polls `done` up to `polls` times, waiting `step_us` between polls.
fn poll<R: NicRegisters>(regs: &mut R, polls: u32, step_us: u32, mut done: impl FnMut(&mut R) -> bool) -> bool {
    for _ in 0..polls {
        if done(regs) {
            return true;
        }
        regs.delay_us(step_us);
    }
    done(regs)
}
