//! Physical Region Page entries for one transfer (NVMe Base 2.0 §4.1.1, with 4 KiB
//! memory pages): PRP1 is the first page (from an offset in it); PRP2 the second page
//! when the transfer spans two, or else the address of a PRP list holding every page
//! after the first. The transfer is a page-aligned bounce buffer, or a caller's
//! segments when they fit the rules (only the first may start inside a page, only the
//! last end inside one).
#![forbid(unsafe_code)]

use bulkhead_vdisk::DmaSegment;

/// The memory page size the driver configures (CC.MPS = 0).
pub const PAGE: u64 = 4096;
/// Entries in one PRP list page; the driver never chains lists.
pub const LIST_ENTRIES: usize = (PAGE / 8) as usize;

/// The data pointer of one command, and the list page's contents if it needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prps {
    pub prp1: u64,
    pub prp2: u64,
    /// Entries to write to the list page (empty when PRP2 is a data page or unused).
    pub list: heapless::Vec<u64, LIST_ENTRIES>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrpError {
    /// The buffer or list page is not page aligned, or the length is 0.
    Misaligned,
    /// More pages than one list page holds (plus PRP1).
    TooLong,
}

/// The PRPs for `len` bytes at `buffer` (device address, page aligned), with the list,
/// if any, at `list_page`.
pub fn build(buffer: u64, len: u64, list_page: u64) -> Result<Prps, PrpError> {
    if len == 0 || !buffer.is_multiple_of(PAGE) || !list_page.is_multiple_of(PAGE) {
        return Err(PrpError::Misaligned);
    }
    let pages = len.div_ceil(PAGE);
    let page = |i: u64| i.checked_mul(PAGE).and_then(|o| buffer.checked_add(o)).ok_or(PrpError::TooLong);
    let mut prps = Prps { prp1: buffer, prp2: 0, list: heapless::Vec::new() };
    match pages {
        1 => {}
        2 => prps.prp2 = page(1)?,
        _ => {
            prps.prp2 = list_page;
            for i in 1..pages {
                prps.list.push(page(i)?).map_err(|_| PrpError::TooLong)?;
            }
        }
    }
    Ok(prps)
}

/// Whether a transfer over `segments` (in order) can be described by PRP entries
/// (§4.1.1): the first starts on a dword, every later one on a page, and every one but
/// the last ends on a page; none is empty.
pub fn segments_fit(segments: &[DmaSegment]) -> bool {
    let last = segments.len().saturating_sub(1);
    !segments.is_empty()
        && segments.iter().enumerate().all(|(i, s)| {
            let end = s.addr.checked_add(s.len as u64);
            let start_ok = if i == 0 { s.addr.is_multiple_of(4) } else { s.addr.is_multiple_of(PAGE) };
            s.len > 0 && start_ok && end.is_some_and(|e| i == last || e.is_multiple_of(PAGE))
        })
}

/// A position in a transfer over segments: commands take their bytes in order.
#[derive(Debug, Default, Clone, Copy)]
pub struct SegmentCursor {
    index: usize,
    offset: usize,
}

/// The PRPs for the next `len` bytes of a transfer over `segments` (which
/// [`segments_fit`]), from `cursor` on, with the list, if any, at `list_page`; the
/// cursor moves past them.
pub fn build_segments(
    segments: &[DmaSegment],
    cursor: &mut SegmentCursor,
    len: usize,
    list_page: u64,
) -> Result<Prps, PrpError> {
    if len == 0 || !list_page.is_multiple_of(PAGE) {
        return Err(PrpError::Misaligned);
    }
    let mut entries: heapless::Vec<u64, { LIST_ENTRIES + 1 }> = heapless::Vec::new();
    let mut need = len;
    while need > 0 {
        let seg = segments.get(cursor.index).ok_or(PrpError::TooLong)?;
        let left = seg.len.saturating_sub(cursor.offset);
        if left == 0 {
            cursor.index = cursor.index.saturating_add(1);
            cursor.offset = 0;
            continue;
        }
        let addr = seg.addr.checked_add(cursor.offset as u64).ok_or(PrpError::TooLong)?;
        // The rest of this memory page, of this segment and of the command.
        let in_page = PAGE.saturating_sub(addr % PAGE) as usize;
        let n = in_page.min(left).min(need);
        if !entries.is_empty() && !addr.is_multiple_of(PAGE) {
            return Err(PrpError::Misaligned);
        }
        entries.push(addr).map_err(|_| PrpError::TooLong)?;
        cursor.offset = cursor.offset.saturating_add(n);
        need = need.saturating_sub(n);
        // Only the command's last piece may end inside a page.
        if need > 0 && !addr.saturating_add(n as u64).is_multiple_of(PAGE) {
            return Err(PrpError::Misaligned);
        }
    }
    let mut prps = Prps { prp1: entries.first().copied().unwrap_or(0), prp2: 0, list: heapless::Vec::new() };
    match entries.len() {
        0 | 1 => {}
        2 => prps.prp2 = entries.get(1).copied().unwrap_or(0),
        _ => {
            prps.prp2 = list_page;
            for &e in entries.iter().skip(1) {
                prps.list.push(e).map_err(|_| PrpError::TooLong)?;
            }
        }
    }
    Ok(prps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_two_and_many_pages() {
        let one = build(0x10_0000, 512, 0x9000).unwrap();
        assert_eq!((one.prp1, one.prp2, one.list.len()), (0x10_0000, 0, 0));
        let two = build(0x10_0000, 8192, 0x9000).unwrap();
        assert_eq!((two.prp1, two.prp2, two.list.len()), (0x10_0000, 0x10_1000, 0));
        let many = build(0x10_0000, 5 * 4096 - 512, 0x9000).unwrap();
        assert_eq!((many.prp1, many.prp2), (0x10_0000, 0x9000));
        assert_eq!(&many.list[..], &[0x10_1000, 0x10_2000, 0x10_3000, 0x10_4000]);
    }

    #[test]
    fn limits() {
        assert_eq!(build(0x10_0800, 512, 0x9000), Err(PrpError::Misaligned));
        assert_eq!(build(0x10_0000, 512, 0x9010), Err(PrpError::Misaligned));
        assert_eq!(build(0x10_0000, 0, 0x9000), Err(PrpError::Misaligned));
        assert!(build(0, (LIST_ENTRIES as u64 + 1) * PAGE, 0x9000).is_ok());
        assert_eq!(build(0, (LIST_ENTRIES as u64 + 2) * PAGE, 0x9000), Err(PrpError::TooLong));
        assert_eq!(build(!0xfff, 3 * PAGE, 0x9000), Err(PrpError::TooLong));
    }

    fn seg(addr: u64, len: usize) -> DmaSegment {
        DmaSegment { addr, len }
    }

    #[test]
    fn segments_must_meet_only_at_page_boundaries() {
        assert!(segments_fit(&[seg(0x1_0200, 0xe00), seg(0x5_0000, 0x2000), seg(0x9_0000, 0x200)]));
        assert!(segments_fit(&[seg(0x1_0004, 512)]));
        assert!(!segments_fit(&[seg(0x1_0002, 512)]), "PRP1 must be dword aligned");
        assert!(!segments_fit(&[seg(0x1_0000, 0x800), seg(0x5_0000, 0x800)]), "first ends inside a page");
        assert!(!segments_fit(&[seg(0x1_0000, 0x1000), seg(0x5_0200, 0x800)]), "second starts inside a page");
        assert!(!segments_fit(&[seg(0x1_0000, 0x1000), seg(0x5_0000, 0)]));
        assert!(!segments_fit(&[]));
    }

    #[test]
    fn commands_over_segments_take_their_pages_in_order() {
        // 0xe00 in one page, 3 pages in a second buffer, 0x200 in a third.
        let segs = [seg(0x1_0200, 0xe00), seg(0x5_0000, 0x3000), seg(0x9_0000, 0x200)];
        let mut cursor = SegmentCursor::default();
        // First command: 0x1000 bytes: the first page's tail and 0x200 of the next.
        let a = build_segments(&segs, &mut cursor, 0x1000, 0x7000).unwrap();
        assert_eq!((a.prp1, a.prp2, a.list.len()), (0x1_0200, 0x5_0000, 0));
        // Second: the rest, starting inside a page (PRP1 has an offset), with a list.
        let b = build_segments(&segs, &mut cursor, 0x3000, 0x7000).unwrap();
        assert_eq!((b.prp1, b.prp2), (0x5_0200, 0x7000));
        assert_eq!(&b.list[..], &[0x5_1000, 0x5_2000, 0x9_0000]);
        assert_eq!(build_segments(&segs, &mut cursor, 0x200, 0x7000), Err(PrpError::TooLong), "past the end");
        // Segments that do not fit are refused even if the caller did not check.
        let bad = [seg(0x1_0000, 0x800), seg(0x5_0000, 0x800)];
        assert_eq!(build_segments(&bad, &mut SegmentCursor::default(), 0x1000, 0x7000), Err(PrpError::Misaligned));
    }
}
