//! Bulkhead's user interface, drawn with embedded-graphics against any
//! `DrawTarget<Color = Rgb888>`: the boot screen, the trust strip, the VM overview,
//! notifications, the safe-mode screen, the passphrase screen and the installer's
//! progress band.
//!
//! Everything here is pure drawing and pure layout, so it runs the same on the GOP
//! framebuffer and in host tests (`tests/golden.rs` compares whole screens with PNGs).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod boot_screen;
mod card;
pub mod framebuffer;
pub mod icons;
pub mod install_progress;
pub mod notification;
pub mod overview;
pub mod palette;
pub mod passphrase;
pub mod safe_mode;
pub mod scale;
pub mod strip;
pub mod text;
pub mod text_buf;
pub mod thumbnail;

pub use framebuffer::{FramebufferError, LinearFb, PixelOrder};
pub use scale::Scale;
pub use text_buf::TextBuf;
