//! Legacy receive and transmit descriptors (82574 datasheet §7.1.4 and §7.2.10.1).
//!
//! RCTL.DTYP = 00 and RFCTL.EXSTEN = 0 after reset select the legacy receive format; a
//! transmit descriptor with DEXT = 0 is a legacy one. Both are 16 bytes, little-endian,
//! the buffer address first. The structs give the layout (checked below); the driver
//! reaches DMA memory only through [`super::DmaMemory`], so each struct converts to and
//! from its 16 bytes at the offsets the layout gives.

use core::mem::{offset_of, size_of};

/// Bytes in one descriptor, of either kind.
pub const DESCRIPTOR_SIZE: usize = 16;

/// A legacy receive descriptor (§7.1.4). The driver writes `buffer`; the NIC writes
/// the rest back when it has stored a frame (or part of one) in the buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RxDescriptor {
    /// Device address of the receive buffer.
    pub buffer: u64,
    /// Bytes stored in the buffer (without the CRC: RCTL.SECRC is set).
    pub length: u16,
    /// Packet checksum (unused: the status bits say whether the transport checksum
    /// was good).
    pub checksum: u16,
    pub status: u8,
    pub errors: u8,
    /// VLAN tag (unused: CTRL.VME is off).
    pub special: u16,
}

const _: () = assert!(size_of::<RxDescriptor>() == DESCRIPTOR_SIZE);
const _: () = assert!(offset_of!(RxDescriptor, buffer) == 0);
const _: () = assert!(offset_of!(RxDescriptor, length) == 8);
const _: () = assert!(offset_of!(RxDescriptor, checksum) == 10);
const _: () = assert!(offset_of!(RxDescriptor, status) == 12);
const _: () = assert!(offset_of!(RxDescriptor, errors) == 13);
const _: () = assert!(offset_of!(RxDescriptor, special) == 14);

/// Receive status bits (§7.1.4).
pub mod rx_status {
    /// Descriptor done: the NIC has written this descriptor back.
    pub const DD: u8 = 1 << 0;
    /// End of packet: the frame's last buffer.
    pub const EOP: u8 = 1 << 1;
    /// Ignore the checksum indications.
    pub const IXSM: u8 = 1 << 2;
    /// The UDP checksum was calculated (TCPE tells whether it was good).
    pub const UDPCS: u8 = 1 << 4;
    /// The TCP checksum was calculated (TCPE tells whether it was good).
    pub const TCPCS: u8 = 1 << 5;
    /// The IPv4 header checksum was calculated (IPE tells whether it was good).
    pub const IPCS: u8 = 1 << 6;
}

/// Receive error bits (§7.1.4).
pub mod rx_errors {
    /// TCP/UDP checksum error.
    pub const TCPE: u8 = 1 << 5;
    /// IPv4 header checksum error.
    pub const IPE: u8 = 1 << 6;
}

/// Receive error bits (§7.1.4) that mean the frame is bad: CRC or alignment error
/// (CE), symbol error (SE), sequence error (SEQ), carrier extension error (CXE), RX data
/// error (RXE). The checksum error bits (TCPE, IPE) are left out: such a frame goes on
/// unvouched for, and the router and the desktop check it themselves.
pub const RX_ERRORS_FATAL: u8 = 1 << 0 | 1 << 1 | 1 << 2 | 1 << 4 | 1 << 7;

/// What the NIC found of a received frame's transport checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxChecksum {
    /// The TCP or UDP checksum (and the IPv4 header checksum) was calculated and good.
    Good,
    /// Calculated and wrong.
    Bad,
    /// Not calculated (not TCP or UDP over IPv4, a fragment, or offload off).
    Unknown,
}

impl RxChecksum {
    /// The verdict in a written-back descriptor's status and errors.
    pub fn of(d: &RxDescriptor) -> Self {
        let calculated = d.status & (rx_status::TCPCS | rx_status::UDPCS) != 0;
        if d.status & rx_status::IXSM != 0 || !calculated || d.status & rx_status::IPCS == 0 {
            RxChecksum::Unknown
        } else if d.errors & (rx_errors::TCPE | rx_errors::IPE) != 0 {
            RxChecksum::Bad
        } else {
            RxChecksum::Good
        }
    }
}

impl RxDescriptor {
    /// A descriptor handed to the NIC: its buffer, every written-back field zero.
    pub fn armed(buffer: u64) -> Self {
        RxDescriptor { buffer, ..RxDescriptor::default() }
    }

    pub fn to_bytes(self) -> [u8; DESCRIPTOR_SIZE] {
        let mut b = [0; DESCRIPTOR_SIZE];
        put(&mut b, offset_of!(RxDescriptor, buffer), &self.buffer.to_le_bytes());
        put(&mut b, offset_of!(RxDescriptor, length), &self.length.to_le_bytes());
        put(&mut b, offset_of!(RxDescriptor, checksum), &self.checksum.to_le_bytes());
        b[offset_of!(RxDescriptor, status)] = self.status;
        b[offset_of!(RxDescriptor, errors)] = self.errors;
        put(&mut b, offset_of!(RxDescriptor, special), &self.special.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; DESCRIPTOR_SIZE]) -> Self {
        RxDescriptor {
            buffer: u64::from_le_bytes(take(b, offset_of!(RxDescriptor, buffer))),
            length: u16::from_le_bytes(take(b, offset_of!(RxDescriptor, length))),
            checksum: u16::from_le_bytes(take(b, offset_of!(RxDescriptor, checksum))),
            status: b[offset_of!(RxDescriptor, status)],
            errors: b[offset_of!(RxDescriptor, errors)],
            special: u16::from_le_bytes(take(b, offset_of!(RxDescriptor, special))),
        }
    }
}

/// A legacy transmit descriptor (§7.2.10.1). The driver writes it; the NIC writes back
/// only `status` (DD) when `cmd` has RS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TxDescriptor {
    /// Device address of the frame's bytes.
    pub buffer: u64,
    /// Bytes to send from the buffer.
    pub length: u16,
    /// Checksum offset and start (unused: no checksum insertion).
    pub cso: u8,
    pub cmd: u8,
    pub status: u8,
    pub css: u8,
    /// VLAN tag (unused: `cmd` never has VLE).
    pub special: u16,
}

const _: () = assert!(size_of::<TxDescriptor>() == DESCRIPTOR_SIZE);
const _: () = assert!(offset_of!(TxDescriptor, buffer) == 0);
const _: () = assert!(offset_of!(TxDescriptor, length) == 8);
const _: () = assert!(offset_of!(TxDescriptor, cso) == 10);
const _: () = assert!(offset_of!(TxDescriptor, cmd) == 11);
const _: () = assert!(offset_of!(TxDescriptor, status) == 12);
const _: () = assert!(offset_of!(TxDescriptor, css) == 13);
const _: () = assert!(offset_of!(TxDescriptor, special) == 14);

/// Transmit command bits (§7.2.10.1).
pub mod tx_cmd {
    /// End of packet: this descriptor holds the frame's last bytes.
    pub const EOP: u8 = 1 << 0;
    /// Insert FCS: the NIC appends the Ethernet CRC.
    pub const IFCS: u8 = 1 << 1;
    /// Report status: the NIC sets DD in `status` once the descriptor is done.
    pub const RS: u8 = 1 << 3;
}

/// Transmit status bits.
pub mod tx_status {
    /// Descriptor done.
    pub const DD: u8 = 1 << 0;
}

impl TxDescriptor {
    /// A descriptor for one whole frame of `length` bytes at `buffer`, reporting status.
    pub fn frame(buffer: u64, length: u16) -> Self {
        TxDescriptor { buffer, length, cmd: tx_cmd::EOP | tx_cmd::IFCS | tx_cmd::RS, ..TxDescriptor::default() }
    }

    pub fn to_bytes(self) -> [u8; DESCRIPTOR_SIZE] {
        let mut b = [0; DESCRIPTOR_SIZE];
        put(&mut b, offset_of!(TxDescriptor, buffer), &self.buffer.to_le_bytes());
        put(&mut b, offset_of!(TxDescriptor, length), &self.length.to_le_bytes());
        b[offset_of!(TxDescriptor, cso)] = self.cso;
        b[offset_of!(TxDescriptor, cmd)] = self.cmd;
        b[offset_of!(TxDescriptor, status)] = self.status;
        b[offset_of!(TxDescriptor, css)] = self.css;
        put(&mut b, offset_of!(TxDescriptor, special), &self.special.to_le_bytes());
        b
    }

    /// Only the fake NIC of the tests reads transmit descriptors back whole.
    #[cfg(test)]
    pub fn from_bytes(b: &[u8; DESCRIPTOR_SIZE]) -> Self {
        TxDescriptor {
            buffer: u64::from_le_bytes(take(b, offset_of!(TxDescriptor, buffer))),
            length: u16::from_le_bytes(take(b, offset_of!(TxDescriptor, length))),
            cso: b[offset_of!(TxDescriptor, cso)],
            cmd: b[offset_of!(TxDescriptor, cmd)],
            status: b[offset_of!(TxDescriptor, status)],
            css: b[offset_of!(TxDescriptor, css)],
            special: u16::from_le_bytes(take(b, offset_of!(TxDescriptor, special))),
        }
    }
}

/// Offset of the status byte, the same in both kinds: the one byte a poll reads first.
pub const STATUS_OFFSET: usize = offset_of!(RxDescriptor, status);
const _: () = assert!(STATUS_OFFSET == offset_of!(TxDescriptor, status));

fn put(b: &mut [u8; DESCRIPTOR_SIZE], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

fn take<const N: usize>(b: &[u8; DESCRIPTOR_SIZE], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_descriptor_bytes_follow_the_datasheet_layout() {
        let mut b = [0u8; DESCRIPTOR_SIZE];
        b[..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        b[8..10].copy_from_slice(&1514u16.to_le_bytes());
        b[12] = rx_status::DD | rx_status::EOP;
        b[13] = 0x80;
        let d = RxDescriptor::from_bytes(&b);
        assert_eq!(d.buffer, 0x1122_3344_5566_7788);
        assert_eq!(d.length, 1514);
        assert_eq!(d.status, 3);
        assert_eq!(d.errors, 0x80);
        assert_eq!(d.to_bytes(), b);
    }

    #[test]
    fn the_checksum_verdict_needs_a_calculated_sum_and_no_error() {
        let done = rx_status::DD | rx_status::EOP;
        let d = |status, errors| RxChecksum::of(&RxDescriptor { status: done | status, errors, ..Default::default() });
        let (ip, tcp, udp) = (rx_status::IPCS, rx_status::TCPCS, rx_status::UDPCS);
        assert_eq!(d(ip | tcp, 0), RxChecksum::Good);
        assert_eq!(d(ip | udp, 0), RxChecksum::Good);
        assert_eq!(d(ip | tcp, rx_errors::TCPE), RxChecksum::Bad);
        assert_eq!(d(ip | tcp, rx_errors::IPE), RxChecksum::Bad);
        assert_eq!(d(0, 0), RxChecksum::Unknown, "offload off or not IPv4");
        assert_eq!(d(ip, 0), RxChecksum::Unknown, "not TCP or UDP");
        assert_eq!(d(tcp, 0), RxChecksum::Unknown, "the IP header was not checked");
        assert_eq!(d(ip | tcp | rx_status::IXSM, 0), RxChecksum::Unknown);
    }

    #[test]
    fn transmit_descriptor_bytes_follow_the_datasheet_layout() {
        let b = TxDescriptor::frame(0xdead_b000, 60).to_bytes();
        assert_eq!(b[..8], 0xdead_b000u64.to_le_bytes());
        assert_eq!(b[8..10], 60u16.to_le_bytes());
        assert_eq!(b[11], 0x0b, "EOP | IFCS | RS");
        assert_eq!(b[12], 0, "status clear until the NIC writes DD");
        assert_eq!(TxDescriptor::from_bytes(&b), TxDescriptor::frame(0xdead_b000, 60));
    }
}
