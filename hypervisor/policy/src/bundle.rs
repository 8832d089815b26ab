//! The signed bundle: the postcard-encoded [`Policy`], the key that signed it, the
//! signature, and the endorsements that link that key back to an older one (rotation).
//!
//! The signature covers [`POLICY_CONTEXT`] followed by the encoded policy, so a
//! signature made for anything else (an endorsement, a heartbeat) never verifies as a
//! policy. Decoding is bounded: a bundle is at most [`MAX_BUNDLE`] bytes, holds at most
//! [`MAX_ENDORSEMENTS`] endorsements, and must be encoded canonically (re-encoding the
//! decoded bundle gives the same bytes), so one policy has exactly one byte form.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::model::{MODEL_FORMAT, Policy};

/// "BHPOLICY".
pub const MAGIC: [u8; 8] = *b"BHPOLICY";
/// Format of the bundle envelope.
pub const FORMAT: u16 = 1;
/// Largest bundle a laptop accepts: it must fit one UEFI variable on real firmware,
/// where 32 KiB is common and 16 KiB is safe.
pub const MAX_BUNDLE: usize = 16 * 1024;
/// Longest rotation chain a bundle may carry.
pub const MAX_ENDORSEMENTS: usize = 8;

pub const POLICY_CONTEXT: &[u8] = b"bulkhead policy bundle v1\0";
pub const ENDORSEMENT_CONTEXT: &[u8] = b"bulkhead key endorsement v1\0";

/// An Ed25519 public key.
pub type PublicKey = [u8; 32];

/// The seed of the demo key is the first half of this text's SHA-512.
pub const DEMO_SEED_TEXT: &[u8] = b"bulkhead demo policy key: public, for demonstrations and tests only";

/// The public half of `signing::demo_key()`: a bundle signed by it is a demo policy.
pub const DEMO_PUBLIC_KEY: PublicKey = [
    95, 173, 198, 52, 9, 43, 6, 178, 25, 142, 233, 141, 85, 255, 254, 103, 86, 203, 144, 137, 164, 23, 150, 219, 27,
    148, 192, 44, 6, 150, 242, 74,
];

/// "Key `old_key` hands over to key `new_key`": made by `cargo xtask policy rotate`,
/// signed by the old key. `generation` counts rotations, so a chain only moves forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    pub old_key: PublicKey,
    pub new_key: PublicKey,
    pub generation: u32,
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub magic: [u8; 8],
    pub format: u16,
    pub model_format: u16,
    /// `postcard` of the [`Policy`]: the signed bytes (after [`POLICY_CONTEXT`]).
    pub body: Vec<u8>,
    pub signer: PublicKey,
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
    /// From an older key to `signer`, oldest first; empty when the signer is the key
    /// the laptop already trusts.
    pub endorsements: Vec<Endorsement>,
}

/// Why bytes are not a well-formed bundle (before any signature is looked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    TooLarge {
        len: usize,
    },
    NotABundle,
    UnknownFormat {
        format: u16,
        model_format: u16,
    },
    TooManyEndorsements,
    /// Decodes, but not from its one canonical encoding (trailing or padded bytes).
    NotCanonical,
    /// The envelope decodes but the policy inside does not.
    BadPolicy,
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FormatError::TooLarge { len } => {
                write!(f, "the policy bundle is {len} bytes, more than the {MAX_BUNDLE} a laptop accepts")
            }
            FormatError::NotABundle => f.write_str("the policy file is not a Bulkhead policy bundle (damaged?)"),
            FormatError::UnknownFormat { format, model_format } => write!(
                f,
                "the policy bundle has format {format}.{model_format}, which this Bulkhead does not know (built by a \
                 newer tool?)"
            ),
            FormatError::TooManyEndorsements => {
                write!(f, "the policy bundle carries more than {MAX_ENDORSEMENTS} key endorsements")
            }
            FormatError::NotCanonical => f.write_str("the policy bundle is not in its canonical form (altered?)"),
            FormatError::BadPolicy => f.write_str("the policy inside the bundle does not decode (damaged?)"),
        }
    }
}

impl Bundle {
    /// Decodes the envelope and checks its shape; says nothing about signatures.
    pub fn decode(bytes: &[u8]) -> Result<Bundle, FormatError> {
        if bytes.len() > MAX_BUNDLE {
            return Err(FormatError::TooLarge { len: bytes.len() });
        }
        let bundle: Bundle = postcard::from_bytes(bytes).map_err(|_| FormatError::NotABundle)?;
        if bundle.magic != MAGIC {
            return Err(FormatError::NotABundle);
        }
        if bundle.format != FORMAT || bundle.model_format != MODEL_FORMAT {
            return Err(FormatError::UnknownFormat { format: bundle.format, model_format: bundle.model_format });
        }
        if bundle.endorsements.len() > MAX_ENDORSEMENTS {
            return Err(FormatError::TooManyEndorsements);
        }
        if bundle.encode().as_deref() != Some(bytes) {
            return Err(FormatError::NotCanonical);
        }
        Ok(bundle)
    }

    pub fn encode(&self) -> Option<Vec<u8>> {
        postcard::to_allocvec(self).ok()
    }

    /// The policy inside, decoded canonically (not yet trusted).
    pub fn policy(&self) -> Result<Policy, FormatError> {
        let policy: Policy = postcard::from_bytes(&self.body).map_err(|_| FormatError::BadPolicy)?;
        if postcard::to_allocvec(&policy).ok().as_deref() != Some(&self.body[..]) {
            return Err(FormatError::NotCanonical);
        }
        Ok(policy)
    }

    /// Whether `signer` signed this body.
    pub fn signature_valid(&self) -> bool {
        verify(&self.signer, &[POLICY_CONTEXT, &self.body], &self.signature)
    }
}

impl Endorsement {
    fn message(new_key: &PublicKey, generation: u32) -> [u8; 36] {
        let mut message = [0u8; 36];
        message[..32].copy_from_slice(new_key);
        message[32..].copy_from_slice(&generation.to_le_bytes());
        message
    }

    pub fn signature_valid(&self) -> bool {
        let message = Self::message(&self.new_key, self.generation);
        verify(&self.old_key, &[ENDORSEMENT_CONTEXT, &message], &self.signature)
    }
}

/// Ed25519 verification of the concatenation of `parts`.
pub(crate) fn verify(key: &PublicKey, parts: &[&[u8]], signature: &[u8; 64]) -> bool {
    let message: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    ed25519_compact::PublicKey::new(*key).verify(&message, &ed25519_compact::Signature::new(*signature)).is_ok()
}

/// serde has no impls for `[u8; 64]`; a fixed-size tuple keeps postcard's encoding
/// length-free (64 raw bytes).
pub(crate) mod signature_bytes {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::{SerializeTuple, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(64)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = [u8; 64];
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("64 bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
                let mut out = [0u8; 64];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }
        d.deserialize_tuple(64, V)
    }
}

/// Signing, for the host tool.
#[cfg(feature = "sign")]
pub mod signing {
    use super::*;

    /// An Ed25519 secret key as its 32-byte seed.
    #[derive(Clone)]
    pub struct SecretKey(pub [u8; 32]);

    impl core::fmt::Debug for SecretKey {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("SecretKey(..)")
        }
    }

    impl SecretKey {
        pub fn generate() -> SecretKey {
            SecretKey(*ed25519_compact::Seed::generate())
        }

        fn pair(&self) -> ed25519_compact::KeyPair {
            ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(self.0))
        }

        pub fn public(&self) -> PublicKey {
            *self.pair().pk
        }

        pub fn sign(&self, parts: &[&[u8]]) -> [u8; 64] {
            let message: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            *self.pair().sk.sign(&message, None)
        }
    }

    /// Signs `policy` into a bundle carrying `endorsements` (oldest first, the last
    /// one's `new_key` being `key`'s public key).
    pub fn sign_policy(policy: &Policy, key: &SecretKey, endorsements: Vec<Endorsement>) -> Vec<u8> {
        let body = postcard::to_allocvec(policy).expect("a policy always encodes");
        let signature = key.sign(&[POLICY_CONTEXT, &body]);
        let bundle = Bundle {
            magic: MAGIC,
            format: FORMAT,
            model_format: MODEL_FORMAT,
            body,
            signer: key.public(),
            signature,
            endorsements,
        };
        bundle.encode().expect("a bundle always encodes")
    }

    /// The demo key: derived from a fixed, public string, so anyone can sign with it.
    /// Images built without IT's key carry a policy signed by it, and the hypervisor
    /// says "demo policy" when the signer is [`DEMO_PUBLIC_KEY`]. Never for real use.
    pub fn demo_key() -> SecretKey {
        let digest = ed25519_compact::sha512::Hash::hash(DEMO_SEED_TEXT);
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&digest[..32]);
        SecretKey(seed)
    }

    /// `old` hands over to `new`.
    pub fn endorse(old: &SecretKey, new: &PublicKey, generation: u32) -> Endorsement {
        let message = Endorsement::message(new, generation);
        Endorsement {
            old_key: old.public(),
            new_key: *new,
            generation,
            signature: old.sign(&[ENDORSEMENT_CONTEXT, &message]),
        }
    }
}
