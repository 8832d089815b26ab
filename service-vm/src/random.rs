//! A small deterministic generator for DNS transaction ids, relay ports and DHCP
//! transaction ids; the kernel seeds it from a hardware source.

/// xorshift64* (Vigna, 2016). Not cryptographic: it only makes ids and ports hard to
/// guess from off the link, with a seed the kernel draws from RDRAND or similar.
#[derive(Clone, Debug)]
pub(crate) struct Random(u64);

impl Random {
    pub(crate) fn new(seed: u64) -> Self {
        // xorshift has a fixed point at zero.
        Random(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn next_u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}
