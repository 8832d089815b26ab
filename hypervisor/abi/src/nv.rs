//! The UEFI variables in which a laptop keeps its policy state across reboots. The
//! loader reads them before ExitBootServices and passes their bytes in the
//! [`crate::BootInfo`]; the hypervisor writes them through the runtime services.
//!
//! All live under [`VENDOR_GUID`], non-volatile, with boot-service and runtime access.

/// Vendor GUID of Bulkhead's variables: `6b0e6b1c-5d2e-4c43-9a8f-4b554c4b4844`.
pub const VENDOR_GUID: [u8; 16] =
    [0x1c, 0x6b, 0x0e, 0x6b, 0x2e, 0x5d, 0x43, 0x4c, 0x9a, 0x8f, 0x4b, 0x55, 0x4c, 0x4b, 0x48, 0x44];

/// The [`PolicyState`] record.
pub const STATE_VARIABLE: &str = "BulkheadPolicyState";
/// The newest bundle a management server delivered (raw bundle bytes).
pub const BUNDLE_VARIABLE: &str = "BulkheadPolicyBundle";

/// UEFI variable attributes: NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
pub const ATTRIBUTES: u32 = 0x1 | 0x2 | 0x4;

/// Largest bundle variable the loader reads.
pub const MAX_BUNDLE_VARIABLE: usize = 16 * 1024;

pub const STATE_MAGIC: u32 = u32::from_le_bytes(*b"BHST");
pub const STATE_VERSION: u32 = 1;

/// What a laptop remembers about its policy (little-endian, fixed layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyState {
    pub magic: u32,
    pub version: u32,
    /// Bit 0: `trusted_key` is set (enrolled); bit 1: `retired_key` is set.
    pub flags: u32,
    pub key_generation: u32,
    pub trusted_key: [u8; 32],
    pub retired_key: [u8; 32],
    pub device_id: [u8; 16],
    pub highest_version: u64,
    pub trusted_time: u64,
    pub last_checkin: u64,
    pub group_len: u32,
    pub _reserved: u32,
    /// UTF-8, `group_len` bytes used.
    pub group: [u8; 64],
}

pub const STATE_ENROLLED: u32 = 1 << 0;
pub const STATE_RETIRED_KEY: u32 = 1 << 1;

const _: () = assert!(core::mem::size_of::<PolicyState>() == 192);
const _: () = assert!(core::mem::offset_of!(PolicyState, device_id) == 80);
const _: () = assert!(core::mem::offset_of!(PolicyState, group) == 128);
