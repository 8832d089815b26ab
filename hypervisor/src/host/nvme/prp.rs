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

/// The data pointer of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prps {
    pub prp1: u64,
    pub prp2: u64,
    /// Entries the command uses in its list page (0 when PRP2 is a data page or unused).
    pub list_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrpError {
    /// The buffer or list page is not page aligned, or the length is 0.
    Misaligned,
    /// More pages than one list page holds (plus PRP1).
    TooLong,
}

/// The page entries of one command as they are found, the second and later ones
/// written straight into the list page's bytes (little endian): no copy of the list.
struct Entries<'a> {
    list: &'a mut [u8],
    count: usize,
    first: u64,
    second: u64,
}

impl<'a> Entries<'a> {
    fn new(list: &'a mut [u8]) -> Self {
        Entries { list, count: 0, first: 0, second: 0 }
    }

    fn push(&mut self, addr: u64) -> Result<(), PrpError> {
        match self.count {
            0 => self.first = addr,
            n => {
                if n == 1 {
                    self.second = addr;
                }
                let at = n.saturating_sub(1).saturating_mul(8);
                let slot = self.list.get_mut(at..at.saturating_add(8)).ok_or(PrpError::TooLong)?;
                slot.copy_from_slice(&addr.to_le_bytes());
            }
        }
        self.count = self.count.saturating_add(1);
        Ok(())
    }

    /// The pages of `[start, end)` (`start` may lie inside a page, `end` past it): the
    /// first one from `start`, the rest whole, written in one go.
    fn push_run(&mut self, start: u64, end: u64) -> Result<(), PrpError> {
        self.push(start)?;
        let mut page = (start & !(PAGE - 1)).checked_add(PAGE).ok_or(PrpError::TooLong)?;
        if page < end && self.count == 1 {
            self.push(page)?;
            page = page.checked_add(PAGE).ok_or(PrpError::TooLong)?;
        }
        if page >= end {
            return Ok(());
        }
        let n = end.saturating_sub(page).div_ceil(PAGE) as usize;
        let at = self.count.saturating_sub(1).saturating_mul(8);
        let slots = self.list.get_mut(at..at.saturating_add(n.saturating_mul(8))).ok_or(PrpError::TooLong)?;
        for slot in slots.chunks_exact_mut(8) {
            slot.copy_from_slice(&page.to_le_bytes());
            page = page.wrapping_add(PAGE);
        }
        self.count = self.count.saturating_add(n);
        Ok(())
    }

    /// PRP2 is the second page when there are exactly two, else the list.
    fn finish(self, list_page: u64) -> Prps {
        match self.count {
            0 | 1 => Prps { prp1: self.first, prp2: 0, list_len: 0 },
            2 => Prps { prp1: self.first, prp2: self.second, list_len: 0 },
            n => Prps { prp1: self.first, prp2: list_page, list_len: n.saturating_sub(1) },
        }
    }
}

/// The PRPs for `len` bytes at `buffer` (device address, page aligned), with the list,
/// if any, at device address `list_page`, whose bytes `list` are (at most
/// [`LIST_ENTRIES`] entries; what lies past the entries used is left alone).
pub fn build(buffer: u64, len: u64, list_page: u64, list: &mut [u8]) -> Result<Prps, PrpError> {
    if len == 0 || !buffer.is_multiple_of(PAGE) || !list_page.is_multiple_of(PAGE) {
        return Err(PrpError::Misaligned);
    }
    if len.div_ceil(PAGE) > (LIST_ENTRIES as u64).saturating_add(1) {
        return Err(PrpError::TooLong);
    }
    let mut entries = Entries::new(list);
    entries.push_run(buffer, buffer.checked_add(len).ok_or(PrpError::TooLong)?)?;
    Ok(entries.finish(list_page))
}

/// Whether a transfer over `segments` (in order) can be described by PRP entries
/// (§4.1.1: the first starts on a dword, every later one on a page, and every one but
/// the last ends on a page; none is empty) and no page of it meets `[avoid.0,
/// avoid.1)` (the driver's own DMA region), in one pass.
pub fn segments_fit_outside(segments: &[DmaSegment], avoid: (u64, u64)) -> bool {
    let last = segments.len().saturating_sub(1);
    !segments.is_empty()
        && segments.iter().enumerate().all(|(i, s)| {
            let Some(end) = s.addr.checked_add(s.len as u64) else { return false };
            let start_ok = if i == 0 { s.addr.is_multiple_of(4) } else { s.addr.is_multiple_of(PAGE) };
            let (first_page, end_page) = (s.addr & !(PAGE - 1), end.saturating_add(PAGE - 1) & !(PAGE - 1));
            let meets = first_page < avoid.1 && avoid.0 < end_page;
            s.len > 0 && start_ok && (i == last || end.is_multiple_of(PAGE)) && !meets
        })
}

/// A position in a transfer over segments: commands take their bytes in order.
#[derive(Debug, Default, Clone, Copy)]
pub struct SegmentCursor {
    index: usize,
    offset: usize,
}

/// The PRPs for the next `len` bytes of a transfer over `segments` (which
/// [`segments_fit_outside`]), from `cursor` on, with the list, if any, at device address
/// `list_page`, whose bytes `list` are; the cursor moves past them.
pub fn build_segments(
    segments: &[DmaSegment],
    cursor: &mut SegmentCursor,
    len: usize,
    list_page: u64,
    list: &mut [u8],
) -> Result<Prps, PrpError> {
    if len == 0 || !list_page.is_multiple_of(PAGE) {
        return Err(PrpError::Misaligned);
    }
    let mut entries = Entries::new(list);
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
        let take = left.min(need);
        let end = addr.checked_add(take as u64).ok_or(PrpError::TooLong)?;
        // Only the command's first piece may start inside a page, only its last end
        // inside one.
        if entries.count > 0 && !addr.is_multiple_of(PAGE) {
            return Err(PrpError::Misaligned);
        }
        if take < need && !end.is_multiple_of(PAGE) {
            return Err(PrpError::Misaligned);
        }
        entries.push_run(addr, end)?;
        cursor.offset = cursor.offset.saturating_add(take);
        need = need.saturating_sub(take);
    }
    Ok(entries.finish(list_page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn segments_fit(segments: &[DmaSegment]) -> bool {
        segments_fit_outside(segments, (0, 0))
    }

    /// The first `n` entries of a list page.
    fn entries(page: &[u8], n: usize) -> Vec<u64> {
        page.chunks_exact(8).take(n).map(|e| u64::from_le_bytes(e.try_into().unwrap())).collect()
    }

    #[test]
    fn one_two_and_many_pages() {
        let mut page = [0u8; PAGE as usize];
        let one = build(0x10_0000, 512, 0x9000, &mut page).unwrap();
        assert_eq!((one.prp1, one.prp2, one.list_len), (0x10_0000, 0, 0));
        let two = build(0x10_0000, 8192, 0x9000, &mut page).unwrap();
        assert_eq!((two.prp1, two.prp2, two.list_len), (0x10_0000, 0x10_1000, 0));
        let many = build(0x10_0000, 5 * 4096 - 512, 0x9000, &mut page).unwrap();
        assert_eq!((many.prp1, many.prp2, many.list_len), (0x10_0000, 0x9000, 4));
        assert_eq!(entries(&page, 4), [0x10_1000, 0x10_2000, 0x10_3000, 0x10_4000]);
        let full = build(0x10_0000, (LIST_ENTRIES as u64 + 1) * PAGE, 0x9000, &mut page).unwrap();
        assert_eq!(full.list_len, LIST_ENTRIES);
        assert_eq!(entries(&page, LIST_ENTRIES).last(), Some(&(0x10_0000 + LIST_ENTRIES as u64 * PAGE)));
        assert_eq!(build(0x10_0000, (LIST_ENTRIES as u64 + 2) * PAGE, 0x9000, &mut page), Err(PrpError::TooLong));
    }

    #[test]
    fn limits() {
        let mut page = [0u8; PAGE as usize];
        assert_eq!(build(0x10_0800, 512, 0x9000, &mut page), Err(PrpError::Misaligned));
        assert_eq!(build(0x10_0000, 512, 0x9010, &mut page), Err(PrpError::Misaligned));
        assert_eq!(build(0x10_0000, 0, 0x9000, &mut page), Err(PrpError::Misaligned));
        assert!(build(0, (LIST_ENTRIES as u64 + 1) * PAGE, 0x9000, &mut page).is_ok());
        assert_eq!(build(0, (LIST_ENTRIES as u64 + 2) * PAGE, 0x9000, &mut page), Err(PrpError::TooLong));
        assert_eq!(build(!0xfff, 3 * PAGE, 0x9000, &mut page), Err(PrpError::TooLong));
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
        // The driver's own region: no page of a transfer may meet it.
        let region = (0x5_0000, 0x5_2000);
        assert!(segments_fit_outside(&[seg(0x1_0000, 0x1000), seg(0x5_2000, 0x800)], region));
        assert!(!segments_fit_outside(&[seg(0x1_0000, 0x1000), seg(0x5_1000, 0x800)], region));
        assert!(!segments_fit_outside(&[seg(0x4_f200, 0xe00), seg(0x9_0000, 0x200)], (0x4_f000, 0x4_f001)));
    }

    #[test]
    fn commands_over_segments_take_their_pages_in_order() {
        // 0xe00 in one page, 3 pages in a second buffer, 0x200 in a third.
        let segs = [seg(0x1_0200, 0xe00), seg(0x5_0000, 0x3000), seg(0x9_0000, 0x200)];
        let mut cursor = SegmentCursor::default();
        // First command: 0x1000 bytes: the first page's tail and 0x200 of the next.
        let mut page = [0u8; PAGE as usize];
        let a = build_segments(&segs, &mut cursor, 0x1000, 0x7000, &mut page).unwrap();
        assert_eq!((a.prp1, a.prp2, a.list_len), (0x1_0200, 0x5_0000, 0));
        // Second: the rest, starting inside a page (PRP1 has an offset), with a list.
        let b = build_segments(&segs, &mut cursor, 0x3000, 0x7000, &mut page).unwrap();
        assert_eq!((b.prp1, b.prp2, b.list_len), (0x5_0200, 0x7000, 3));
        assert_eq!(entries(&page, 3), [0x5_1000, 0x5_2000, 0x9_0000]);
        assert_eq!(
            build_segments(&segs, &mut cursor, 0x200, 0x7000, &mut page),
            Err(PrpError::TooLong),
            "past the end"
        );
        // One segment of several pages from inside a page, then a second: each page
        // once, in order, the list from the second page on.
        let segs = [seg(0x2_0800, 0x3800), seg(0x8_0000, 0x1000)];
        let c = build_segments(&segs, &mut SegmentCursor::default(), 0x4800, 0x7000, &mut page).unwrap();
        assert_eq!((c.prp1, c.prp2, c.list_len), (0x2_0800, 0x7000, 4));
        assert_eq!(entries(&page, 4), [0x2_1000, 0x2_2000, 0x2_3000, 0x8_0000]);
        // Segments that do not fit are refused even if the caller did not check.
        let bad = [seg(0x1_0000, 0x800), seg(0x5_0000, 0x800)];
        assert_eq!(
            build_segments(&bad, &mut SegmentCursor::default(), 0x1000, 0x7000, &mut page),
            Err(PrpError::Misaligned)
        );
    }
}
