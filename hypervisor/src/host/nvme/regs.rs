//! NVMe controller registers (NVM Express Base Specification 2.0, §3.1.3 "Controller
//! Properties" for the offsets): what the driver reads and writes, decoded
//! from plain integers so it is tested on the host.
#![forbid(unsafe_code)]

use core::mem::{offset_of, size_of};

/// The registers from offset 0 up to the admin completion queue base (§3.1.3).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NvmeRegisters {
    /// §3.1.3.1 Controller Capabilities.
    pub cap: u64,
    /// §3.1.3.2 Version.
    pub vs: u32,
    /// §3.1.3.3/4 Interrupt Mask Set / Clear.
    pub intms: u32,
    pub intmc: u32,
    /// §3.1.3.5 Controller Configuration.
    pub cc: u32,
    _rsvd: u32,
    /// §3.1.3.6 Controller Status.
    pub csts: u32,
    /// §3.1.3.7 NVM Subsystem Reset.
    pub nssr: u32,
    /// §3.1.3.8 Admin Queue Attributes.
    pub aqa: u32,
    /// §3.1.3.9/10 Admin Submission / Completion Queue Base Address.
    pub asq: u64,
    pub acq: u64,
}

const _: () = {
    assert!(offset_of!(NvmeRegisters, cap) == 0x00);
    assert!(offset_of!(NvmeRegisters, vs) == 0x08);
    assert!(offset_of!(NvmeRegisters, intms) == 0x0c);
    assert!(offset_of!(NvmeRegisters, intmc) == 0x10);
    assert!(offset_of!(NvmeRegisters, cc) == 0x14);
    assert!(offset_of!(NvmeRegisters, csts) == 0x1c);
    assert!(offset_of!(NvmeRegisters, nssr) == 0x20);
    assert!(offset_of!(NvmeRegisters, aqa) == 0x24);
    assert!(offset_of!(NvmeRegisters, asq) == 0x28);
    assert!(offset_of!(NvmeRegisters, acq) == 0x30);
    assert!(size_of::<NvmeRegisters>() == 0x38);
};

pub const CAP: u64 = offset_of!(NvmeRegisters, cap) as u64;
pub const VS: u64 = offset_of!(NvmeRegisters, vs) as u64;
pub const INTMS: u64 = offset_of!(NvmeRegisters, intms) as u64;
pub const CC: u64 = offset_of!(NvmeRegisters, cc) as u64;
pub const CSTS: u64 = offset_of!(NvmeRegisters, csts) as u64;
pub const AQA: u64 = offset_of!(NvmeRegisters, aqa) as u64;
pub const ASQ: u64 = offset_of!(NvmeRegisters, asq) as u64;
pub const ACQ: u64 = offset_of!(NvmeRegisters, acq) as u64;
/// §3.1.3: the doorbells start at 1000h.
pub const DOORBELL_BASE: u64 = 0x1000;

/// CAP decoded (§3.1.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Maximum Queue Entries Supported, as a count (the register is 0-based).
    pub max_queue_entries: u32,
    /// Worst-case time to become ready or not ready, in milliseconds (TO × 500 ms).
    pub ready_timeout_ms: u64,
    /// Doorbell Stride: doorbells are `4 << dstrd` bytes apart.
    pub dstrd: u8,
    /// The NVM command set is supported (CSS bit 0).
    pub nvm_command_set: bool,
    /// Memory page sizes the controller takes: 2^(12 + min) ..= 2^(12 + max).
    pub mpsmin: u8,
    pub mpsmax: u8,
}

impl Capabilities {
    pub fn decode(cap: u64) -> Self {
        Capabilities {
            max_queue_entries: ((cap & 0xffff) as u32).saturating_add(1),
            ready_timeout_ms: ((cap >> 24) & 0xff).saturating_mul(500),
            dstrd: ((cap >> 32) & 0xf) as u8,
            nvm_command_set: (cap >> 37) & 1 == 1,
            mpsmin: ((cap >> 48) & 0xf) as u8,
            mpsmax: ((cap >> 52) & 0xf) as u8,
        }
    }

    /// Whether 4 KiB memory pages (CC.MPS = 0) are allowed.
    pub fn takes_4k_pages(&self) -> bool {
        self.mpsmin == 0
    }

    /// The register offset of queue `qid`'s submission tail (`completion` false) or
    /// completion head doorbell (§3.1.3: 1000h + (2y [+1]) × (4 << DSTRD)).
    pub fn doorbell(&self, qid: u16, completion: bool) -> u64 {
        let index = u64::from(qid).saturating_mul(2).saturating_add(u64::from(completion));
        DOORBELL_BASE.saturating_add(index.saturating_mul(4u64 << self.dstrd))
    }
}

/// CC fields (§3.1.3.5).
pub mod cc {
    pub const EN: u32 = 1 << 0;
    /// CSS = 000b: the NVM command set.
    pub const CSS_NVM: u32 = 0 << 4;
    /// MPS = 0: 4 KiB memory pages.
    pub const MPS_4K: u32 = 0 << 7;
    /// I/O submission queue entry size 2^6 = 64 bytes.
    pub const IOSQES_64: u32 = 6 << 16;
    /// I/O completion queue entry size 2^4 = 16 bytes.
    pub const IOCQES_16: u32 = 4 << 20;
    /// Shutdown notification, normal (SHN = 01b).
    pub const SHN_NORMAL: u32 = 1 << 14;
    /// The configuration the driver enables the controller with.
    pub const ENABLED: u32 = EN | CSS_NVM | MPS_4K | IOSQES_64 | IOCQES_16;
}

/// CSTS fields (§3.1.3.6).
pub mod csts {
    pub const RDY: u32 = 1 << 0;
    /// Controller Fatal Status.
    pub const CFS: u32 = 1 << 1;
    /// Shutdown status, 10b = processing complete.
    pub const SHST_MASK: u32 = 0b11 << 2;
    pub const SHST_COMPLETE: u32 = 0b10 << 2;
}

/// AQA (§3.1.3.8): both admin queues of `entries` entries (the fields are 0-based).
pub fn aqa(entries: u16) -> u32 {
    let n = u32::from(entries.saturating_sub(1)) & 0xfff;
    n | (n << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields_decode_as_the_spec_lays_them_out() {
        // QEMU 7.2's CAP: MQES 2047, CQR, TO 15, DSTRD 0, CSS NVM, MPSMIN 0, MPSMAX 4.
        let cap: u64 = 0x7ff | 1 << 16 | 0xf << 24 | 1 << 37 | 4 << 52;
        let c = Capabilities::decode(cap);
        assert_eq!(c.max_queue_entries, 2048);
        assert_eq!(c.ready_timeout_ms, 7500);
        assert_eq!(c.dstrd, 0);
        assert!(c.nvm_command_set && c.takes_4k_pages());
        assert_eq!(c.mpsmax, 4);
        assert_eq!(c.doorbell(0, false), 0x1000);
        assert_eq!(c.doorbell(0, true), 0x1004);
        assert_eq!(c.doorbell(1, false), 0x1008);
        let wide = Capabilities::decode(2u64 << 32 | 1 << 48);
        assert_eq!(wide.doorbell(1, true), 0x1000 + 3 * 16);
        assert!(!wide.takes_4k_pages() && !wide.nvm_command_set);
    }

    #[test]
    fn admin_queue_attributes_are_zero_based() {
        assert_eq!(aqa(16), 0x000f_000f);
        assert_eq!(cc::ENABLED, 0x0046_0001);
    }
}
