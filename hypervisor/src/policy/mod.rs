//! The running policy and check-ins with the management server.
//!
//! - [`runtime`]: the running policy, the laptop's [`DeviceState`], the outstanding
//!   check-in nonce, the last check-in and a pending update; what `POLICY_CHECKIN` and
//!   `POLICY_ANSWER` do with them (pure logic behind one lock).
//! - [`nonce`]: fresh check-in nonces (RDRAND mixed with the TSC).
//! - [`stick_module`]: installs a policy from a boot module until the boot path does.
//!
//! The service VM only carries requests and answers: an answer counts only when the
//! server key IT's policy names signed it for this laptop and the latest nonce, and a
//! bundle in it only when [`bulkhead_policy::device::verify`] accepts it.
//!
//! [`DeviceState`]: bulkhead_policy::DeviceState

pub mod nonce;
pub mod runtime;
pub mod stick_module;
