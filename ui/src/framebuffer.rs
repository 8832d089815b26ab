//! A `DrawTarget` over a linear 32-bit-per-pixel framebuffer, such as the one UEFI GOP
//! leaves behind, or a plain `Vec<u32>` in host tests.

use core::convert::Infallible;

use embedded_graphics::{
    pixelcolor::{Rgb888, RgbColor},
    prelude::{Dimensions, DrawTarget, OriginDimensions, Pixel, Point, Size},
    primitives::Rectangle,
};

/// How the three colour bytes sit inside one 32-bit pixel (byte 3 is reserved).
///
/// Byte numbers are memory order, so `Rgb` is UEFI's
/// `PixelRedGreenBlueReserved8BitPerColor` and `Bgr` is
/// `PixelBlueGreenRedReserved8BitPerColor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelOrder {
    /// Byte 0 red, byte 1 green, byte 2 blue.
    Rgb,
    /// Byte 0 blue, byte 1 green, byte 2 red.
    Bgr,
}

impl PixelOrder {
    /// The framebuffer word for `colour`.
    pub fn encode(self, colour: Rgb888) -> u32 {
        let (r, g, b) = (colour.r(), colour.g(), colour.b());
        match self {
            PixelOrder::Rgb => u32::from_le_bytes([r, g, b, 0]),
            PixelOrder::Bgr => u32::from_le_bytes([b, g, r, 0]),
        }
    }

    /// The colour a framebuffer word shows; the reserved byte is ignored.
    pub const fn decode(self, word: u32) -> Rgb888 {
        let [b0, b1, b2, _] = word.to_le_bytes();
        match self {
            PixelOrder::Rgb => Rgb888::new(b0, b1, b2),
            PixelOrder::Bgr => Rgb888::new(b2, b1, b0),
        }
    }
}

/// Why a buffer cannot be used as a framebuffer of the given geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramebufferError {
    /// A scan line must hold at least `width` pixels.
    StrideBelowWidth { width: u32, stride: u32 },
    /// The buffer ends before the last pixel of the last line.
    BufferTooSmall { needed: usize, len: usize },
}

/// A linear framebuffer: `height` lines of `stride` pixels, of which the first `width`
/// are visible. Pixels outside the visible area are silently dropped.
#[derive(Debug)]
pub struct LinearFb<'a> {
    pixels: &'a mut [u32],
    width: u32,
    height: u32,
    stride: u32,
    order: PixelOrder,
}

impl<'a> LinearFb<'a> {
    /// Wraps `pixels` after checking that the geometry fits inside it.
    pub fn new(
        pixels: &'a mut [u32],
        width: u32,
        height: u32,
        stride: u32,
        order: PixelOrder,
    ) -> Result<Self, FramebufferError> {
        if stride < width {
            return Err(FramebufferError::StrideBelowWidth { width, stride });
        }
        let needed = Self::required_len(width, height, stride);
        if pixels.len() < needed {
            return Err(FramebufferError::BufferTooSmall { needed, len: pixels.len() });
        }
        Ok(Self { pixels, width, height, stride, order })
    }

    /// How many `u32`s a buffer of this geometry needs: the last line may stop at `width`.
    pub const fn required_len(width: u32, height: u32, stride: u32) -> usize {
        if width == 0 || height == 0 {
            return 0;
        }
        (height as usize - 1) * stride as usize + width as usize
    }

    pub const fn width(&self) -> u32 {
        self.width
    }

    pub const fn height(&self) -> u32 {
        self.height
    }

    /// Pixels per scan line.
    pub const fn stride(&self) -> u32 {
        self.stride
    }

    pub const fn order(&self) -> PixelOrder {
        self.order
    }

    /// The colour at `point`, or `None` outside the visible area.
    pub fn pixel(&self, point: Point) -> Option<Rgb888> {
        let index = self.index_of(point)?;
        self.pixels.get(index).map(|&word| self.order.decode(word))
    }

    /// The raw words of visible line `y` (exactly `width` long).
    pub fn row(&self, y: u32) -> Option<&[u32]> {
        if y >= self.height {
            return None;
        }
        let start = y as usize * self.stride as usize;
        self.pixels.get(start..start + self.width as usize)
    }

    fn index_of(&self, point: Point) -> Option<usize> {
        let x = u32::try_from(point.x).ok()?;
        let y = u32::try_from(point.y).ok()?;
        if x >= self.width || y >= self.height {
            return None;
        }
        Some(y as usize * self.stride as usize + x as usize)
    }

    /// The part of `area` that lies on screen, as `(x, y, width, height)` in pixels.
    fn clip(&self, area: &Rectangle) -> Option<(usize, usize, usize, usize)> {
        let visible = area.intersection(&self.bounding_box());
        let bottom_right = visible.bottom_right()?;
        let (x0, y0) = (visible.top_left.x, visible.top_left.y);
        let x0 = usize::try_from(x0).ok()?;
        let y0 = usize::try_from(y0).ok()?;
        let x1 = usize::try_from(bottom_right.x).ok()? + 1;
        let y1 = usize::try_from(bottom_right.y).ok()? + 1;
        Some((x0, y0, x1 - x0, y1 - y0))
    }
}

impl OriginDimensions for LinearFb<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for LinearFb<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(point, colour) in pixels {
            if let Some(index) = self.index_of(point)
                && let Some(word) = self.pixels.get_mut(index)
            {
                *word = self.order.encode(colour);
            }
        }
        Ok(())
    }

    fn fill_contiguous<I>(&mut self, area: &Rectangle, colors: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Self::Color>,
    {
        let Some((x0, y0, w, h)) = self.clip(area) else {
            return Ok(());
        };
        // `colors` covers the whole of `area` row by row; skip what falls off screen.
        let skip_left = x0 as i64 - area.top_left.x as i64;
        let skip_top = y0 as i64 - area.top_left.y as i64;
        let area_w = area.size.width as usize;
        let skip_right = area_w - w - skip_left as usize;
        let stride = self.stride as usize;
        let order = self.order;
        let mut colours = colors.into_iter();
        if skip_top > 0 {
            for _ in colours.by_ref().take(skip_top as usize * area_w) {}
        }
        for y in y0..y0 + h {
            for _ in colours.by_ref().take(skip_left as usize) {}
            let start = y * stride + x0;
            let Some(row) = self.pixels.get_mut(start..start + w) else {
                return Ok(());
            };
            for (word, colour) in row.iter_mut().zip(colours.by_ref()) {
                *word = order.encode(colour);
            }
            for _ in colours.by_ref().take(skip_right) {}
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        let Some((x0, y0, w, h)) = self.clip(area) else {
            return Ok(());
        };
        let word = self.order.encode(color);
        let stride = self.stride as usize;
        for y in y0..y0 + h {
            let start = y * stride + x0;
            if let Some(row) = self.pixels.get_mut(start..start + w) {
                row.fill(word);
            }
        }
        Ok(())
    }

    fn clear(&mut self, color: Self::Color) -> Result<(), Self::Error> {
        self.fill_solid(&self.bounding_box(), color)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::{
        Drawable,
        prelude::Primitive,
        primitives::{PrimitiveStyle, StyledDrawable},
    };

    const RED: Rgb888 = Rgb888::new(0xff, 0x10, 0x01);

    #[test]
    fn rgb_order_puts_red_in_byte_zero() {
        let mut buf = [0u32; 4];
        let mut fb = LinearFb::new(&mut buf, 2, 2, 2, PixelOrder::Rgb).unwrap();
        fb.draw_iter([Pixel(Point::new(1, 0), RED)]).unwrap();
        assert_eq!(buf[1].to_le_bytes(), [0xff, 0x10, 0x01, 0]);
    }

    #[test]
    fn bgr_order_puts_blue_in_byte_zero() {
        let mut buf = [0u32; 4];
        let mut fb = LinearFb::new(&mut buf, 2, 2, 2, PixelOrder::Bgr).unwrap();
        fb.draw_iter([Pixel(Point::new(0, 1), RED)]).unwrap();
        assert_eq!(buf[2].to_le_bytes(), [0x01, 0x10, 0xff, 0]);
    }

    #[test]
    fn encode_and_decode_round_trip_in_both_orders() {
        for order in [PixelOrder::Rgb, PixelOrder::Bgr] {
            assert_eq!(order.decode(order.encode(RED)), RED);
        }
        assert_eq!(PixelOrder::Rgb.decode(0xff00_0000), Rgb888::BLACK);
    }

    #[test]
    fn stride_wider_than_width_leaves_padding_alone() {
        const PAD: u32 = 0xdead_beef;
        let mut buf = [PAD; 5 * 3];
        let mut fb = LinearFb::new(&mut buf, 3, 3, 5, PixelOrder::Rgb).unwrap();
        fb.clear(Rgb888::WHITE).unwrap();
        fb.draw_iter([Pixel(Point::new(2, 2), RED)]).unwrap();
        assert_eq!(fb.pixel(Point::new(2, 2)), Some(RED));
        assert_eq!(fb.row(1).unwrap().len(), 3);
        for y in 0..3 {
            assert_eq!(&buf[y * 5 + 3..y * 5 + 5], &[PAD, PAD], "line {y}");
        }
        assert_eq!(buf[2 * 5 + 2], PixelOrder::Rgb.encode(RED));
    }

    #[test]
    fn last_line_may_end_at_width() {
        let mut buf = [0u32; 5 + 5 + 3];
        assert!(LinearFb::new(&mut buf, 3, 3, 5, PixelOrder::Rgb).is_ok());
        let mut short = [0u32; 12];
        assert_eq!(
            LinearFb::new(&mut short, 3, 3, 5, PixelOrder::Rgb).unwrap_err(),
            FramebufferError::BufferTooSmall { needed: 13, len: 12 }
        );
    }

    #[test]
    fn stride_below_width_is_refused() {
        let mut buf = [0u32; 64];
        assert_eq!(
            LinearFb::new(&mut buf, 8, 2, 4, PixelOrder::Rgb).unwrap_err(),
            FramebufferError::StrideBelowWidth { width: 8, stride: 4 }
        );
    }

    #[test]
    fn out_of_bounds_pixels_are_dropped() {
        let mut buf = [0u32; 4 * 4];
        let mut fb = LinearFb::new(&mut buf, 4, 4, 4, PixelOrder::Rgb).unwrap();
        fb.draw_iter([
            Pixel(Point::new(-1, 0), RED),
            Pixel(Point::new(0, -1), RED),
            Pixel(Point::new(4, 0), RED),
            Pixel(Point::new(0, 4), RED),
            Pixel(Point::new(i32::MAX, i32::MIN), RED),
        ])
        .unwrap();
        assert!(buf.iter().all(|&w| w == 0));
    }

    #[test]
    fn fill_solid_is_clipped_to_the_screen() {
        let mut buf = [0u32; 4 * 4];
        let mut fb = LinearFb::new(&mut buf, 4, 4, 4, PixelOrder::Rgb).unwrap();
        let area = Rectangle::new(Point::new(-2, 2), Size::new(4, 10));
        fb.fill_solid(&area, RED).unwrap();
        // Only x 0..2, y 2..4 is on screen.
        for y in 0..4 {
            for x in 0..4 {
                let expected = if x < 2 && y >= 2 { RED } else { Rgb888::BLACK };
                assert_eq!(fb.pixel(Point::new(x, y)), Some(expected), "({x},{y})");
            }
        }
        let far_away = Rectangle::new(Point::new(100, 100), Size::new(5, 5));
        fb.fill_solid(&far_away, RED).unwrap();
        fb.fill_solid(&Rectangle::new(Point::zero(), Size::zero()), RED).unwrap();
    }

    #[test]
    fn fill_contiguous_keeps_the_colour_sequence_when_clipped() {
        let mut buf = [0u32; 3 * 3];
        let mut fb = LinearFb::new(&mut buf, 3, 3, 3, PixelOrder::Rgb).unwrap();
        // A 3x3 area at (-1,-1): colours numbered 0..9 row by row.
        let area = Rectangle::new(Point::new(-1, -1), Size::new(3, 3));
        let colours = (0..9u8).map(|i| Rgb888::new(i, 0, 0));
        fb.fill_contiguous(&area, colours).unwrap();
        assert_eq!(fb.pixel(Point::new(0, 0)).unwrap().r(), 4);
        assert_eq!(fb.pixel(Point::new(1, 0)).unwrap().r(), 5);
        assert_eq!(fb.pixel(Point::new(0, 1)).unwrap().r(), 7);
        assert_eq!(fb.pixel(Point::new(1, 1)).unwrap().r(), 8);
        assert_eq!(fb.pixel(Point::new(2, 2)), Some(Rgb888::BLACK));
    }

    #[test]
    fn fill_contiguous_tolerates_a_short_colour_iterator() {
        let mut buf = [0u32; 4];
        let mut fb = LinearFb::new(&mut buf, 2, 2, 2, PixelOrder::Rgb).unwrap();
        let area = Rectangle::new(Point::zero(), Size::new(2, 2));
        fb.fill_contiguous(&area, [RED]).unwrap();
        assert_eq!(fb.pixel(Point::new(0, 0)), Some(RED));
        assert_eq!(fb.pixel(Point::new(1, 1)), Some(Rgb888::BLACK));
    }

    #[test]
    fn primitives_draw_through_the_target() {
        let mut buf = [0u32; 8 * 8];
        let mut fb = LinearFb::new(&mut buf, 8, 8, 8, PixelOrder::Bgr).unwrap();
        Rectangle::new(Point::new(6, 6), Size::new(4, 4))
            .into_styled(PrimitiveStyle::with_stroke(RED, 1))
            .draw(&mut fb)
            .unwrap();
        Rectangle::new(Point::new(-3, -3), Size::new(5, 5))
            .draw_styled(&PrimitiveStyle::with_fill(RED), &mut fb)
            .unwrap();
        assert_eq!(fb.pixel(Point::new(6, 6)), Some(RED));
        assert_eq!(fb.pixel(Point::new(1, 1)), Some(RED));
        assert_eq!(fb.pixel(Point::new(2, 2)), Some(Rgb888::BLACK));
    }
}
