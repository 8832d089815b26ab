//! The SCSI commands a USB stick is sent (SPC-4 and SBC-3 as the USB "SCSI transparent
//! command set" uses them): the CDBs, and the parsing of what the device answers,
//! every length and field checked before use.
#![forbid(unsafe_code)]

pub const TEST_UNIT_READY: u8 = 0x00;
pub const REQUEST_SENSE: u8 = 0x03;
pub const INQUIRY: u8 = 0x12;
pub const READ_CAPACITY_10: u8 = 0x25;
pub const READ_10: u8 = 0x28;
pub const WRITE_10: u8 = 0x2a;
pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
/// SERVICE ACTION IN(16), service action 10h: READ CAPACITY(16).
pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
const SA_READ_CAPACITY_16: u8 = 0x10;

/// Bytes asked for in INQUIRY (the standard data's first 36 bytes) and REQUEST SENSE.
pub const INQUIRY_BYTES: u8 = 36;
pub const SENSE_BYTES: u8 = 18;
pub const CAPACITY_10_BYTES: usize = 8;
pub const CAPACITY_16_BYTES: u8 = 32;

pub fn test_unit_ready() -> [u8; 6] {
    [TEST_UNIT_READY, 0, 0, 0, 0, 0]
}

pub fn inquiry() -> [u8; 6] {
    [INQUIRY, 0, 0, 0, INQUIRY_BYTES, 0]
}

pub fn request_sense() -> [u8; 6] {
    [REQUEST_SENSE, 0, 0, 0, SENSE_BYTES, 0]
}

pub fn read_capacity_10() -> [u8; 10] {
    [READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

pub fn read_capacity_16() -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = SERVICE_ACTION_IN_16;
    cdb[1] = SA_READ_CAPACITY_16;
    cdb[13] = CAPACITY_16_BYTES;
    cdb
}

/// READ(10) or WRITE(10) of `blocks` blocks at `lba` (SBC-3 §5.11, §5.36).
pub fn rw_10(opcode: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let n = blocks.to_be_bytes();
    [opcode, 0, l[0], l[1], l[2], l[3], 0, n[0], n[1], 0]
}

pub fn synchronize_cache_10() -> [u8; 10] {
    // LBA 0 and 0 blocks: the whole medium.
    [SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// What INQUIRY says about the device (SPC-4 §6.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inquiry {
    /// Peripheral device type: 0 is a direct-access block device.
    pub device_type: u8,
    pub removable: bool,
    /// T10 vendor (8 bytes) and product (16 bytes), printable ASCII, trimmed.
    pub vendor: heapless::String<8>,
    pub product: heapless::String<16>,
}

fn text<const N: usize>(bytes: &[u8]) -> heapless::String<N> {
    let end = bytes.iter().rposition(|&b| b != b' ').map_or(0, |i| i.saturating_add(1));
    let mut s: heapless::String<N> = heapless::String::new();
    for &b in bytes.iter().take(end.min(N)) {
        let c = if (0x20..0x7f).contains(&b) { b as char } else { '?' };
        let _ = s.push(c);
    }
    s
}

/// Parses standard INQUIRY data (at least the first 36 bytes).
pub fn parse_inquiry(data: &[u8]) -> Option<Inquiry> {
    if data.len() < usize::from(INQUIRY_BYTES) {
        return None;
    }
    let b0 = *data.first()?;
    Some(Inquiry {
        device_type: b0 & 0x1f,
        removable: data.get(1)? & 0x80 != 0,
        vendor: text(data.get(8..16)?),
        product: text(data.get(16..32)?),
    })
}

/// A medium's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub blocks: u64,
    pub block_size: u32,
}

/// Why a capacity answer is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityError {
    Short(usize),
    /// The block size is not 512 or 4096 bytes.
    BlockSize(u32),
    /// READ CAPACITY(10) says the medium is too large for it: ask READ CAPACITY(16).
    NeedSixteen,
    Empty,
}

impl core::fmt::Display for CapacityError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CapacityError::Short(n) => write!(f, "capacity answer of {n} bytes"),
            CapacityError::BlockSize(n) => write!(f, "{n}-byte blocks (512 or 4096 only)"),
            CapacityError::NeedSixteen => write!(f, "larger than READ CAPACITY(10) can say"),
            CapacityError::Empty => write!(f, "no blocks"),
        }
    }
}

fn capacity(last_lba: u64, block_size: u32) -> Result<Capacity, CapacityError> {
    if block_size != 512 && block_size != 4096 {
        return Err(CapacityError::BlockSize(block_size));
    }
    let blocks = last_lba.checked_add(1).ok_or(CapacityError::Empty)?;
    Ok(Capacity { blocks, block_size })
}

/// READ CAPACITY(10) data (SBC-3 §5.16.2): last LBA and block length, big-endian.
pub fn parse_capacity_10(data: &[u8]) -> Result<Capacity, CapacityError> {
    let bytes: [u8; 8] = data.get(..8).and_then(|b| b.try_into().ok()).ok_or(CapacityError::Short(data.len()))?;
    let last = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let size = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if last == u32::MAX {
        return Err(CapacityError::NeedSixteen);
    }
    capacity(u64::from(last), size)
}

/// READ CAPACITY(16) data (SBC-3 §5.17.2): 8-byte last LBA, 4-byte block length.
pub fn parse_capacity_16(data: &[u8]) -> Result<Capacity, CapacityError> {
    let bytes: [u8; 12] = data.get(..12).and_then(|b| b.try_into().ok()).ok_or(CapacityError::Short(data.len()))?;
    let mut last = [0u8; 8];
    last.copy_from_slice(&bytes[..8]);
    let size = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    capacity(u64::from_be_bytes(last), size)
}

/// Sense data: what went wrong with the last command (SPC-4 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

/// SPC-4 sense keys the driver acts on.
pub const KEY_NOT_READY: u8 = 0x2;
pub const KEY_UNIT_ATTENTION: u8 = 0x6;

impl Sense {
    /// Packed for `DeviceError::Medium { status }`: sense key in bits 11:8, ASC in 7:0.
    pub fn status(&self) -> u16 {
        (u16::from(self.key & 0xf) << 8) | u16::from(self.asc)
    }
}

/// Parses fixed-format (70h/71h) or descriptor-format (72h/73h) sense data.
pub fn parse_sense(data: &[u8]) -> Option<Sense> {
    let code = data.first()? & 0x7f;
    match code {
        0x70 | 0x71 => {
            // Fixed format: key in byte 2, ASC/ASCQ in 12/13 (present when the
            // additional length in byte 7 covers them).
            let additional = usize::from(*data.get(7)?);
            if additional < 6 {
                return None;
            }
            Some(Sense { key: data.get(2)? & 0xf, asc: *data.get(12)?, ascq: *data.get(13)? })
        }
        0x72 | 0x73 => Some(Sense { key: data.get(1)? & 0xf, asc: *data.get(2)?, ascq: *data.get(3)? }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdbs_put_fields_big_endian() {
        assert_eq!(rw_10(READ_10, 0x0102_0304, 0x0506), [0x28, 0, 1, 2, 3, 4, 0, 5, 6, 0]);
        assert_eq!(rw_10(WRITE_10, 7, 1)[0], 0x2a);
        let c16 = read_capacity_16();
        assert_eq!((c16[0], c16[1], c16[13]), (0x9e, 0x10, 32));
        assert_eq!(inquiry()[4], 36);
        assert_eq!(request_sense()[4], 18);
    }

    #[test]
    fn inquiry_data_is_parsed_and_cleaned() {
        let mut d = [0u8; 36];
        d[0] = 0x00;
        d[1] = 0x80;
        d[8..16].copy_from_slice(b"QEMU    ");
        d[16..32].copy_from_slice(b"QEMU HARDDISK\x01  ");
        let i = parse_inquiry(&d).unwrap();
        assert_eq!((i.device_type, i.removable), (0, true));
        assert_eq!(i.vendor.as_str(), "QEMU");
        assert_eq!(i.product.as_str(), "QEMU HARDDISK?");
        assert_eq!(parse_inquiry(&d[..35]), None);
        d[0] = 0x05;
        assert_eq!(parse_inquiry(&d).unwrap().device_type, 5);
    }

    #[test]
    fn capacity_answers_are_checked() {
        let ten = [0, 0, 0x0f, 0xff, 0, 0, 2, 0];
        assert_eq!(parse_capacity_10(&ten), Ok(Capacity { blocks: 0x1000, block_size: 512 }));
        assert_eq!(parse_capacity_10(&ten[..7]), Err(CapacityError::Short(7)));
        assert_eq!(parse_capacity_10(&[0xff, 0xff, 0xff, 0xff, 0, 0, 2, 0]), Err(CapacityError::NeedSixteen));
        assert_eq!(parse_capacity_10(&[0, 0, 0, 1, 0, 0, 2, 1]), Err(CapacityError::BlockSize(513)));
        assert_eq!(parse_capacity_10(&[0, 0, 0, 1, 0, 0, 0, 0]), Err(CapacityError::BlockSize(0)));
        let mut sixteen = [0u8; 32];
        sixteen[..8].copy_from_slice(&0x1_0000_0000u64.to_be_bytes());
        sixteen[8..12].copy_from_slice(&4096u32.to_be_bytes());
        assert_eq!(parse_capacity_16(&sixteen), Ok(Capacity { blocks: 0x1_0000_0001, block_size: 4096 }));
        sixteen[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_capacity_16(&sixteen), Err(CapacityError::Empty));
        assert_eq!(parse_capacity_16(&sixteen[..11]), Err(CapacityError::Short(11)));
    }

    #[test]
    fn sense_in_both_formats_and_garbage() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x06;
        fixed[7] = 10;
        fixed[12] = 0x28;
        assert_eq!(parse_sense(&fixed), Some(Sense { key: 6, asc: 0x28, ascq: 0 }));
        assert_eq!(parse_sense(&fixed).unwrap().status(), 0x0628);
        assert_eq!(parse_sense(&fixed[..12]), None);
        fixed[7] = 0;
        assert_eq!(parse_sense(&fixed), None);
        assert_eq!(parse_sense(&[0x72, 0x02, 0x3a, 0x01]), Some(Sense { key: 2, asc: 0x3a, ascq: 1 }));
        assert_eq!(parse_sense(&[0x72, 0x02]), None);
        assert_eq!(parse_sense(&[0x00; 18]), None);
        assert_eq!(parse_sense(&[]), None);
    }
}
