//! The management server: laptops check in through their networking service VM
//! (`POST /v1/checkin`), and get a signed heartbeat and, when IT published a newer one,
//! their new policy bundle.
//!
//! - [`key`]: the server's Ed25519 secret key file.
//! - [`store`]: the state directory: published bundles per group and per device, and
//!   the check-in log.
//! - [`server`]: the HTTP server (`cargo xtask mgmt serve`).
//!
//! The server is trusted only through its key, which IT's signed policy names
//! (`[management] server_key`): the laptop checks every answer's signature and nonce,
//! and checks a bundle against IT's key, so the server (or anyone on the way) cannot
//! make a laptop run a policy IT did not sign.

pub mod cli;
pub mod key;
pub mod server;
pub mod store;

pub use server::{RunningServer, ServerConfig, start};
pub use store::Store;
