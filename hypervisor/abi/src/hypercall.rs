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
/// Returns the network configuration's generation: 0 at boot, moved when an accepted
/// policy update changes the desktops' rules; the service VM then fetches
/// [`NET_CONFIG`] again and applies the new rules.
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

/// Service VM: start a check-in with the management server. The hypervisor fills a
/// [`PolicyCheckin`] at guest-physical address RBX with what the request to the server
/// carries (device id, group, running version and a fresh nonce it keeps for the
/// answer) and where and how often to send it. Returns 0. Without a management section
/// in the running policy (or for any VM but the service VM) it returns `-UnknownCall`:
/// the laptop is managed by stick only. Each call makes a new nonce; only the latest
/// one is accepted in an answer.
pub const POLICY_CHECKIN: u64 = 35;
/// Service VM: hand over the management server's answer, RBX = guest-physical address,
/// RCX = length (≤ `bulkhead_policy::heartbeat::MAX_ANSWER`, [`POLICY_ANSWER_MAX`]).
/// The hypervisor checks the server's signature and the outstanding nonce (used once),
/// records the check-in and, when the answer carries a newer bundle that the laptop's
/// acceptance rules take, keeps it as the pending update: its network rules apply at
/// once (the [`NET_STATUS`] generation moves), its VM changes at the next boot.
/// Returns a [`PolicyAnswerStatus`] in RAX's low byte (see [`decode_answer_status`]);
/// for `Accepted` the new version is in bits 8..64, for `BundleRefused` the
/// [`BundleRefusal`] code. A length over the maximum stops the VM like other bad
/// arguments; `-UnknownCall` as for [`POLICY_CHECKIN`].
pub const POLICY_ANSWER: u64 = 36;
/// Largest answer [`POLICY_ANSWER`] takes (equal to `heartbeat::MAX_ANSWER`: 16 KiB
/// bundle + 512 bytes).
pub const POLICY_ANSWER_MAX: u64 = 16 * 1024 + 512;

/// Longest group name in a [`PolicyCheckin`] (the policy crate's `MAX_GROUP`).
pub const CHECKIN_GROUP_MAX: usize = 64;
/// Longest server URL in a [`PolicyCheckin`].
pub const CHECKIN_SERVER_MAX: usize = 200;

/// The answer to [`POLICY_CHECKIN`] (little-endian, `repr(C)`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyCheckin {
    pub device_id: [u8; 16],
    /// Must come back signed in the server's heartbeat.
    pub nonce: [u8; 16],
    /// Highest policy version the laptop accepted (including a pending update).
    pub running_version: u64,
    /// Seconds between check-ins.
    pub interval_s: u32,
    pub group_len: u32,
    pub server_len: u32,
    /// The network configuration's generation, as [`NET_STATUS`] returns it.
    pub network_generation: u32,
    /// The group's UTF-8 bytes (`group_len` of them); empty: no group.
    pub group: [u8; CHECKIN_GROUP_MAX],
    /// `http://A.B.C.D:PORT` (`server_len` bytes).
    pub server: [u8; CHECKIN_SERVER_MAX],
}

impl Default for PolicyCheckin {
    fn default() -> Self {
        PolicyCheckin {
            device_id: [0; 16],
            nonce: [0; 16],
            running_version: 0,
            interval_s: 0,
            group_len: 0,
            server_len: 0,
            network_generation: 0,
            group: [0; CHECKIN_GROUP_MAX],
            server: [0; CHECKIN_SERVER_MAX],
        }
    }
}

impl PolicyCheckin {
    /// The wire form (the `repr(C)` layout, little-endian), field by field.
    pub fn to_bytes(&self) -> [u8; POLICY_CHECKIN_SIZE] {
        let mut out = [0u8; POLICY_CHECKIN_SIZE];
        out[0..16].copy_from_slice(&self.device_id);
        out[16..32].copy_from_slice(&self.nonce);
        out[32..40].copy_from_slice(&self.running_version.to_le_bytes());
        out[40..44].copy_from_slice(&self.interval_s.to_le_bytes());
        out[44..48].copy_from_slice(&self.group_len.to_le_bytes());
        out[48..52].copy_from_slice(&self.server_len.to_le_bytes());
        out[52..56].copy_from_slice(&self.network_generation.to_le_bytes());
        out[56..120].copy_from_slice(&self.group);
        out[120..320].copy_from_slice(&self.server);
        out
    }

    /// Reads the wire form; lengths beyond their arrays are clamped.
    pub fn from_bytes(raw: &[u8; POLICY_CHECKIN_SIZE]) -> PolicyCheckin {
        let u32_at = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let mut c = PolicyCheckin::default();
        c.device_id.copy_from_slice(&raw[0..16]);
        c.nonce.copy_from_slice(&raw[16..32]);
        let mut version = [0u8; 8];
        version.copy_from_slice(&raw[32..40]);
        c.running_version = u64::from_le_bytes(version);
        c.interval_s = u32_at(40);
        c.group_len = u32_at(44).min(CHECKIN_GROUP_MAX as u32);
        c.server_len = u32_at(48).min(CHECKIN_SERVER_MAX as u32);
        c.network_generation = u32_at(52);
        c.group.copy_from_slice(&raw[56..120]);
        c.server.copy_from_slice(&raw[120..320]);
        c
    }

    pub fn group(&self) -> &[u8] {
        &self.group[..(self.group_len as usize).min(CHECKIN_GROUP_MAX)]
    }

    pub fn server(&self) -> &[u8] {
        &self.server[..(self.server_len as usize).min(CHECKIN_SERVER_MAX)]
    }
}

pub const POLICY_CHECKIN_SIZE: usize = 320;
const _: () = assert!(core::mem::size_of::<PolicyCheckin>() == POLICY_CHECKIN_SIZE);
const _: () = assert!(core::mem::offset_of!(PolicyCheckin, running_version) == 32);
const _: () = assert!(core::mem::offset_of!(PolicyCheckin, interval_s) == 40);
const _: () = assert!(core::mem::offset_of!(PolicyCheckin, network_generation) == 52);
const _: () = assert!(core::mem::offset_of!(PolicyCheckin, group) == 56);
const _: () = assert!(core::mem::offset_of!(PolicyCheckin, server) == 120);

/// What [`POLICY_ANSWER`] made of an answer (RAX bits 0..8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PolicyAnswerStatus {
    /// The server vouched for this check-in; it has nothing newer.
    UpToDate = 0,
    /// ... and sent a newer bundle, which the laptop accepted (version in bits 8..64).
    Accepted = 1,
    /// The answer does not decode.
    Malformed = 2,
    /// Not signed by the server key the policy names.
    BadSignature = 3,
    /// For another laptop or another check-in (old nonce, nonce used, none asked for).
    NotForThisCheckin = 4,
    /// The check-in counted, but the bundle it carried was refused ([`BundleRefusal`]
    /// in bits 8..16).
    BundleRefused = 5,
}

/// Why a bundle in an answer was refused (the policy crate's `Refusal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BundleRefusal {
    Format = 1,
    BadSignature = 2,
    UnknownKey = 3,
    RetiredKey = 4,
    BrokenEndorsement = 5,
    Rollback = 6,
    Expired = 7,
    NotYetValid = 8,
    WrongDevice = 9,
    WrongGroup = 10,
    /// Any other reason (a code this side does not know).
    Other = 255,
}

impl BundleRefusal {
    pub fn from_code(code: u8) -> BundleRefusal {
        use BundleRefusal::*;
        [Format, BadSignature, UnknownKey, RetiredKey, BrokenEndorsement, Rollback, Expired, NotYetValid]
            .into_iter()
            .chain([WrongDevice, WrongGroup])
            .find(|r| *r as u8 == code)
            .unwrap_or(Other)
    }

    pub fn name(self) -> &'static str {
        match self {
            BundleRefusal::Format => "malformed bundle",
            BundleRefusal::BadSignature => "bad signature",
            BundleRefusal::UnknownKey => "unknown key",
            BundleRefusal::RetiredKey => "retired key",
            BundleRefusal::BrokenEndorsement => "broken key endorsement",
            BundleRefusal::Rollback => "rollback",
            BundleRefusal::Expired => "expired",
            BundleRefusal::NotYetValid => "empty validity",
            BundleRefusal::WrongDevice => "for another device",
            BundleRefusal::WrongGroup => "for another group",
            BundleRefusal::Other => "refused",
        }
    }
}

/// The outcome of [`POLICY_ANSWER`] as it lands in RAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAnswer {
    UpToDate,
    Accepted { version: u64 },
    Malformed,
    BadSignature,
    NotForThisCheckin,
    BundleRefused(BundleRefusal),
}

/// RAX for `answer`.
pub fn encode_answer_status(answer: PolicyAnswer) -> u64 {
    match answer {
        PolicyAnswer::UpToDate => PolicyAnswerStatus::UpToDate as u64,
        PolicyAnswer::Accepted { version } => PolicyAnswerStatus::Accepted as u64 | (version.min(u64::MAX >> 8) << 8),
        PolicyAnswer::Malformed => PolicyAnswerStatus::Malformed as u64,
        PolicyAnswer::BadSignature => PolicyAnswerStatus::BadSignature as u64,
        PolicyAnswer::NotForThisCheckin => PolicyAnswerStatus::NotForThisCheckin as u64,
        PolicyAnswer::BundleRefused(r) => PolicyAnswerStatus::BundleRefused as u64 | (u64::from(r as u8) << 8),
    }
}

/// Reads RAX after [`POLICY_ANSWER`]; `None` for an error (negative) or unknown status.
pub fn decode_answer_status(rax: u64) -> Option<PolicyAnswer> {
    if (rax as i64) < 0 {
        return None;
    }
    let detail = rax >> 8;
    Some(match rax & 0xff {
        0 => PolicyAnswer::UpToDate,
        1 => PolicyAnswer::Accepted { version: detail },
        2 => PolicyAnswer::Malformed,
        3 => PolicyAnswer::BadSignature,
        4 => PolicyAnswer::NotForThisCheckin,
        5 => PolicyAnswer::BundleRefused(BundleRefusal::from_code(detail as u8)),
        _ => return None,
    })
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn answer_statuses_round_trip_through_rax() {
        let all = [
            PolicyAnswer::UpToDate,
            PolicyAnswer::Accepted { version: 42 },
            PolicyAnswer::Malformed,
            PolicyAnswer::BadSignature,
            PolicyAnswer::NotForThisCheckin,
            PolicyAnswer::BundleRefused(BundleRefusal::Rollback),
            PolicyAnswer::BundleRefused(BundleRefusal::WrongGroup),
        ];
        for a in all {
            assert_eq!(decode_answer_status(encode_answer_status(a)), Some(a));
        }
        assert_eq!(decode_answer_status(Error::UnknownCall.to_rax()), None);
        assert_eq!(decode_answer_status(9), None);
    }

    #[test]
    fn checkin_wire_form_round_trips_and_clamps_lengths() {
        let mut c = PolicyCheckin {
            device_id: [1; 16],
            nonce: [2; 16],
            running_version: 7,
            interval_s: 60,
            ..Default::default()
        };
        c.group[..5].copy_from_slice(b"staff");
        c.group_len = 5;
        c.server[..3].copy_from_slice(b"url");
        c.server_len = 3;
        c.network_generation = 4;
        let bytes = c.to_bytes();
        assert_eq!(PolicyCheckin::from_bytes(&bytes), c);
        assert_eq!(PolicyCheckin::from_bytes(&bytes).group(), b"staff");
        let mut raw = bytes;
        raw[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(PolicyCheckin::from_bytes(&raw).group().len(), CHECKIN_GROUP_MAX);
    }
}
