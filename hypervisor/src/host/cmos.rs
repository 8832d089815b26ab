//! The host's CMOS real-time clock, read once at boot to give guests the real date.

use crate::arch::x86::instr;

use crate::host::rtc::{self, HostRtcError};

const INDEX_PORT: u16 = 0x70;
const DATA_PORT: u16 = 0x71;
/// Keeps NMIs disabled while a register is selected (bit 7 of the index).
const NMI_DISABLE: u8 = 0x80;
/// The century register, PC/AT convention (the index the FADT's CENTURY field names
/// on PCs).
const CENTURY_INDEX: u8 = 0x32;

/// The current Unix time according to the CMOS clock.
pub fn unix_time() -> Result<u64, HostRtcError> {
    let read = |index: u8| {
        // SAFETY: the CMOS index/data ports belong to the hypervisor; selecting a
        // register and reading it has no effect beyond that.
        unsafe {
            instr::outb(INDEX_PORT, index | NMI_DISABLE);
            instr::inb(DATA_PORT)
        }
    };
    rtc::read_host_rtc(read, Some(CENTURY_INDEX))
}
