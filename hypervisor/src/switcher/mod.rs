//! The switcher owns the screen and the keyboard: it decides which VM has the focus,
//! catches the switching hotkeys before any guest sees them, and composes the focused
//! VM's display under the trust strip. This module is pure logic; the drivers feed it.
#![forbid(unsafe_code)]

pub mod compositor;
pub mod desk;
pub mod hotkeys;
pub mod keys;
pub mod router;
