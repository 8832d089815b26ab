//! The switcher owns the screen and the keyboard: it decides which VM has the focus,
//! catches the switching hotkeys before any guest sees them, and composes the focused
//! VM's display under the trust strip. `focus` (with `router`, `keys`, `hotkeys`,
//! `notices`) and `compositor` are pure; `desk` is the glue to the drivers and the
//! VMs, which it sees only through the [`desk_vm::DeskVm`] trait.
#![forbid(unsafe_code)]

pub mod compositor;
pub mod desk;
pub mod desk_vm;
pub mod focus;
pub mod hotkeys;
pub mod keys;
pub mod notices;
pub mod router;
