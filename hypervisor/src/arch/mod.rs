//! Architecture-specific code. Only x86-64 today.
pub mod backend;
pub mod exit;
pub mod regs;
pub mod svm;
pub mod vmx;
pub mod x86;
