//! Why a Linux image or boot configuration was rejected.

use core::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinuxBootError {
    /// Shorter than the setup header.
    TooSmall {
        len: usize,
    },
    /// No 0xAA55 at offset 0x1FE: not a PC boot image at all.
    NoBootFlag {
        found: u16,
    },
    /// No `HdrS` magic at 0x202: a raw vmlinux, an ELF or some other file.
    NotBzImage {
        magic: u32,
    },
    ProtocolTooOld {
        version: u16,
        needed: u16,
    },
    /// A zImage (`LOADED_HIGH` clear) would need loading below 1 MiB.
    NotLoadedHigh,
    /// `XLF_KERNEL_64` clear: the image has no 64-bit entry point.
    No64BitEntry,
    /// The file ends before the kernel it describes does.
    Truncated {
        needed: u64,
        len: u64,
    },
    BadAlignment {
        alignment: u32,
    },
    BadInitSize {
        init_size: u32,
        payload: u64,
    },
    CmdlineTooLong {
        len: u64,
        max: u64,
    },
    TooManyE820Entries {
        count: usize,
    },
    EmptyE820Entry {
        addr: u64,
    },
    OverlappingE820 {
        first: u64,
        second: u64,
    },
    /// Guest RAM is too small (or too fragmented) for `what`.
    NotEnoughMemory {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// `what` would land outside the RAM the e820 map describes.
    NotInRam {
        what: &'static str,
        addr: u64,
        len: u64,
    },
    BadFramebuffer(&'static str),
    /// `acpi_rsdp_addr` exists from boot protocol 2.14.
    RsdpNeedsProtocol214 {
        version: u16,
    },
}

impl fmt::Display for LinuxBootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LinuxBootError::*;
        match self {
            TooSmall { len } => write!(f, "{len} bytes is too small for a bzImage"),
            NoBootFlag { found } => {
                write!(f, "boot flag is {found:#06x}, not 0xaa55: not a bzImage")
            }
            NotBzImage { magic } => write!(f, "no HdrS magic (found {magic:#010x}): not a bzImage (a vmlinux ELF?)"),
            ProtocolTooOld { version, needed } => write!(
                f,
                "boot protocol {}.{:02} is older than the {}.{:02} needed for 64-bit entry",
                version >> 8,
                version & 0xff,
                needed >> 8,
                needed & 0xff
            ),
            NotLoadedHigh => write!(f, "zImage (not loaded high) is not supported"),
            No64BitEntry => write!(f, "kernel has no 64-bit entry point (XLF_KERNEL_64 clear)"),
            Truncated { needed, len } => {
                write!(f, "image is truncated: header needs {needed} bytes, file has {len}")
            }
            BadAlignment { alignment } => {
                write!(f, "kernel_alignment {alignment:#x} is not a power of two")
            }
            BadInitSize { init_size, payload } => {
                write!(f, "init_size {init_size:#x} is smaller than the {payload:#x}-byte kernel")
            }
            CmdlineTooLong { len, max } => {
                write!(f, "command line of {len} bytes exceeds the kernel's {max}")
            }
            TooManyE820Entries { count } => {
                write!(f, "{count} e820 entries, but the zero page holds 128")
            }
            EmptyE820Entry { addr } => write!(f, "empty e820 entry at {addr:#x}"),
            OverlappingE820 { first, second } => {
                write!(f, "e820 entries at {first:#x} and {second:#x} overlap")
            }
            NotEnoughMemory { what, needed, available } => {
                write!(f, "not enough guest memory for the {what}: needs {needed:#x} bytes, {available:#x} available")
            }
            NotInRam { what, addr, len } => {
                write!(f, "{what} at {addr:#x}+{len:#x} is not in RAM according to the e820 map")
            }
            BadFramebuffer(why) => write!(f, "framebuffer: {why}"),
            RsdpNeedsProtocol214 { version } => {
                write!(f, "acpi_rsdp_addr needs boot protocol 2.14, kernel has {}.{:02}", version >> 8, version & 0xff)
            }
        }
    }
}
