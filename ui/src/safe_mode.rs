//! The safe-mode screen: shown instead of starting any VM when the policy is missing,
//! badly signed, older than the one installed, or otherwise unusable. It says what
//! went wrong and what to do, in words an employee can read out to IT.

use embedded_graphics::{
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Size},
    primitives::Rectangle,
};

use crate::{
    Scale, palette,
    text::{self, Anchor, TextRole},
};

/// Behind the text.
pub const SAFE_MODE_BACKGROUND: Rgb888 = palette::SURFACE;
/// The header bar across the top (red).
pub const SAFE_MODE_HEADER: Rgb888 = Rgb888::new(0xB7, 0x1C, 0x1C);
pub const SAFE_MODE_TEXT: Rgb888 = palette::TEXT;
pub const SAFE_MODE_MUTED_TEXT: Rgb888 = palette::TEXT_MUTED;

/// What the screen says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafeMode<'a> {
    /// e.g. "Safe mode: the policy could not be verified".
    pub title: &'a str,
    /// What went wrong, in one or more sentences; wrapped to the screen.
    pub reason: &'a str,
    /// What the user should do next.
    pub hint: &'a str,
}

/// Sizes in base pixels.
const HEADER_HEIGHT: u32 = 88;
const MAX_TEXT_WIDTH: u32 = 880;
const SIDE_MARGIN: u32 = 48;
const SECTION_GAP: u32 = 32;
const HEADING_GAP: u32 = 8;

/// The red bar with the title, across the top of a screen of `size`.
pub fn header_rect(size: Size) -> Rectangle {
    let scale = Scale::for_screen(size);
    Rectangle::new(Point::zero(), Size::new(size.width, scale.px(HEADER_HEIGHT).min(size.height)))
}

/// Draws the whole safe-mode screen over `target`.
pub fn draw<D>(target: &mut D, screen: &SafeMode<'_>) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let size = target.bounding_box().size;
    let scale = Scale::for_screen(size);
    target.clear(SAFE_MODE_BACKGROUND)?;
    let header = header_rect(size);
    target.fill_solid(&header, SAFE_MODE_HEADER)?;

    // One text column, centred, as wide as reads comfortably.
    let column_width = scale.px(MAX_TEXT_WIDTH).min(size.width.saturating_sub(2 * scale.px(SIDE_MARGIN)));
    let left = (size.width.saturating_sub(column_width) / 2) as i32;

    let title = text::style(TextRole::Heading, scale, palette::contrasting_text(SAFE_MODE_HEADER));
    let header_middle = (header.size.height / 2) as i32;
    text::draw_fitted(
        target,
        screen.title,
        Point::new(left, header_middle),
        embedded_graphics::text::Baseline::Middle,
        column_width,
        &title,
    )?;

    let bottom = size.height as i32 - scale.offset(SIDE_MARGIN as i32);
    let mut top = header.size.height as i32 + scale.offset(SECTION_GAP as i32 + 8);
    let sections = [("What happened", screen.reason, SAFE_MODE_TEXT), ("What to do", screen.hint, SAFE_MODE_TEXT)];
    for (heading, body, colour) in sections {
        if body.is_empty() {
            continue;
        }
        let heading_style = text::style(TextRole::Strong, scale, SAFE_MODE_MUTED_TEXT);
        let body_style = text::style(TextRole::Body, scale, colour);
        let body_line = text::line_height(&body_style) as i32 + scale.offset(4);
        if top + body_line > bottom {
            break;
        }
        text::draw(target, heading, Point::new(left, top), Anchor::TOP_LEFT, &heading_style)?;
        top += text::line_height(&heading_style) as i32 + scale.offset(HEADING_GAP as i32);
        for line in text::wrap(body, column_width, &body_style) {
            // Leave out what does not fit rather than draw off the screen.
            if top + body_line > bottom {
                break;
            }
            text::draw(target, line, Point::new(left, top), Anchor::TOP_LEFT, &body_style)?;
            top += body_line;
        }
        top += scale.offset(SECTION_GAP as i32);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinearFb, PixelOrder};

    #[test]
    fn header_is_red_and_text_stays_on_screen() {
        let (w, h) = (320u32, 200u32);
        let mut buf = vec![0u32; (w * h) as usize];
        let mut fb = LinearFb::new(&mut buf, w, h, w, PixelOrder::Rgb).unwrap();
        let long = "word ".repeat(400);
        let screen = SafeMode { title: "Safe mode", reason: &long, hint: &long };
        draw(&mut fb, &screen).unwrap();
        assert_eq!(fb.pixel(Point::new(0, 0)), Some(SAFE_MODE_HEADER));
        assert_eq!(fb.pixel(Point::new(w as i32 - 1, h as i32 - 1)), Some(SAFE_MODE_BACKGROUND));
        // The bottom margin stays clear even with far too much text.
        for y in h - 40..h {
            for x in 0..w {
                assert_eq!(fb.pixel(Point::new(x as i32, y as i32)), Some(SAFE_MODE_BACKGROUND));
            }
        }
    }
}
