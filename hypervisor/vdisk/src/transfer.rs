//! One pass between the device's buffer and the caller's: a chunk the device read is
//! deciphered straight into the caller's buffers (or copied, for a clear volume); a
//! chunk the device will write is enciphered straight from them. Only a buffer that
//! splits a sector makes a chunk go the long way: deciphered in place, then copied (or
//! copied, then enciphered in place).

use crate::buffers::Buffers;
use crate::table::SECTOR;
use bulkhead_diskcrypt::Xts;

const SECTOR_BYTES: usize = SECTOR as usize;

/// Sector number of byte `pos` of a transfer that starts at `sector`.
fn sector_at(sector: u64, pos: usize) -> u128 {
    u128::from(sector) + (pos / SECTOR_BYTES) as u128
}

/// Hands `chunk` (bytes `at..` of a read that starts at `sector`, a whole number of
/// sectors, as the device read it) to `bufs`, deciphered with `xts` if any. False when
/// the buffers cannot take it.
pub(crate) fn deliver(xts: Option<&Xts>, sector: u64, at: usize, chunk: &mut [u8], bufs: &mut dyn Buffers) -> bool {
    let mut done = 0usize;
    // Set once a piece split a sector: the rest of the chunk is then clear in place.
    let mut clear = xts.is_none();
    while done < chunk.len() {
        let Some(piece) = bufs.piece(at + done, chunk.len() - done) else { return false };
        let n = piece.len();
        let Some(src) = chunk.get_mut(done..done + n) else { return false };
        if n == 0 {
            return false;
        }
        if !clear && let Some(xts) = xts {
            // `done` is a sector boundary here: every earlier piece was whole sectors.
            if n.is_multiple_of(SECTOR_BYTES) {
                if xts.decrypt_sectors_to(sector_at(sector, at + done), SECTOR_BYTES, src, piece).is_err() {
                    return false;
                }
                done += n;
                continue;
            }
            let Some(rest) = chunk.get_mut(done..) else { return false };
            if xts.decrypt_sectors(sector_at(sector, at + done), SECTOR_BYTES, rest).is_err() {
                return false;
            }
            clear = true;
            // Borrow again: the piece is still the same memory.
            let Some(piece) = bufs.piece(at + done, n) else { return false };
            let Some(src) = chunk.get(done..done + n) else { return false };
            if piece.len() != n {
                return false;
            }
            piece.copy_from_slice(src);
        } else {
            piece.copy_from_slice(src);
        }
        done += n;
    }
    true
}

/// Fills `chunk` (bytes `at..` of a write that starts at `sector`) from `bufs`,
/// enciphered with `xts` if any. False when the buffers cannot give it.
pub(crate) fn collect(xts: Option<&Xts>, sector: u64, at: usize, chunk: &mut [u8], bufs: &mut dyn Buffers) -> bool {
    let mut done = 0usize;
    // Where the chunk's bytes start being clear (copied, to be enciphered in place).
    let mut clear_from = None;
    while done < chunk.len() {
        let Some(piece) = bufs.piece(at + done, chunk.len() - done) else { return false };
        let n = piece.len();
        let Some(dst) = chunk.get_mut(done..done + n) else { return false };
        if n == 0 {
            return false;
        }
        match xts {
            Some(xts) if clear_from.is_none() && n.is_multiple_of(SECTOR_BYTES) => {
                if xts.encrypt_sectors_to(sector_at(sector, at + done), SECTOR_BYTES, piece, dst).is_err() {
                    return false;
                }
            }
            Some(_) => {
                clear_from.get_or_insert(done);
                dst.copy_from_slice(piece);
            }
            None => dst.copy_from_slice(piece),
        }
        done += n;
    }
    if let (Some(xts), Some(from)) = (xts, clear_from) {
        let Some(rest) = chunk.get_mut(from..) else { return false };
        return xts.encrypt_sectors(sector_at(sector, at + from), SECTOR_BYTES, rest).is_ok();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffers::Slices;

    fn xts() -> Xts {
        Xts::new(&core::array::from_fn(|i| i as u8 ^ 0x5c)).unwrap()
    }

    /// Every way of cutting 4 sectors into buffers: whole sectors, halves, odd sizes.
    fn cuts() -> Vec<Vec<usize>> {
        vec![vec![2048], vec![512, 1536], vec![1024, 1024], vec![100, 1948], vec![512, 700, 836], vec![1, 2047]]
    }

    fn split<'a>(data: &'a mut [u8], cut: &[usize]) -> Vec<&'a mut [u8]> {
        let mut out = Vec::new();
        let mut rest = data;
        for &n in cut {
            let (a, b) = rest.split_at_mut(n);
            out.push(a);
            rest = b;
        }
        out
    }

    #[test]
    fn deliver_and_collect_match_the_whole_buffer_calls_however_the_buffers_are_cut() {
        let plain: Vec<u8> = (0..2048u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let x = xts();
        let mut cipher = plain.clone();
        x.encrypt_sectors(40, 512, &mut cipher).unwrap();
        for cut in cuts() {
            for xts in [None, Some(&x)] {
                let expected = if xts.is_some() { &cipher } else { &plain };
                // A write: the chunk gets the enciphered data, the caller's stays clear.
                let mut src = plain.clone();
                let mut chunk = vec![0u8; 2048];
                let mut list = split(&mut src, &cut);
                assert!(collect(xts, 40, 0, &mut chunk, &mut Slices(&mut list)));
                assert_eq!(&chunk, expected, "collect, cut {cut:?}, encrypted {}", xts.is_some());
                assert_eq!(src, plain);
                // A read in two chunks of two sectors.
                let mut out = vec![0u8; 2048];
                let mut device = expected.clone();
                let mut list = split(&mut out, &cut);
                let (a, b) = device.split_at_mut(1024);
                assert!(deliver(xts, 40, 0, a, &mut Slices(&mut list)));
                assert!(deliver(xts, 40, 1024, b, &mut Slices(&mut list)));
                assert_eq!(out, plain, "deliver, cut {cut:?}, encrypted {}", xts.is_some());
            }
        }
    }

    #[test]
    fn short_buffers_are_refused() {
        let mut small = [0u8; 512];
        let mut list: [&mut [u8]; 1] = [&mut small];
        let mut chunk = vec![0u8; 1024];
        assert!(!collect(Some(&xts()), 0, 0, &mut chunk, &mut Slices(&mut list)));
        assert!(!deliver(None, 0, 0, &mut chunk, &mut Slices(&mut list)));
    }
}
