//! What to copy from the focused VM's framebuffer to the screen, and where: placement
//! (centred, or scaled by a whole factor when the guest is a half or a third of the
//! area), the rows written since the last frame (from the nested page tables' Dirty
//! bits, one bit per 4 KiB page), and the frame-rate cap. Pure; the screen driver does
//! the copying (`platform::screen::present_rows` with its `Placement` and `blit_row`).

use core::num::NonZeroU64;
use core::ops::Range;

use heapless::Vec;

pub use crate::host::screen::Placement;
use crate::memory::addr::PAGE_SIZE;

/// Largest whole-number enlargement (a 640x400 guest on a 2560x1600 screen).
pub const MAX_SCALE: u32 = 4;

/// Places a `guest` (width, height) framebuffer in the `area` (width, height) whose top
/// edge is screen row `top`: the largest whole scale that fits (1 when it does not
/// fit), centred; a guest larger than the area shows its centre.
pub fn place(guest: (u32, u32), area: (u32, u32), top: u32) -> Placement {
    let (gw, gh) = (guest.0.max(1), guest.1.max(1));
    // gw, gh and scale are at least 1, so the divisions always succeed.
    let scale = area.0.checked_div(gw).unwrap_or(0).min(area.1.checked_div(gh).unwrap_or(0)).clamp(1, MAX_SCALE);
    let fit = |g: u32, a: u32| {
        // shown <= g and shown * scale <= a: neither clamps.
        let shown = g.min(a.checked_div(scale).unwrap_or(a));
        let src = g.saturating_sub(shown) / 2;
        let dst = a.saturating_sub(shown.saturating_mul(scale)) / 2;
        (src, shown, dst)
    };
    let (src_x, src_w, dst_x) = fit(gw, area.0);
    let (src_y, src_h, dst_y) = fit(gh, area.1);
    Placement { scale, src_x, src_y, src_w, src_h, dst_x, dst_y: top.saturating_add(dst_y) }
}

/// At most this many separate row spans per frame; more are merged into the last one.
pub const MAX_SPANS: usize = 32;

pub type Spans = Vec<Range<u32>, MAX_SPANS>;

/// The guest rows (of a framebuffer `height` rows of `stride_bytes`) touched by the
/// dirty 4 KiB pages in `bitmap` (bit `i` = page `i` from the framebuffer's start).
/// Adjacent and overlapping spans are merged.
pub fn dirty_rows(bitmap: &[u64], stride_bytes: u32, height: u32) -> Spans {
    let mut spans = Spans::new();
    let Some(stride) = NonZeroU64::new(u64::from(stride_bytes)) else {
        return spans;
    };
    for (w, &word) in bitmap.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            // One bit per page of a framebuffer in memory: far from wrapping.
            let page = (w as u64).wrapping_mul(64).wrapping_add(u64::from(bits.trailing_zeros()));
            // Clears the lowest set bit (bits is not 0).
            bits &= bits.wrapping_sub(1);
            let start = page.saturating_mul(PAGE_SIZE);
            let first = start / stride;
            let last = start.saturating_add(PAGE_SIZE - 1) / stride;
            if first >= u64::from(height) {
                continue;
            }
            let rows = first as u32..last.saturating_add(1).min(u64::from(height)) as u32;
            push_span(&mut spans, rows);
        }
    }
    spans
}

fn push_span(spans: &mut Spans, rows: Range<u32>) {
    if let Some(last) = spans.last_mut()
        && rows.start <= last.end
    {
        last.end = last.end.max(rows.end);
        return;
    }
    if let Err(rows) = spans.push(rows) {
        // Out of room: one span from the last one to here (copies a little more).
        if let Some(last) = spans.last_mut() {
            last.end = last.end.max(rows.end);
        }
    }
}

/// Rows in `spans`.
pub fn rows_in(spans: &[Range<u32>]) -> u64 {
    spans.iter().map(|r| u64::from(r.end.saturating_sub(r.start))).sum()
}

/// Caps the frame rate: a frame is due at most once per period, and a late frame does
/// not make the next one come sooner.
#[derive(Debug, Clone, Copy)]
pub struct FrameClock {
    period: u64,
    next: u64,
}

impl FrameClock {
    /// `fps` frames per second with a clock of `ticks_per_s`.
    pub fn new(ticks_per_s: u64, fps: u64) -> Self {
        FrameClock { period: ticks_per_s.checked_div(fps).unwrap_or(ticks_per_s), next: 0 }
    }

    /// Whether a frame is due at `now`; if so, the next one is a period later.
    pub fn due(&mut self, now: u64) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now.saturating_add(self.period);
        true
    }

    /// Makes a frame due at once (after a switch).
    pub fn hurry(&mut self) {
        self.next = 0;
    }
}

/// Work done for the screen, for the log and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames in which something was copied.
    pub frames: u64,
    /// Frames that found nothing to copy.
    pub idle_frames: u64,
    pub bytes_total: u64,
    /// Bytes copied by the last frame that copied anything.
    pub bytes_last: u64,
}

impl FrameStats {
    pub fn record(&mut self, bytes: u64) {
        if bytes == 0 {
            self.idle_frames = self.idle_frames.wrapping_add(1);
        } else {
            self.frames = self.frames.wrapping_add(1);
            self.bytes_total = self.bytes_total.wrapping_add(bytes);
            self.bytes_last = bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_guest_fills_the_area_under_the_strip() {
        let p = place((1280, 772), (1280, 772), 28);
        assert_eq!(p, Placement { scale: 1, src_x: 0, src_y: 0, src_w: 1280, src_h: 772, dst_x: 0, dst_y: 28 });
        assert!(p.covers((1280, 772), 28));
    }

    #[test]
    fn smaller_guest_is_centred_and_half_size_guest_doubled() {
        let p = place((1024, 768), (1920, 1052), 28);
        assert_eq!((p.scale, p.dst_x, p.dst_y, p.src_w, p.src_h), (1, 448, 28 + 142, 1024, 768));
        assert!(!p.covers((1920, 1052), 28));
        let p = place((960, 526), (1920, 1052), 28);
        assert_eq!((p.scale, p.dst_x, p.dst_y), (2, 0, 28));
        assert!(p.covers((1920, 1052), 28));
        // A third in one direction only: the smaller factor wins, centred in the other.
        let p = place((640, 500), (1920, 1052), 0);
        assert_eq!((p.scale, p.dst_x, p.dst_y), (2, 320, 26));
        assert_eq!(place((100, 100), (4000, 4000), 0).scale, MAX_SCALE);
    }

    #[test]
    fn larger_guest_shows_its_centre() {
        let p = place((1920, 1080), (1280, 772), 28);
        assert_eq!((p.scale, p.src_x, p.src_y, p.src_w, p.src_h, p.dst_x, p.dst_y), (1, 320, 154, 1280, 772, 0, 28));
        assert_eq!(p.screen_rows(0..154), 28..28, "rows above the shown part");
        assert_eq!(p.screen_rows(150..160), 28..34);
        assert_eq!(place((0, 0), (10, 10), 0).src_w, 1, "no division by zero");
    }

    #[test]
    fn scaled_rows_map_to_screen_rows() {
        let p = place((960, 526), (1920, 1052), 28);
        assert_eq!(p.screen_rows(10..12), 48..52);
        assert_eq!(p.screen_rows(520..600), 1068..1080);
    }

    #[test]
    fn dirty_pages_become_row_spans() {
        // 1280 px * 4 bytes = 5120 bytes a row: page 0 is row 0, page 1 rows 0..=1.
        let stride = 5120;
        let mut bits = [0u64; 16];
        assert!(dirty_rows(&bits, stride, 772).is_empty(), "idle screen: nothing to copy");
        bits[0] = 0b11; // pages 0, 1 -> rows 0..2
        bits[1] = 1 << 4; // page 68 -> bytes 278528..282623 -> rows 54..=55
        let spans = dirty_rows(&bits, stride, 772);
        assert_eq!(spans.as_slice(), &[0..2, 54..56]);
        assert_eq!(rows_in(&spans), 4);
        // Pages past the last row (the framebuffer is rounded up to 2 MiB) are ignored.
        let mut tail = [0u64; 16];
        tail[15] = 1 << 63;
        assert!(dirty_rows(&tail, stride, 772).is_empty());
        // Everything dirty: one span of all rows.
        let all = [u64::MAX; 16];
        let spans = dirty_rows(&all, stride, 772);
        assert_eq!((spans.len(), spans[0].clone()), (1, 0..772));
    }

    #[test]
    fn too_many_spans_merge_into_the_last() {
        let mut bits = [0u64; 16];
        for page in (0..1000).step_by(4) {
            bits[page / 64] |= 1 << (page % 64);
        }
        let spans = dirty_rows(&bits, 5120, 772);
        assert_eq!(spans.len(), MAX_SPANS);
        assert_eq!(spans.last().unwrap().end, 772);
        assert_eq!(dirty_rows(&bits, 0, 772).len(), 0);
    }

    #[test]
    fn frame_clock_caps_the_rate() {
        // 1000 ticks a second, 30 fps: one frame per 33 ticks at most.
        let mut clock = FrameClock::new(1000, 30);
        let frames = (0..1000u64).filter(|&t| clock.due(t)).count();
        assert_eq!(frames, 31);
        // Late frames do not cause a burst.
        let mut clock = FrameClock::new(1000, 30);
        assert!(clock.due(5000));
        assert!(!clock.due(5001));
        assert!(clock.due(5033));
        clock.hurry();
        assert!(clock.due(5034));
    }

    #[test]
    fn stats_count_idle_frames_apart() {
        let mut s = FrameStats::default();
        s.record(0);
        s.record(4096);
        s.record(0);
        assert_eq!(s, FrameStats { frames: 1, idle_frames: 2, bytes_total: 4096, bytes_last: 4096 });
    }
}
