//! Fonts by role and scale, and the few text operations the screens need: measure,
//! draw, shorten with an ellipsis, and wrap into lines. No allocation.

use embedded_graphics::{
    Drawable,
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point},
    text::{
        Alignment, Baseline, Text, TextStyleBuilder,
        renderer::{TextMetrics, TextRenderer},
    },
};
use u8g2_fonts::{U8g2TextStyle, fonts};

use crate::Scale;

/// What a piece of text is for; each role has one font per scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRole {
    /// Hints and secondary details.
    Caption,
    /// Ordinary text.
    Body,
    /// Bold text at body size: names, labels.
    Strong,
    /// Section and dialog titles.
    Heading,
    /// The product name on the boot screen.
    Title,
}

/// The font for `role` at `scale`, in `colour`, on a transparent background.
///
/// The `_tf` variants cover ISO 8859-1, so names such as "Département" and the
/// "·" separator draw; characters a font lacks are skipped rather than failing.
pub fn style(role: TextRole, scale: Scale, colour: Rgb888) -> U8g2TextStyle<Rgb888> {
    use TextRole::*;
    match (scale.factor(), role) {
        (1, Caption) => U8g2TextStyle::new(fonts::u8g2_font_helvR12_tf, colour),
        (1, Body) => U8g2TextStyle::new(fonts::u8g2_font_helvR14_tf, colour),
        (1, Strong) => U8g2TextStyle::new(fonts::u8g2_font_helvB14_tf, colour),
        (1, Heading) => U8g2TextStyle::new(fonts::u8g2_font_helvB18_tf, colour),
        (1, Title) => U8g2TextStyle::new(fonts::u8g2_font_fub30_tf, colour),
        (2, Caption) => U8g2TextStyle::new(fonts::u8g2_font_helvR24_tf, colour),
        (2, Body) => U8g2TextStyle::new(fonts::u8g2_font_fur25_tf, colour),
        (2, Strong) => U8g2TextStyle::new(fonts::u8g2_font_fub25_tf, colour),
        (2, Heading) => U8g2TextStyle::new(fonts::u8g2_font_fub35_tf, colour),
        (2, Title) => U8g2TextStyle::new(fonts::u8g2_font_fub42_tf, colour),
        (_, Caption) => U8g2TextStyle::new(fonts::u8g2_font_fur30_tf, colour),
        (_, Body) => U8g2TextStyle::new(fonts::u8g2_font_fur35_tf, colour),
        (_, Strong) => U8g2TextStyle::new(fonts::u8g2_font_fub35_tf, colour),
        (_, Heading) => U8g2TextStyle::new(fonts::u8g2_font_fub42_tf, colour),
        (_, Title) => U8g2TextStyle::new(fonts::u8g2_font_fub42_tf, colour),
    }
}

/// Where text is placed relative to its anchor point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub alignment: Alignment,
    pub baseline: Baseline,
}

impl Anchor {
    /// Anchor at the top-left corner of the text.
    pub const TOP_LEFT: Anchor = Anchor::new(Alignment::Left, Baseline::Top);
    /// Anchor at the middle of the text's left edge (for text inside a bar).
    pub const MIDDLE_LEFT: Anchor = Anchor::new(Alignment::Left, Baseline::Middle);
    /// Anchor at the middle of the text's right edge.
    pub const MIDDLE_RIGHT: Anchor = Anchor::new(Alignment::Right, Baseline::Middle);
    /// Anchor at the centre of the text.
    pub const CENTER: Anchor = Anchor::new(Alignment::Center, Baseline::Middle);
    /// Anchor at the middle of the text's top edge.
    pub const TOP_CENTER: Anchor = Anchor::new(Alignment::Center, Baseline::Top);

    pub const fn new(alignment: Alignment, baseline: Baseline) -> Anchor {
        Anchor { alignment, baseline }
    }
}

/// How far the pen moves when drawing `text`.
pub fn width(text: &str, style: &U8g2TextStyle<Rgb888>) -> u32 {
    let metrics: TextMetrics = style.measure_string(text, Point::zero(), Baseline::Top);
    u32::try_from(metrics.next_position.x).unwrap_or(0)
}

/// The distance between two lines of `style`.
pub fn line_height(style: &U8g2TextStyle<Rgb888>) -> u32 {
    style.line_height()
}

/// Draws `text` anchored at `position`; returns where the next text would start.
pub fn draw<D>(
    target: &mut D,
    text: &str,
    position: Point,
    anchor: Anchor,
    style: &U8g2TextStyle<Rgb888>,
) -> Result<Point, D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let text_style = TextStyleBuilder::new().alignment(anchor.alignment).baseline(anchor.baseline).build();
    Text::with_text_style(text, position, style.clone(), text_style).draw(target)
}

const ELLIPSIS: &str = "...";

/// The longest prefix of `text` (on a character boundary) no wider than `max_width`.
fn longest_prefix_within<'t>(text: &'t str, max_width: u32, style: &U8g2TextStyle<Rgb888>) -> &'t str {
    let mut fitting = "";
    for (index, ch) in text.char_indices() {
        let candidate = &text[..index + ch.len_utf8()];
        if width(candidate, style) > max_width {
            break;
        }
        fitting = candidate;
    }
    fitting
}

/// `text` if it fits in `max_width`, else its longest prefix that leaves room for an
/// ellipsis; the flag says whether it was shortened.
pub fn fit<'t>(text: &'t str, max_width: u32, style: &U8g2TextStyle<Rgb888>) -> (&'t str, bool) {
    if width(text, style) <= max_width {
        return (text, false);
    }
    let room = max_width.saturating_sub(width(ELLIPSIS, style));
    (longest_prefix_within(text, room, style).trim_end(), true)
}

/// Draws `text`, shortened with "..." if wider than `max_width`, anchored on its left.
pub fn draw_fitted<D>(
    target: &mut D,
    text: &str,
    position: Point,
    baseline: Baseline,
    max_width: u32,
    style: &U8g2TextStyle<Rgb888>,
) -> Result<Point, D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let (shown, shortened) = fit(text, max_width, style);
    let anchor = Anchor::new(Alignment::Left, baseline);
    let next = draw(target, shown, position, anchor, style)?;
    if shortened {
        return draw(target, ELLIPSIS, next, anchor, style);
    }
    Ok(next)
}

/// Splits text into lines no wider than a limit, breaking at spaces and at `\n`.
/// A word longer than a whole line is broken between characters.
#[derive(Debug, Clone)]
pub struct WrappedLines<'t> {
    rest: Option<&'t str>,
    max_width: u32,
    style: U8g2TextStyle<Rgb888>,
}

/// The lines of `text` wrapped to `max_width` in `style`.
pub fn wrap<'t>(text: &'t str, max_width: u32, style: &U8g2TextStyle<Rgb888>) -> WrappedLines<'t> {
    WrappedLines { rest: Some(text), max_width, style: style.clone() }
}

impl<'t> Iterator for WrappedLines<'t> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        let rest = self.rest?;
        let (untrimmed, after) = match rest.split_once('\n') {
            Some((paragraph, after)) => (paragraph, Some(after)),
            None => (rest, None),
        };
        // A final "\n" ends the text rather than starting an empty line.
        let after = after.filter(|after| !after.is_empty());
        let paragraph = untrimmed.trim_start_matches(' ');
        let fits = |s: &str| width(s.trim_end(), &self.style) <= self.max_width;

        if fits(paragraph) {
            self.rest = after;
            return Some(paragraph.trim_end());
        }

        // The end of the last word that still fits, if any.
        let mut best = None;
        for (index, _) in paragraph.match_indices(' ') {
            if !fits(&paragraph[..index]) {
                break;
            }
            if !paragraph[..index].trim().is_empty() {
                best = Some(index);
            }
        }
        let split = match best {
            Some(index) => index,
            None => {
                let prefix = longest_prefix_within(paragraph, self.max_width, &self.style);
                // Always make progress, even if not one character fits.
                let at_least_one = paragraph.chars().next().map_or(0, char::len_utf8);
                prefix.len().max(at_least_one)
            }
        };
        let (line, remainder) = paragraph.split_at(split);
        self.rest = if remainder.trim().is_empty() {
            after
        } else {
            // Resume inside this paragraph; the following ones are still attached.
            let consumed = untrimmed.len() - paragraph.len() + split;
            Some(&rest[consumed..])
        };
        Some(line.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> U8g2TextStyle<Rgb888> {
        style(TextRole::Body, Scale::ONE, Rgb888::new(255, 255, 255))
    }

    #[test]
    fn wider_text_measures_wider() {
        let s = body();
        assert_eq!(width("", &s), 0);
        assert!(width("Corporate", &s) > width("Corp", &s));
    }

    #[test]
    fn fit_keeps_short_text_and_shortens_long_text() {
        let s = body();
        assert_eq!(fit("Personal", 500, &s), ("Personal", false));
        let limit = width("Personal desk", &s);
        let (shown, shortened) = fit("Personal desktop for the weekend", limit, &s);
        assert!(shortened);
        assert!(width(shown, &s) + width(ELLIPSIS, &s) <= limit);
        assert!("Personal desktop".starts_with(shown));
        assert_eq!(fit("Personal", 0, &s), ("", true));
    }

    #[test]
    fn wrap_breaks_at_spaces_within_the_width() {
        let s = body();
        let limit = width("policy bundle is", &s);
        let text = "The policy bundle is missing its signature";
        let lines: Vec<&str> = wrap(text, limit, &s).collect();
        assert!(lines.len() > 1, "{lines:?}");
        for line in &lines {
            assert!(width(line, &s) <= limit, "{line:?} too wide");
            assert_eq!(line.trim(), *line);
        }
        assert_eq!(lines.join(" "), text);
    }

    #[test]
    fn wrap_honours_newlines_and_blank_lines() {
        let s = body();
        let lines: Vec<&str> = wrap("one\n\ntwo\n", 1000, &s).collect();
        assert_eq!(lines, ["one", "", "two"]);
        assert_eq!(wrap("", 1000, &s).collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn wrap_splits_a_word_longer_than_the_line() {
        let s = body();
        let limit = width("abcdef", &s);
        let lines: Vec<&str> = wrap("abcdefghijklmnopqrstuvwxyz", limit, &s).collect();
        assert!(lines.len() >= 4, "{lines:?}");
        assert_eq!(lines.concat(), "abcdefghijklmnopqrstuvwxyz");
    }

    #[test]
    fn characters_the_fonts_lack_are_skipped_not_fatal() {
        use crate::{LinearFb, PixelOrder};
        let mut buf = vec![0u32; 200 * 50];
        let mut fb = LinearFb::new(&mut buf, 200, 50, 200, PixelOrder::Rgb).unwrap();
        let odd = "Ω 😀 \u{0} \u{FFFF} 中文 tab\tend";
        for role in [TextRole::Caption, TextRole::Body, TextRole::Strong, TextRole::Heading, TextRole::Title] {
            for factor in 1..=4 {
                let s = style(role, Scale::new(factor), Rgb888::new(255, 255, 255));
                draw(&mut fb, odd, Point::new(-5, 10), Anchor::CENTER, &s).unwrap();
                draw_fitted(&mut fb, odd, Point::zero(), Baseline::Top, 30, &s).unwrap();
                assert!(wrap(odd, 10, &s).count() > 0);
            }
        }
    }

    #[test]
    fn wrap_always_progresses_even_with_no_room() {
        let s = body();
        let lines: Vec<&str> = wrap("héllo wörld", 0, &s).collect();
        assert_eq!(lines.concat(), "héllowörld");
    }
}
