//! The memory on the other side of a volume's transfer: a VM's request buffers, handed
//! over as pieces of contiguous memory, so that a volume moves (or enciphers) each byte
//! once between them and the device's own buffer.

/// The caller's buffers of one transfer, `total()` bytes, reached piece by piece.
pub trait Buffers {
    /// Bytes in all the buffers together.
    fn total(&self) -> usize;
    /// The contiguous memory holding byte `at` of the transfer and what follows it in
    /// the same buffer, at most `max` bytes; `None` when `at` is past the end or the
    /// memory cannot be reached.
    fn piece(&mut self, at: usize, max: usize) -> Option<&mut [u8]>;
    /// The buffers as a device would address them, in order, into `out` (cleared
    /// first): only when they are memory a device may be given for this transfer
    /// (`device_writes`: the device writes them, a read). False: they cannot be
    /// handed to a device, and the data goes through the CPU.
    fn dma_segments(&mut self, _device_writes: bool, _out: &mut alloc::vec::Vec<crate::DmaSegment>) -> bool {
        false
    }
}

/// Buffers that are a list of byte slices (tests, and callers whose data is in RAM they
/// own).
#[derive(Debug)]
pub struct Slices<'a, 'b>(pub &'a mut [&'b mut [u8]]);

impl Buffers for Slices<'_, '_> {
    fn total(&self) -> usize {
        self.0.iter().map(|s| s.len()).sum()
    }

    fn piece(&mut self, mut at: usize, max: usize) -> Option<&mut [u8]> {
        for slice in self.0.iter_mut() {
            if at < slice.len() {
                let end = slice.len().min(at.saturating_add(max));
                return slice.get_mut(at..end);
            }
            at -= slice.len();
        }
        None
    }
}

/// Copies `data` into the buffers from byte `at` of the transfer on; false when the
/// buffers end first or cannot be reached.
pub fn copy_into(bufs: &mut dyn Buffers, at: usize, mut data: &[u8]) -> bool {
    let mut pos = at;
    while !data.is_empty() {
        let Some(piece) = bufs.piece(pos, data.len()) else { return false };
        let n = piece.len();
        if n == 0 || n > data.len() {
            return false;
        }
        let (now, rest) = data.split_at(n);
        piece.copy_from_slice(now);
        data = rest;
        pos += n;
    }
    true
}

/// Fills `out` from the buffers from byte `at` of the transfer on; false when the
/// buffers end first or cannot be reached.
pub fn copy_from(bufs: &mut dyn Buffers, at: usize, mut out: &mut [u8]) -> bool {
    let mut pos = at;
    while !out.is_empty() {
        let Some(piece) = bufs.piece(pos, out.len()) else { return false };
        let n = piece.len();
        if n == 0 || n > out.len() {
            return false;
        }
        let (now, rest) = out.split_at_mut(n);
        now.copy_from_slice(piece);
        out = rest;
        pos += n;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_the_slices_and_stop_at_max() {
        let (mut a, mut b) = ([1u8; 3], [2u8; 5]);
        let mut list: [&mut [u8]; 2] = [&mut a, &mut b];
        let mut bufs = Slices(&mut list);
        assert_eq!(bufs.total(), 8);
        assert_eq!(bufs.piece(0, 10).map(|p| p.len()), Some(3));
        assert_eq!(bufs.piece(1, 1).map(|p| p.len()), Some(1));
        assert_eq!(bufs.piece(4, 10).map(|p| p.to_vec()), Some(vec![2; 4]));
        assert!(bufs.piece(8, 1).is_none());
        assert!(copy_into(&mut bufs, 2, &[9, 8, 7]));
        let mut out = [0u8; 8];
        assert!(copy_from(&mut bufs, 0, &mut out));
        assert_eq!(out, [1, 1, 9, 8, 7, 2, 2, 2]);
        assert!(!copy_into(&mut bufs, 6, &[0; 3]), "past the end");
        assert!(!copy_from(&mut bufs, 7, &mut out[..2]), "past the end");
    }
}
