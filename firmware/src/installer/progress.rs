//! The install's progress on the screen: `ui::install_progress`'s band, drawn through
//! GOP's Blt while the firmware's text console goes on printing the log below it.
//!
//! OVMF and laptop firmware draw ConOut on the same GOP screen and scroll it upwards.
//! The band sits at the top and covers the console's first rows; the cursor is moved
//! below them before the first draw, so no new line is printed under the band, and the
//! band is redrawn after every step, which paints over whatever scrolled into it.

use alloc::vec;
use alloc::vec::Vec;

use uefi::boot::{self, ScopedProtocol};
use uefi::proto::console::gop::{BltOp, BltPixel, BltRegion, GraphicsOutput};
use ui::install_progress::{self, Phase, Progress};
use ui::{LinearFb, PixelOrder};

use super::disk_io::open;

/// EDK2's graphics console draws 8x19 glyphs, its text area centred on the screen.
const GLYPH_HEIGHT: usize = 19;

/// The band on the screen, or nothing when there is no GOP (a serial-only machine).
/// Nothing is drawn, and the console is left alone, until the first [`Screen::show`].
pub struct Screen {
    opened: bool,
    gop: Option<ScopedProtocol<GraphicsOutput>>,
    width: usize,
    band_height: usize,
    words: Vec<u32>,
    blt: Vec<BltPixel>,
    state: Progress,
}

impl Screen {
    pub fn new() -> Screen {
        Screen {
            opened: false,
            gop: None,
            width: 0,
            band_height: 0,
            words: Vec::new(),
            blt: Vec::new(),
            state: Progress::new(Phase::Writing, 0, 0),
        }
    }

    /// Finds the screen and keeps the console's text below the band from now on.
    fn open(&mut self) {
        self.opened = true;
        let gop = boot::get_handle_for_protocol::<GraphicsOutput>().ok().and_then(|h| open::<GraphicsOutput>(h).ok());
        let Some(gop) = gop else { return };
        let (width, height) = gop.current_mode_info().resolution();
        let size = embedded_graphics::prelude::Size::new(width as u32, height as u32);
        let band_height = install_progress::band_rect(size).size.height as usize;
        move_console_below(height, band_height);
        self.words = vec![0; width * band_height];
        self.blt = vec![BltPixel::new(0, 0, 0); width * band_height];
        self.width = width;
        self.band_height = band_height;
        self.gop = Some(gop);
    }

    /// Shows `phase` with `done` of `total` bytes.
    pub fn show(&mut self, phase: Phase, done: u64, total: u64) {
        if !self.opened {
            self.open();
        }
        self.state = Progress::new(phase, done, total);
        self.draw();
    }

    /// Shows the install as finished, or as failed where it got to (nothing when the
    /// install never got to writing).
    pub fn finish(&mut self, ok: bool) {
        self.state = if ok { Progress::new(Phase::Done, 0, 0) } else { self.state.failed() };
        self.draw();
    }

    /// Draws the band again (after console output that may have scrolled into it).
    pub fn draw(&mut self) {
        let Some(gop) = self.gop.as_mut() else { return };
        let (width, height) = (self.width as u32, self.band_height as u32);
        // The band is laid out for the whole screen; only its rows are rendered here.
        let Ok(mut fb) = LinearFb::new(&mut self.words, width, height, width, PixelOrder::Bgr) else { return };
        let screen_size = gop.current_mode_info().resolution();
        let mut target = Clipped { fb: &mut fb, screen_height: screen_size.1 as u32 };
        let _ = install_progress::draw(&mut target, &self.state);
        for (out, word) in self.blt.iter_mut().zip(&self.words) {
            *out = BltPixel::from(*word);
        }
        let op = BltOp::BufferToVideo {
            buffer: &self.blt,
            src: BltRegion::Full,
            dest: (0, 0),
            dims: (self.width, self.band_height),
        };
        let _ = gop.blt(op);
    }
}

/// The band's rows of a screen `screen_height` pixels tall: the layout sees the whole
/// screen's size, pixels below the band are dropped by the `LinearFb`.
struct Clipped<'a, 'b> {
    fb: &'a mut LinearFb<'b>,
    screen_height: u32,
}

impl embedded_graphics::prelude::OriginDimensions for Clipped<'_, '_> {
    fn size(&self) -> embedded_graphics::prelude::Size {
        embedded_graphics::prelude::Size::new(self.fb.size().width, self.screen_height)
    }
}

impl embedded_graphics::prelude::DrawTarget for Clipped<'_, '_> {
    type Color = embedded_graphics::pixelcolor::Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = embedded_graphics::Pixel<Self::Color>>,
    {
        self.fb.draw_iter(pixels)
    }

    fn fill_solid(
        &mut self,
        area: &embedded_graphics::primitives::Rectangle,
        color: Self::Color,
    ) -> Result<(), Self::Error> {
        self.fb.fill_solid(area, color)
    }
}

/// Moves the console's cursor below the rows the band covers, with empty lines, so the
/// next lines are printed where they can be read.
fn move_console_below(screen_height: usize, band_height: usize) {
    uefi::system::with_stdout(|stdout| {
        let Ok(Some(mode)) = stdout.current_mode() else { return };
        let text_top = screen_height.saturating_sub(mode.rows() * GLYPH_HEIGHT) / 2;
        let covered = band_height.saturating_sub(text_top).div_ceil(GLYPH_HEIGHT);
        let (_, row) = stdout.cursor_position();
        for _ in row..covered.min(mode.rows().saturating_sub(1)) {
            let _ = core::fmt::Write::write_str(stdout, "\n");
        }
    });
}
