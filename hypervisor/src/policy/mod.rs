//! The signed policy on the laptop. The rules that accept or refuse a bundle are in
//! the `bulkhead-policy` crate (pure, host-tested); this module feeds them the
//! laptop's state and carries out what they decide:
//!
//! - [`nv`]: the state kept in UEFI variables, read by the loader and written back
//!   through the runtime services.
//! - [`at_boot`]: which bundle runs (the boot medium's or a delivered one), decided and
//!   persisted before any VM starts.
//! - [`runtime`]: the running policy, the laptop's [`DeviceState`], the outstanding
//!   check-in nonce, the last check-in and a pending update; what `POLICY_CHECKIN` and
//!   `POLICY_ANSWER` do with them (pure logic behind one lock).
//! - [`nonce`]: fresh check-in nonces (RDRAND mixed with the TSC).
//!
//! The service VM only carries requests and answers: an answer counts only when the
//! server key IT's policy names signed it for this laptop and the latest nonce, and a
//! bundle in it only when [`bulkhead_policy::device::verify`] accepts it.
//!
//! [`DeviceState`]: bulkhead_policy::DeviceState

pub mod at_boot;
pub mod nonce;
pub mod nv;
pub mod runtime;
