//! Multiprocessor support: starting the application processors the MADT lists
//! (`start.rs`, with the real-mode entry in `trampoline.rs`), what each CPU owns
//! (`percpu.rs`), running work items on a chosen CPU (`mailbox.rs`, `work.rs`) and
//! guest runs on the APs (`guest_runs.rs`).
//! See docs/smp.md.
pub mod guest_runs;
pub mod mailbox;
pub mod percpu;
pub mod plan;
pub mod start;
pub mod trampoline;
pub mod work;
