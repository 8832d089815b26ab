//! The management server's answer to a check-in, signed with the server's own key
//! (named in the policy, so IT's signature vouches for it). It carries the nonce the
//! hypervisor made for this check-in, so an old answer cannot be replayed, and the
//! server's time, which moves the laptop's trusted time forward.
//!
//! The service VM carries the answer but cannot forge it: it has neither key.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::bundle::{PublicKey, verify};
use crate::device::{DeviceId, MAX_GROUP};

pub const HEARTBEAT_CONTEXT: &[u8] = b"bulkhead check-in answer v1\0";
/// Largest check-in answer (heartbeat plus an optional bundle).
pub const MAX_ANSWER: usize = crate::bundle::MAX_BUNDLE + 512;

/// Largest encoded [`CheckinRequest`]: the id, a group of [`MAX_GROUP`] bytes, the
/// version and the nonce, with room for postcard's length and varint prefixes.
pub const MAX_REQUEST: usize = 16 + 2 + MAX_GROUP + 10 + 16 + 16;

/// What the laptop sends the management server (`POST /v1/checkin`, postcard-encoded).
/// The hypervisor fills it (device id, group, running version, a fresh nonce); the
/// service VM only carries it. Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinRequest {
    pub device_id: DeviceId,
    /// The group joined at enrolment; empty when the laptop joined none.
    pub group: String,
    /// Highest policy version the laptop accepted.
    pub running_version: u64,
    /// Must come back in the signed [`Heartbeat`].
    pub nonce: [u8; 16],
}

impl CheckinRequest {
    pub fn encode(&self) -> Option<Vec<u8>> {
        postcard::to_allocvec(self).ok().filter(|b| b.len() <= MAX_REQUEST)
    }

    /// Decodes a request: bounded, with no trailing bytes and a group of at most
    /// [`MAX_GROUP`] bytes.
    pub fn decode(bytes: &[u8]) -> Option<CheckinRequest> {
        if bytes.len() > MAX_REQUEST {
            return None;
        }
        let (request, rest): (CheckinRequest, &[u8]) = postcard::take_from_bytes(bytes).ok()?;
        (rest.is_empty() && request.group.len() <= MAX_GROUP).then_some(request)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub device_id: DeviceId,
    pub nonce: [u8; 16],
    /// The server's clock, Unix seconds.
    pub server_time: u64,
    /// Newest policy version the server has for this laptop.
    pub latest_version: u64,
}

/// What the server returns, and the service VM hands to the hypervisor unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// `postcard` of a [`Heartbeat`].
    pub heartbeat: Vec<u8>,
    #[serde(with = "crate::bundle::signature_bytes")]
    pub signature: [u8; 64],
    /// A newer bundle, when the server has one.
    pub bundle: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatError {
    Malformed,
    BadSignature,
    /// Not this laptop's id or not this check-in's nonce: a replay or a mix-up.
    NotForThisCheckin,
}

impl core::fmt::Display for HeartbeatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HeartbeatError::Malformed => "the check-in answer does not decode",
            HeartbeatError::BadSignature => "the check-in answer is not signed by the management server's key",
            HeartbeatError::NotForThisCheckin => "the check-in answer is for another laptop or an earlier check-in",
        })
    }
}

impl Answer {
    pub fn decode(bytes: &[u8]) -> Result<Answer, HeartbeatError> {
        if bytes.len() > MAX_ANSWER {
            return Err(HeartbeatError::Malformed);
        }
        postcard::from_bytes(bytes).map_err(|_| HeartbeatError::Malformed)
    }

    pub fn encode(&self) -> Option<Vec<u8>> {
        postcard::to_allocvec(self).ok()
    }

    /// The heartbeat, if the server's key signed it for this laptop and this nonce.
    pub fn verify(
        &self,
        server_key: &PublicKey,
        device_id: &DeviceId,
        nonce: &[u8; 16],
    ) -> Result<Heartbeat, HeartbeatError> {
        if !verify(server_key, &[HEARTBEAT_CONTEXT, &self.heartbeat], &self.signature) {
            return Err(HeartbeatError::BadSignature);
        }
        let heartbeat: Heartbeat = postcard::from_bytes(&self.heartbeat).map_err(|_| HeartbeatError::Malformed)?;
        if heartbeat.device_id != *device_id || heartbeat.nonce != *nonce {
            return Err(HeartbeatError::NotForThisCheckin);
        }
        Ok(heartbeat)
    }
}

/// Signing, for the management server.
#[cfg(feature = "sign")]
pub fn sign_answer(key: &crate::bundle::signing::SecretKey, heartbeat: &Heartbeat, bundle: Option<Vec<u8>>) -> Vec<u8> {
    let body = postcard::to_allocvec(heartbeat).expect("a heartbeat always encodes");
    let signature = key.sign(&[HEARTBEAT_CONTEXT, &body]);
    Answer { heartbeat: body, signature, bundle }.encode().expect("an answer always encodes")
}
