//! What a laptop remembers about its policy, and the rules that accept a bundle.
//!
//! The state lives in non-volatile UEFI variables (the hypervisor writes them); this
//! module is the pure decision, the same at boot and for an update from the server:
//!
//! - **Enrolment** (no key remembered yet): the first bundle's oldest key becomes the
//!   laptop's organisation key, and a group target becomes its group. The stick that
//!   enrols a laptop is the one trusted channel, as in TOFU.
//! - **Signature:** by the remembered key, or by a key the remembered key endorsed
//!   (directly or through a chain of rotations). Once a bundle from the new key is
//!   accepted the laptop remembers the new key, and the old one is no longer enough: a
//!   leaked old key cannot sign for a laptop that has seen the rotation.
//! - **Rollback:** the version is not lower than the highest accepted.
//! - **Freeze:** the bundle has not expired, by the later of the clock and the last
//!   trusted time (a clock wound back does not revive an expired bundle).
//! - **Mix-and-match:** a bundle for a device id or group is refused on any other.

use alloc::string::String;

use crate::bundle::{Bundle, FormatError, PublicKey};
use crate::model::{Policy, Target};

/// A laptop's random identity, made at enrolment.
pub type DeviceId = [u8; 16];

/// Longest group name.
pub const MAX_GROUP: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceState {
    /// The organisation key the laptop trusts now; `None` before enrolment.
    pub trusted_key: Option<PublicKey>,
    /// Rotations seen: an endorsement must be newer than this.
    pub key_generation: u32,
    /// The key the last rotation replaced (to say so when it signs again).
    pub retired_key: Option<PublicKey>,
    pub device_id: DeviceId,
    /// The group joined at enrolment (from the first bundle's target).
    pub group: Option<String>,
    /// Highest policy version accepted (0: none yet).
    pub highest_version: u64,
    /// Latest time the laptop has reason to believe (Unix seconds): the newest bundle
    /// issue time, server heartbeat or clock reading it accepted.
    pub trusted_time: u64,
    /// Last successful, server-signed check-in (Unix seconds; 0: never).
    pub last_checkin: u64,
}

/// A bundle that passed every rule, with what the laptop must remember for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub policy: Policy,
    /// The state to persist now that this bundle is accepted.
    pub state: DeviceState,
    /// This bundle enrolled the laptop.
    pub enrolled: bool,
    /// This bundle moved the laptop to a newer key.
    pub rotated: bool,
}

/// Why a bundle is refused, in words for the safe-mode screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Format(FormatError),
    /// The signature does not match the bundle's contents.
    BadSignature,
    /// Signed by a key that is neither the organisation's key nor endorsed by it.
    UnknownKey {
        signer: PublicKey,
        trusted: PublicKey,
    },
    /// Signed by a key the laptop moved away from through a rotation.
    RetiredKey {
        signer: PublicKey,
    },
    /// An endorsement in the chain is not signed by its old key, or does not continue
    /// the chain, or does not move the generation forward.
    BrokenEndorsement {
        index: usize,
    },
    Rollback {
        version: u64,
        highest: u64,
    },
    Expired {
        expires_at: u64,
        now: u64,
    },
    NotYetValid {
        issued_at: u64,
        expires_at: u64,
    },
    WrongDevice {
        wanted: DeviceId,
        this: DeviceId,
    },
    WrongGroup {
        wanted: String,
        this: Option<String>,
    },
}

/// 32 lowercase hex digits.
pub fn device_id_hex(id: &DeviceId) -> heapless_hex::Hex {
    heapless_hex::Hex::of(id)
}

/// Short fingerprint of a key for people: its first 8 bytes in hex.
pub fn fingerprint(key: &PublicKey) -> heapless_hex::Hex {
    heapless_hex::Hex::of(&key[..8])
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::Format(e) => write!(f, "{e}"),
            Refusal::BadSignature => {
                f.write_str("the policy's signature does not match its contents: it was altered after signing")
            }
            Refusal::UnknownKey { signer, trusted } => write!(
                f,
                "the policy is signed by key {}, but this laptop belongs to the organisation with key {}",
                fingerprint(signer),
                fingerprint(trusted)
            ),
            Refusal::RetiredKey { signer } => write!(
                f,
                "the policy is signed by key {}, which was replaced by a newer key on this laptop",
                fingerprint(signer)
            ),
            Refusal::BrokenEndorsement { index } => write!(
                f,
                "key endorsement {} of the policy is not valid: its signer key is not endorsed",
                index.saturating_add(1)
            ),
            Refusal::Rollback { version, highest } => write!(
                f,
                "the policy is version {version}, older than version {highest} which this laptop already accepted \
                 (rollback)"
            ),
            Refusal::Expired { expires_at, now } => write!(
                f,
                "the policy expired {} ago (at Unix time {expires_at}); IT must sign a new one",
                Duration(now.saturating_sub(*expires_at))
            ),
            Refusal::NotYetValid { issued_at, expires_at } => {
                write!(f, "the policy's validity is empty (issued at {issued_at}, expires at {expires_at})")
            }
            Refusal::WrongDevice { wanted, this } => write!(
                f,
                "the policy is for device {}, not this laptop ({})",
                device_id_hex(wanted),
                device_id_hex(this)
            ),
            Refusal::WrongGroup { wanted, this } => match this {
                Some(this) => write!(f, "the policy is for group \"{wanted}\", but this laptop is in group \"{this}\""),
                None => write!(f, "the policy is for group \"{wanted}\", but this laptop joined no group"),
            },
        }
    }
}

/// A duration in words: "3 days", "5 h", "40 min", "12 s".
#[derive(Debug, Clone, Copy)]
pub struct Duration(pub u64);

impl core::fmt::Display for Duration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.0;
        match s {
            0..120 => write!(f, "{s} s"),
            120..7200 => write!(f, "{} min", s / 60),
            7200..172_800 => write!(f, "{} h", s / 3600),
            _ => write!(f, "{} days", s / 86_400),
        }
    }
}

/// Decides whether `bytes` is a bundle this laptop may run, at clock time `now`
/// (Unix seconds from the laptop's clock).
pub fn verify(bytes: &[u8], state: &DeviceState, now: u64) -> Result<Accepted, Refusal> {
    let bundle = Bundle::decode(bytes).map_err(Refusal::Format)?;
    if !bundle.signature_valid() {
        return Err(Refusal::BadSignature);
    }
    let policy = bundle.policy().map_err(Refusal::Format)?;
    let (new_key, new_generation) = check_chain(&bundle, state)?;
    if policy.version < state.highest_version {
        return Err(Refusal::Rollback { version: policy.version, highest: state.highest_version });
    }
    if policy.expires_at <= policy.issued_at {
        return Err(Refusal::NotYetValid { issued_at: policy.issued_at, expires_at: policy.expires_at });
    }
    let effective_now = now.max(state.trusted_time);
    if effective_now >= policy.expires_at {
        return Err(Refusal::Expired { expires_at: policy.expires_at, now: effective_now });
    }
    let enrolled = state.trusted_key.is_none();
    let mut next = state.clone();
    match &policy.target {
        Target::Device(wanted) if *wanted != state.device_id => {
            return Err(Refusal::WrongDevice { wanted: *wanted, this: state.device_id });
        }
        Target::Device(_) => {}
        Target::Group(wanted) => match &state.group {
            Some(this) if this == wanted => {}
            None if enrolled => next.group = Some(wanted.clone()),
            this => return Err(Refusal::WrongGroup { wanted: wanted.clone(), this: this.clone() }),
        },
    }
    let rotated = !enrolled && state.trusted_key != Some(new_key);
    if rotated {
        next.retired_key = state.trusted_key;
    }
    next.trusted_key = Some(new_key);
    next.key_generation = new_generation;
    next.highest_version = policy.version;
    next.trusted_time = state.trusted_time.max(policy.issued_at);
    Ok(Accepted { policy, state: next, enrolled, rotated })
}

/// Checks that the bundle's signer is the trusted key or reached from it through valid
/// endorsements; returns the key and generation to remember.
fn check_chain(bundle: &Bundle, state: &DeviceState) -> Result<(PublicKey, u32), Refusal> {
    let chain = &bundle.endorsements;
    for (index, e) in chain.iter().enumerate() {
        let continues = index == 0 || chain.get(index - 1).is_some_and(|prev| prev.new_key == e.old_key);
        let forward = index == 0 || chain.get(index - 1).is_some_and(|prev| e.generation > prev.generation);
        if !continues || !forward || !e.signature_valid() {
            return Err(Refusal::BrokenEndorsement { index });
        }
    }
    if let Some(last) = chain.last()
        && last.new_key != bundle.signer
    {
        return Err(Refusal::BrokenEndorsement { index: chain.len() - 1 });
    }
    let Some(trusted) = state.trusted_key else {
        // Enrolment: the chain's root becomes the organisation key; the signer, at the
        // chain's generation, is what the laptop trusts from now on.
        return Ok((bundle.signer, chain.last().map_or(0, |e| e.generation)));
    };
    if bundle.signer == trusted {
        return Ok((trusted, state.key_generation));
    }
    // The trusted key must appear as an old key in the chain, at a generation newer
    // than the laptop's; from there on, the chain leads to the signer.
    match chain.iter().position(|e| e.old_key == trusted) {
        Some(start) if chain.get(start).is_some_and(|e| e.generation > state.key_generation) => {
            Ok((bundle.signer, chain.last().map_or(state.key_generation, |e| e.generation)))
        }
        Some(_) => Err(Refusal::BrokenEndorsement { index: 0 }),
        None if state.retired_key == Some(bundle.signer) => Err(Refusal::RetiredKey { signer: bundle.signer }),
        None => Err(Refusal::UnknownKey { signer: bundle.signer, trusted }),
    }
}

/// Fixed-capacity lowercase hex, for Display without allocation.
pub mod heapless_hex {
    #[derive(Debug, Clone, Copy)]
    pub struct Hex {
        bytes: [u8; 64],
        len: usize,
    }

    impl Hex {
        pub fn of(data: &[u8]) -> Hex {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let mut bytes = [0u8; 64];
            let mut len = 0;
            for b in data.iter().take(32) {
                bytes[len] = DIGITS[usize::from(b >> 4)];
                bytes[len + 1] = DIGITS[usize::from(b & 15)];
                len += 2;
            }
            Hex { bytes, len }
        }

        pub fn as_str(&self) -> &str {
            core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
        }
    }

    impl core::fmt::Display for Hex {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str(self.as_str())
        }
    }
}
