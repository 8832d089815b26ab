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

/// The screen's size, if there is one.
pub fn size() -> Option<(u32, u32)> {
    SCREEN.lock().as_ref().map(|s| (s.width, s.height))
}

/// Copies a guest framebuffer (32-bit pixels, blue in the lowest byte) to the screen
/// with its top-left corner at row `top`, clipped to the screen. Returns the bytes copied.
pub fn present_guest(src: crate::memory::addr::HostPhysAddr, width: u32, height: u32, stride_px: u32, top: u32) -> u64 {
    let mut guard = SCREEN.lock();
    let Some(screen) = guard.as_mut() else { return 0 };
    let rows = height.min(screen.height.saturating_sub(top));
    let cols = width.min(screen.width) as usize;
    let src_len = (stride_px as usize).saturating_mul(rows.saturating_sub(1) as usize).saturating_add(cols);
    if rows == 0 || cols == 0 {
        return 0;
    }
    // SAFETY: `src` is a guest framebuffer the hypervisor allocated (contiguous, mapped
    // RAM of at least `stride_px * height` pixels); the VM is not running while the
    // hypervisor copies, so nothing writes it meanwhile.
    let pixels = unsafe { core::slice::from_raw_parts(src.raw() as *const u32, src_len) };
    for y in 0..rows as usize {
        let from = y * stride_px as usize;
        let to = (y + top as usize) * screen.stride as usize;
        let (Some(src_row), Some(dst_row)) = (pixels.get(from..from + cols), screen.pixels.get_mut(to..to + cols))
        else {
            break;
        };
        match screen.order {
            PixelOrder::Bgr => dst_row.copy_from_slice(src_row),
            PixelOrder::Rgb => {
                for (d, s) in dst_row.iter_mut().zip(src_row) {
                    *d = (s & 0xff00_ff00) | ((s >> 16) & 0xff) | ((s & 0xff) << 16);
                }
            }
        }
    }
    u64::from(rows) * cols as u64 * 4
}

/// Copies guest rows `rows` of a framebuffer at `src` (32-bit pixels, blue in the lowest
/// byte, `stride_px` pixels a row, at least `len_px` pixels) to the screen as
/// `placement` says. Returns the bytes written to the screen.
pub fn present_rows(
    src: crate::memory::addr::HostPhysAddr,
    stride_px: u32,
    len_px: usize,
    placement: &crate::switcher::compositor::Placement,
    rows: core::ops::Range<u32>,
) -> u64 {
    let mut guard = SCREEN.lock();
    let Some(screen) = guard.as_mut() else { return 0 };
    // SAFETY: `src` is a guest framebuffer the hypervisor allocated (contiguous, mapped
    // RAM of `len_px` pixels); the VM is not running while the hypervisor copies.
    let pixels = unsafe { core::slice::from_raw_parts(src.raw() as *const u32, len_px) };
    let p = placement;
    let swap = screen.order == PixelOrder::Rgb;
    let cols = p.src_w as usize;
    let dst_w = (cols * p.scale as usize).min(screen.width.saturating_sub(p.dst_x) as usize);
    let mut bytes = 0u64;
    let first = rows.start.max(p.src_y);
    let end = rows.end.min(p.src_y.saturating_add(p.src_h));
    for y in first..end {
        let from = y as usize * stride_px as usize + p.src_x as usize;
        let Some(src_row) = pixels.get(from..from + cols) else { break };
        let screen_y = p.dst_y as usize + (y - p.src_y) as usize * p.scale as usize;
        for dy in 0..p.scale as usize {
            let to = (screen_y + dy) * screen.stride as usize + p.dst_x as usize;
            let Some(dst_row) = screen.pixels.get_mut(to..to + dst_w) else { break };
            crate::switcher::compositor::blit_row(src_row, dst_row, p.scale, swap);
            bytes += dst_w as u64 * 4;
        }
    }
    bytes
}

/// Fills screen rows `top..` with black (the border around a centred guest).
pub fn clear_below(top: u32) {
    let mut guard = SCREEN.lock();
    let Some(screen) = guard.as_mut() else { return };
    let start = (top as usize * screen.stride as usize).min(screen.pixels.len());
    screen.pixels[start..].fill(0);
}

/// Runs `f` on a guest framebuffer's pixels (for thumbnails).
pub fn with_guest_pixels<R>(src: crate::memory::addr::HostPhysAddr, len_px: usize, f: impl FnOnce(&[u32]) -> R) -> R {
    // SAFETY: as in `present_rows`: a hypervisor-allocated guest framebuffer of
    // `len_px` pixels, not written while the VM is not running.
    let pixels = unsafe { core::slice::from_raw_parts(src.raw() as *const u32, len_px) };
    f(pixels)
}
