//! Small status icons drawn with primitives, so they scale with the screen and need
//! no bitmap assets. Each draws inside a square of side `size` at `top_left`.

use embedded_graphics::prelude::AngleUnit;
use embedded_graphics::{
    Drawable,
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Primitive, Size},
    primitives::{Arc, Circle, Line, PrimitiveStyle, Rectangle, RoundedRectangle},
};

/// A padlock: a filled body under a round shackle.
pub fn draw_lock<D>(
    target: &mut D,
    top_left: Point,
    size: u32,
    colour: Rgb888,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let unit = |n: u32| (size * n / 16) as i32;
    let stroke = (size / 8).max(2);
    let shackle_width = size * 8 / 16;
    let shackle_left = top_left.x + unit(4);
    // Shackle: a half circle on top of two short legs.
    Arc::new(
        Point::new(shackle_left, top_left.y + unit(1)),
        shackle_width,
        180.0.deg(),
        180.0.deg(),
    )
    .into_styled(PrimitiveStyle::with_stroke(colour, stroke))
    .draw(target)?;
    let leg_top = top_left.y + unit(1) + (shackle_width / 2) as i32;
    let leg_bottom = top_left.y + unit(8);
    let half_stroke = (stroke / 2) as i32;
    for x in [
        shackle_left + half_stroke,
        shackle_left + shackle_width as i32 - 1 - half_stroke,
    ] {
        Line::new(Point::new(x, leg_top), Point::new(x, leg_bottom))
            .into_styled(PrimitiveStyle::with_stroke(colour, stroke))
            .draw(target)?;
    }
    let body = Rectangle::new(
        Point::new(top_left.x + unit(2), top_left.y + unit(7)),
        Size::new(size * 12 / 16, size * 9 / 16),
    );
    RoundedRectangle::with_equal_corners(body, Size::new(stroke, stroke))
        .into_styled(PrimitiveStyle::with_fill(colour))
        .draw(target)
}

/// Four signal bars rising left to right; filled when the network is up, outlined and
/// crossed out when it is down.
pub fn draw_network<D>(
    target: &mut D,
    top_left: Point,
    size: u32,
    colour: Rgb888,
    up: bool,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let bars = 4u32;
    let gap = (size / 16).max(1);
    let bar_width = ((size - gap * (bars - 1)) / bars).max(1);
    let bottom = top_left.y + size as i32;
    for i in 0..bars {
        let height = size * (i + 1) / bars;
        let bar = Rectangle::new(
            Point::new(
                top_left.x + (i * (bar_width + gap)) as i32,
                bottom - height as i32,
            ),
            Size::new(bar_width, height),
        );
        let style = if up {
            PrimitiveStyle::with_fill(colour)
        } else {
            PrimitiveStyle::with_stroke(colour, 1)
        };
        bar.into_styled(style).draw(target)?;
    }
    if !up {
        let stroke = (size / 10).max(2);
        let corner = Point::new(top_left.x, top_left.y);
        let side = (size / 2) as i32;
        Line::new(corner, corner + Point::new(side, side))
            .into_styled(PrimitiveStyle::with_stroke(colour, stroke))
            .draw(target)?;
        Line::new(corner + Point::new(side, 0), corner + Point::new(0, side))
            .into_styled(PrimitiveStyle::with_stroke(colour, stroke))
            .draw(target)?;
    }
    Ok(())
}

/// A filled dot, e.g. the state light on an overview tile.
pub fn draw_dot<D>(
    target: &mut D,
    centre: Point,
    diameter: u32,
    colour: Rgb888,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    Circle::with_center(centre, diameter)
        .into_styled(PrimitiveStyle::with_fill(colour))
        .draw(target)
}
