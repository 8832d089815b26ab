//! Direct boot of an unmodified Linux bzImage through the 64-bit boot protocol
//! (Documentation/arch/x86/boot.rst). Everything here is pure: it parses the image,
//! fills in the zero page and plans guest memory as a list of writes plus the entry
//! register state. The VM code applies that plan through the checked guest-memory
//! accessor; nothing here touches memory or hardware.
#![forbid(unsafe_code)]

mod bootparams;
mod bzimage;
mod error;
mod layout;
mod le;
#[cfg(test)]
mod tests;

pub use bootparams::{
    BootE820Entry, BootParams, BootParamsInput, E820Type, Framebuffer, PixelLayout, ScreenInfo, build_boot_params,
    normalise_e820,
};
pub use bzimage::{BzImage, SetupHeader};
pub use error::LinuxBootError;
pub use layout::{
    BootPlan, BootRequest, EntryState, LinuxLayout, LoadSegment, MemoryWrite, build_boot_plan, identity_page_tables,
    plan_layout,
};
