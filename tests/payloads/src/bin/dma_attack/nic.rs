//! The attack through a NIC's descriptors: QEMU's `e1000e` (Intel 82574L), driven
//! with legacy descriptors (82574 datasheet §7.1.4, §7.2.10). First one frame is sent
//! from this VM's own memory (an ARP request for the user network's gateway), which
//! must work; then receive descriptors point the frames that arrive (the gateway's ARP
//! reply) at the hypervisor image and past this VM's RAM, and transmit descriptors
//! point the frame to send at the same places. The IOMMU must block every one of
//! those transfers.

use core::ptr::{read_volatile, write_volatile};

use payloads::{check, println};

/// Registers in BAR0 (82574 datasheet §10.2).
const CTRL: u64 = 0x0000;
const STATUS: u64 = 0x0008;
const IMC: u64 = 0x00d8;
const RCTL: u64 = 0x0100;
const TCTL: u64 = 0x0400;
const TIPG: u64 = 0x0410;
const RDBAL: u64 = 0x2800;
const RDBAH: u64 = 0x2804;
const RDLEN: u64 = 0x2808;
const RDH: u64 = 0x2810;
const RDT: u64 = 0x2818;
const TDBAL: u64 = 0x3800;
const TDBAH: u64 = 0x3804;
const TDLEN: u64 = 0x3808;
const TDH: u64 = 0x3810;
const TDT: u64 = 0x3818;
const RAL0: u64 = 0x5400;
const RAH0: u64 = 0x5404;

const CTRL_SLU: u32 = 1 << 6;
const CTRL_RST: u32 = 1 << 26;
const STATUS_LU: u32 = 1 << 1;
/// Receiver on, unicast and multicast promiscuous, broadcasts, strip the CRC.
const RCTL_RUN: u32 = 1 << 1 | 1 << 3 | 1 << 4 | 1 << 15 | 1 << 26;
/// Transmitter on, pad short packets, collision threshold 15.
const TCTL_RUN: u32 = 1 << 1 | 1 << 3 | 0x0f << 4;
/// Transmit descriptor command: end of packet, insert FCS, report status.
const TX_CMD: u8 = 1 << 0 | 1 << 1 | 1 << 3;
/// Descriptor Done, in both descriptor kinds' status byte.
const DD: u8 = 1;

const RING: usize = 8;

/// A legacy descriptor: 16 bytes, the buffer address first.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Descriptor {
    address: u64,
    length: u16,
    /// TX: checksum offset; RX: packet checksum (low byte).
    cso: u8,
    /// TX: command; RX: checksum (high byte).
    cmd: u8,
    status: u8,
    errors: u8,
    special: u16,
}

const _: () = assert!(size_of::<Descriptor>() == 16);

const EMPTY: Descriptor = Descriptor { address: 0, length: 0, cso: 0, cmd: 0, status: 0, errors: 0, special: 0 };

#[repr(C, align(4096))]
struct Rings {
    tx: [Descriptor; RING],
    rx: [Descriptor; RING],
    frame: [u8; 64],
}

static mut RINGS: Rings = Rings { tx: [EMPTY; RING], rx: [EMPTY; RING], frame: [0; 64] };

pub struct Nic(u64);

impl Nic {
    fn read(&self, reg: u64) -> u32 {
        // SAFETY: BAR0 of the VM's own NIC, mapped by the hypervisor (uncached MMIO).
        unsafe { read_volatile((self.0 + reg) as *const u32) }
    }
    fn write(&self, reg: u64, value: u32) {
        // SAFETY: as above.
        unsafe { write_volatile((self.0 + reg) as *mut u32, value) }
    }

    fn wait(&self, mut done: impl FnMut(&Nic) -> bool, spins: u64) -> bool {
        for _ in 0..spins {
            if done(self) {
                return true;
            }
            core::hint::spin_loop();
        }
        false
    }

    /// Resets the NIC (interrupts off, link forced up) and sets up both rings in this
    /// VM's memory, receive off.
    pub fn init(bar0: u64) -> Nic {
        let nic = Nic(bar0);
        nic.write(IMC, u32::MAX);
        nic.write(CTRL, nic.read(CTRL) | CTRL_RST);
        nic.wait(|n| n.read(CTRL) & CTRL_RST == 0, 10_000_000);
        nic.write(IMC, u32::MAX);
        nic.write(CTRL, nic.read(CTRL) | CTRL_SLU);
        let rings = &raw mut RINGS;
        // SAFETY: single-threaded payload; the device is idle after the reset.
        let (tx, rx) = unsafe { (&raw mut (*rings).tx as u64, &raw mut (*rings).rx as u64) };
        nic.write(TDBAL, tx as u32);
        nic.write(TDBAH, (tx >> 32) as u32);
        nic.write(TDLEN, (RING * 16) as u32);
        nic.write(TDH, 0);
        nic.write(TDT, 0);
        nic.write(TIPG, 10 | 8 << 10 | 6 << 20);
        nic.write(TCTL, TCTL_RUN);
        nic.write(RDBAL, rx as u32);
        nic.write(RDBAH, (rx >> 32) as u32);
        nic.write(RDLEN, (RING * 16) as u32);
        nic.write(RDH, 0);
        nic.write(RDT, 0);
        nic
    }

    fn mac(&self) -> [u8; 6] {
        let (low, high) = (self.read(RAL0), self.read(RAH0));
        let l = low.to_le_bytes();
        let h = high.to_le_bytes();
        [l[0], l[1], l[2], l[3], h[0], h[1]]
    }

    /// Writes an ARP request "who has 10.0.2.2, tell 10.0.2.15" into the frame buffer.
    fn arp_request(&self) -> (u64, u16) {
        let mac = self.mac();
        let mut f = [0u8; 60];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&mac);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&mac);
        f[28..32].copy_from_slice(&[10, 0, 2, 15]);
        f[38..42].copy_from_slice(&[10, 0, 2, 2]);
        let rings = &raw mut RINGS;
        // SAFETY: single-threaded; the NIC reads the frame only after the tail moves.
        unsafe {
            let frame = &raw mut (*rings).frame;
            core::ptr::copy_nonoverlapping(f.as_ptr(), frame.cast::<u8>(), f.len());
            (&raw mut (*rings).frame as u64, 60)
        }
    }

    /// Queues one frame of `len` bytes at bus address `buffer` in descriptor `slot`
    /// and waits for the NIC to report it done. Returns whether it did.
    fn send(&self, slot: usize, buffer: u64, len: u16) -> bool {
        let rings = &raw mut RINGS;
        let d = Descriptor { address: buffer, length: len, cmd: TX_CMD, ..Descriptor::default() };
        // SAFETY: the descriptor is the NIC's only after the tail moves past it.
        unsafe { write_volatile(&raw mut (*rings).tx[slot], d) };
        self.write(TDT, ((slot + 1) % RING) as u32);
        // SAFETY: the NIC writes the status back by DMA; read it volatile.
        self.wait(|_| unsafe { read_volatile(&raw const (*rings).tx[slot]) }.status & DD != 0, 20_000_000)
    }

    /// Gives the NIC `buffers` to receive into (descriptors 0..n) and turns receive on.
    fn receive_into(&self, buffers: &[u64]) {
        let rings = &raw mut RINGS;
        for (i, &b) in buffers.iter().enumerate() {
            let d = Descriptor { address: b, ..Descriptor::default() };
            // SAFETY: receive is off; the descriptors become the NIC's with the tail.
            unsafe { write_volatile(&raw mut (*rings).rx[i], d) };
        }
        self.write(RDT, buffers.len() as u32);
        self.write(RCTL, RCTL_RUN);
    }

    fn received(&self, slot: usize) -> Option<u16> {
        let rings = &raw mut RINGS;
        // SAFETY: written back by the NIC's DMA; read volatile.
        let d = unsafe { read_volatile(&raw const (*rings).rx[slot]) };
        (d.status & DD != 0).then_some(d.length)
    }
}

/// Sends one ARP request from this VM's memory: the NIC's DMA inside the VM works.
pub fn legitimate_transfer(nic: &Nic) {
    let up = nic.wait(|n| n.read(STATUS) & STATUS_LU != 0, 50_000_000);
    let (frame, len) = nic.arp_request();
    let sent = nic.send(0, frame, len);
    check("nic_link_up", up, format_args!("STATUS={:#x}", nic.read(STATUS)));
    check("nic_dma_inside_own_memory", sent, format_args!("the transmit descriptor was never done"));
}

/// The attack. `targets` are bus addresses outside this VM. Receive: the gateway's
/// ARP reply is aimed at the first targets. Transmit: frames are read from each
/// target. Returns without a verdict: the hypervisor's fault log and its memory
/// checksums are the verdict (and, under VT-d, this VM is stopped on the first fault).
pub fn attack(nic: &Nic, targets: &[u64]) {
    let (frame, len) = nic.arp_request();
    nic.receive_into(&targets[..2]);
    println!("dma-attack payload: NIC receive descriptors aimed at {:#x} and {:#x}", targets[0], targets[1]);
    nic.send(1, frame, len);
    if nic.wait(|n| n.received(0).is_some(), 50_000_000) {
        // The descriptor is in this VM's memory; whether the frame itself reached
        // the target is for the IOMMU to decide.
        let len = nic.received(0).unwrap_or(0);
        println!("dma-attack payload: the NIC reports a {len}-byte frame received for {:#x}", targets[0]);
    }
    for (i, &target) in targets.iter().enumerate() {
        println!("dma-attack payload: NIC transmit descriptor reading {target:#x}");
        nic.send((2 + i) % RING, target, 1514);
    }
}
