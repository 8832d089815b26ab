//! Submission and completion queue entries (NVMe Base 2.0 §4.2 and §4.6) and the few
//! commands the driver sends: Identify, Set Features (Number of Queues), Create I/O
//! Completion/Submission Queue (Base §5.17, §5.27, §5.4, §5.5) and the NVM command
//! set's Read, Write and Flush (NVM Command Set Specification 1.0 §3.2.4, §3.2.6; Base
//! §7.1).
#![forbid(unsafe_code)]

use core::mem::{offset_of, size_of};

/// A submission queue entry, the common command format (§4.2).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sqe {
    /// CDW0: opcode (7:0), fused (9:8), PSDT (15:14) = 0 for PRPs, command id (31:16).
    pub cdw0: u32,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    /// Metadata pointer (unused: namespaces with metadata are refused).
    pub mptr: u64,
    /// Data pointer: PRP entry 1 and 2 (§4.1.1).
    pub prp1: u64,
    pub prp2: u64,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

/// A completion queue entry (§4.6).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cqe {
    /// DW0: command specific.
    pub dw0: u32,
    pub dw1: u32,
    /// SQ head pointer (15:0), SQ identifier (31:16).
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    /// Phase tag (bit 0) and status (15:1, §4.6.1).
    pub status: u16,
}

const _: () = {
    assert!(size_of::<Sqe>() == 64);
    assert!(offset_of!(Sqe, nsid) == 4);
    assert!(offset_of!(Sqe, mptr) == 16);
    assert!(offset_of!(Sqe, prp1) == 24);
    assert!(offset_of!(Sqe, prp2) == 32);
    assert!(offset_of!(Sqe, cdw10) == 40);
    assert!(offset_of!(Sqe, cdw15) == 60);
    assert!(size_of::<Cqe>() == 16);
    assert!(offset_of!(Cqe, sq_head) == 8);
    assert!(offset_of!(Cqe, cid) == 12);
    assert!(offset_of!(Cqe, status) == 14);
};

pub const SQE_BYTES: usize = size_of::<Sqe>();
pub const CQE_BYTES: usize = size_of::<Cqe>();

fn put32(out: &mut [u8; SQE_BYTES], at: usize, v: u32) {
    if let Some(s) = out.get_mut(at..at.saturating_add(4)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn put64(out: &mut [u8; SQE_BYTES], at: usize, v: u64) {
    if let Some(s) = out.get_mut(at..at.saturating_add(8)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn get32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at.saturating_add(4)) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn get64(b: &[u8], at: usize) -> u64 {
    u64::from(get32(b, at)) | u64::from(get32(b, at.saturating_add(4))) << 32
}

impl Sqe {
    pub fn opcode(&self) -> u8 {
        self.cdw0 as u8
    }

    pub fn cid(&self) -> u16 {
        (self.cdw0 >> 16) as u16
    }

    pub fn with_cid(mut self, cid: u16) -> Self {
        self.cdw0 = (self.cdw0 & 0xffff) | u32::from(cid) << 16;
        self
    }

    /// The entry as the controller reads it (little-endian, §1.5 conventions).
    pub fn to_bytes(&self) -> [u8; SQE_BYTES] {
        let mut b = [0u8; SQE_BYTES];
        put32(&mut b, 0, self.cdw0);
        put32(&mut b, 4, self.nsid);
        put32(&mut b, 8, self.cdw2);
        put32(&mut b, 12, self.cdw3);
        put64(&mut b, 16, self.mptr);
        put64(&mut b, 24, self.prp1);
        put64(&mut b, 32, self.prp2);
        for (i, v) in [self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15].into_iter().enumerate() {
            put32(&mut b, 40usize.saturating_add(i.saturating_mul(4)), v);
        }
        b
    }

    pub fn from_bytes(b: &[u8]) -> Self {
        Sqe {
            cdw0: get32(b, 0),
            nsid: get32(b, 4),
            cdw2: get32(b, 8),
            cdw3: get32(b, 12),
            mptr: get64(b, 16),
            prp1: get64(b, 24),
            prp2: get64(b, 32),
            cdw10: get32(b, 40),
            cdw11: get32(b, 44),
            cdw12: get32(b, 48),
            cdw13: get32(b, 52),
            cdw14: get32(b, 56),
            cdw15: get32(b, 60),
        }
    }
}

impl Cqe {
    pub fn from_bytes(b: &[u8]) -> Self {
        let dw2 = get32(b, 8);
        let dw3 = get32(b, 12);
        Cqe {
            dw0: get32(b, 0),
            dw1: get32(b, 4),
            sq_head: dw2 as u16,
            sq_id: (dw2 >> 16) as u16,
            cid: dw3 as u16,
            status: (dw3 >> 16) as u16,
        }
    }

    pub fn to_bytes(&self) -> [u8; CQE_BYTES] {
        let mut b = [0u8; CQE_BYTES];
        let words = [
            self.dw0,
            self.dw1,
            u32::from(self.sq_head) | u32::from(self.sq_id) << 16,
            u32::from(self.cid) | u32::from(self.status) << 16,
        ];
        for (chunk, w) in b.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    pub fn phase(&self) -> bool {
        self.status & 1 == 1
    }

    /// Where the status field (with the phase tag in bit 0) lies in an entry: a poll
    /// reads these two bytes, and the whole entry only once the tag says it is new.
    pub const STATUS_OFFSET: u64 = 14;

    /// Status code type (bits 10:8 of the status field) and code (7:0), as
    /// `DeviceError::Medium` carries them; 0 is success (§4.6.1).
    pub fn status_code(&self) -> u16 {
        (self.status >> 1) & 0x7ff
    }
}

/// Admin command opcodes (§5).
pub mod admin {
    pub const CREATE_IO_SQ: u8 = 0x01;
    pub const CREATE_IO_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const SET_FEATURES: u8 = 0x09;
}

/// NVM command set opcodes (NVM Command Set 1.0 §3).
pub mod nvm {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
}

/// Identify CNS values (§5.17.1).
pub mod cns {
    pub const NAMESPACE: u32 = 0x00;
    pub const CONTROLLER: u32 = 0x01;
    pub const ACTIVE_NAMESPACES: u32 = 0x02;
}

/// Set Features feature id: Number of Queues (§5.27.1.5).
const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

fn command(opcode: u8) -> Sqe {
    Sqe { cdw0: u32::from(opcode), ..Sqe::default() }
}

/// Identify `cns` for `nsid` into the 4 KiB page at `page`.
pub fn identify(cns: u32, nsid: u32, page: u64) -> Sqe {
    Sqe { nsid, prp1: page, cdw10: cns, ..command(admin::IDENTIFY) }
}

/// Asks for `n` I/O submission and completion queues.
pub fn set_number_of_queues(n: u16) -> Sqe {
    let zero_based = u32::from(n.saturating_sub(1));
    Sqe { cdw10: FEATURE_NUMBER_OF_QUEUES, cdw11: zero_based | zero_based << 16, ..command(admin::SET_FEATURES) }
}

/// A physically contiguous I/O completion queue `qid` of `entries`, interrupts off
/// (§5.4: PC = 1, IEN = 0).
pub fn create_io_cq(qid: u16, entries: u16, base: u64) -> Sqe {
    let size = u32::from(entries.saturating_sub(1)) << 16;
    Sqe { prp1: base, cdw10: size | u32::from(qid), cdw11: 1, ..command(admin::CREATE_IO_CQ) }
}

/// A physically contiguous I/O submission queue `qid` of `entries` completing on
/// queue `cqid` (§5.5: PC = 1, priority ignored without WRR).
pub fn create_io_sq(qid: u16, entries: u16, base: u64, cqid: u16) -> Sqe {
    let size = u32::from(entries.saturating_sub(1)) << 16;
    Sqe { prp1: base, cdw10: size | u32::from(qid), cdw11: u32::from(cqid) << 16 | 1, ..command(admin::CREATE_IO_SQ) }
}

/// Read (`write` false) or Write of `blocks` (1..=65536) logical blocks from `lba`
/// through the PRPs given (NVM Command Set 1.0 SLBA in CDW10-11,
/// 0-based NLB in CDW12 15:0).
pub fn read_write(write: bool, nsid: u32, lba: u64, blocks: u32, prp1: u64, prp2: u64) -> Sqe {
    let nlb = blocks.saturating_sub(1) & 0xffff;
    Sqe {
        nsid,
        prp1,
        prp2,
        cdw10: lba as u32,
        cdw11: (lba >> 32) as u32,
        cdw12: nlb,
        ..command(if write { nvm::WRITE } else { nvm::READ })
    }
}

/// Flush the namespace's volatile write cache (Base §7.1).
pub fn flush(nsid: u32) -> Sqe {
    Sqe { nsid, ..command(nvm::FLUSH) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_byte_layout() {
        let s = read_write(true, 1, 0x1_2345_6789, 8, 0x1000, 0x2000).with_cid(0xbeef);
        let b = s.to_bytes();
        assert_eq!(b[0], nvm::WRITE);
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0xbeef);
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 0x2345_6789);
        assert_eq!(u32::from_le_bytes(b[44..48].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(b[48..52].try_into().unwrap()), 7, "NLB is 0-based");
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 0x1000);
        assert_eq!(Sqe::from_bytes(&b), s);
        assert_eq!(s.cid(), 0xbeef);
        assert_eq!(s.opcode(), nvm::WRITE);

        let c = Cqe { dw0: 5, dw1: 0, sq_head: 3, sq_id: 1, cid: 0x42, status: (0x281 << 1) | 1 };
        let b = c.to_bytes();
        assert_eq!(b[14] & 1, 1, "phase tag is bit 16 of DW3");
        assert_eq!(Cqe::from_bytes(&b), c);
        assert!(c.phase());
        assert_eq!(c.status_code(), 0x281, "SCT 2 (media error), SC 0x81");
    }

    #[test]
    fn queue_creation_fields() {
        let cq = create_io_cq(1, 16, 0x5000);
        assert_eq!((cq.opcode(), cq.cdw10, cq.cdw11, cq.prp1), (admin::CREATE_IO_CQ, 0x000f_0001, 1, 0x5000));
        let sq = create_io_sq(1, 16, 0x6000, 1);
        assert_eq!((sq.opcode(), sq.cdw10, sq.cdw11), (admin::CREATE_IO_SQ, 0x000f_0001, 0x0001_0001));
        assert_eq!(set_number_of_queues(1).cdw11, 0);
        assert_eq!(identify(cns::CONTROLLER, 0, 0x7000).cdw10, 1);
    }
}
