//! Bulkhead's user interface, drawn with embedded-graphics against any `DrawTarget`.
#![cfg_attr(not(test), no_std)]
