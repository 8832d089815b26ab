//! The band the installer draws across the top of the screen while it writes a disk:
//! what it is doing, how many bytes of how many, a percentage and a bar.
//!
//! The band sits at the top because the firmware's text console scrolls upwards: lines
//! scrolled into the band are painted over by the next redraw, and the band's own pixels
//! scrolled upwards leave the screen or land inside the band again. The geometry and the
//! colours are public so that an integration test can find the bar in a screendump:
//! [`bar_rect`] holds [`BAR_FILL`] up to [`filled_width`] and [`BAR_TRACK`] after it.

use core::fmt::Write;

use embedded_graphics::{
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Size},
    primitives::Rectangle,
    text::{Alignment, Baseline},
};

use crate::{
    Scale,
    boot_screen::{BOOT_ACCENT, BOOT_BACKGROUND, BOOT_MUTED_TEXT, BOOT_TEXT},
    text::{self, Anchor, TextRole},
    text_buf::TextBuf,
};

/// Behind the band: the boot screen's background.
pub const BAND_BACKGROUND: Rgb888 = BOOT_BACKGROUND;
/// The done part of the bar (the boot screen's accent).
pub const BAR_FILL: Rgb888 = BOOT_ACCENT;
/// The part still to do.
pub const BAR_TRACK: Rgb888 = Rgb888::new(0x33, 0x41, 0x55);
/// The bar of an install that stopped with an error.
pub const BAR_FAILED: Rgb888 = Rgb888::new(0xDC, 0x26, 0x26);

/// Band geometry in base pixels (multiplied by the screen's [`Scale`]).
const BAND_HEIGHT: u32 = 76;
const MARGIN: u32 = 24;
const TEXT_TOP: u32 = 12;
const BAR_TOP: u32 = 44;
const BAR_HEIGHT: u32 = 16;

/// What the installer is doing, in the order it does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing the ESP's FAT and files.
    Writing,
    /// Reading everything back and comparing it with the stick.
    Verifying,
    /// Writing and checking the partition table.
    PartitionTable,
    /// Adding the firmware's boot entry.
    BootEntry,
    /// Finished; the disk boots Bulkhead.
    Done,
    /// Stopped with an error; the bar keeps where it got to.
    Failed,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Writing => "Writing the files",
            Phase::Verifying => "Verifying what was written",
            Phase::PartitionTable => "Writing the partition table",
            Phase::BootEntry => "Adding the boot entry",
            Phase::Done => "Done: remove the stick",
            Phase::Failed => "Failed: see the message below",
        }
    }

    /// The share of the whole install (in 1/1000) done when this phase starts and ends:
    /// writing and reading back take nearly all the time.
    fn span(self) -> (u32, u32) {
        match self {
            Phase::Writing => (0, 550),
            Phase::Verifying => (550, 950),
            Phase::PartitionTable => (950, 980),
            Phase::BootEntry => (980, 1000),
            Phase::Done => (1000, 1000),
            Phase::Failed => (0, 0),
        }
    }
}

/// The state the band shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    /// Bytes of the current phase done, of `total` (both 0 for phases without bytes).
    pub done: u64,
    pub total: u64,
    /// The whole install's progress when it failed (only used for [`Phase::Failed`]).
    pub failed_at: u32,
}

impl Progress {
    pub const fn new(phase: Phase, done: u64, total: u64) -> Progress {
        Progress { phase, done, total, failed_at: 0 }
    }

    /// The whole install's progress in 1/1000.
    pub fn permille(&self) -> u32 {
        if self.phase == Phase::Failed {
            return self.failed_at.min(1000);
        }
        let (start, end) = self.phase.span();
        let part = match self.total {
            0 => 0,
            total => (u128::from(self.done.min(total)) * u128::from(end - start) / u128::from(total)) as u32,
        };
        start + part
    }

    /// This state turned into a failure that keeps the bar where it is.
    pub fn failed(&self) -> Progress {
        Progress { phase: Phase::Failed, done: self.done, total: self.total, failed_at: self.permille() }
    }
}

/// The band across the top of a screen of `size`.
pub fn band_rect(size: Size) -> Rectangle {
    let scale = Scale::for_screen(size);
    Rectangle::new(Point::zero(), Size::new(size.width, scale.px(BAND_HEIGHT).min(size.height)))
}

/// The bar (fill and track) inside the band.
pub fn bar_rect(size: Size) -> Rectangle {
    let scale = Scale::for_screen(size);
    let margin = scale.px(MARGIN);
    Rectangle::new(
        Point::new(margin as i32, scale.px(BAR_TOP) as i32),
        Size::new(size.width.saturating_sub(2 * margin), scale.px(BAR_HEIGHT)),
    )
}

/// How many pixels of a bar `width` wide are filled at `permille`.
pub fn filled_width(width: u32, permille: u32) -> u32 {
    (u64::from(width) * u64::from(permille.min(1000)) / 1000) as u32
}

/// Draws the band over the top of `target` (nothing else is touched).
pub fn draw<D>(target: &mut D, progress: &Progress) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let size = target.bounding_box().size;
    let scale = Scale::for_screen(size);
    target.fill_solid(&band_rect(size), BAND_BACKGROUND)?;

    let bar = bar_rect(size);
    let permille = progress.permille();
    let filled = filled_width(bar.size.width, permille);
    let fill = if progress.phase == Phase::Failed { BAR_FAILED } else { BAR_FILL };
    target.fill_solid(&Rectangle::new(bar.top_left, Size::new(filled, bar.size.height)), fill)?;
    let rest = Rectangle::new(
        bar.top_left + Point::new(filled as i32, 0),
        Size::new(bar.size.width - filled, bar.size.height),
    );
    target.fill_solid(&rest, BAR_TRACK)?;

    let left = bar.top_left.x;
    let right = left + bar.size.width as i32;
    let top = scale.px(TEXT_TOP) as i32;
    let mut figures = TextBuf::<64>::new();
    if progress.total > 0 && matches!(progress.phase, Phase::Writing | Phase::Verifying) {
        let _ = write!(figures, "{} of {} MiB   ", mib(progress.done), mib(progress.total));
    }
    let _ = write!(figures, "{} %", permille / 10);
    let muted = text::style(TextRole::Body, scale, BOOT_MUTED_TEXT);
    text::draw(target, figures.as_str(), Point::new(right, top), Anchor::new(Alignment::Right, Baseline::Top), &muted)?;

    let strong = text::style(TextRole::Strong, scale, BOOT_TEXT);
    let mut title = TextBuf::<80>::new();
    let _ = write!(title, "Installing Bulkhead: {}", progress.phase.label());
    let room = bar.size.width.saturating_sub(text::width(figures.as_str(), &muted) + scale.px(MARGIN));
    text::draw_fitted(target, title.as_str(), Point::new(left, top), Baseline::Top, room, &strong)?;
    Ok(())
}

/// Whole MiB, rounded up so that a started file never shows as 0.
fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinearFb, PixelOrder};
    use embedded_graphics::prelude::PointsIter;

    #[test]
    fn progress_runs_through_the_phases_in_order() {
        let total = 300 << 20;
        assert_eq!(Progress::new(Phase::Writing, 0, total).permille(), 0);
        assert_eq!(Progress::new(Phase::Writing, total / 2, total).permille(), 275);
        assert_eq!(Progress::new(Phase::Writing, total, total).permille(), 550);
        assert_eq!(Progress::new(Phase::Verifying, 0, total).permille(), 550);
        assert_eq!(Progress::new(Phase::Verifying, total, total).permille(), 950);
        assert_eq!(Progress::new(Phase::PartitionTable, 0, 0).permille(), 950);
        assert_eq!(Progress::new(Phase::BootEntry, 0, 0).permille(), 980);
        assert_eq!(Progress::new(Phase::Done, 0, 0).permille(), 1000);
        // More done than the total (a miscount) never runs past the phase.
        assert_eq!(Progress::new(Phase::Writing, 2 * total, total).permille(), 550);
        assert_eq!(Progress::new(Phase::Verifying, u64::MAX, u64::MAX).permille(), 950);
        let failed = Progress::new(Phase::Verifying, total / 4, total).failed();
        assert_eq!((failed.phase, failed.permille()), (Phase::Failed, 650));
    }

    #[test]
    fn the_bar_is_filled_to_the_progress_and_only_the_band_is_drawn() {
        for (width, height) in [(800, 600), (1280, 800), (1920, 1080), (2560, 1600)] {
            let size = Size::new(width, height);
            let mut pixels = vec![0x00AB_CDEFu32; (width * height) as usize];
            let mut fb = LinearFb::new(&mut pixels, width, height, width, PixelOrder::Bgr).unwrap();
            let progress = Progress::new(Phase::Writing, 3 << 20, 4 << 20);
            draw(&mut fb, &progress).unwrap();
            let band = band_rect(size);
            let bar = bar_rect(size);
            assert_eq!(band.intersection(&bar), bar, "{size:?}");
            let filled = filled_width(bar.size.width, progress.permille());
            let row = bar.top_left.y + bar.size.height as i32 / 2;
            for x in bar.top_left.x..bar.top_left.x + bar.size.width as i32 {
                let want = if x < bar.top_left.x + filled as i32 { BAR_FILL } else { BAR_TRACK };
                assert_eq!(fb.pixel(Point::new(x, row)), Some(want), "{size:?} x={x}");
            }
            let text = band.points().filter(|&p| fb.pixel(p) == Some(BOOT_TEXT)).count();
            assert!(text > 200, "{size:?}: {text} title pixels");
            let below = Rectangle::new(Point::new(0, band.size.height as i32), size);
            let untouched = PixelOrder::Bgr.decode(0x00AB_CDEF);
            assert!(below.points().take(width as usize * 50).all(|p| fb.pixel(p) == Some(untouched)), "{size:?}");
        }
    }

    #[test]
    fn a_failed_install_keeps_its_bar_in_red() {
        let (width, height) = (1280, 800);
        let mut pixels = vec![0u32; (width * height) as usize];
        let mut fb = LinearFb::new(&mut pixels, width, height, width, PixelOrder::Rgb).unwrap();
        let progress = Progress::new(Phase::Verifying, 1, 2).failed();
        draw(&mut fb, &progress).unwrap();
        let bar = bar_rect(Size::new(width, height));
        let filled = bar.points().filter(|&p| fb.pixel(p) == Some(BAR_FAILED)).count() as u32;
        assert_eq!(filled, filled_width(bar.size.width, 750) * bar.size.height);
    }
}
