//! Hypercall ABI: a guest executes VMMCALL (AMD) or VMCALL (Intel) with the call number
//! in RAX and arguments in RBX, RCX, RDX, RSI. The result comes back in RAX: 0 or a
//! positive value on success. An unknown call number returns `-UnknownCall`; any other
//! bad argument (a buffer outside the VM's memory, a length over the limit) stops the VM,
//! with the reason logged.

/// Write bytes to the VM's console. RBX = guest-physical address, RCX = length (≤ 4096).
pub const CONSOLE_WRITE: u64 = 1;
/// Give up the rest of this time slice.
pub const YIELD: u64 = 2;
/// Fill a [`VmInfo`] at guest-physical address RBX. Also logs the VM's exit counters.
pub const VM_INFO: u64 = 3;
/// Stop this VM. RBX = exit status.
pub const SHUTDOWN: u64 = 4;
/// Restart this VM.
pub const REBOOT: u64 = 5;

/// Hypercall failure codes (returned negated in RAX).
#[repr(i64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    UnknownCall = 1,
    BadAddress = 2,
    TooLong = 3,
    BadArgument = 4,
}

impl Error {
    pub const fn to_rax(self) -> u64 {
        (-(self as i64)) as u64
    }
}

/// The answer to [`VM_INFO`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmInfo {
    pub abi_version: u32,
    pub vm_id: u32,
    pub memory_bytes: u64,
    /// NUL-padded VM name.
    pub name: [u8; 32],
}

pub const ABI_VERSION: u32 = 1;

const _: () = assert!(core::mem::size_of::<VmInfo>() == 48);

/// Self-test facility: inject external-interrupt vector RBX (32..=255) into the calling
/// VM as soon as it can take it. A VM can only interrupt itself.
pub const RAISE_INTERRUPT: u64 = 16;

/// Service VM: copy the network configuration text into the buffer at guest-physical
/// address RBX of RCX bytes (≤ [`NET_CONFIG_MAX`]). Returns the text's length; a buffer
/// too small for it returns `-TooLong` and copies nothing. The text is one line per
/// item, `key=value` words (see `service-vm/src/service_config.rs`):
/// `link <index> vm=<name> mac=<aa:bb:..> rule=<internet|corporate-only|isolated>
/// [allow=<cidr>[:port],...] [peers=<index>,...]`. Only a VM of kind `service` may call
/// it; any other gets `-UnknownCall`.
pub const NET_CONFIG: u64 = 32;
/// Largest configuration text [`NET_CONFIG`] hands out.
pub const NET_CONFIG_MAX: u64 = 16 * 1024;
/// Service VM: report the network's state, a [`NetStatus`] at guest-physical address
/// RBX. The hypervisor shows each desktop's link in its strip and logs changes.
pub const NET_STATUS: u64 = 33;
/// Halt until an interrupt arrives for this VM or RBX microseconds have passed
/// (RBX = 0: only an interrupt wakes it). Returns 0.
pub const SLEEP: u64 = 34;

/// Links a [`NetStatus`] describes at most.
pub const NET_STATUS_LINKS: usize = 8;

/// One desktop link as the service VM sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetLinkStatus {
    /// Bit 0: the desktop's driver is up; bit 1: the desktop holds its lease.
    pub flags: u32,
    /// The desktop's address (network byte order as a big-endian u32), 0 before a lease.
    pub address: u32,
    pub frames_in: u64,
    pub frames_out: u64,
    pub dropped: u64,
}

/// The answer to [`NET_STATUS`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetStatus {
    /// Bit 0: the uplink's link is up; bit 1: it has an address.
    pub uplink_flags: u32,
    /// The uplink's address (big-endian u32), 0 without one.
    pub uplink_address: u32,
    /// How many entries of `links` are valid.
    pub link_count: u32,
    pub _reserved: u32,
    pub links: [NetLinkStatus; NET_STATUS_LINKS],
}

pub const NET_LINK_UP: u32 = 1 << 0;
pub const NET_LINK_LEASED: u32 = 1 << 1;
pub const NET_UPLINK_UP: u32 = 1 << 0;
pub const NET_UPLINK_ADDRESS: u32 = 1 << 1;

const _: () = assert!(core::mem::size_of::<NetLinkStatus>() == 32);
const _: () = assert!(core::mem::offset_of!(NetLinkStatus, frames_in) == 8);
const _: () = assert!(core::mem::size_of::<NetStatus>() == 16 + 32 * NET_STATUS_LINKS);
const _: () = assert!(core::mem::offset_of!(NetStatus, links) == 16);
