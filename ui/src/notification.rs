//! Toasts: a short message in the bottom-right corner, e.g. "Personal crashed: triple
//! fault", marked with its severity's colour.

use embedded_graphics::{
    Drawable,
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Primitive, Size},
    primitives::{PrimitiveStyleBuilder, Rectangle, RoundedRectangle, StrokeAlignment},
};

use crate::{
    Scale, icons,
    palette::{self, contrasting_text},
    text::{self, Anchor, TextRole},
};

/// How much a notification matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub const fn colour(self) -> Rgb888 {
        match self {
            Severity::Info => palette::SEVERITY_INFO,
            Severity::Warning => palette::SEVERITY_WARNING,
            Severity::Error => palette::SEVERITY_ERROR,
        }
    }

    /// The mark inside the icon.
    const fn glyph(self) -> &'static str {
        match self {
            Severity::Info => "i",
            Severity::Warning | Severity::Error => "!",
        }
    }
}

/// One toast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification<'a> {
    pub message: &'a str,
    pub severity: Severity,
}

/// Sizes in base pixels.
const WIDTH: u32 = 400;
const MARGIN: u32 = 24;
const PADDING: u32 = 16;
const ACCENT_WIDTH: u32 = 6;
const ICON: u32 = 24;
const CORNER: u32 = 6;
/// Longer messages are cut; a toast is not a log.
const MAX_LINES: usize = 4;

/// The toast's box on a screen of `screen` pixels at `scale` (so the caller knows
/// what to redraw when it goes away).
pub fn rect(screen: Size, scale: Scale, notification: &Notification<'_>) -> Rectangle {
    let width = scale.px(WIDTH).min(screen.width.saturating_sub(2 * scale.px(MARGIN)));
    let style = text::style(TextRole::Body, scale, palette::TEXT);
    let lines = text::wrap(notification.message, text_width(width, scale), &style).take(MAX_LINES).count() as u32;
    let text_height = lines * text::line_height(&style);
    let height = 2 * scale.px(PADDING) + text_height.max(scale.px(ICON));
    let right = screen.width.saturating_sub(scale.px(MARGIN));
    let bottom = screen.height.saturating_sub(scale.px(MARGIN));
    Rectangle::new(
        Point::new(right.saturating_sub(width) as i32, bottom.saturating_sub(height) as i32),
        Size::new(width, height),
    )
}

/// Room for the message: the box less the accent, icon and paddings.
fn text_width(box_width: u32, scale: Scale) -> u32 {
    box_width.saturating_sub(scale.px(ACCENT_WIDTH + 3 * PADDING + ICON))
}

/// Draws the toast in the bottom-right corner of `target`, over what is there.
pub fn draw<D>(target: &mut D, notification: &Notification<'_>) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let screen = target.bounding_box().size;
    let scale = Scale::for_screen(screen);
    let area = rect(screen, scale, notification);
    let colour = notification.severity.colour();
    let corner = Size::new(scale.px(CORNER), scale.px(CORNER));

    // The box in the severity colour, then the surface over all but its left edge,
    // which leaves a coloured accent bar with the box's rounded corners.
    RoundedRectangle::with_equal_corners(area, corner)
        .into_styled(PrimitiveStyleBuilder::new().fill_color(colour).build())
        .draw(target)?;
    let accent = scale.px(ACCENT_WIDTH);
    let body = Rectangle::new(
        area.top_left + Point::new(accent as i32, 0),
        Size::new(area.size.width.saturating_sub(accent), area.size.height),
    );
    RoundedRectangle::new(
        body,
        embedded_graphics::primitives::CornerRadii {
            top_left: Size::zero(),
            bottom_left: Size::zero(),
            top_right: corner,
            bottom_right: corner,
        },
    )
    .into_styled(
        PrimitiveStyleBuilder::new()
            .fill_color(palette::SURFACE_RAISED)
            .stroke_color(palette::mix(palette::SURFACE_RAISED, palette::TEXT, 40))
            .stroke_width(scale.px(1))
            .stroke_alignment(StrokeAlignment::Inside)
            .build(),
    )
    .draw(target)?;

    let padding = scale.px(PADDING) as i32;
    let icon = scale.px(ICON);
    let icon_centre = body.top_left + Point::new(padding + (icon / 2) as i32, padding + (icon / 2) as i32);
    icons::draw_dot(target, icon_centre, icon, colour)?;
    let glyph = text::style(TextRole::Strong, scale, contrasting_text(colour));
    text::draw(target, notification.severity.glyph(), icon_centre, Anchor::CENTER, &glyph)?;

    let style = text::style(TextRole::Body, scale, palette::TEXT);
    let line_height = text::line_height(&style) as i32;
    let lines = text::wrap(notification.message, text_width(area.size.width, scale), &style).take(MAX_LINES);
    let left = body.top_left.x + 2 * padding + icon as i32;
    // A single line sits level with the icon; more lines start at the top.
    let mut top = body.top_left.y + padding + (icon as i32 - line_height).max(0) / 2;
    for line in lines {
        text::draw(target, line, Point::new(left, top), Anchor::TOP_LEFT, &style)?;
        top += line_height;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toast_sits_in_the_bottom_right_corner() {
        let screen = Size::new(1920, 1080);
        let note = Notification { message: "Personal crashed: triple fault", severity: Severity::Error };
        let r = rect(screen, Scale::ONE, &note);
        let bottom_right = r.bottom_right().unwrap();
        assert_eq!(bottom_right, Point::new(1920 - 24 - 1, 1080 - 24 - 1));
        assert_eq!(r.size.width, WIDTH);
    }

    #[test]
    fn long_messages_grow_the_box_up_to_a_limit() {
        let screen = Size::new(1280, 800);
        let short = Notification { message: "Saved", severity: Severity::Info };
        let long = Notification {
            message: "The networking service VM stopped responding and was restarted; \
                      desktops keep their links but may see a short pause in traffic, \
                      and this sentence goes on far longer than any toast should be.",
            severity: Severity::Warning,
        };
        let short_rect = rect(screen, Scale::ONE, &short);
        let long_rect = rect(screen, Scale::ONE, &long);
        assert!(long_rect.size.height > short_rect.size.height);
        assert!(long_rect.size.height < 200);
    }

    #[test]
    fn tiny_screens_do_not_panic() {
        let note = Notification { message: "x", severity: Severity::Info };
        let r = rect(Size::new(10, 10), Scale::ONE, &note);
        assert!(r.size.width == 0);
    }
}
