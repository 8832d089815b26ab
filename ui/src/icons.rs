//! Small status icons drawn with primitives, so they scale with the screen and need
//! no bitmap assets. Each draws inside a square of side `size` at `top_left`.

use embedded_graphics::prelude::AngleUnit;
use embedded_graphics::{
    Drawable,
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Primitive, Size},
    primitives::{Arc, Circle, Line, PrimitiveStyle, Rectangle, RoundedRectangle},
};

/// A padlock: a rounded body under a round shackle.
pub fn draw_lock<D>(target: &mut D, top_left: Point, size: u32, colour: Rgb888) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let unit = |n: u32| (size * n / 16) as i32;
    let stroke = (size / 8).max(2);
    let shackle = PrimitiveStyle::with_stroke(colour, stroke);
    // The shackle's centre line: a half circle whose legs run down into the body.
    let diameter = size * 8 / 16;
    let left = top_left.x + unit(4);
    let right = left + diameter as i32 - 1;
    let arc_top = top_left.y + (stroke / 2) as i32;
    Arc::new(Point::new(left, arc_top), diameter, 180.0.deg(), 180.0.deg()).into_styled(shackle).draw(target)?;
    let leg_top = arc_top + (diameter / 2) as i32;
    let body_top = top_left.y + unit(7);
    for x in [left, right] {
        Line::new(Point::new(x, leg_top), Point::new(x, body_top)).into_styled(shackle).draw(target)?;
    }
    let body =
        Rectangle::new(Point::new(top_left.x + unit(2), body_top), Size::new(size * 12 / 16, size - unit(7) as u32));
    RoundedRectangle::with_equal_corners(body, Size::new(stroke, stroke))
        .into_styled(PrimitiveStyle::with_fill(colour))
        .draw(target)
}

/// Four signal bars rising left to right; filled when the network is up, outlined and
/// crossed out when it is down.
pub fn draw_network<D>(target: &mut D, top_left: Point, size: u32, colour: Rgb888, up: bool) -> Result<(), D::Error>
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
            Point::new(top_left.x + (i * (bar_width + gap)) as i32, bottom - height as i32),
            Size::new(bar_width, height),
        );
        let style = if up {
            PrimitiveStyle::with_fill(colour)
        } else {
            PrimitiveStyle::with_stroke(colour, (size / 15).max(1))
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
pub fn draw_dot<D>(target: &mut D, centre: Point, diameter: u32, colour: Rgb888) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    Circle::with_center(centre, diameter).into_styled(PrimitiveStyle::with_fill(colour)).draw(target)
}
