//! `struct virtio_net_hdr` (VIRTIO 1.2 §5.1.6) and what the device does with the
//! checksum request in it. A driver that negotiated VIRTIO_NET_F_CSUM may send a frame
//! with VIRTIO_NET_HDR_F_NEEDS_CSUM: the bytes from `csum_start` to the end still need
//! their ones' complement sum stored at `csum_start + csum_offset` (which already holds
//! the pseudo-header sum, §5.1.6.2). If the receiving driver negotiated
//! VIRTIO_NET_F_GUEST_CSUM the request travels on in its header; otherwise the device
//! completes the checksum (§5.1.6.2.1), as a NIC would.
//!
//! VIRTIO_NET_HDR_F_DATA_VALID tells a receiver that negotiated GUEST_CSUM that the
//! frame's transport checksum was verified, so it need not sum the payload again. A
//! driver may not set it on transmit (§5.1.6.2); the link honours it only from an end
//! it was told to trust (the service VM's, whose uplink NIC verified the checksum) and
//! drops it from any other sender.
#![forbid(unsafe_code)]

use super::net::NET_HDR_LEN;

/// Header flags (§5.1.6).
pub const HDR_F_NEEDS_CSUM: u8 = 1;
pub const HDR_F_DATA_VALID: u8 = 2;
/// gso_type: no segmentation (the only type, since no TSO/UFO is offered).
pub const HDR_GSO_NONE: u8 = 0;

/// The header's fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetHeader {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

impl NetHeader {
    pub fn parse(bytes: &[u8; NET_HDR_LEN]) -> Self {
        let [flags, gso_type, h0, h1, s0, s1, c0, c1, o0, o1, n0, n1] = *bytes;
        NetHeader {
            flags,
            gso_type,
            hdr_len: u16::from_le_bytes([h0, h1]),
            gso_size: u16::from_le_bytes([s0, s1]),
            csum_start: u16::from_le_bytes([c0, c1]),
            csum_offset: u16::from_le_bytes([o0, o1]),
            num_buffers: u16::from_le_bytes([n0, n1]),
        }
    }

    pub fn to_bytes(self) -> [u8; NET_HDR_LEN] {
        let [h0, h1] = self.hdr_len.to_le_bytes();
        let [s0, s1] = self.gso_size.to_le_bytes();
        let [c0, c1] = self.csum_start.to_le_bytes();
        let [o0, o1] = self.csum_offset.to_le_bytes();
        let [n0, n1] = self.num_buffers.to_le_bytes();
        [self.flags, self.gso_type, h0, h1, s0, s1, c0, c1, o0, o1, n0, n1]
    }
}

/// A transmitted header the device cannot honour: the frame is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Segmentation asked for (none is offered).
    Gso,
    /// NEEDS_CSUM without VIRTIO_NET_F_CSUM negotiated.
    ChecksumNotNegotiated,
    /// The checksum field does not lie inside the frame.
    ChecksumOutside,
}

/// What happens to a frame's checksum request on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumPlan {
    /// Nothing was asked.
    Nothing,
    /// The receiver takes the request in its header.
    PassOn { start: u16, offset: u16 },
    /// The device stores the sum of bytes `start..` at `start + offset`.
    Complete { start: u16, offset: u16 },
    /// A trusted sender vouches that the checksum was verified: the receiver is told so.
    Verified,
}

/// What the two ends of one direction negotiated or are trusted with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathFeatures {
    /// The sender negotiated VIRTIO_NET_F_CSUM (it may ask for checksums).
    pub sender_csum: bool,
    /// The sender's DATA_VALID flag is trusted (the service VM's end of a link).
    pub sender_vouches: bool,
    /// The receiver negotiated VIRTIO_NET_F_GUEST_CSUM (it takes checksum requests).
    pub receiver_guest_csum: bool,
}

impl ChecksumPlan {
    /// Decides for a frame of `frame_len` bytes sent with `hdr` on a path with `path`.
    pub fn decide(hdr: &NetHeader, frame_len: u64, path: PathFeatures) -> Result<ChecksumPlan, HeaderError> {
        if hdr.gso_type != HDR_GSO_NONE {
            return Err(HeaderError::Gso);
        }
        if hdr.flags & HDR_F_NEEDS_CSUM == 0 {
            let vouched = hdr.flags & HDR_F_DATA_VALID != 0 && path.sender_vouches;
            return Ok(if vouched && path.receiver_guest_csum {
                ChecksumPlan::Verified
            } else {
                ChecksumPlan::Nothing
            });
        }
        if !path.sender_csum {
            return Err(HeaderError::ChecksumNotNegotiated);
        }
        let field_end = u64::from(hdr.csum_start).saturating_add(u64::from(hdr.csum_offset)).saturating_add(2);
        if field_end > frame_len {
            return Err(HeaderError::ChecksumOutside);
        }
        let (start, offset) = (hdr.csum_start, hdr.csum_offset);
        Ok(if path.receiver_guest_csum {
            ChecksumPlan::PassOn { start, offset }
        } else {
            ChecksumPlan::Complete { start, offset }
        })
    }

    /// The header the receiver gets: one buffer, and the checksum request if passed on
    /// or the verdict if vouched for.
    pub fn rx_header(self) -> NetHeader {
        let mut hdr = NetHeader { num_buffers: 1, ..NetHeader::default() };
        match self {
            ChecksumPlan::PassOn { start, offset } => {
                (hdr.flags, hdr.csum_start, hdr.csum_offset) = (HDR_F_NEEDS_CSUM, start, offset);
            }
            ChecksumPlan::Verified => hdr.flags = HDR_F_DATA_VALID,
            ChecksumPlan::Nothing | ChecksumPlan::Complete { .. } => {}
        }
        hdr
    }
}

/// The Internet checksum (RFC 1071) over bytes fed in pieces of any length.
#[derive(Debug, Clone, Copy, Default)]
pub struct InternetSum {
    sum: u64,
    /// A piece ended in the middle of a 16-bit word: its high byte.
    pending: Option<u8>,
}

impl InternetSum {
    pub fn add(&mut self, mut bytes: &[u8]) {
        if let (Some(high), Some((&low, rest))) = (self.pending, bytes.split_first()) {
            self.sum = self.sum.wrapping_add(u64::from(u16::from_be_bytes([high, low])));
            self.pending = None;
            bytes = rest;
        }
        let mut words = bytes.chunks_exact(2);
        for w in &mut words {
            if let &[high, low] = w {
                // At most 64 KiB per frame: the u64 cannot overflow.
                self.sum = self.sum.wrapping_add(u64::from(u16::from_be_bytes([high, low])));
            }
        }
        if let [last] = words.remainder() {
            self.pending = Some(*last);
        }
    }

    /// The ones' complement of the folded sum, as stored in a header (big-endian). A
    /// result of 0 is stored as 0xFFFF (the same value in ones' complement, and what
    /// UDP requires).
    pub fn finish(self) -> u16 {
        let mut sum = self.sum;
        if let Some(high) = self.pending {
            sum = sum.wrapping_add(u64::from(high) << 8);
        }
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF).wrapping_add(sum >> 16);
        }
        match !(sum as u16) {
            0 => 0xFFFF,
            c => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let bytes = [1, 0, 0x22, 0, 0, 0, 34, 0, 16, 0, 1, 0];
        let hdr = NetHeader::parse(&bytes);
        assert_eq!((hdr.flags, hdr.hdr_len, hdr.csum_start, hdr.csum_offset, hdr.num_buffers), (1, 0x22, 34, 16, 1));
        assert_eq!(hdr.to_bytes(), bytes);
    }

    #[test]
    fn the_plan_follows_both_sides_features() {
        let csum = NetHeader { flags: HDR_F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..NetHeader::default() };
        let plan = |hdr: &NetHeader, len, sender_csum, receiver_guest_csum| {
            ChecksumPlan::decide(hdr, len, PathFeatures { sender_csum, sender_vouches: false, receiver_guest_csum })
        };
        assert_eq!(plan(&NetHeader::default(), 60, false, false), Ok(ChecksumPlan::Nothing));
        assert_eq!(plan(&csum, 60, true, true), Ok(ChecksumPlan::PassOn { start: 34, offset: 16 }));
        assert_eq!(plan(&csum, 60, true, false), Ok(ChecksumPlan::Complete { start: 34, offset: 16 }));
        assert_eq!(plan(&csum, 60, false, true), Err(HeaderError::ChecksumNotNegotiated));
        assert_eq!(plan(&csum, 51, true, true), Err(HeaderError::ChecksumOutside), "field ends at 52");
        assert_eq!(plan(&csum, 52, true, true), Ok(ChecksumPlan::PassOn { start: 34, offset: 16 }));
        let gso = NetHeader { gso_type: 1, ..NetHeader::default() };
        assert_eq!(plan(&gso, 60, true, true), Err(HeaderError::Gso));
        let big = NetHeader { csum_start: u16::MAX, csum_offset: u16::MAX, ..csum };
        assert_eq!(plan(&big, 65_550, true, true), Err(HeaderError::ChecksumOutside));
        // What the receiver reads.
        assert_eq!(
            ChecksumPlan::PassOn { start: 34, offset: 16 }.rx_header().to_bytes(),
            [1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 1, 0]
        );
        assert_eq!(
            ChecksumPlan::Complete { start: 34, offset: 16 }.rx_header().to_bytes(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
    }

    #[test]
    fn data_valid_passes_only_from_a_trusted_sender_to_a_receiver_that_takes_it() {
        let valid = NetHeader { flags: HDR_F_DATA_VALID, ..NetHeader::default() };
        let path = |sender_vouches, receiver_guest_csum| PathFeatures {
            sender_csum: false,
            sender_vouches,
            receiver_guest_csum,
        };
        assert_eq!(ChecksumPlan::decide(&valid, 60, path(true, true)), Ok(ChecksumPlan::Verified));
        assert_eq!(ChecksumPlan::decide(&valid, 60, path(false, true)), Ok(ChecksumPlan::Nothing), "a desktop's claim");
        assert_eq!(ChecksumPlan::decide(&valid, 60, path(true, false)), Ok(ChecksumPlan::Nothing));
        let plain = NetHeader::default();
        assert_eq!(ChecksumPlan::decide(&plain, 60, path(true, true)), Ok(ChecksumPlan::Nothing));
        assert_eq!(ChecksumPlan::Verified.rx_header().to_bytes(), [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn internet_sum_matches_rfc1071_in_any_pieces() {
        // RFC 1071 §3's example: 0001 f203 f4f5 f6f7 sums to ddf2, complement 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let mut whole = InternetSum::default();
        whole.add(&data);
        assert_eq!(whole.finish(), 0x220d);
        for split in 0..data.len() {
            let mut parts = InternetSum::default();
            parts.add(&data[..split]);
            parts.add(&data[split..]);
            assert_eq!(parts.finish(), 0x220d, "split at {split}");
        }
        // Odd length: the last byte is padded with zero.
        let mut odd = InternetSum::default();
        odd.add(&[0x12, 0x34, 0x56]);
        assert_eq!(odd.finish(), !(0x1234u16 + 0x5600));
        // A sum of 0xffff complements to 0, stored as 0xffff.
        let mut ones = InternetSum::default();
        ones.add(&[0xff, 0xff]);
        assert_eq!(ones.finish(), 0xffff);
    }
}
