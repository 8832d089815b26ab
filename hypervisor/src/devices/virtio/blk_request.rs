//! The virtio-blk request parser (VIRTIO 1.2 §5.2.6): from a descriptor chain's
//! buffers and its 16-byte header to a request the device may carry out, or the
//! reason it may not. Pure: it reads no memory and touches no disk, so every check
//! happens before a byte moves.
//!
//! The layout is the one Linux (and every driver this device serves) builds: one
//! device-readable 16-byte header, then the data buffers (all device-readable for a
//! write, all device-writable for a read or GET_ID), then a device-writable 1-byte
//! status. Anything else is refused with VIRTIO_BLK_S_IOERR, written to the chain's
//! last byte when that byte is device-writable (the spec's place for the status).
#![forbid(unsafe_code)]

use super::blk_backend::{ID_BYTES, SECTOR_SIZE};
use super::virtqueue::DescSegment;

/// Request types (§5.2.6).
pub mod req_type {
    pub const IN: u32 = 0;
    pub const OUT: u32 = 1;
    pub const FLUSH: u32 = 4;
    pub const GET_ID: u32 = 8;
}

/// Status values (§5.2.6).
pub mod blk_status {
    pub const OK: u8 = 0;
    pub const IOERR: u8 = 1;
    pub const UNSUPP: u8 = 2;
}

/// `struct virtio_blk_req`'s device-readable head (§5.2.6): le32 type, le32 reserved,
/// le64 sector.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReqHeader {
    pub req_type: u32,
    pub reserved: u32,
    pub sector: u64,
}

pub const HEADER_LEN: usize = 16;
const _: () = assert!(core::mem::size_of::<ReqHeader>() == HEADER_LEN);
const _: () = assert!(core::mem::offset_of!(ReqHeader, req_type) == 0);
const _: () = assert!(core::mem::offset_of!(ReqHeader, reserved) == 4);
const _: () = assert!(core::mem::offset_of!(ReqHeader, sector) == 8);

impl ReqHeader {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        let [t0, t1, t2, t3, r0, r1, r2, r3, s0, s1, s2, s3, s4, s5, s6, s7] = *bytes;
        ReqHeader {
            req_type: u32::from_le_bytes([t0, t1, t2, t3]),
            reserved: u32::from_le_bytes([r0, r1, r2, r3]),
            sector: u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
        }
    }
}

/// Entries of the request queue the device offers.
pub const QUEUE_SIZE: u16 = 1024;
/// Data buffers one request may have (offered as seg_max): a 1 MiB request of
/// scattered 4 KiB pages is one request, not two or three (Linux splits a request at
/// seg_max buffers). With the header and the status a chain is at most 258
/// descriptors, so three such requests fit in the queue at once.
pub const SEG_MAX: u32 = 256;
/// The largest data buffer (offered as size_max).
pub const SIZE_MAX: u32 = 16 * 1024;
/// The most data one request may move. A driver that keeps to seg_max and size_max
/// stays within it (256 * 16 KiB), and Linux's default request size (1280 KiB) fits.
pub const MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;
/// The most a GET_ID buffer may be (the device writes 20 bytes of it).
pub const MAX_ID_BUFFER: u64 = 512;

const _: () = assert!(SEG_MAX as u64 * SIZE_MAX as u64 <= MAX_REQUEST_BYTES);
const _: () = assert!((SEG_MAX + 2) * 3 <= QUEUE_SIZE as u32);
const _: () = assert!(QUEUE_SIZE <= super::virtqueue::LARGEST_QUEUE_SIZE && QUEUE_SIZE.is_power_of_two());

/// Why a request was refused. All but `Unsupported` complete with IOERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No 16-byte device-readable header first, or no 1-byte device-writable status last.
    Layout,
    /// A data buffer with the wrong direction for the request (or mixed directions).
    Direction,
    /// More data buffers than seg_max.
    TooManySegments,
    /// A data buffer that is empty or larger than size_max.
    SegmentSize,
    /// No data where data is needed (or data where none is), or not whole sectors.
    Length,
    /// More data than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// Sectors past the disk's end (or a sector number that overflows).
    OutOfRange,
    /// A write to a read-only disk.
    ReadOnly,
    /// A buffer outside the guest's RAM.
    Memory,
    /// The backend failed.
    Backend,
    /// A request type the device does not implement: completes with UNSUPP.
    Unsupported,
}

impl Reject {
    pub fn status(self) -> u8 {
        if self == Reject::Unsupported { blk_status::UNSUPP } else { blk_status::IOERR }
    }
}

/// Where the parts of a well-formed chain are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFrame {
    pub header_addr: u64,
    pub status_addr: u64,
    /// Index range of the data buffers in the chain's segment list.
    pub data: (usize, usize),
    /// Direction of the data buffers (`None` when there are none).
    pub data_writable: Option<bool>,
    pub data_len: u64,
}

/// The byte where the status goes if the request is refused: the chain's last byte,
/// if the last buffer is device-writable and not empty.
pub fn status_byte(segments: &[DescSegment]) -> Option<u64> {
    let last = segments.last().filter(|s| s.writable && s.len > 0)?;
    last.addr.checked_add(u64::from(last.len).wrapping_sub(1))
}

/// Checks the chain's shape: header, data buffers, status.
pub fn frame(segments: &[DescSegment]) -> Result<RequestFrame, Reject> {
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else { return Err(Reject::Layout) };
    if segments.len() < 2 || first.writable || first.len as usize != HEADER_LEN || !last.writable || last.len != 1 {
        return Err(Reject::Layout);
    }
    let data_end = segments.len().wrapping_sub(1);
    let data = segments.get(1..data_end).unwrap_or(&[]);
    if data.len() > SEG_MAX as usize {
        return Err(Reject::TooManySegments);
    }
    let data_writable = data.first().map(|s| s.writable);
    let mut data_len = 0u64;
    for seg in data {
        if Some(seg.writable) != data_writable {
            return Err(Reject::Direction);
        }
        if seg.len == 0 || seg.len > SIZE_MAX {
            return Err(Reject::SegmentSize);
        }
        // At most SEG_MAX * SIZE_MAX: no overflow.
        data_len = data_len.saturating_add(u64::from(seg.len));
    }
    if data_len > MAX_REQUEST_BYTES {
        return Err(Reject::TooLarge);
    }
    Ok(RequestFrame { header_addr: first.addr, status_addr: last.addr, data: (1, data_end), data_writable, data_len })
}

/// What the device is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkOp {
    /// Read `frame.data_len` bytes from `sector` into the data buffers.
    Read {
        sector: u64,
    },
    /// Write the data buffers' bytes at `sector`.
    Write {
        sector: u64,
    },
    Flush,
    /// Write the serial number (up to 20 bytes) into the data buffers.
    GetId,
}

/// The disk a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskShape {
    pub capacity_sectors: u64,
    pub read_only: bool,
}

/// Decides what a well-framed request asks, against the disk's shape.
pub fn decide(header: &ReqHeader, frame: &RequestFrame, disk: DiskShape) -> Result<BlkOp, Reject> {
    let sector = header.sector;
    let sectors = || {
        if frame.data_len == 0 || !frame.data_len.is_multiple_of(SECTOR_SIZE) {
            return Err(Reject::Length);
        }
        let end = sector.checked_add(frame.data_len / SECTOR_SIZE).ok_or(Reject::OutOfRange)?;
        if end > disk.capacity_sectors { Err(Reject::OutOfRange) } else { Ok(()) }
    };
    match header.req_type {
        req_type::IN => {
            if frame.data_writable != Some(true) {
                return Err(if frame.data_len == 0 { Reject::Length } else { Reject::Direction });
            }
            sectors()?;
            Ok(BlkOp::Read { sector })
        }
        req_type::OUT => {
            if frame.data_writable != Some(false) {
                return Err(if frame.data_len == 0 { Reject::Length } else { Reject::Direction });
            }
            sectors()?;
            if disk.read_only {
                return Err(Reject::ReadOnly);
            }
            Ok(BlkOp::Write { sector })
        }
        // §5.2.6.1: the sector of a flush is unused; a flush carries no data.
        req_type::FLUSH if frame.data_writable.is_none() => Ok(BlkOp::Flush),
        req_type::FLUSH => Err(Reject::Length),
        req_type::GET_ID => match frame.data_writable {
            Some(true) if frame.data_len <= MAX_ID_BUFFER => Ok(BlkOp::GetId),
            Some(true) => Err(Reject::TooLarge),
            Some(false) => Err(Reject::Direction),
            None => Err(Reject::Length),
        },
        _ => Err(Reject::Unsupported),
    }
}

/// Bytes of the serial number GET_ID writes into a buffer of `data_len` bytes.
pub fn id_len(data_len: u64) -> usize {
    (data_len as usize).min(ID_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(addr: u64, len: u32, writable: bool) -> DescSegment {
        DescSegment { addr, len, writable }
    }

    const DISK: DiskShape = DiskShape { capacity_sectors: 100, read_only: false };

    fn header(req_type: u32, sector: u64) -> ReqHeader {
        ReqHeader { req_type, reserved: 0, sector }
    }

    #[test]
    fn header_parses_little_endian() {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0] = 1;
        bytes[8..].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(ReqHeader::parse(&bytes), header(req_type::OUT, 0x0102_0304_0506_0708));
    }

    #[test]
    fn a_linux_read_frames_and_decides() {
        let chain = [seg(0x1000, 16, false), seg(0x2000, 4096, true), seg(0x3000, 4096, true), seg(0x4000, 1, true)];
        let f = frame(&chain).unwrap();
        assert_eq!(
            f,
            RequestFrame {
                header_addr: 0x1000,
                status_addr: 0x4000,
                data: (1, 3),
                data_writable: Some(true),
                data_len: 8192
            }
        );
        assert_eq!(decide(&header(req_type::IN, 84), &f, DISK), Ok(BlkOp::Read { sector: 84 }));
        // One sector further runs past the end (84 + 16 = 100 fits, 85 + 16 does not).
        assert_eq!(decide(&header(req_type::IN, 85), &f, DISK), Err(Reject::OutOfRange));
        assert_eq!(decide(&header(req_type::IN, u64::MAX - 3), &f, DISK), Err(Reject::OutOfRange));
        assert_eq!(decide(&header(req_type::OUT, 0), &f, DISK), Err(Reject::Direction));
        assert_eq!(decide(&header(req_type::FLUSH, 0), &f, DISK), Err(Reject::Length));
        assert_eq!(decide(&header(9, 0), &f, DISK), Err(Reject::Unsupported));
        assert_eq!(Reject::Unsupported.status(), blk_status::UNSUPP);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let h = seg(0x1000, 16, false);
        let s = seg(0x4000, 1, true);
        assert_eq!(frame(&[]), Err(Reject::Layout));
        assert_eq!(frame(&[s]), Err(Reject::Layout));
        assert_eq!(frame(&[seg(0x1000, 15, false), s]), Err(Reject::Layout));
        assert_eq!(frame(&[seg(0x1000, 16, true), s]), Err(Reject::Layout));
        assert_eq!(frame(&[h, seg(0x4000, 2, true)]), Err(Reject::Layout), "oversize status");
        assert_eq!(frame(&[h, seg(0x4000, 1, false)]), Err(Reject::Layout), "read-only status");
        assert_eq!(frame(&[h, seg(0x2000, 512, true), seg(0x2200, 512, false), s]), Err(Reject::Direction));
        assert_eq!(frame(&[h, seg(0x2000, 0, true), s]), Err(Reject::SegmentSize));
        assert_eq!(frame(&[h, seg(0x2000, SIZE_MAX + 1, true), s]), Err(Reject::SegmentSize));
        let mut many = alloc::vec![h];
        many.extend((0..=SEG_MAX).map(|i| seg(0x10_0000 + u64::from(i) * 512, 512, true)));
        many.push(s);
        assert_eq!(frame(&many), Err(Reject::TooManySegments));
        many.remove(1);
        assert!(frame(&many).is_ok(), "exactly seg_max buffers");
    }

    #[test]
    fn lengths_directions_and_read_only() {
        let h = seg(0x1000, 16, false);
        let s = seg(0x4000, 1, true);
        let f = |data: &[DescSegment]| {
            let mut chain = alloc::vec![h];
            chain.extend_from_slice(data);
            chain.push(s);
            frame(&chain).unwrap()
        };
        let odd = f(&[seg(0x2000, 700, false)]);
        assert_eq!(decide(&header(req_type::OUT, 0), &odd, DISK), Err(Reject::Length));
        let none = f(&[]);
        assert_eq!(decide(&header(req_type::OUT, 0), &none, DISK), Err(Reject::Length));
        assert_eq!(decide(&header(req_type::IN, 0), &none, DISK), Err(Reject::Length));
        assert_eq!(decide(&header(req_type::FLUSH, 77), &none, DISK), Ok(BlkOp::Flush));
        assert_eq!(decide(&header(req_type::GET_ID, 0), &none, DISK), Err(Reject::Length));
        let write = f(&[seg(0x2000, 512, false), seg(0x3000, 1024, false)]);
        assert_eq!(decide(&header(req_type::OUT, 97), &write, DISK), Ok(BlkOp::Write { sector: 97 }));
        let ro = DiskShape { read_only: true, ..DISK };
        assert_eq!(decide(&header(req_type::OUT, 0), &write, ro), Err(Reject::ReadOnly));
        assert_eq!(decide(&header(req_type::FLUSH, 0), &none, ro), Ok(BlkOp::Flush));
        let id = f(&[seg(0x2000, 20, true)]);
        assert_eq!(decide(&header(req_type::GET_ID, 0), &id, DISK), Ok(BlkOp::GetId));
        assert_eq!(id_len(id.data_len), 20);
        assert_eq!(id_len(7), 7);
        let big_id = f(&[seg(0x2000, 1024, true)]);
        assert_eq!(decide(&header(req_type::GET_ID, 0), &big_id, DISK), Err(Reject::TooLarge));
    }

    #[test]
    fn the_status_byte_of_a_refused_chain_is_its_last_writable_byte() {
        assert_eq!(status_byte(&[seg(0x1000, 16, false), seg(0x4000, 8, true)]), Some(0x4007));
        assert_eq!(status_byte(&[seg(0x1000, 16, false), seg(0x4000, 8, false)]), None);
        assert_eq!(status_byte(&[seg(0x1000, 16, false), seg(0x4000, 0, true)]), None);
        assert_eq!(status_byte(&[seg(u64::MAX, 2, true)]), None);
        assert_eq!(status_byte(&[]), None);
    }
}
