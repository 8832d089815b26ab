//! USB Mass Storage Class Bulk-Only Transport 1.0 (usbmassbulk_10): the 31-byte
//! Command Block Wrapper the host sends (§5.1) and the 13-byte Command Status Wrapper
//! the device answers (§5.2), with the validity and meaningfulness checks of §6.3.
#![forbid(unsafe_code)]

/// §5.1 dCBWSignature, "USBC" little-endian.
pub const CBW_SIGNATURE: u32 = 0x4342_5355;
/// §5.2 dCSWSignature, "USBS" little-endian.
pub const CSW_SIGNATURE: u32 = 0x5342_5355;
pub const CBW_BYTES: usize = 31;
pub const CSW_BYTES: usize = 13;
/// §3.1 Bulk-Only Mass Storage Reset (class request, interface recipient).
pub const REQUEST_RESET: u8 = 0xff;
/// §3.2 Get Max LUN.
pub const REQUEST_GET_MAX_LUN: u8 = 0xfe;

/// Which way the data stage goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotDirection {
    /// Device to host.
    In,
    /// Host to device.
    Out,
}

/// One command: tag, expected data length and direction, and the SCSI CDB (1..=16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cbw<'a> {
    pub tag: u32,
    pub data_length: u32,
    pub direction: BotDirection,
    pub lun: u8,
    pub cdb: &'a [u8],
}

impl Cbw<'_> {
    /// The wrapper's bytes (§5.1), or `None` for a CDB outside 1..=16 bytes or a LUN
    /// above 15.
    pub fn encode(&self) -> Option<[u8; CBW_BYTES]> {
        let len = self.cdb.len();
        if len == 0 || len > 16 || self.lun > 15 {
            return None;
        }
        let mut out = [0u8; CBW_BYTES];
        let (head, rest) = out.split_at_mut(15);
        head.get_mut(0..4)?.copy_from_slice(&CBW_SIGNATURE.to_le_bytes());
        head.get_mut(4..8)?.copy_from_slice(&self.tag.to_le_bytes());
        head.get_mut(8..12)?.copy_from_slice(&self.data_length.to_le_bytes());
        *head.get_mut(12)? = match self.direction {
            BotDirection::In => 0x80,
            BotDirection::Out => 0x00,
        };
        *head.get_mut(13)? = self.lun;
        *head.get_mut(14)? = len as u8;
        rest.get_mut(..len)?.copy_from_slice(self.cdb);
        Some(out)
    }
}

/// §5.2 bCSWStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CswStatus {
    Passed,
    Failed,
    PhaseError,
}

/// A valid, meaningful status wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Csw {
    /// Bytes of the data stage the device did not process.
    pub residue: u32,
    pub status: CswStatus,
}

/// Why a status wrapper cannot be used; each one calls for a reset recovery (§5.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CswError {
    /// Not 13 bytes long (§6.3.1).
    Length(usize),
    Signature(u32),
    /// Another command's tag.
    Tag {
        expected: u32,
        got: u32,
    },
    /// bCSWStatus outside 0..=2.
    Status(u8),
    /// A residue larger than the command's data length (§6.3.2: not meaningful).
    Residue {
        residue: u32,
        data_length: u32,
    },
}

impl core::fmt::Display for CswError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CswError::Length(n) => write!(f, "status wrapper of {n} bytes, not 13"),
            CswError::Signature(s) => write!(f, "status wrapper signature {s:#010x}"),
            CswError::Tag { expected, got } => write!(f, "status wrapper tag {got:#x}, expected {expected:#x}"),
            CswError::Status(s) => write!(f, "status wrapper status {s:#04x}"),
            CswError::Residue { residue, data_length } => {
                write!(f, "residue {residue} larger than the {data_length} bytes asked for")
            }
        }
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Decodes the `received` bytes of a status wrapper for the command `tag` that asked
/// for `data_length` bytes.
pub fn decode_csw(received: &[u8], tag: u32, data_length: u32) -> Result<Csw, CswError> {
    if received.len() != CSW_BYTES {
        return Err(CswError::Length(received.len()));
    }
    let signature = le32(received, 0).unwrap_or(0);
    if signature != CSW_SIGNATURE {
        return Err(CswError::Signature(signature));
    }
    let got = le32(received, 4).unwrap_or(0);
    if got != tag {
        return Err(CswError::Tag { expected: tag, got });
    }
    let residue = le32(received, 8).unwrap_or(0);
    let status = match received.get(12).copied().unwrap_or(0xff) {
        0 => CswStatus::Passed,
        1 => CswStatus::Failed,
        2 => CswStatus::PhaseError,
        other => return Err(CswError::Status(other)),
    };
    if residue > data_length && status != CswStatus::PhaseError {
        return Err(CswError::Residue { residue, data_length });
    }
    Ok(Csw { residue, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csw(tag: u32, residue: u32, status: u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&CSW_SIGNATURE.to_le_bytes());
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&residue.to_le_bytes());
        b.push(status);
        b
    }

    #[test]
    fn a_cbw_has_the_layout_of_section_5_1() {
        let cdb = [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0];
        let b = Cbw { tag: 0x1234_5678, data_length: 512, direction: BotDirection::In, lun: 0, cdb: &cdb }
            .encode()
            .unwrap();
        assert_eq!(&b[0..4], b"USBC");
        assert_eq!(&b[4..8], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(&b[8..12], &[0, 2, 0, 0]);
        assert_eq!(b[12], 0x80);
        assert_eq!(b[13], 0);
        assert_eq!(b[14], 10);
        assert_eq!(&b[15..25], &cdb);
        assert!(b[25..].iter().all(|&x| x == 0));
        let out = Cbw { tag: 1, data_length: 0, direction: BotDirection::Out, lun: 2, cdb: &[0; 16] }.encode().unwrap();
        assert_eq!((out[12], out[13], out[14]), (0, 2, 16));
    }

    #[test]
    fn bad_cdbs_and_luns_are_not_encoded() {
        for (cdb, lun) in [(&[][..], 0u8), (&[0u8; 17][..], 0), (&[0u8; 6][..], 16)] {
            assert_eq!(Cbw { tag: 1, data_length: 0, direction: BotDirection::In, lun, cdb }.encode(), None);
        }
    }

    #[test]
    fn a_good_csw_decodes() {
        assert_eq!(decode_csw(&csw(7, 0, 0), 7, 512), Ok(Csw { residue: 0, status: CswStatus::Passed }));
        assert_eq!(decode_csw(&csw(7, 12, 1), 7, 512), Ok(Csw { residue: 12, status: CswStatus::Failed }));
        assert_eq!(decode_csw(&csw(7, 0, 2), 7, 0).unwrap().status, CswStatus::PhaseError);
    }

    #[test]
    fn malformed_csws_are_refused() {
        assert_eq!(decode_csw(&csw(7, 0, 0)[..12], 7, 0), Err(CswError::Length(12)));
        let mut long = csw(7, 0, 0);
        long.push(0);
        assert_eq!(decode_csw(&long, 7, 0), Err(CswError::Length(14)));
        let mut bad = csw(7, 0, 0);
        bad[0] = b'X';
        assert!(matches!(decode_csw(&bad, 7, 0), Err(CswError::Signature(_))));
        assert_eq!(decode_csw(&csw(8, 0, 0), 7, 0), Err(CswError::Tag { expected: 7, got: 8 }));
        assert_eq!(decode_csw(&csw(7, 0, 3), 7, 0), Err(CswError::Status(3)));
        assert_eq!(decode_csw(&csw(7, 513, 0), 7, 512), Err(CswError::Residue { residue: 513, data_length: 512 }));
        assert_eq!(decode_csw(&[], 7, 0), Err(CswError::Length(0)));
    }
}
