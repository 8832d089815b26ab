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
        // A row whose offsets do not fit a usize is past the end of either buffer.
        let Some(from) = y.checked_mul(stride_px as usize) else { break };
        let Some(to) = y.checked_add(top as usize).and_then(|row| row.checked_mul(screen.stride as usize)) else {
            break;
        };
        let (Some(from_end), Some(to_end)) = (from.checked_add(cols), to.checked_add(cols)) else { break };
        let (Some(src_row), Some(dst_row)) = (pixels.get(from..from_end), screen.pixels.get_mut(to..to_end)) else {
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
    u64::from(rows).saturating_mul(cols as u64).saturating_mul(4)
}

/// Copies guest rows `rows` of a framebuffer at `src` (32-bit pixels, blue in the lowest
/// byte, `stride_px` pixels a row, at least `len_px` pixels) to the screen as
/// `placement` says. Returns the bytes written to the screen.
pub fn present_rows(
    src: crate::memory::addr::HostPhysAddr,
    stride_px: u32,
    len_px: usize,
    placement: &Placement,
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
    let dst_w = cols.saturating_mul(p.scale as usize).min(screen.width.saturating_sub(p.dst_x) as usize);
    let mut bytes = 0u64;
    let first = rows.start.max(p.src_y);
    let end = rows.end.min(p.src_y.saturating_add(p.src_h));
    for y in first..end {
        // Offsets that do not fit a usize are past the end of either buffer.
        let from = (y as usize).checked_mul(stride_px as usize).and_then(|o| o.checked_add(p.src_x as usize));
        let Some(src_row) = from.and_then(|from| pixels.get(from..from.checked_add(cols)?)) else { break };
        // `y >= first >= p.src_y`.
        let guest_row = y.saturating_sub(p.src_y) as usize;
        let Some(screen_y) = guest_row.checked_mul(p.scale as usize).and_then(|o| o.checked_add(p.dst_y as usize))
        else {
            break;
        };
        for dy in 0..p.scale as usize {
            let to = screen_y
                .checked_add(dy)
                .and_then(|row| row.checked_mul(screen.stride as usize))
                .and_then(|o| o.checked_add(p.dst_x as usize));
            let Some(dst_row) = to.and_then(|to| screen.pixels.get_mut(to..to.checked_add(dst_w)?)) else { break };
            blit_row(src_row, dst_row, p.scale, swap);
            bytes = bytes.saturating_add((dst_w as u64).saturating_mul(4));
        }
    }
    bytes
}

/// Fills screen rows `top..` with black (the border around a centred guest).
pub fn clear_below(top: u32) {
    let mut guard = SCREEN.lock();
    let Some(screen) = guard.as_mut() else { return };
    let start = (top as usize).saturating_mul(screen.stride as usize).min(screen.pixels.len());
    if let Some(rest) = screen.pixels.get_mut(start..) {
        rest.fill(0);
    }
}

/// Runs `f` on a guest framebuffer's pixels (for thumbnails).
pub fn with_guest_pixels<R>(src: crate::memory::addr::HostPhysAddr, len_px: usize, f: impl FnOnce(&[u32]) -> R) -> R {
    // SAFETY: as in `present_rows`: a hypervisor-allocated guest framebuffer of
    // `len_px` pixels, not written while the VM is not running.
    let pixels = unsafe { core::slice::from_raw_parts(src.raw() as *const u32, len_px) };
    f(pixels)
}

/// Where a guest framebuffer's pixels land on the screen (the switcher's compositor
/// works it out; [`present_rows`] follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Each guest pixel becomes `scale` x `scale` screen pixels.
    pub scale: u32,
    /// The part of the guest framebuffer shown (all of it unless it is larger than the
    /// area, in which case its centre).
    pub src_x: u32,
    pub src_y: u32,
    pub src_w: u32,
    pub src_h: u32,
    /// Screen position of the shown part's top-left pixel.
    pub dst_x: u32,
    pub dst_y: u32,
}

impl Placement {
    /// The screen rows guest rows `rows` cover (empty if none of them is shown).
    pub fn screen_rows(&self, rows: core::ops::Range<u32>) -> core::ops::Range<u32> {
        let start = rows.start.max(self.src_y);
        let end = rows.end.min(self.src_y.saturating_add(self.src_h));
        if start >= end {
            return self.dst_y..self.dst_y;
        }
        // `start` and `end` are at least `src_y` here.
        let to_screen = |y: u32| self.dst_y.saturating_add(y.saturating_sub(self.src_y).saturating_mul(self.scale));
        to_screen(start)..to_screen(end)
    }

    /// Whether the guest covers the whole area (no border to clear).
    pub fn covers(&self, area: (u32, u32), top: u32) -> bool {
        self.dst_x == 0
            && self.dst_y == top
            && self.src_w.saturating_mul(self.scale) == area.0
            && self.src_h.saturating_mul(self.scale) == area.1
    }
}

/// Copies one guest row to one screen row, `scale` screen pixels per guest pixel;
/// `swap_rb` turns the guest's blue-in-the-low-byte pixels into red-in-the-low-byte.
pub fn blit_row(src: &[u32], dst: &mut [u32], scale: u32, swap_rb: bool) {
    let convert = |p: u32| if swap_rb { (p & 0xff00_ff00) | ((p >> 16) & 0xff) | ((p & 0xff) << 16) } else { p };
    match scale {
        0 | 1 if !swap_rb => {
            let n = src.len().min(dst.len());
            if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
                d.copy_from_slice(s);
            }
        }
        0 | 1 => dst.iter_mut().zip(src).for_each(|(d, s)| *d = convert(*s)),
        _ => {
            for (chunk, s) in dst.chunks_mut(scale as usize).zip(src) {
                chunk.fill(convert(*s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_copied_scaled_and_converted() {
        let src = [0x00aa_bbcc, 0x0011_2233];
        let mut dst = [0u32; 4];
        blit_row(&src, &mut dst, 2, false);
        assert_eq!(dst, [0x00aa_bbcc, 0x00aa_bbcc, 0x0011_2233, 0x0011_2233]);
        blit_row(&src, &mut dst, 1, true);
        assert_eq!(&dst[..2], &[0x00cc_bbaa, 0x0033_2211]);
        let mut short = [0u32; 1];
        blit_row(&src, &mut short, 1, false);
        assert_eq!(short, [0x00aa_bbcc]);
    }
}
