//! The physical screen: the GOP framebuffer the loader set up, wrapped as a `ui`
//! drawing target. Only this module turns the framebuffer's physical address into a
//! slice.

use bulkhead_abi::{BootInfo, PixelFormat};
use spin::Mutex;
use ui::{LinearFb, PixelOrder};

#[derive(Debug)]
pub struct Screen {
    pixels: &'static mut [u32],
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub order: PixelOrder,
}

static SCREEN: Mutex<Option<Screen>> = Mutex::new(None);

/// Takes ownership of the framebuffer described by the loader, if there is one.
pub fn init(boot_info: &BootInfo) -> bool {
    if boot_info.framebuffer_present == 0 {
        return false;
    }
    let fb = boot_info.framebuffer;
    let order = match fb.format {
        PixelFormat::Rgb => PixelOrder::Rgb,
        PixelFormat::Bgr => PixelOrder::Bgr,
    };
    let needed = LinearFb::required_len(fb.width, fb.height, fb.stride);
    if fb.stride < fb.width || needed == 0 || (needed as u64).saturating_mul(4) > fb.size {
        log::warn!(target: "screen", "framebuffer {}x{} stride {} does not fit its {} bytes; no screen", fb.width, fb.height, fb.stride, fb.size);
        return false;
    }
    // SAFETY: the loader reported this framebuffer from GOP; it is identity mapped
    // (memory::paging maps it), excluded from the frame allocator, and owned solely by
    // this module from now on. `needed` pixels fit in its size.
    let pixels = unsafe { core::slice::from_raw_parts_mut(fb.base as *mut u32, needed) };
    *SCREEN.lock() = Some(Screen { pixels, width: fb.width, height: fb.height, stride: fb.stride, order });
    true
}

/// Runs `draw` with the screen as a drawing target; does nothing without a screen.
pub fn with_target<R>(draw: impl FnOnce(&mut LinearFb<'_>) -> R) -> Option<R> {
    let mut guard = SCREEN.lock();
    let screen = guard.as_mut()?;
    let mut fb = LinearFb::new(screen.pixels, screen.width, screen.height, screen.stride, screen.order).ok()?;
    Some(draw(&mut fb))
}
