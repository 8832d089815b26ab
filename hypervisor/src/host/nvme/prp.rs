//! Physical Region Page entries for one transfer from a page-aligned buffer (NVMe Base
//! 2.0 §4.1.1, with 4 KiB memory pages): PRP1 is the first page; PRP2 the second page
//! when the transfer spans two, or else the address of a PRP list holding every page
//! after the first.
#![forbid(unsafe_code)]

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
}
