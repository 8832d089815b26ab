//! Registers of the 82574 in BAR0 (memory space, 128 KiB), and the bits the driver uses.
//!
//! Sections are those of the *Intel 82574 GbE Controller Family Datasheet* (317694,
//! revision 3.4), chapter 10.2 "Register Descriptions": general registers in §10.2.2,
//! interrupt registers in §10.2.4, receive in §10.2.5, transmit in §10.2.6. Only the
//! registers this driver touches are here. Every register is 32 bits wide and read and
//! written as a whole.

// §10.2.2: general registers.
/// Device Control (§10.2.2.1).
pub const CTRL: u32 = 0x0000;
/// Device Status (§10.2.2.2). Read only.
pub const STATUS: u32 = 0x0008;
/// EEPROM/Flash Control (§10.2.2): only `AUTO_RD` is read.
pub const EECD: u32 = 0x0010;

// §10.2.4: interrupt registers.
/// Interrupt Cause Read: cleared by reading it.
pub const ICR: u32 = 0x00c0;
/// Interrupt Mask Set/Read: a 1 bit enables that cause.
pub const IMS: u32 = 0x00d0;
/// Interrupt Mask Clear: a 1 bit masks that cause.
pub const IMC: u32 = 0x00d8;

/// Interrupt causes (ICR, IMS, IMC bits; §10.2.4.1).
pub mod cause {
    /// Link status change.
    pub const LSC: u32 = 1 << 2;
    /// Receive descriptors below the minimum threshold.
    pub const RXDMT0: u32 = 1 << 4;
    /// Receiver overrun.
    pub const RXO: u32 = 1 << 6;
    /// Receive timer: frames were written back.
    pub const RXT0: u32 = 1 << 7;
}

// §10.2.5: receive registers.
/// Receive Control (§10.2.5.1).
pub const RCTL: u32 = 0x0100;
/// Receive ring 0: base address low/high, length in bytes, head, tail.
pub const RDBAL: u32 = 0x2800;
pub const RDBAH: u32 = 0x2804;
pub const RDLEN: u32 = 0x2808;
pub const RDH: u32 = 0x2810;
pub const RDT: u32 = 0x2818;
/// Receive checksum control (§10.2.5.15): IP and TCP/UDP checksum offload on, so the
/// router can tell the desktops which transport checksums are known good.
pub const RXCSUM: u32 = 0x5000;
/// Multicast Table Array: 128 words, a bit per hash of a group address.
pub const MTA: u32 = 0x5200;
pub const MTA_WORDS: u32 = 128;
/// Receive Address 0, low and high: the station address the NIC accepts unicast for.
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;

// §10.2.6: transmit registers.
/// Transmit Control (§10.2.6.1).
pub const TCTL: u32 = 0x0400;
/// Transmit Inter-Packet Gap.
pub const TIPG: u32 = 0x0410;
/// Transmit ring 0: base address low/high, length in bytes, head, tail.
pub const TDBAL: u32 = 0x3800;
pub const TDBAH: u32 = 0x3804;
pub const TDLEN: u32 = 0x3808;
pub const TDH: u32 = 0x3810;
pub const TDT: u32 = 0x3818;
/// Transmit Descriptor Control, queue 0.
pub const TXDCTL: u32 = 0x3828;

/// CTRL bits (§10.2.2.1).
/// RXCSUM bits (§10.2.5.15).
pub mod rxcsum {
    /// IP header checksum offload.
    pub const IPOFL: u32 = 1 << 8;
    /// TCP/UDP checksum offload.
    pub const TUOFL: u32 = 1 << 9;
}

pub mod ctrl {
    /// GIO Master Disable: the NIC starts no new DMA; STATUS.GIO_MEN clears when idle.
    pub const GIO_MDIS: u32 = 1 << 2;
    /// Set Link Up: the MAC follows the PHY's link (copper, internal PHY).
    pub const SLU: u32 = 1 << 6;
    /// Force speed / force duplex: cleared so the PHY's autonegotiation decides.
    pub const FRCSPD: u32 = 1 << 11;
    pub const FRCDPLX: u32 = 1 << 12;
    /// Device reset; self-clearing.
    pub const RST: u32 = 1 << 26;
    /// Flow control: honour received PAUSE frames / send them. Both left off.
    pub const RFCE: u32 = 1 << 27;
    pub const TFCE: u32 = 1 << 28;
    /// VLAN mode (tag insertion and stripping): off, tags pass as bytes.
    pub const VME: u32 = 1 << 30;
    /// PHY reset: left clear.
    pub const PHY_RST: u32 = 1 << 31;
}

/// STATUS bits (§10.2.2.2).
pub mod status {
    /// Full duplex.
    pub const FD: u32 = 1 << 0;
    /// Link up.
    pub const LU: u32 = 1 << 1;
    /// Speed: bits 7:6, 00 = 10, 01 = 100, 1x = 1000 Mb/s.
    pub const SPEED_SHIFT: u32 = 6;
    pub const SPEED_MASK: u32 = 0b11;
    /// GIO Master Enable: DMA may still be in progress.
    pub const GIO_MEN: u32 = 1 << 19;
}

/// EECD bits.
pub mod eecd {
    /// The NVM's contents (station address among them) were loaded after reset.
    pub const AUTO_RD: u32 = 1 << 9;
}

/// RAH bits.
pub mod rah {
    /// Address Valid: the NIC filters on this entry.
    pub const AV: u32 = 1 << 31;
}

/// RCTL bits (§10.2.5.1). Not set, on purpose: UPE/MPE (promiscuous), LPE (long
/// frames), SBP (store bad packets), VFE (VLAN filter), BSEX; BSIZE = 00 and BSEX = 0
/// mean 2048-byte buffers; DTYP = 00 means legacy descriptors.
pub mod rctl {
    /// Receiver enable.
    pub const EN: u32 = 1 << 1;
    /// Accept broadcast (ARP, DHCP).
    pub const BAM: u32 = 1 << 15;
    /// Strip the Ethernet CRC: descriptor lengths count the frame without it.
    pub const SECRC: u32 = 1 << 26;
}

/// TCTL bits (§10.2.6.1).
pub mod tctl {
    /// Transmitter enable.
    pub const EN: u32 = 1 << 1;
    /// Pad short packets to 64 bytes with the CRC (60 without).
    pub const PSP: u32 = 1 << 3;
    /// Collision threshold, bits 11:4: 15 (the datasheet's recommended value).
    pub const CT_15: u32 = 0x0f << 4;
    /// Collision distance, bits 21:12: 63 for full duplex (the recommended value).
    pub const COLD_63: u32 = 0x3f << 12;
}

/// TIPG for copper: IPGT 8, IPGR1 8, IPGR2 6 (the datasheet's values).
pub const TIPG_COPPER: u32 = 8 | 8 << 10 | 6 << 20;

/// TXDCTL bits.
pub mod txdctl {
    /// Write-back threshold, bits 21:16: write a descriptor back as soon as it is done.
    pub const WTHRESH_1: u32 = 1 << 16;
    /// Bit 22 is reserved and "must be set to 1b" on the 82574 (revision 3.4).
    pub const RESERVED_ONE: u32 = 1 << 22;
    /// Granularity: thresholds count descriptors, not cache lines.
    pub const GRAN: u32 = 1 << 24;
}
