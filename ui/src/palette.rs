//! Colours shared by the screens, and the arithmetic to derive shades and pick a
//! readable text colour for any background.

use embedded_graphics::pixelcolor::{Rgb888, RgbColor};

/// Trust colours the policy usually assigns (the policy may pick any colour).
pub const TRUST_RED: Rgb888 = Rgb888::new(0xC6, 0x28, 0x28);
pub const TRUST_GREEN: Rgb888 = Rgb888::new(0x2E, 0x7D, 0x32);
pub const TRUST_BLUE: Rgb888 = Rgb888::new(0x15, 0x65, 0xC0);
pub const TRUST_AMBER: Rgb888 = Rgb888::new(0xF9, 0xA8, 0x25);

/// The dark theme of the hypervisor's own full screens (overview, safe mode).
pub const SURFACE: Rgb888 = Rgb888::new(0x12, 0x17, 0x1F);
/// Cards and toasts that sit on `SURFACE`.
pub const SURFACE_RAISED: Rgb888 = Rgb888::new(0x1E, 0x25, 0x30);
pub const TEXT: Rgb888 = Rgb888::new(0xEC, 0xEF, 0xF4);
pub const TEXT_MUTED: Rgb888 = Rgb888::new(0x98, 0xA2, 0xB3);
/// Dark text for light backgrounds.
pub const TEXT_DARK: Rgb888 = Rgb888::new(0x10, 0x14, 0x1A);
/// The ring around the selected overview tile.
pub const SELECTION: Rgb888 = Rgb888::new(0xFF, 0xFF, 0xFF);

pub const SEVERITY_INFO: Rgb888 = Rgb888::new(0x2F, 0x80, 0xED);
pub const SEVERITY_WARNING: Rgb888 = Rgb888::new(0xF2, 0xA9, 0x00);
pub const SEVERITY_ERROR: Rgb888 = Rgb888::new(0xE5, 0x39, 0x35);

pub const STATE_RUNNING: Rgb888 = Rgb888::new(0x2E, 0xA0, 0x43);
pub const STATE_STOPPED: Rgb888 = Rgb888::new(0x6B, 0x75, 0x86);
pub const STATE_CRASHED: Rgb888 = SEVERITY_ERROR;

/// Perceived brightness, 0..=255 (ITU-R BT.601 weights, integer only).
pub fn luma(colour: Rgb888) -> u8 {
    let weighted = 299 * colour.r() as u32 + 587 * colour.g() as u32 + 114 * colour.b() as u32;
    (weighted / 1000) as u8
}

/// White or near-black, whichever reads better on `background`.
///
/// The threshold sits above mid-grey because saturated reds, greens and blues (the
/// usual trust colours) read better with white text.
pub fn contrasting_text(background: Rgb888) -> Rgb888 {
    if luma(background) > 150 { TEXT_DARK } else { Rgb888::WHITE }
}

/// `from` moved towards `to` by `amount`/255.
pub fn mix(from: Rgb888, to: Rgb888, amount: u8) -> Rgb888 {
    let channel = |a: u8, b: u8| {
        let (a, b, t) = (a as u32, b as u32, amount as u32);
        ((a * (255 - t) + b * t + 127) / 255) as u8
    };
    Rgb888::new(channel(from.r(), to.r()), channel(from.g(), to.g()), channel(from.b(), to.b()))
}

/// A darker shade of `colour` (`amount`/255 of the way to black).
pub fn darken(colour: Rgb888, amount: u8) -> Rgb888 {
    mix(colour, Rgb888::BLACK, amount)
}

/// A lighter tint of `colour` (`amount`/255 of the way to white).
pub fn lighten(colour: Rgb888, amount: u8) -> Rgb888 {
    mix(colour, Rgb888::WHITE, amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_contrasts_with_trust_colours() {
        assert_eq!(contrasting_text(TRUST_RED), Rgb888::WHITE);
        assert_eq!(contrasting_text(TRUST_GREEN), Rgb888::WHITE);
        assert_eq!(contrasting_text(TRUST_BLUE), Rgb888::WHITE);
        assert_eq!(contrasting_text(TRUST_AMBER), TEXT_DARK);
        assert_eq!(contrasting_text(Rgb888::WHITE), TEXT_DARK);
        assert_eq!(contrasting_text(Rgb888::YELLOW), TEXT_DARK);
        assert_eq!(contrasting_text(Rgb888::BLACK), Rgb888::WHITE);
    }

    #[test]
    fn mix_reaches_both_ends() {
        assert_eq!(mix(TRUST_RED, Rgb888::WHITE, 0), TRUST_RED);
        assert_eq!(mix(TRUST_RED, Rgb888::WHITE, 255), Rgb888::WHITE);
        assert_eq!(darken(Rgb888::WHITE, 255), Rgb888::BLACK);
        assert_eq!(lighten(Rgb888::BLACK, 128), Rgb888::new(128, 128, 128));
    }
}
