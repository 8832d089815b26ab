//! Device passthrough on the PCI side: the filtered configuration space an assigned
//! device shows its VM, reset, and which devices can be assigned at all.
#![forbid(unsafe_code)]
