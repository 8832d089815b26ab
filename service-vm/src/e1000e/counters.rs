//! What the driver counts: frames and bytes each way, and every frame it drops, by reason.

use core::fmt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicCounters {
    /// Frames handed to the caller of `receive`, and their bytes.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames the NIC reported sent (DD), and their bytes.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Received frames the NIC flagged with an error (CRC, symbol, sequence, carrier
    /// extension, RX data error).
    pub rx_errors: u64,
    /// Received frames that did not fit one descriptor (no EOP): dropped with all their
    /// descriptors. A sane 82574 never does this with 2 KiB buffers and RCTL.LPE off.
    pub rx_spanning: u64,
    /// Received frames longer than [`super::MAX_FRAME`] but inside the buffer (a VLAN-tagged
    /// frame; the router takes no tags).
    pub rx_oversized: u64,
    /// Receive descriptors whose length is zero or larger than the buffer: a misbehaving
    /// device.
    pub rx_bad_length: u64,
    /// Frames refused by `transmit` because every descriptor was in flight.
    pub tx_full: u64,
    /// Frames refused by `transmit` for their length (under an Ethernet header or over
    /// [`super::MAX_FRAME`]).
    pub tx_bad_length: u64,
    /// Head registers read back outside the ring.
    pub bad_head: u64,
    /// Received frames whose TCP/UDP checksum the NIC verified good, and found bad.
    pub rx_checksum_good: u64,
    pub rx_checksum_bad: u64,
}

impl fmt::Display for NicCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rx {} ({} B) tx {} ({} B) drop rx-error={} rx-spanning={} rx-oversized={} rx-bad-length={} \
             tx-full={} tx-bad-length={} bad-head={} checksum good={} bad={}",
            self.rx_frames,
            self.rx_bytes,
            self.tx_frames,
            self.tx_bytes,
            self.rx_errors,
            self.rx_spanning,
            self.rx_oversized,
            self.rx_bad_length,
            self.tx_full,
            self.tx_bad_length,
            self.bad_head,
            self.rx_checksum_good,
            self.rx_checksum_bad
        )
    }
}
