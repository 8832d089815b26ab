//! The Multiboot (version 1, spec 0.6.96) header of a kernel image: found in its first
//! 8192 bytes, checked, and turned into where the kernel's bytes go. The image is
//! untrusted: every field is bounds-checked, every problem is an error.
#![forbid(unsafe_code)]

use super::MultibootError;

/// `magic` of the header (spec 3.1.2).
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The header lies 32-bit aligned within the image's first 8192 bytes.
pub const SEARCH_BYTES: usize = 8192;

/// Flag 0: boot modules must be page-aligned (always done).
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Flag 1: the kernel needs mem_* and the memory map (always given).
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Flag 2: the kernel needs a video mode table (not offered).
pub const FLAG_VIDEO: u32 = 1 << 2;
/// Flag 16: the address fields below the checksum are valid ("a.out kludge").
pub const FLAG_ADDRESSES: u32 = 1 << 16;

/// The address fields of a header with flag 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

/// A header that passed its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Offset of the header in the image.
    pub offset: usize,
    pub flags: u32,
    /// Present when flag 16 is set.
    pub addresses: Option<Addresses>,
}

/// Where the kernel's bytes go: `image[file_offset..file_offset + file_len]` at
/// `load_addr`, then zeroes up to `bss_end`; execution starts at `entry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLoad {
    pub load_addr: u64,
    pub file_offset: usize,
    pub file_len: usize,
    /// End (exclusive) of the kernel in memory, bss included.
    pub bss_end: u64,
    pub entry: u64,
}

fn le32(image: &[u8], offset: usize) -> Option<u32> {
    let bytes: [u8; 4] = image.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Finds and checks the header: the whole of it lies in the first 8192 bytes.
pub fn find(image: &[u8]) -> Result<Header, MultibootError> {
    let search = image.get(..SEARCH_BYTES).unwrap_or(image);
    let offset = (0..search.len())
        .step_by(4)
        .find(|&o| le32(search, o) == Some(HEADER_MAGIC))
        .ok_or(MultibootError::NoHeader)?;
    // magic, flags and checksum must all lie inside the searched bytes (a saturated
    // offset is past them, so it reads as cut off).
    let flags = le32(search, offset.saturating_add(4)).ok_or(MultibootError::TruncatedHeader)?;
    let checksum = le32(search, offset.saturating_add(8)).ok_or(MultibootError::TruncatedHeader)?;
    if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) != 0 {
        return Err(MultibootError::BadChecksum);
    }
    // Bits 0-15 are requirements: one this loader does not meet means no boot.
    let unsupported = flags & 0xffff & !(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO);
    if unsupported & FLAG_VIDEO != 0 {
        return Err(MultibootError::VideoModeRequired);
    }
    if unsupported != 0 {
        return Err(MultibootError::UnsupportedFlags(unsupported));
    }
    let addresses = if flags & FLAG_ADDRESSES != 0 {
        let field = |n: usize| {
            le32(search, offset.saturating_add(12).saturating_add(n.saturating_mul(4)))
                .ok_or(MultibootError::TruncatedHeader)
        };
        Some(Addresses {
            header_addr: field(0)?,
            load_addr: field(1)?,
            load_end_addr: field(2)?,
            bss_end_addr: field(3)?,
            entry_addr: field(4)?,
        })
    } else {
        None
    };
    Ok(Header { offset, flags, addresses })
}

/// Where an a.out-kludge kernel goes (spec 3.1.3), checked against the image and
/// against `window`, the guest memory the kernel may occupy.
pub fn plan_addresses(
    image: &[u8],
    offset: usize,
    a: &Addresses,
    window: core::ops::Range<u64>,
) -> Result<KernelLoad, MultibootError> {
    let bad = MultibootError::BadAddresses;
    // The header's own address fixes which file offset lands at load_addr.
    let before_header = a.header_addr.checked_sub(a.load_addr).ok_or(bad("load_addr is above header_addr"))?;
    let file_offset = offset.checked_sub(before_header as usize).ok_or(bad("load_addr lies before the image start"))?;
    let load_end = if a.load_end_addr == 0 {
        // 0: the text and data run to the end of the file.
        // file_offset <= offset < image.len(): no wrap.
        let rest = image.len().saturating_sub(file_offset);
        u64::from(a.load_addr).checked_add(rest as u64).ok_or(bad("the image runs past 4 GiB"))?
    } else {
        u64::from(a.load_end_addr)
    };
    let file_len = load_end.checked_sub(u64::from(a.load_addr)).ok_or(bad("load_end_addr is below load_addr"))?;
    let file_len = usize::try_from(file_len).map_err(|_| bad("load_end_addr is too far"))?;
    if file_offset.checked_add(file_len).is_none_or(|end| end > image.len()) {
        return Err(bad("load_end_addr lies past the end of the image"));
    }
    let bss_end = if a.bss_end_addr == 0 { load_end } else { u64::from(a.bss_end_addr) };
    if bss_end < load_end {
        return Err(bad("bss_end_addr is below load_end_addr"));
    }
    let load_addr = u64::from(a.load_addr);
    if load_addr < window.start || bss_end > window.end || load_addr == bss_end {
        return Err(MultibootError::OutsideMemory { start: load_addr, end: bss_end });
    }
    let entry = u64::from(a.entry_addr);
    if !(load_addr..load_end).contains(&entry) {
        return Err(MultibootError::EntryOutside(entry));
    }
    Ok(KernelLoad { load_addr, file_offset, file_len, bss_end, entry })
}
