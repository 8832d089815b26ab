//! The trust strip: a bar across the top of the screen that only the hypervisor draws.
//! It names the focused VM in its trust colour, so a guest cannot pass itself off as
//! another (a personal desktop drawing a fake "Corporate" window, say).

use core::fmt::Write;

use embedded_graphics::{
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Size},
    primitives::Rectangle,
    text::Baseline,
};

use crate::{
    Scale, TextBuf, icons,
    palette::{self, contrasting_text},
    text::{self, Anchor, TextRole},
};

/// The strip's height in base pixels; multiply by the [`Scale`] (see [`height`]).
pub const STRIP_HEIGHT: u32 = 28;

/// Horizontal room around the strip's contents, in base pixels.
const PADDING: u32 = 12;
const ICON_SIZE: u32 = 15;
const ICON_GAP: u32 = 14;
const SEPARATOR: &str = "  ·  ";

/// What the strip shows for the focused VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strip<'a> {
    /// e.g. "Corporate".
    pub vm_name: &'a str,
    /// e.g. "secure"; drawn after the name.
    pub label: &'a str,
    pub trust_colour: Rgb888,
    /// Local time as (hours, minutes).
    pub clock: (u8, u8),
    pub network_up: bool,
    /// Draws a padlock: the VM is the secure one.
    pub secure: bool,
}

/// The strip's height in device pixels.
pub const fn height(scale: Scale) -> u32 {
    scale.px(STRIP_HEIGHT)
}

/// Where the strip sits on a screen `screen_width` pixels wide.
pub const fn rect(screen_width: u32, scale: Scale) -> Rectangle {
    Rectangle::new(Point::new(0, 0), Size::new(screen_width, height(scale)))
}

/// Draws the strip along the top of `target`, at the scale that suits its size.
pub fn draw<D>(target: &mut D, strip: &Strip<'_>) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let scale = Scale::for_screen(target.bounding_box().size);
    draw_scaled(target, strip, scale)
}

/// Draws the strip along the top of `target` at `scale` (for a target that is only
/// the strip, whose own size says nothing about the screen).
pub fn draw_scaled<D>(target: &mut D, strip: &Strip<'_>, scale: Scale) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let screen = target.bounding_box();
    let bar = Rectangle::new(screen.top_left, Size::new(screen.size.width, height(scale)));
    let foreground = contrasting_text(strip.trust_colour);
    let edge = palette::darken(strip.trust_colour, 70);

    target.fill_solid(&bar, strip.trust_colour)?;
    // A darker bottom edge separates the strip from a guest of the same colour.
    let edge_height = scale.px(1);
    let edge_top = bar.top_left.y + (bar.size.height - edge_height) as i32;
    target.fill_solid(
        &Rectangle::new(Point::new(bar.top_left.x, edge_top), Size::new(bar.size.width, edge_height)),
        edge,
    )?;

    let middle = bar.top_left.y + (bar.size.height / 2) as i32;
    let right = bar.top_left.x + bar.size.width as i32 - scale.offset(PADDING as i32);

    // Right side, from the edge inwards: clock, network, lock.
    let mut clock = TextBuf::<8>::new();
    let _ = write!(clock, "{:02}:{:02}", strip.clock.0, strip.clock.1);
    let bold = text::style(TextRole::Strong, scale, foreground);
    let clock_width = text::width(clock.as_str(), &bold) as i32;
    text::draw(target, clock.as_str(), Point::new(right, middle), Anchor::MIDDLE_RIGHT, &bold)?;

    let icon = scale.px(ICON_SIZE);
    let icon_top = middle - (icon / 2) as i32;
    let mut icon_left = right - clock_width - scale.offset(ICON_GAP as i32) - icon as i32;
    icons::draw_network(target, Point::new(icon_left, icon_top), icon, foreground, strip.network_up)?;
    if strip.secure {
        icon_left -= scale.offset(ICON_GAP as i32 / 2) + icon as i32;
        icons::draw_lock(target, Point::new(icon_left, icon_top), icon, foreground)?;
    }

    // Left side: name, then label, shortened to stay clear of the icons.
    let left = bar.top_left.x + scale.offset(PADDING as i32);
    let room = (icon_left - scale.offset(ICON_GAP as i32) - left).max(0) as u32;
    let next = text::draw_fitted(target, strip.vm_name, Point::new(left, middle), Baseline::Middle, room, &bold)?;
    let used = (next.x - left).max(0) as u32;
    let regular = text::style(TextRole::Body, scale, palette::mix(foreground, strip.trust_colour, 40));
    if !strip.label.is_empty() && used + text::width(SEPARATOR, &regular) < room {
        let after_separator = text::draw(target, SEPARATOR, next, Anchor::MIDDLE_LEFT, &regular)?;
        let label_room = room.saturating_sub((after_separator.x - left).max(0) as u32);
        text::draw_fitted(target, strip.label, after_separator, Baseline::Middle, label_room, &regular)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinearFb, PixelOrder, palette::TRUST_RED};

    #[test]
    fn height_follows_the_scale() {
        assert_eq!(height(Scale::ONE), STRIP_HEIGHT);
        assert_eq!(height(Scale::new(2)), 2 * STRIP_HEIGHT);
        assert_eq!(rect(1920, Scale::ONE).size, Size::new(1920, STRIP_HEIGHT));
    }

    #[test]
    fn strip_stays_within_its_bar_and_contrasts() {
        let (w, h) = (640u32, 100u32);
        let mut buf = vec![0u32; (w * h) as usize];
        let mut fb = LinearFb::new(&mut buf, w, h, w, PixelOrder::Bgr).unwrap();
        let strip = Strip {
            vm_name: "A very long virtual machine name that cannot possibly fit",
            label: "secure",
            trust_colour: TRUST_RED,
            clock: (9, 5),
            network_up: false,
            secure: true,
        };
        draw(&mut fb, &strip).unwrap();
        let mut text_pixels = 0;
        for y in 0..h as i32 {
            for x in 0..w as i32 {
                let colour = fb.pixel(Point::new(x, y)).unwrap();
                if y >= STRIP_HEIGHT as i32 {
                    assert_eq!(colour, Rgb888::new(0, 0, 0), "drew below the strip at ({x},{y})");
                } else if colour == contrasting_text(TRUST_RED) {
                    text_pixels += 1;
                }
            }
        }
        assert!(text_pixels > 200, "only {text_pixels} text pixels");
        assert_eq!(fb.pixel(Point::new(1, 1)), Some(TRUST_RED));
    }
}
