//! Architecture-specific code. Only x86-64 today.
pub mod x86;
