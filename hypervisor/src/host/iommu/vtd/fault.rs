//! VT-d primary fault recording (VT-d spec §7.2.1, §11.4.14 Fault Recording
//! Registers) and the fault reason codes of Appendix A.
#![forbid(unsafe_code)]

use crate::host::iommu::{FaultKind, IommuFault};
use crate::hw::Bdf;

/// A decoded 128-bit fault recording register. `lo` is bits 63:0, `hi` bits 127:64.
/// F is bit 127, T1 (0 = write, 1 = read) bit 126, FR bits 103:96, SID bits 79:64,
/// FI bits 63:12 (for interrupt faults, FI bits 63:48 hold the interrupt index).
/// `unit` is the reporting unit's index, `segment` its PCI segment.
pub fn decode_frcd(unit: usize, segment: u16, lo: u64, hi: u64) -> Option<IommuFault> {
    if hi & (1 << 63) == 0 {
        return None;
    }
    let reason = ((hi >> 32) & 0xff) as u8;
    let sid = hi as u16;
    let read = hi & (1 << 62) != 0;
    let interrupt = is_interrupt_fault(reason);
    let kind = if interrupt {
        FaultKind::Interrupt
    } else if read {
        FaultKind::DmaRead
    } else {
        FaultKind::DmaWrite
    };
    let address = if interrupt { lo >> 48 } else { lo & !0xfff };
    Some(IommuFault {
        unit,
        bdf: Bdf::new(segment, (sid >> 8) as u8, ((sid >> 3) & 0x1f) as u8, (sid & 7) as u8),
        address,
        code: u16::from(reason),
        reason: reason_text(reason),
        kind,
    })
}

/// Interrupt-remapping fault reasons are 20h-27h (Appendix A).
pub fn is_interrupt_fault(reason: u8) -> bool {
    (0x20..=0x27).contains(&reason)
}

/// Fault reason descriptions (VT-d spec Appendix A, "Non-Recoverable Fault Reason
/// Encodings", legacy mode).
pub fn reason_text(reason: u8) -> &'static str {
    match reason {
        0x01 => "root entry not present",
        0x02 => "context entry not present",
        0x03 => "invalid context entry",
        0x04 => "address beyond the guest address width",
        0x05 => "write not permitted",
        0x06 => "read not permitted",
        0x07 => "second-level table access error",
        0x08 => "root table access error",
        0x09 => "context table access error",
        0x0a => "reserved field in root entry",
        0x0b => "reserved field in context entry",
        0x0c => "reserved field in second-level entry",
        0x0d => "translated or translation request blocked by context",
        0x20 => "reserved field in interrupt request",
        0x21 => "interrupt index beyond the remapping table",
        0x22 => "interrupt remapping entry not present",
        0x23 => "interrupt remapping table access error",
        0x24 => "reserved field in interrupt remapping entry",
        0x25 => "compatibility-format interrupt blocked",
        0x26 => "interrupt source-id verification failed",
        0x27 => "posted-interrupt descriptor access error",
        _ => "unknown fault reason",
    }
}
