//! IT's policy: the TOML file that says what a laptop runs, its compiler into the
//! [`bulkhead_policy::Policy`] model, and the key, signing and inspection tools behind
//! `cargo xtask policy`. The format is documented in `docs/policy.md`; a full example
//! is `images/policies/demo.toml`.
//!
//! - [`compile`](compile::compile): TOML to `Policy`, reporting **every** error with
//!   line and column, and warnings (memory close to the laptop's).
//! - [`keys`]: key and endorsement files (`keygen`, `rotate`).
//! - [`tools`]: `sign` and `show`.

pub mod compile;
mod diagnostics;
pub mod fleet;
pub mod keys;
mod network;
mod source;
pub mod tools;
mod vms;

#[cfg(test)]
mod tests;

pub use compile::{CompileOptions, Compiled, compile, compile_file};
pub use diagnostics::{Diagnostic, Diagnostics, Severity};

/// The example policy `cargo xtask image` uses when given none.
pub fn demo_policy_path() -> std::path::PathBuf {
    crate::layout::workspace_root().join("images").join("policies").join("demo.toml")
}
