//! The passphrase screen: the hypervisor asks for the passphrase that unlocks the
//! encrypted VM disks on its own screen, before any VM runs, so no guest ever sees it.
//!
//! One card in the boot screen's colours: the product, what the screen is for (unlock,
//! choose a first passphrase, change it), which VMs wait for their disks, the field
//! being typed as one dot per character (never the characters), a message line and
//! the keys that work. The caller decides every word of the message; the screen only
//! draws it in its [`Tone`].
//!
//! [`field_rect`] and [`message_rect`] are public so that an integration test can find
//! the dots and the message in a screendump.

use core::fmt::Write;

use embedded_graphics::{
    Drawable,
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Primitive, Size},
    primitives::{Circle, PrimitiveStyle, PrimitiveStyleBuilder, Rectangle},
    text::Baseline,
};

use crate::card::Card;
use crate::{
    Scale,
    boot_screen::{BOOT_ACCENT, BOOT_BACKGROUND, BOOT_MUTED_TEXT, BOOT_PANEL, BOOT_STATUS_TEXT, BOOT_TEXT},
    palette,
    text::{self, TextRole},
    text_buf::TextBuf,
};

/// Inside the field (darker than the card, so the field reads as a hole to type into).
pub const FIELD_BACKGROUND: Rgb888 = Rgb888::new(0x0B, 0x12, 0x22);
/// The field's border.
pub const FIELD_BORDER: Rgb888 = Rgb888::new(0x33, 0x41, 0x55);
/// One dot per typed character.
pub const DOT: Rgb888 = BOOT_TEXT;
/// Refusals: a wrong passphrase and its delay, passphrases that differ, one too short.
pub const MESSAGE_REFUSED: Rgb888 = palette::SEVERITY_WARNING;
/// Work in progress ("Unlocking...").
pub const MESSAGE_BUSY: Rgb888 = BOOT_STATUS_TEXT;
/// Neutral guidance.
pub const MESSAGE_INFO: Rgb888 = BOOT_MUTED_TEXT;

/// What the screen is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Type the passphrase to unlock the disks.
    Unlock,
    /// A fresh machine: choose the first passphrase and type it again.
    FirstUse,
    /// Type the current passphrase, then the new one twice.
    Change,
}

/// Which passphrase the field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The passphrase that unlocks the disks.
    Passphrase,
    /// The one in use, before changing it.
    Current,
    /// A new passphrase.
    New,
    /// The new passphrase again.
    Confirm,
}

/// How the message line reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Info,
    /// Refused (amber).
    Refused,
    /// Work in progress.
    Busy,
}

/// What the screen shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassphraseScreen<'a> {
    pub product: &'a str,
    pub mode: Mode,
    pub field: Field,
    /// The VMs whose disks wait for the passphrase, in the order they start.
    pub waiting: &'a [&'a str],
    /// Characters typed so far (drawn as dots; only the count reaches this screen).
    pub typed: usize,
    /// The least a new passphrase must have, shown in the new field's label.
    pub min_length: usize,
    /// Empty draws nothing.
    pub message: &'a str,
    pub tone: Tone,
}

/// Layout in base pixels (multiplied by the screen's [`Scale`]).
const GAP: u32 = 20;
const LABEL_GAP: u32 = 8;
const FIELD_HEIGHT: u32 = 48;
const DOT_DIAMETER: u32 = 12;
const DOT_PITCH: u32 = 20;
const FIELD_INSET: u32 = 16;

/// Where everything sits for one screen size.
#[derive(Debug, Clone, Copy)]
struct Layout {
    scale: Scale,
    card: Rectangle,
    header: Rectangle,
    left: i32,
    width: u32,
    heading_top: i32,
    waiting_top: i32,
    label_top: i32,
    field: Rectangle,
    message: Rectangle,
    hints_top: i32,
}

impl Layout {
    fn new(size: Size) -> Layout {
        let scale = Scale::for_screen(size);
        let px = |n| scale.px(n);
        let line = |role| text::line_height(&text::style(role, scale, BOOT_TEXT));

        let content_height = line(TextRole::Heading)
            + px(GAP)
            + line(TextRole::Body)
            + px(GAP)
            + line(TextRole::Strong)
            + px(LABEL_GAP)
            + px(FIELD_HEIGHT)
            + px(GAP)
            + line(TextRole::Body)
            + px(GAP)
            + line(TextRole::Caption);
        let Card { card, header, left, width, top: heading_top } = Card::place(size, scale, content_height);
        let waiting_top = heading_top + (line(TextRole::Heading) + px(GAP)) as i32;
        let label_top = waiting_top + (line(TextRole::Body) + px(GAP)) as i32;
        let field_top = label_top + (line(TextRole::Strong) + px(LABEL_GAP)) as i32;
        let field = Rectangle::new(Point::new(left, field_top), Size::new(width, px(FIELD_HEIGHT)));
        let message_top = field_top + (px(FIELD_HEIGHT) + px(GAP)) as i32;
        let message = Rectangle::new(Point::new(left, message_top), Size::new(width, line(TextRole::Body)));
        let hints_top = message_top + (line(TextRole::Body) + px(GAP)) as i32;
        Layout { scale, card, header, left, width, heading_top, waiting_top, label_top, field, message, hints_top }
    }
}

/// The field the dots are drawn in, border included, on a screen of `size`.
pub fn field_rect(size: Size) -> Rectangle {
    Layout::new(size).field
}

/// The message line on a screen of `size` (nothing else is drawn in it).
pub fn message_rect(size: Size) -> Rectangle {
    Layout::new(size).message
}

/// How many dots fit in the field on a screen of `size`; more characters than that
/// still draw this many (the field never overflows).
pub fn max_dots(size: Size) -> usize {
    let layout = Layout::new(size);
    let inner = layout.width.saturating_sub(2 * layout.scale.px(FIELD_INSET));
    let pitch = layout.scale.px(DOT_PITCH).max(1);
    (inner.saturating_sub(layout.scale.px(DOT_DIAMETER)) / pitch + 1) as usize
}

/// The card's heading for `mode`.
pub fn heading(mode: Mode) -> &'static str {
    match mode {
        Mode::Unlock => "Unlock the encrypted disks",
        Mode::FirstUse => "Choose a passphrase for the encrypted disks",
        Mode::Change => "Change the disk passphrase",
    }
}

/// The label above the field.
fn field_label<const N: usize>(field: Field, min_length: usize, out: &mut TextBuf<N>) {
    let _ = match field {
        Field::Passphrase => write!(out, "Passphrase"),
        Field::Current => write!(out, "Current passphrase"),
        Field::New => write!(out, "New passphrase (at least {min_length} characters)"),
        Field::Confirm => write!(out, "Type the new passphrase again"),
    };
}

/// The keys that work in `mode`.
pub fn hints(mode: Mode) -> &'static str {
    match mode {
        Mode::Unlock => "Enter unlock  ·  F2 change passphrase  ·  Esc start without encrypted disks",
        Mode::FirstUse => "Enter continue  ·  Esc start without encrypted disks",
        Mode::Change => "Enter continue  ·  Esc back to unlocking",
    }
}

/// Draws the whole passphrase screen over `target`.
pub fn draw<D>(target: &mut D, screen: &PassphraseScreen<'_>) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let size = target.bounding_box().size;
    let layout = Layout::new(size);
    let scale = layout.scale;
    target.clear(BOOT_BACKGROUND)?;
    target.fill_solid(&layout.card, BOOT_PANEL)?;
    target.fill_solid(&layout.header, BOOT_ACCENT)?;

    let (left, width) = (layout.left, layout.width);
    let on_accent = text::style(TextRole::Heading, scale, palette::contrasting_text(BOOT_ACCENT));
    let header_middle = layout.header.top_left.y + (layout.header.size.height / 2) as i32;
    text::draw_fitted(target, screen.product, Point::new(left, header_middle), Baseline::Middle, width, &on_accent)?;

    let heading_style = text::style(TextRole::Heading, scale, BOOT_TEXT);
    let heading_top = Point::new(left, layout.heading_top);
    text::draw_fitted(target, heading(screen.mode), heading_top, Baseline::Top, width, &heading_style)?;

    let muted = text::style(TextRole::Body, scale, BOOT_MUTED_TEXT);
    let mut waiting = TextBuf::<256>::new();
    let _ = write!(waiting, "Unlock the disks of: ");
    for (i, name) in screen.waiting.iter().enumerate() {
        let _ = write!(waiting, "{}{name}", if i == 0 { "" } else { ", " });
    }
    let waiting_top = Point::new(left, layout.waiting_top);
    text::draw_fitted(target, waiting.as_str(), waiting_top, Baseline::Top, width, &muted)?;

    let mut label = TextBuf::<64>::new();
    field_label(screen.field, screen.min_length, &mut label);
    let label_style = text::style(TextRole::Strong, scale, BOOT_TEXT);
    let label_top = Point::new(left, layout.label_top);
    text::draw_fitted(target, label.as_str(), label_top, Baseline::Top, width, &label_style)?;

    draw_field(target, &layout, screen.typed.min(max_dots(size)))?;

    let colour = match screen.tone {
        Tone::Info => MESSAGE_INFO,
        Tone::Refused => MESSAGE_REFUSED,
        Tone::Busy => MESSAGE_BUSY,
    };
    let message_style = text::style(TextRole::Body, scale, colour);
    text::draw_fitted(target, screen.message, layout.message.top_left, Baseline::Top, width, &message_style)?;

    let hint_style = text::style(TextRole::Caption, scale, BOOT_MUTED_TEXT);
    let hints_top = Point::new(left, layout.hints_top);
    text::draw_fitted(target, hints(screen.mode), hints_top, Baseline::Top, width, &hint_style)?;
    Ok(())
}

/// The field's box and `dots` dots from its left edge.
fn draw_field<D>(target: &mut D, layout: &Layout, dots: usize) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let scale = layout.scale;
    let style = PrimitiveStyleBuilder::new()
        .fill_color(FIELD_BACKGROUND)
        .stroke_color(FIELD_BORDER)
        .stroke_width(scale.px(2))
        .build();
    layout.field.into_styled(style).draw(target)?;
    let diameter = scale.px(DOT_DIAMETER);
    let top = layout.field.top_left.y + (layout.field.size.height.saturating_sub(diameter) / 2) as i32;
    let first = layout.field.top_left.x + scale.offset(FIELD_INSET as i32);
    for i in 0..dots {
        let x = first + (i as u32 * scale.px(DOT_PITCH)) as i32;
        Circle::new(Point::new(x, top), diameter).into_styled(PrimitiveStyle::with_fill(DOT)).draw(target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinearFb, PixelOrder};
    use embedded_graphics::prelude::PointsIter;

    fn screen(typed: usize, message: &'static str) -> PassphraseScreen<'static> {
        PassphraseScreen {
            product: "Bulkhead",
            mode: Mode::Unlock,
            field: Field::Passphrase,
            waiting: &["Corporate", "Personal"],
            typed,
            min_length: 8,
            message,
            tone: Tone::Refused,
        }
    }

    fn render(size: Size, screen: &PassphraseScreen<'_>) -> Vec<u32> {
        let mut pixels = vec![0u32; (size.width * size.height) as usize];
        let mut fb = LinearFb::new(&mut pixels, size.width, size.height, size.width, PixelOrder::Rgb).unwrap();
        draw(&mut fb, screen).unwrap();
        pixels
    }

    fn count(pixels: &[u32], size: Size, rect: Rectangle, colour: Rgb888) -> usize {
        let encoded = PixelOrder::Rgb.encode(colour);
        rect.points().filter(|p| pixels[(p.y as u32 * size.width + p.x as u32) as usize] == encoded).count()
    }

    #[test]
    fn one_dot_per_character_inside_the_field_only() {
        for size in [Size::new(1280, 800), Size::new(2560, 1600), Size::new(800, 600)] {
            let empty = render(size, &screen(0, ""));
            let field = field_rect(size);
            assert_eq!(count(&empty, size, field, DOT), 0, "{size:?}");
            let three = render(size, &screen(3, ""));
            let one = render(size, &screen(1, ""));
            let per_dot = count(&one, size, field, DOT);
            assert!(per_dot > 50, "{size:?}: a dot is {per_dot} pixels");
            assert_eq!(count(&three, size, field, DOT), 3 * per_dot, "{size:?}");
            // Typing changes nothing outside the field.
            let outside = (0..empty.len()).filter(|&i| empty[i] != three[i]).all(|i| {
                let p = Point::new((i as u32 % size.width) as i32, (i as u32 / size.width) as i32);
                field.contains(p)
            });
            assert!(outside, "{size:?}");
        }
    }

    #[test]
    fn too_many_characters_stay_inside_the_field() {
        let size = Size::new(1280, 800);
        let max = max_dots(size);
        assert!(max >= 20, "{max}");
        let full = render(size, &screen(max, ""));
        let over = render(size, &screen(128, ""));
        assert_eq!(full, over);
        let field = field_rect(size);
        let inner = Rectangle::new(field.top_left + Point::new(2, 2), field.size - Size::new(4, 4));
        assert_eq!(count(&full, size, field, DOT), count(&full, size, inner, DOT));
    }

    #[test]
    fn the_message_is_drawn_in_its_line_in_its_tone() {
        let size = Size::new(1920, 1080);
        let rect = message_rect(size);
        let quiet = render(size, &screen(0, ""));
        assert_eq!(count(&quiet, size, rect, BOOT_PANEL) as u32, rect.size.width * rect.size.height);
        let wrong = render(size, &screen(0, "Wrong passphrase. Try again in 4 s"));
        assert!(count(&wrong, size, rect, MESSAGE_REFUSED) > 100);
        let changed: Vec<usize> = (0..quiet.len()).filter(|&i| quiet[i] != wrong[i]).collect();
        let inside =
            |i: usize| rect.contains(Point::new((i as u32 % size.width) as i32, (i as u32 / size.width) as i32));
        assert!(changed.iter().all(|&i| inside(i)));
        let busy = render(size, &PassphraseScreen { tone: Tone::Busy, ..screen(0, "Unlocking...") });
        assert!(count(&busy, size, rect, MESSAGE_BUSY) > 100);
        assert_eq!(count(&busy, size, rect, MESSAGE_REFUSED), 0);
    }

    #[test]
    fn card_parts_do_not_overlap_and_fit_the_screen() {
        for size in [Size::new(1280, 800), Size::new(1920, 1080), Size::new(2560, 1600), Size::new(800, 600)] {
            let layout = Layout::new(size);
            let screen_rect = Rectangle::new(Point::zero(), size);
            assert_eq!(screen_rect.intersection(&layout.card), layout.card, "{size:?}");
            assert!(layout.field.top_left.y > layout.label_top, "{size:?}");
            assert!(layout.message.top_left.y > layout.field.bottom_right().unwrap().y, "{size:?}");
            assert!(layout.hints_top > layout.message.bottom_right().unwrap().y, "{size:?}");
            assert!(layout.card.contains(Point::new(layout.left, layout.hints_top)), "{size:?}");
        }
    }
}
