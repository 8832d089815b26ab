//! Multiprocessor support: starting the application processors the MADT lists
//! (`start.rs`, with the real-mode entry in `trampoline.rs`), what each CPU owns
//! (`percpu.rs`), and running work items on a chosen CPU (`mailbox.rs`, `work.rs`).
//! See docs/smp.md.
pub mod mailbox;
pub mod percpu;
pub mod plan;
pub mod start;
pub mod trampoline;
pub mod work;
