//! The laptop's policy state in UEFI variables (`bulkhead_abi::nv`): decoding what the
//! loader read, and writing it back through the runtime services.
#![forbid(unsafe_code)]

use alloc::string::String;

use bulkhead_abi::nv::{self, PolicyState};
use bulkhead_policy::DeviceState;

use crate::host::uefi_runtime::{self, RuntimeError};

/// Why the stored state cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// Present but not a state record this Bulkhead wrote (wrong size, magic, version,
    /// or a group that is not UTF-8).
    Damaged,
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::Damaged => write!(
                f,
                "this laptop's policy record (UEFI variable {}) is damaged or was written by something else",
                nv::STATE_VARIABLE
            ),
        }
    }
}

/// Decodes the state variable's bytes; `Ok(None)` when there is none (a laptop never
/// enrolled).
pub fn decode(bytes: &[u8]) -> Result<Option<DeviceState>, StateError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let record = parse_record(bytes).ok_or(StateError::Damaged)?;
    if record.magic != nv::STATE_MAGIC || record.version != nv::STATE_VERSION {
        return Err(StateError::Damaged);
    }
    let group_len = usize::try_from(record.group_len).map_err(|_| StateError::Damaged)?;
    let group = match record.group.get(..group_len) {
        Some([]) => None,
        Some(g) => Some(String::from(core::str::from_utf8(g).map_err(|_| StateError::Damaged)?)),
        None => return Err(StateError::Damaged),
    };
    let enrolled = record.flags & nv::STATE_ENROLLED != 0;
    let retired = record.flags & nv::STATE_RETIRED_KEY != 0;
    Ok(Some(DeviceState {
        trusted_key: enrolled.then_some(record.trusted_key),
        key_generation: record.key_generation,
        retired_key: retired.then_some(record.retired_key),
        device_id: record.device_id,
        group,
        highest_version: record.highest_version,
        trusted_time: record.trusted_time,
        last_checkin: record.last_checkin,
    }))
}

/// The state as the variable's bytes.
pub fn encode(state: &DeviceState) -> [u8; core::mem::size_of::<PolicyState>()] {
    let mut out = [0u8; core::mem::size_of::<PolicyState>()];
    let mut w = Writer { out: &mut out, at: 0 };
    let mut flags = 0;
    if state.trusted_key.is_some() {
        flags |= nv::STATE_ENROLLED;
    }
    if state.retired_key.is_some() {
        flags |= nv::STATE_RETIRED_KEY;
    }
    let group = state.group.as_deref().unwrap_or("").as_bytes();
    let group = group.get(..group.len().min(64)).unwrap_or(&[]);
    w.put(&nv::STATE_MAGIC.to_le_bytes());
    w.put(&nv::STATE_VERSION.to_le_bytes());
    w.put(&flags.to_le_bytes());
    w.put(&state.key_generation.to_le_bytes());
    w.put(&state.trusted_key.unwrap_or([0; 32]));
    w.put(&state.retired_key.unwrap_or([0; 32]));
    w.put(&state.device_id);
    w.put(&state.highest_version.to_le_bytes());
    w.put(&state.trusted_time.to_le_bytes());
    w.put(&state.last_checkin.to_le_bytes());
    w.put(&u32::try_from(group.len()).unwrap_or(0).to_le_bytes());
    w.put(&0u32.to_le_bytes());
    w.put(group);
    out
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at.saturating_add(bytes.len());
        if let Some(slot) = self.out.get_mut(self.at..end) {
            slot.copy_from_slice(bytes);
        }
        self.at = end;
    }
}

fn parse_record(bytes: &[u8]) -> Option<PolicyState> {
    if bytes.len() != core::mem::size_of::<PolicyState>() {
        return None;
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at.checked_add(n)?)?;
        at = at.checked_add(n)?;
        Some(s)
    };
    let u32_le = |b: &[u8]| b.try_into().ok().map(u32::from_le_bytes);
    let u64_le = |b: &[u8]| b.try_into().ok().map(u64::from_le_bytes);
    Some(PolicyState {
        magic: u32_le(take(4)?)?,
        version: u32_le(take(4)?)?,
        flags: u32_le(take(4)?)?,
        key_generation: u32_le(take(4)?)?,
        trusted_key: take(32)?.try_into().ok()?,
        retired_key: take(32)?.try_into().ok()?,
        device_id: take(16)?.try_into().ok()?,
        highest_version: u64_le(take(8)?)?,
        trusted_time: u64_le(take(8)?)?,
        last_checkin: u64_le(take(8)?)?,
        group_len: u32_le(take(4)?)?,
        _reserved: u32_le(take(4)?)?,
        group: take(64)?.try_into().ok()?,
    })
}

/// Writes the state variable.
pub fn store_state(state: &DeviceState) -> Result<(), RuntimeError> {
    uefi_runtime::set_variable(nv::STATE_VARIABLE, &nv::VENDOR_GUID, &encode(state))
}

/// Writes the delivered-bundle variable (the newest bundle a server sent).
pub fn store_bundle(bundle: &[u8]) -> Result<(), RuntimeError> {
    uefi_runtime::set_variable(nv::BUNDLE_VARIABLE, &nv::VENDOR_GUID, bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_detected() {
        let state = DeviceState {
            trusted_key: Some([3; 32]),
            key_generation: 2,
            retired_key: Some([4; 32]),
            device_id: [5; 16],
            group: Some("staff".into()),
            highest_version: 7,
            trusted_time: 1_800_000_000,
            last_checkin: 1_799_999_000,
        };
        let bytes = encode(&state);
        assert_eq!(decode(&bytes), Ok(Some(state.clone())));
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(decode(&bytes[..100]), Err(StateError::Damaged));
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(decode(&bad), Err(StateError::Damaged));
        let mut bad = bytes;
        bad[120] = 65; // group longer than the field
        assert_eq!(decode(&bad), Err(StateError::Damaged));
        let fresh = DeviceState { device_id: [9; 16], ..DeviceState::default() };
        assert_eq!(decode(&encode(&fresh)), Ok(Some(fresh)));
    }
}
