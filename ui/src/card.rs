//! The card the boot-time screens (the boot screen, the passphrase screen) are drawn
//! on: a panel with an accent header band, at most 720 base pixels wide, centred
//! across and slightly above the middle of the screen (its optical centre).

use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use crate::scale::Scale;

/// Card geometry in base pixels (multiplied by the screen's [`Scale`]).
const CARD_MAX_WIDTH: u32 = 720;
const SCREEN_MARGIN: u32 = 32;
const HEADER_HEIGHT: u32 = 56;
/// Around the content, below the header.
const PADDING: u32 = 40;

/// Where a card and its content sit on one screen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Card {
    pub card: Rectangle,
    pub header: Rectangle,
    /// The content's left edge and width (inside the padding).
    pub left: i32,
    pub width: u32,
    /// The content's top (below the header and the padding).
    pub top: i32,
}

impl Card {
    /// A card on a screen of `size` holding `content_height` pixels of content.
    pub fn place(size: Size, scale: Scale, content_height: u32) -> Card {
        let px = |n| scale.px(n);
        let card_width = px(CARD_MAX_WIDTH).min(size.width.saturating_sub(2 * px(SCREEN_MARGIN)));
        let card_height = px(HEADER_HEIGHT) + px(PADDING) + content_height + px(PADDING);
        let card_left = (size.width.saturating_sub(card_width) / 2) as i32;
        let card_top = (size.height.saturating_sub(card_height) * 9 / 20) as i32;
        let card = Rectangle::new(Point::new(card_left, card_top), Size::new(card_width, card_height));
        Card {
            card,
            header: Rectangle::new(card.top_left, Size::new(card_width, px(HEADER_HEIGHT))),
            left: card_left + px(PADDING) as i32,
            width: card_width.saturating_sub(2 * px(PADDING)),
            top: card_top + (px(HEADER_HEIGHT) + px(PADDING)) as i32,
        }
    }
}
