//! Where the overview's tiles go: a grid as square as possible, each tile a thumbnail
//! with the screen's aspect ratio plus a caption, centred between the heading and the
//! key hints.

use embedded_graphics::{
    pixelcolor::Rgb888,
    prelude::{Point, Size},
    primitives::Rectangle,
};

use crate::{
    Scale,
    text::{self, TextRole},
};

/// Spacing in base pixels.
const SIDE_MARGIN: u32 = 48;
pub(super) const TOP_MARGIN: u32 = 36;
const BOTTOM_MARGIN: u32 = 28;
const HEADING_GAP: u32 = 28;
const TILE_GAP: u32 = 32;
const MAX_TILE_WIDTH: u32 = 640;
/// The trust-colour frame around each tile.
pub(super) const BORDER: u32 = 4;
/// Space inside the caption, around the two lines of text.
pub(super) const CAPTION_PADDING: u32 = 10;
const CAPTION_LINE_GAP: u32 = 2;
/// Tiles past this many are not laid out (the policy allows far fewer VMs).
pub const MAX_TILES: usize = 64;

/// The grid for one screen size and tile count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub columns: u32,
    pub rows: u32,
    /// Every tile's size, frame included.
    pub tile_size: Size,
    /// The part of each tile that holds the thumbnail, inside the frame.
    pub thumbnail_size: Size,
    /// The area between the heading and the hints.
    pub content: Rectangle,
    origin: Point,
    gap: u32,
    count: usize,
    scale: Scale,
}

/// How many columns `count` tiles take: the smallest square grid that holds them
/// (2 → 2x1, 3 and 4 → 2x2, 5 and 6 → 3x2, up to 9 → 3x3).
pub fn columns_for(count: usize) -> u32 {
    let count = count.min(MAX_TILES);
    let mut columns = 1u32;
    while (columns as usize) * (columns as usize) < count {
        columns += 1;
    }
    columns
}

/// Height of the caption under a thumbnail.
pub(super) fn caption_height(scale: Scale) -> u32 {
    let line = |role| text::line_height(&text::style(role, scale, Rgb888::new(0, 0, 0)));
    2 * scale.px(CAPTION_PADDING) + line(TextRole::Strong) + scale.px(CAPTION_LINE_GAP) + line(TextRole::Caption)
}

/// Space above the grid for the heading.
pub(super) fn heading_band(scale: Scale) -> u32 {
    let heading = text::line_height(&text::style(TextRole::Heading, scale, Rgb888::new(0, 0, 0)));
    scale.px(TOP_MARGIN) + heading + scale.px(HEADING_GAP)
}

/// Space below the grid for the key hints.
pub(super) fn hint_band(scale: Scale) -> u32 {
    let caption = text::line_height(&text::style(TextRole::Caption, scale, Rgb888::new(0, 0, 0)));
    scale.px(HEADING_GAP) + caption + scale.px(BOTTOM_MARGIN)
}

/// Lays out `count` tiles (at most [`MAX_TILES`]) on a screen of `screen` pixels.
pub fn layout(screen: Size, count: usize, scale: Scale) -> Layout {
    let count = count.min(MAX_TILES);
    let px = |n| scale.px(n);
    let top = heading_band(scale);
    let content = Rectangle::new(
        Point::new(px(SIDE_MARGIN) as i32, top as i32),
        Size::new(
            screen.width.saturating_sub(2 * px(SIDE_MARGIN)),
            screen.height.saturating_sub(top + hint_band(scale)),
        ),
    );
    let columns = columns_for(count);
    let rows = (count as u32).div_ceil(columns).max(1);
    let gap = px(TILE_GAP);
    let border = px(BORDER);
    let caption = caption_height(scale);

    // As wide as the columns allow, then narrower if the rows do not fit.
    let width_limit = (content.size.width.saturating_sub(gap * (columns - 1)) / columns).min(px(MAX_TILE_WIDTH));
    let tile_height_limit = content.size.height.saturating_sub(gap * (rows - 1)) / rows;
    let thumb_height_limit = tile_height_limit.saturating_sub(border + caption);
    let aspect = |h: u32| {
        if screen.height == 0 { 0 } else { (h as u64 * screen.width as u64 / screen.height as u64) as u32 }
    };
    let thumb_width = width_limit.saturating_sub(2 * border).min(aspect(thumb_height_limit));
    let thumb_height =
        if screen.width == 0 { 0 } else { (thumb_width as u64 * screen.height as u64 / screen.width as u64) as u32 };
    let thumbnail_size = Size::new(thumb_width, thumb_height);
    let tile_size = Size::new(thumb_width + 2 * border, border + thumb_height + caption);

    let grid = Size::new(columns * tile_size.width + (columns - 1) * gap, rows * tile_size.height + (rows - 1) * gap);
    let origin = content.top_left
        + Point::new(
            (content.size.width.saturating_sub(grid.width) / 2) as i32,
            (content.size.height.saturating_sub(grid.height) / 2) as i32,
        );
    Layout { columns, rows, tile_size, thumbnail_size, content, origin, gap, count, scale }
}

impl Layout {
    /// Tile `index`'s rectangle, frame included; rows fill left to right.
    pub fn tile(&self, index: usize) -> Option<Rectangle> {
        if index >= self.count {
            return None;
        }
        let column = (index % self.columns as usize) as i32;
        let row = (index / self.columns as usize) as i32;
        let step = Point::new((self.tile_size.width + self.gap) as i32, (self.tile_size.height + self.gap) as i32);
        let top_left = self.origin + Point::new(column * step.x, row * step.y);
        Some(Rectangle::new(top_left, self.tile_size))
    }

    /// Every tile in order.
    pub fn tiles(&self) -> impl Iterator<Item = Rectangle> + '_ {
        (0..self.count).filter_map(|index| self.tile(index))
    }

    /// Where tile `index`'s thumbnail goes: size the caller's downscaled picture to
    /// [`Layout::thumbnail_size`] to fill it exactly.
    pub fn thumbnail(&self, index: usize) -> Option<Rectangle> {
        let tile = self.tile(index)?;
        let border = self.scale.px(BORDER) as i32;
        Some(Rectangle::new(tile.top_left + Point::new(border, border), self.thumbnail_size))
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCREENS: [Size; 4] =
        [Size::new(1280, 800), Size::new(1920, 1080), Size::new(2560, 1600), Size::new(1366, 768)];

    #[test]
    fn grid_shapes() {
        let shape = |n| {
            let l = layout(Size::new(1920, 1080), n, Scale::ONE);
            (l.columns, l.rows)
        };
        assert_eq!(shape(0), (1, 1));
        assert_eq!(shape(1), (1, 1));
        assert_eq!(shape(2), (2, 1));
        assert_eq!(shape(3), (2, 2));
        assert_eq!(shape(4), (2, 2));
        assert_eq!(shape(5), (3, 2));
        assert_eq!(shape(9), (3, 3));
        assert_eq!(shape(10), (4, 3));
    }

    #[test]
    fn tiles_fit_the_content_area_without_overlapping() {
        for screen in SCREENS {
            let scale = Scale::for_screen(screen);
            for count in 1..=12 {
                let l = layout(screen, count, scale);
                let tiles: Vec<Rectangle> = l.tiles().collect();
                assert_eq!(tiles.len(), count);
                for (i, a) in tiles.iter().enumerate() {
                    assert_eq!(l.content.intersection(a), *a, "{screen:?} n={count} tile {i} outside");
                    assert!(a.size.width > 0 && a.size.height > 0);
                    for b in &tiles[i + 1..] {
                        assert!(a.intersection(b).is_zero_sized(), "{screen:?} n={count} overlap");
                    }
                }
            }
        }
    }

    #[test]
    fn thumbnails_keep_the_screen_aspect_and_sit_inside_their_tile() {
        for screen in SCREENS {
            let l = layout(screen, 4, Scale::for_screen(screen));
            let t = l.thumbnail_size;
            let (lhs, rhs) = (t.width as i64 * screen.height as i64, t.height as i64 * screen.width as i64);
            assert!((lhs - rhs).abs() <= screen.width as i64, "{screen:?}: {t:?}");
            let tile = l.tile(3).unwrap();
            let thumb = l.thumbnail(3).unwrap();
            assert_eq!(tile.intersection(&thumb), thumb);
        }
    }

    #[test]
    fn grid_is_centred() {
        let l = layout(Size::new(1920, 1080), 2, Scale::ONE);
        let first = l.tile(0).unwrap();
        let last = l.tile(1).unwrap();
        let left_gap = first.top_left.x;
        let right_gap = 1920 - (last.top_left.x + last.size.width as i32);
        assert!((left_gap - right_gap).abs() <= 1, "{left_gap} vs {right_gap}");
        assert_eq!(first.size.width, MAX_TILE_WIDTH);
    }

    #[test]
    fn out_of_range_and_degenerate_inputs() {
        let l = layout(Size::new(1280, 800), 2, Scale::ONE);
        assert_eq!(l.tile(2), None);
        assert_eq!(l.thumbnail(5), None);
        let tiny = layout(Size::new(10, 10), 4, Scale::ONE);
        assert_eq!(tiny.tiles().count(), 4);
        let many = layout(Size::new(1280, 800), usize::MAX, Scale::ONE);
        assert_eq!(many.len(), MAX_TILES);
        assert_eq!(columns_for(usize::MAX), 8);
        let empty = layout(Size::zero(), 0, Scale::ONE);
        assert!(empty.is_empty());
        assert_eq!(empty.tiles().count(), 0);
    }
}
