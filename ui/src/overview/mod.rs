//! The overview: every VM as a tile with a live thumbnail, its name and label, its
//! trust colour as a frame and its state, one tile highlighted for switching.
//!
//! The caller lays out first, to learn the thumbnail size, then shrinks each guest
//! framebuffer into a buffer of that size ([`crate::thumbnail::downscale`]) and draws:
//!
//! ```ignore
//! let grid = overview::layout(screen_size, vms.len(), scale);
//! // ... downscale each guest screen to grid.thumbnail_size ...
//! overview::draw(&mut fb, &Overview { tiles: &tiles, selected })?;
//! ```

mod layout;
mod selection;

use embedded_graphics::{
    Drawable,
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Primitive, Size},
    primitives::{PrimitiveStyleBuilder, Rectangle, RoundedRectangle, StrokeAlignment},
    text::Baseline,
};

pub use layout::{Layout, MAX_TILES, columns_for, layout};
pub use selection::{Direction, Selection};

use crate::{
    Scale,
    palette::{self, contrasting_text},
    text::{self, Anchor, TextRole},
    thumbnail::Thumbnail,
};

/// What a VM is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    Running,
    Stopped,
    Crashed,
    /// Held back by policy: the laptop's offline lease ran out, so this VM waits for a
    /// check-in with IT's management server.
    NeedsCheckIn,
    /// Its disk is locked (the passphrase was not given at boot) or could not be
    /// opened: it does not start until the next boot.
    DiskLocked,
}

impl VmState {
    pub const fn name(self) -> &'static str {
        match self {
            VmState::Running => "Running",
            VmState::Stopped => "Stopped",
            VmState::Crashed => "Crashed",
            VmState::NeedsCheckIn => "Needs check-in",
            VmState::DiskLocked => "Disk locked",
        }
    }

    pub const fn colour(self) -> Rgb888 {
        match self {
            VmState::Running => palette::STATE_RUNNING,
            VmState::Stopped => palette::STATE_STOPPED,
            VmState::Crashed => palette::STATE_CRASHED,
            VmState::NeedsCheckIn | VmState::DiskLocked => palette::SEVERITY_WARNING,
        }
    }
}

/// One VM's tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub trust_colour: Rgb888,
    pub state: VmState,
    /// The VM's screen, ideally [`Layout::thumbnail_size`]; `None` shows a placeholder.
    pub thumbnail: Option<Thumbnail<'a>>,
}

/// The whole overview screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overview<'a> {
    pub tiles: &'a [Tile<'a>],
    /// Index of the highlighted tile (see [`Selection`]).
    pub selected: usize,
}

const HEADING: &str = "Virtual machines";
/// Key and what it does, shown under the grid.
const HINTS: [(&str, &str); 3] = [("Arrow keys", "choose"), ("Enter", "switch"), ("Esc", "back")];
const EMPTY: &str = "No virtual machines are configured";
/// On the tile of a VM held back by the offline lease.
pub const HELD_MESSAGE: &str = "Offline too long";
/// What a tile shows for a VM whose disk stayed locked.
pub const LOCKED_MESSAGE: &str = "Disk locked";
/// Distance between a tile and its selection ring, and the ring's width (base pixels).
const RING_OFFSET: u32 = 5;
const RING_WIDTH: u32 = 3;
const CORNER: u32 = 6;

/// Draws the overview over the whole of `target`.
pub fn draw<D>(target: &mut D, overview: &Overview<'_>) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let screen = target.bounding_box().size;
    let scale = Scale::for_screen(screen);
    let grid = layout(screen, overview.tiles.len(), scale);
    target.clear(palette::SURFACE)?;

    let centre_x = (screen.width / 2) as i32;
    let heading = text::style(TextRole::Heading, scale, palette::TEXT);
    let heading_top = scale.px(layout::TOP_MARGIN) as i32;
    text::draw(target, HEADING, Point::new(centre_x, heading_top), Anchor::TOP_CENTER, &heading)?;
    let hints_middle =
        grid.content.top_left.y + grid.content.size.height as i32 + (layout::hint_band(scale) / 2) as i32;
    draw_hints(target, Point::new(centre_x, hints_middle), scale)?;

    if overview.tiles.is_empty() {
        let body = text::style(TextRole::Body, scale, palette::TEXT_MUTED);
        let middle = (screen.height / 2) as i32;
        return text::draw(target, EMPTY, Point::new(centre_x, middle), Anchor::CENTER, &body).map(|_| ());
    }

    for (index, tile) in overview.tiles.iter().enumerate() {
        if let (Some(area), Some(thumbnail_area)) = (grid.tile(index), grid.thumbnail(index)) {
            draw_tile(target, tile, area, thumbnail_area, index == overview.selected, scale)?;
        }
    }
    Ok(())
}

/// "Arrow keys choose   Enter switch   Esc back", keys bright, actions muted, centred
/// on `centre`.
fn draw_hints<D>(target: &mut D, centre: Point, scale: Scale) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let key = text::style(TextRole::Caption, scale, palette::TEXT);
    let action = text::style(TextRole::Caption, scale, palette::TEXT_MUTED);
    let word_gap = scale.px(6);
    let hint_gap = scale.px(28);
    let total: u32 = HINTS.iter().map(|(k, a)| text::width(k, &key) + word_gap + text::width(a, &action)).sum::<u32>()
        + hint_gap * (HINTS.len() as u32 - 1);
    let mut pen = Point::new(centre.x - (total / 2) as i32, centre.y);
    for (k, a) in HINTS {
        pen = text::draw(target, k, pen, Anchor::MIDDLE_LEFT, &key)?;
        pen.x += word_gap as i32;
        pen = text::draw(target, a, pen, Anchor::MIDDLE_LEFT, &action)?;
        pen.x += hint_gap as i32;
    }
    Ok(())
}

fn draw_tile<D>(
    target: &mut D,
    tile: &Tile<'_>,
    area: Rectangle,
    thumbnail_area: Rectangle,
    selected: bool,
    scale: Scale,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let corner = Size::new(scale.px(CORNER), scale.px(CORNER));
    if selected {
        let offset = scale.px(RING_OFFSET + RING_WIDTH);
        let ring = area.offset(offset as i32);
        RoundedRectangle::with_equal_corners(ring, corner + Size::new(offset, offset))
            .into_styled(
                PrimitiveStyleBuilder::new()
                    .stroke_color(palette::SELECTION)
                    .stroke_width(scale.px(RING_WIDTH))
                    .stroke_alignment(StrokeAlignment::Inside)
                    .build(),
            )
            .draw(target)?;
    }
    // The card, framed in the trust colour.
    RoundedRectangle::with_equal_corners(area, corner)
        .into_styled(
            PrimitiveStyleBuilder::new()
                .fill_color(palette::SURFACE_RAISED)
                .stroke_color(tile.trust_colour)
                .stroke_width(scale.px(layout::BORDER))
                .stroke_alignment(StrokeAlignment::Inside)
                .build(),
        )
        .draw(target)?;

    draw_thumbnail(target, tile, thumbnail_area, scale)?;

    // Caption: name and label on the left, state badge on the right.
    let padding = scale.px(layout::CAPTION_PADDING);
    let border = scale.px(layout::BORDER);
    let left = thumbnail_area.top_left.x + padding as i32;
    let name_top = thumbnail_area.top_left.y + (thumbnail_area.size.height + padding) as i32;
    let name_style = text::style(TextRole::Strong, scale, palette::TEXT);
    let label_style = text::style(TextRole::Caption, scale, palette::TEXT_MUTED);
    let name_height = text::line_height(&name_style);
    let label_top = name_top + (name_height + scale.px(2)) as i32;

    let badge = state_badge_rect(tile.state, area, name_top, name_height, scale);
    let text_room = (badge.top_left.x - left - scale.offset(8)).max(0) as u32;
    text::draw_fitted(target, tile.name, Point::new(left, name_top), Baseline::Top, text_room, &name_style)?;
    let label_room = area.size.width.saturating_sub(2 * (padding + border));
    text::draw_fitted(target, tile.label, Point::new(left, label_top), Baseline::Top, label_room, &label_style)?;
    draw_state_badge(target, tile.state, badge, scale)
}

fn draw_thumbnail<D>(target: &mut D, tile: &Tile<'_>, area: Rectangle, scale: Scale) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let backdrop = palette::darken(palette::SURFACE, 80);
    target.fill_solid(&area, backdrop)?;
    let dim = tile.state != VmState::Running;
    match tile.thumbnail {
        // A held-back VM's last picture is stale; the tile says why it does not run.
        Some(thumbnail) if thumbnail.is_complete() && tile.state != VmState::NeedsCheckIn => {
            thumbnail.draw_centred(target, &area, dim)?
        }
        _ => {
            let style = text::style(TextRole::Body, scale, palette::TEXT_MUTED);
            let message = match tile.state {
                VmState::Running => "No display",
                VmState::NeedsCheckIn => HELD_MESSAGE,
                VmState::DiskLocked => LOCKED_MESSAGE,
                other => other.name(),
            };
            text::draw(target, message, area.center(), Anchor::CENTER, &style)?;
        }
    }
    Ok(())
}

/// The pill that says Running / Stopped / Crashed, right-aligned on the name line.
fn state_badge_rect(state: VmState, tile: Rectangle, name_top: i32, name_height: u32, scale: Scale) -> Rectangle {
    let style = text::style(TextRole::Caption, scale, palette::TEXT);
    let width = text::width(state.name(), &style) + scale.px(20);
    let height = text::line_height(&style) + scale.px(4);
    let right =
        tile.top_left.x + tile.size.width as i32 - scale.offset((layout::BORDER + layout::CAPTION_PADDING) as i32);
    let top = name_top + (name_height as i32 - height as i32) / 2;
    Rectangle::new(Point::new(right - width as i32, top), Size::new(width, height))
}

fn draw_state_badge<D>(target: &mut D, state: VmState, badge: Rectangle, scale: Scale) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let radius = badge.size.height / 2;
    RoundedRectangle::with_equal_corners(badge, Size::new(radius, radius))
        .into_styled(PrimitiveStyleBuilder::new().fill_color(state.colour()).build())
        .draw(target)?;
    let style = text::style(TextRole::Caption, scale, contrasting_text(state.colour()));
    text::draw(target, state.name(), badge.center(), Anchor::CENTER, &style).map(|_| ())
}
