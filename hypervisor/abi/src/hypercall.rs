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
