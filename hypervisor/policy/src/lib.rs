//! Bulkhead's signed policy: what a laptop runs, in one bundle signed by IT's key.
//!
//! - [`model`]: the policy itself (VMs, links and network rules, key map, management).
//! - [`bundle`]: the canonical binary form (postcard) with its Ed25519 signature and
//!   the endorsement chain of a rotated key.
//! - [`device`]: what the laptop remembers (enrolled key, device id, highest version,
//!   last trusted time) and the rules that accept or refuse a bundle.
//! - [`syntax`]: the text-level rules of its values (sizes, device selectors, allow-list
//!   entries, key combinations), shared by the host compiler and the hypervisor.
//! - [`heartbeat`]: the management server's signed answer to a check-in, which proves
//!   the laptop talked to its server recently (the offline lease) without trusting the
//!   network or the service VM that carried it.
//!
//! The device only verifies; signing lives behind the `sign` feature for the host tool.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bundle;
pub mod device;
pub mod heartbeat;
pub mod lease;
pub mod model;
pub mod syntax;

/// The boot module that carries the signed policy bundle.
pub const POLICY_MODULE: &str = "policy";

pub use bundle::{Bundle, DEMO_PUBLIC_KEY, Endorsement, PublicKey};
pub use device::{Accepted, DeviceId, DeviceState, Refusal};
pub use model::Policy;
