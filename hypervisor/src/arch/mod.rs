//! Architecture-specific code. Only x86-64 today.
pub mod svm;
pub mod x86;
