//! The parts of the Identify data the driver uses: Identify Controller (NVMe Base 2.0
//! §5.17.2.1) and the NVM command set's Identify Namespace (NVM Command Set
//! Specification 1.0 §4.1.5.1), and the active namespace list (Base
//! §5.17.2.2).
#![forbid(unsafe_code)]

/// Printable ASCII (space padded) of a fixed identify field, trimmed.
#[derive(Clone, PartialEq, Eq)]
pub struct Text<const N: usize>(heapless::String<N>);

impl<const N: usize> Text<N> {
    fn from_field(bytes: &[u8]) -> Self {
        let mut s: heapless::String<N> = heapless::String::new();
        for &b in bytes.iter().take(N) {
            // Anything a drive puts here that is not printable ASCII becomes '?'.
            let c = if (0x20..0x7f).contains(&b) { b as char } else { '?' };
            let _ = s.push(c);
        }
        let trimmed: heapless::String<N> = heapless::String::try_from(s.trim()).unwrap_or_default();
        Text(trimmed)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const N: usize> core::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<const N: usize> core::fmt::Display for Text<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at.saturating_add(4)) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at.saturating_add(4))) << 32
}

/// What the driver keeps of Identify Controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    pub serial: Text<20>,
    pub model: Text<40>,
    pub firmware: Text<8>,
    /// Maximum Data Transfer Size: 2^mdts minimum memory pages; 0 = no limit.
    pub mdts: u8,
    /// Number of Namespaces (the largest valid NSID).
    pub namespaces: u32,
    /// Volatile Write Cache present (VWC bit 0): writes are durable only after Flush.
    pub volatile_write_cache: bool,
    /// SQES / CQES: required (3:0) and maximum (7:4) entry sizes as powers of two.
    pub sqes: u8,
    pub cqes: u8,
}

impl ControllerInfo {
    pub fn parse(page: &[u8]) -> Self {
        ControllerInfo {
            serial: Text::from_field(page.get(4..24).unwrap_or_default()),
            model: Text::from_field(page.get(24..64).unwrap_or_default()),
            firmware: Text::from_field(page.get(64..72).unwrap_or_default()),
            mdts: byte(page, 77),
            sqes: byte(page, 512),
            cqes: byte(page, 513),
            namespaces: le32(page, 516),
            volatile_write_cache: byte(page, 525) & 1 == 1,
        }
    }

    /// Whether the 64-byte submission and 16-byte completion entries are allowed.
    pub fn takes_standard_entries(&self) -> bool {
        let fits = |v: u8, want: u8| (v & 0xf) <= want && want <= (v >> 4);
        fits(self.sqes, 6) && fits(self.cqes, 4)
    }

    /// The largest transfer one command may carry, in bytes (MDTS in units of the
    /// 4 KiB minimum page), or `None` for no limit.
    pub fn max_transfer(&self) -> Option<u64> {
        match self.mdts {
            0 => None,
            // 2^(12 + mdts), saturated: an MDTS of 52 or more is "no real limit".
            m => Some(1u64.checked_shl(u32::from(m).saturating_add(12)).unwrap_or(u64::MAX)),
        }
    }
}

/// What the driver keeps of Identify Namespace, or why the namespace is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace Size, in logical blocks.
    pub blocks: u64,
    /// The formatted LBA size in bytes (2^LBADS).
    pub block_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceRefusal {
    /// NSZE is 0: the NSID is not active.
    Inactive,
    /// The formatted LBA format index is beyond the number of formats.
    BadFormat(u8),
    /// Logical blocks of 2^lbads bytes; only 512 and 4096 are supported.
    BlockSize(u8),
    /// The format carries metadata (or protection information), which the driver
    /// does not transfer.
    Metadata(u16),
}

impl core::fmt::Display for NamespaceRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NamespaceRefusal::Inactive => write!(f, "the namespace is not active"),
            NamespaceRefusal::BadFormat(i) => write!(f, "LBA format {i} is not described"),
            NamespaceRefusal::BlockSize(l) => write!(f, "2^{l}-byte blocks are not supported (512 or 4096 only)"),
            NamespaceRefusal::Metadata(m) => write!(f, "LBA format with {m} bytes of metadata per block"),
        }
    }
}

impl NamespaceInfo {
    pub fn parse(page: &[u8]) -> Result<Self, NamespaceRefusal> {
        let blocks = le64(page, 0);
        if blocks == 0 {
            return Err(NamespaceRefusal::Inactive);
        }
        // NLBAF (byte 25) is 0-based; FLBAS bits 3:0 and 6:5 give the format index.
        let formats = u16::from(byte(page, 25)).saturating_add(1);
        let flbas = byte(page, 26);
        let index = (flbas & 0xf) | ((flbas >> 5) & 0x3) << 4;
        if u16::from(index) >= formats.min(64) {
            return Err(NamespaceRefusal::BadFormat(index));
        }
        // LBA Format n at 128 + 4n: MS 15:0, LBADS 23:16.
        let lbaf = le32(page, 128usize.saturating_add(usize::from(index).saturating_mul(4)));
        let metadata = lbaf as u16;
        let lbads = (lbaf >> 16) as u8;
        if metadata != 0 {
            return Err(NamespaceRefusal::Metadata(metadata));
        }
        if lbads != 9 && lbads != 12 {
            return Err(NamespaceRefusal::BlockSize(lbads));
        }
        Ok(NamespaceInfo { blocks, block_size: 1 << lbads })
    }
}

/// The first NSID in an active namespace list (ascending, zero-terminated), if any.
pub fn first_active(page: &[u8]) -> Option<u32> {
    page.chunks_exact(4).map(|c| le32(c, 0)).next().filter(|&n| n != 0 && n != u32::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An Identify Controller page as a drive returns it.
    pub(crate) fn controller_page(model: &str, serial: &str, mdts: u8, vwc: bool) -> [u8; 4096] {
        let mut p = [0u8; 4096];
        p[4..24].fill(b' ');
        p[4..4 + serial.len()].copy_from_slice(serial.as_bytes());
        p[24..64].fill(b' ');
        p[24..24 + model.len()].copy_from_slice(model.as_bytes());
        p[64..72].copy_from_slice(b"7.2.0   ");
        p[77] = mdts;
        p[512] = 0x66;
        p[513] = 0x44;
        p[516..520].copy_from_slice(&1u32.to_le_bytes());
        p[525] = u8::from(vwc);
        p
    }

    /// An Identify Namespace page with LBA format 1 of 2^lbads bytes in use.
    pub(crate) fn namespace_page(blocks: u64, lbads: u8, metadata: u16) -> [u8; 4096] {
        let mut p = [0u8; 4096];
        p[0..8].copy_from_slice(&blocks.to_le_bytes());
        p[8..16].copy_from_slice(&blocks.to_le_bytes());
        p[25] = 1; // two formats
        p[26] = 1; // format 1 in use
        p[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
        p[132..136].copy_from_slice(&(u32::from(lbads) << 16 | u32::from(metadata)).to_le_bytes());
        p
    }

    #[test]
    fn controller_fields() {
        let c = ControllerInfo::parse(&controller_page("QEMU NVMe Ctrl", "BULKHEAD0001", 7, true));
        assert_eq!(c.model.as_str(), "QEMU NVMe Ctrl");
        assert_eq!(c.serial.as_str(), "BULKHEAD0001");
        assert_eq!(c.firmware.as_str(), "7.2.0");
        assert!(c.volatile_write_cache && c.takes_standard_entries());
        assert_eq!(c.max_transfer(), Some(512 * 1024));
        assert_eq!(c.namespaces, 1);
        let mut odd = controller_page("bad\u{7}model", "s", 0, false);
        odd[513] = 0x55;
        let c = ControllerInfo::parse(&odd);
        assert_eq!(c.model.as_str(), "bad?model");
        assert_eq!(c.max_transfer(), None);
        assert!(!c.volatile_write_cache && !c.takes_standard_entries());
    }

    #[test]
    fn namespace_formats() {
        assert_eq!(
            NamespaceInfo::parse(&namespace_page(1 << 21, 9, 0)),
            Ok(NamespaceInfo { blocks: 1 << 21, block_size: 512 })
        );
        assert_eq!(NamespaceInfo::parse(&namespace_page(100, 12, 0)).unwrap().block_size, 4096);
        assert_eq!(NamespaceInfo::parse(&namespace_page(100, 12, 8)), Err(NamespaceRefusal::Metadata(8)));
        assert_eq!(NamespaceInfo::parse(&namespace_page(100, 10, 0)), Err(NamespaceRefusal::BlockSize(10)));
        assert_eq!(NamespaceInfo::parse(&namespace_page(0, 9, 0)), Err(NamespaceRefusal::Inactive));
        let mut p = namespace_page(100, 9, 0);
        p[26] = 5;
        assert_eq!(NamespaceInfo::parse(&p), Err(NamespaceRefusal::BadFormat(5)));
    }

    #[test]
    fn active_list() {
        let mut p = [0u8; 4096];
        assert_eq!(first_active(&p), None);
        p[0..4].copy_from_slice(&3u32.to_le_bytes());
        p[4..8].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(first_active(&p), Some(3));
    }
}
