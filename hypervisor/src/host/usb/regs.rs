//! xHCI registers (eXtensible Host Controller Interface 1.2, chapter 5): offsets and
//! bits the driver uses, and the capability fields decoded from plain integers so they
//! are tested on the host. The `xhci` crate's register module reaches MMIO through raw
//! pointers of its own; every device access here goes through `BarMmio` instead, so
//! only the layouts below are written out.
#![forbid(unsafe_code)]

/// §5.3 Host Controller Capability Registers (offsets from BAR0).
pub mod cap {
    /// CAPLENGTH (byte) and HCIVERSION (bytes 2..4) share the first dword.
    pub const CAPLENGTH_HCIVERSION: u64 = 0x00;
    pub const HCSPARAMS1: u64 = 0x04;
    pub const HCSPARAMS2: u64 = 0x08;
    pub const HCCPARAMS1: u64 = 0x10;
    pub const DBOFF: u64 = 0x14;
    pub const RTSOFF: u64 = 0x18;
}

/// §5.4 Host Controller Operational Registers (offsets from CAPLENGTH).
pub mod op {
    pub const USBCMD: u64 = 0x00;
    pub const USBSTS: u64 = 0x04;
    pub const PAGESIZE: u64 = 0x08;
    pub const DNCTRL: u64 = 0x14;
    pub const CRCR: u64 = 0x18;
    pub const DCBAAP: u64 = 0x30;
    pub const CONFIG: u64 = 0x38;
    /// §5.4.8: PORTSC of port n (1-based) at 0x400 + 0x10 × (n − 1).
    pub const PORTSC_BASE: u64 = 0x400;
    pub const PORT_STRIDE: u64 = 0x10;

    pub const CMD_RUN: u32 = 1 << 0;
    pub const CMD_HCRST: u32 = 1 << 1;
    pub const CMD_INTE: u32 = 1 << 2;

    pub const STS_HCH: u32 = 1 << 0;
    pub const STS_HSE: u32 = 1 << 2;
    pub const STS_CNR: u32 = 1 << 11;
    pub const STS_HCE: u32 = 1 << 12;
}

/// §5.4.8 PORTSC bits.
pub mod portsc {
    /// Current Connect Status (RO).
    pub const CCS: u32 = 1 << 0;
    /// Port Enabled (RW1C: writing 1 disables the port).
    pub const PED: u32 = 1 << 1;
    /// Port Reset (RW1S).
    pub const PR: u32 = 1 << 4;
    /// Port Power (RW).
    pub const PP: u32 = 1 << 9;
    pub const SPEED_SHIFT: u32 = 10;
    pub const SPEED_MASK: u32 = 0xf;
    /// The RW1C change bits CSC, PEC, WRC, OCC, PRC, PLC, CEC (17..=23).
    pub const CHANGE_BITS: u32 = 0x7f << 17;
    /// Port Reset Change.
    pub const PRC: u32 = 1 << 21;
    /// Warm Port Reset Change.
    pub const WRC: u32 = 1 << 19;

    /// What to write to leave the port as it is but for `set`: power on, no RW1C bit
    /// (PED, the change bits) written as 1 by accident.
    pub fn neutral(set: u32) -> u32 {
        PP | set
    }

    /// The Port Speed field: 1 full, 2 low, 3 high, 4 SuperSpeed, 5 SuperSpeedPlus
    /// (default Protocol Speed IDs, §7.2.2.1.1).
    pub fn speed(value: u32) -> u8 {
        ((value >> SPEED_SHIFT) & SPEED_MASK) as u8
    }
}

/// §5.5 Runtime Registers: interrupter 0's register set at RTSOFF + 0x20.
pub mod rt {
    pub const IR0: u64 = 0x20;
    pub const IMAN: u64 = 0x00;
    pub const ERSTSZ: u64 = 0x08;
    pub const ERSTBA: u64 = 0x10;
    pub const ERDP: u64 = 0x18;
    /// ERDP Event Handler Busy (RW1C).
    pub const ERDP_EHB: u64 = 1 << 3;
}

/// The capability fields the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XhciCapabilities {
    /// Offset of the operational registers.
    pub caplength: u8,
    pub version: u16,
    pub max_slots: u8,
    pub max_ports: u8,
    pub scratchpads: u16,
    /// 64-bit addressing (AC64).
    pub ac64: bool,
    /// 64-byte contexts (CSZ) instead of 32-byte ones.
    pub context_64: bool,
    /// First extended capability, in bytes from BAR0 (0: none).
    pub xecp: u64,
    pub doorbells: u64,
    pub runtime: u64,
}

impl XhciCapabilities {
    /// Decodes the capability dwords at 0x00, 0x04, 0x08, 0x10, 0x14 and 0x18.
    pub fn decode(first: u32, hcsparams1: u32, hcsparams2: u32, hccparams1: u32, dboff: u32, rtsoff: u32) -> Self {
        let hi = (hcsparams2 >> 21) & 0x1f;
        let lo = (hcsparams2 >> 27) & 0x1f;
        XhciCapabilities {
            caplength: (first & 0xff) as u8,
            version: (first >> 16) as u16,
            max_slots: (hcsparams1 & 0xff) as u8,
            max_ports: (hcsparams1 >> 24) as u8,
            scratchpads: ((hi << 5) | lo) as u16,
            ac64: hccparams1 & 1 != 0,
            context_64: hccparams1 & (1 << 2) != 0,
            xecp: u64::from(hccparams1 >> 16) << 2,
            doorbells: u64::from(dboff & !0x3),
            runtime: u64::from(rtsoff & !0x1f),
        }
    }

    /// The byte size of one context (§6.2.1).
    pub fn context_bytes(&self) -> u64 {
        if self.context_64 { 64 } else { 32 }
    }
}

/// §7.1 USB Legacy Support Capability (extended capability id 1): BIOS and OS owned
/// semaphores in its first dword, SMI enables in the second.
pub mod legacy {
    pub const ID: u8 = 1;
    pub const BIOS_OWNED: u32 = 1 << 16;
    pub const OS_OWNED: u32 = 1 << 24;
    /// USBLEGCTLSTS: the SMI enable bits (0, 4, 13, 14, 15) a handoff clears.
    pub const SMI_ENABLES: u32 = (1 << 0) | (1 << 4) | (0x7 << 13);
}

/// An extended capability header (§7): id and the offset in dwords to the next one.
pub fn ext_cap(value: u32) -> (u8, u64) {
    ((value & 0xff) as u8, u64::from((value >> 8) & 0xff) << 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_xhci_capabilities_decode() {
        // A controller shaped like QEMU's qemu-xhci: 64 slots, 8 ports, AC64, 32-byte contexts.
        let c = XhciCapabilities::decode(0x0100_0040, 0x0800_0740, 0x0000_000f, 0x0008_0001, 0x2000, 0x1000);
        assert_eq!((c.caplength, c.version, c.max_slots, c.max_ports), (0x40, 0x100, 0x40, 8));
        assert_eq!(c.scratchpads, 0);
        assert!(c.ac64 && !c.context_64);
        assert_eq!(c.context_bytes(), 32);
        assert_eq!((c.xecp, c.doorbells, c.runtime), (0x20, 0x2000, 0x1000));
    }

    #[test]
    fn scratchpad_count_spans_two_fields() {
        // Max Scratchpad Buffers Hi (25:21) = 1, Lo (31:27) = 3: 35 buffers.
        let c = XhciCapabilities::decode(0x20, 0, (1 << 21) | (3 << 27), 1 << 2, 0, 0);
        assert_eq!(c.scratchpads, 35);
        assert_eq!(c.context_bytes(), 64);
    }

    #[test]
    fn port_writes_never_set_rw1c_bits() {
        let w = portsc::neutral(portsc::PR);
        assert_eq!(w & (portsc::PED | portsc::CHANGE_BITS), 0);
        assert_eq!(w & portsc::PR, portsc::PR);
        assert_eq!(portsc::speed((3 << 10) | portsc::PP | portsc::PED | portsc::CCS), 3);
        assert_eq!(ext_cap(0x0100_0401), (1, 16));
    }
}
