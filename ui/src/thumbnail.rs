//! Live thumbnails: shrinking a guest's framebuffer for the overview, and drawing the
//! result.

use embedded_graphics::{
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Size},
    primitives::Rectangle,
};

use crate::{PixelOrder, palette};

/// Why `downscale` could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownscaleError {
    /// A width or height is zero.
    EmptyImage,
    /// `src_stride` is below `src_w`.
    StrideBelowWidth,
    /// `src` ends before its last pixel.
    SourceTooSmall,
    /// `dst` holds fewer than `dst_w * dst_h` pixels.
    DestinationTooSmall,
}

/// Shrinks `src` (`src_w` x `src_h`, `src_stride` pixels per line) into `dst` (dense,
/// `dst_w` x `dst_h`) with a box filter: each output pixel is the average of the
/// source pixels it covers. Each byte of the 32-bit pixels is averaged separately, so
/// the pixel order does not matter and carries over unchanged. Enlarging repeats
/// pixels (nearest neighbour).
pub fn downscale(
    src: &[u32],
    src_w: u32,
    src_h: u32,
    src_stride: u32,
    dst: &mut [u32],
    dst_w: u32,
    dst_h: u32,
) -> Result<(), DownscaleError> {
    if src_w == 0 || src_h == 0 || dst_w == 0 || dst_h == 0 {
        return Err(DownscaleError::EmptyImage);
    }
    if src_stride < src_w {
        return Err(DownscaleError::StrideBelowWidth);
    }
    let src_needed = (src_h as usize - 1) * src_stride as usize + src_w as usize;
    if src.len() < src_needed {
        return Err(DownscaleError::SourceTooSmall);
    }
    if dst.len() < dst_w as usize * dst_h as usize {
        return Err(DownscaleError::DestinationTooSmall);
    }

    // The half-open source span that output index `i` of `n` covers out of `len`.
    let span = |i: u32, n: u32, len: u32| {
        let start = (i as u64 * len as u64 / n as u64) as usize;
        let end = ((i as u64 + 1) * len as u64 / n as u64) as usize;
        (start, end.max(start + 1))
    };
    for dy in 0..dst_h {
        let (y0, y1) = span(dy, dst_h, src_h);
        for dx in 0..dst_w {
            let (x0, x1) = span(dx, dst_w, src_w);
            let mut sums = [0u64; 4];
            for y in y0..y1 {
                let line = y * src_stride as usize;
                for &word in &src[line + x0..line + x1] {
                    for (sum, byte) in sums.iter_mut().zip(word.to_le_bytes()) {
                        *sum += byte as u64;
                    }
                }
            }
            let count = ((y1 - y0) * (x1 - x0)) as u64;
            // Round to nearest.
            let average = sums.map(|sum| ((sum + count / 2) / count) as u8);
            dst[dy as usize * dst_w as usize + dx as usize] = u32::from_le_bytes(average);
        }
    }
    Ok(())
}

/// The largest size with the aspect ratio of `image` that fits in `bounds`.
pub fn fit_within(image: Size, bounds: Size) -> Size {
    if image.width == 0 || image.height == 0 {
        return Size::zero();
    }
    let (iw, ih) = (image.width as u64, image.height as u64);
    let (bw, bh) = (bounds.width as u64, bounds.height as u64);
    if bw * ih <= bh * iw {
        // Width-limited.
        Size::new(bounds.width, (bw * ih / iw) as u32)
    } else {
        Size::new((bh * iw / ih) as u32, bounds.height)
    }
}

/// A small picture of a VM's screen, dense rows of 32-bit pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thumbnail<'a> {
    pub pixels: &'a [u32],
    pub width: u32,
    pub height: u32,
    pub order: PixelOrder,
}

impl Thumbnail<'_> {
    /// Whether `pixels` holds the whole picture.
    pub fn is_complete(&self) -> bool {
        self.pixels.len() >= self.width as usize * self.height as usize
    }

    /// Draws the picture centred in `area`, cut to `area`. With `dim` set it is
    /// darkened, for a VM that no longer runs.
    pub fn draw_centred<D>(&self, target: &mut D, area: &Rectangle, dim: bool) -> Result<(), D::Error>
    where
        D: DrawTarget<Color = Rgb888>,
    {
        if !self.is_complete() {
            return Ok(());
        }
        let size = Size::new(self.width, self.height);
        let offset = Point::new(
            (area.size.width as i32 - self.width as i32) / 2,
            (area.size.height as i32 - self.height as i32) / 2,
        );
        let placed = Rectangle::new(area.top_left + offset, size);
        let visible = placed.intersection(area);
        if visible.is_zero_sized() {
            return Ok(());
        }
        let first_x = (visible.top_left.x - placed.top_left.x) as usize;
        let first_y = (visible.top_left.y - placed.top_left.y) as usize;
        let (w, h) = (visible.size.width as usize, visible.size.height as usize);
        let width = self.width as usize;
        let order = self.order;
        let colours = (first_y..first_y + h)
            .flat_map(|y| &self.pixels[y * width + first_x..y * width + first_x + w])
            .map(move |&word| {
                let colour = order.decode(word);
                if dim { palette::darken(colour, 150) } else { colour }
            });
        target.fill_contiguous(&visible, colours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(level: u8) -> u32 {
        u32::from_le_bytes([level, level, level, 0])
    }

    #[test]
    fn halving_averages_each_two_by_two_block() {
        // 4x2 source with a stride of 5 (the fifth column is padding).
        let src = [
            grey(0),
            grey(100),
            grey(200),
            grey(200),
            0xffff_ffff, //
            grey(100),
            grey(200),
            grey(200),
            grey(200),
            0xffff_ffff,
        ];
        let mut dst = [0u32; 2];
        downscale(&src, 4, 2, 5, &mut dst, 2, 1).unwrap();
        assert_eq!(dst, [grey(100), grey(200)]);
    }

    #[test]
    fn channels_are_averaged_independently() {
        let src = [u32::from_le_bytes([255, 0, 10, 0]), u32::from_le_bytes([0, 255, 20, 255])];
        let mut dst = [0u32; 1];
        downscale(&src, 2, 1, 2, &mut dst, 1, 1).unwrap();
        assert_eq!(dst[0].to_le_bytes(), [128, 128, 15, 128]);
    }

    #[test]
    fn uneven_ratios_cover_every_source_pixel_once() {
        // 5 -> 2: spans [0,2) and [2,5).
        let src = [grey(10), grey(20), grey(30), grey(40), grey(50)];
        let mut dst = [0u32; 2];
        downscale(&src, 5, 1, 5, &mut dst, 2, 1).unwrap();
        assert_eq!(dst, [grey(15), grey(40)]);
    }

    #[test]
    fn enlarging_repeats_pixels() {
        let src = [grey(1), grey(2)];
        let mut dst = [0u32; 4];
        downscale(&src, 2, 1, 2, &mut dst, 4, 1).unwrap();
        assert_eq!(dst, [grey(1), grey(1), grey(2), grey(2)]);
    }

    #[test]
    fn bad_geometry_is_an_error_not_a_panic() {
        let src = [0u32; 8];
        let mut dst = [0u32; 4];
        assert_eq!(downscale(&src, 0, 1, 1, &mut dst, 1, 1), Err(DownscaleError::EmptyImage));
        assert_eq!(downscale(&src, 4, 2, 3, &mut dst, 1, 1), Err(DownscaleError::StrideBelowWidth));
        assert_eq!(downscale(&src, 4, 3, 4, &mut dst, 1, 1), Err(DownscaleError::SourceTooSmall));
        assert_eq!(downscale(&src, 4, 2, 4, &mut dst, 3, 2), Err(DownscaleError::DestinationTooSmall));
        // The last line may stop at the width.
        assert_eq!(downscale(&src, 2, 2, 6, &mut dst, 2, 2), Ok(()));
    }

    #[test]
    fn fit_within_keeps_the_aspect_ratio() {
        assert_eq!(fit_within(Size::new(1920, 1080), Size::new(320, 320)), Size::new(320, 180));
        assert_eq!(fit_within(Size::new(1280, 800), Size::new(400, 200)), Size::new(320, 200));
        assert_eq!(fit_within(Size::new(0, 800), Size::new(400, 200)), Size::zero());
    }

    #[test]
    fn a_thumbnail_is_centred_and_cut_to_its_area() {
        use crate::LinearFb;
        let pixels = [PixelOrder::Rgb.encode(Rgb888::new(9, 9, 9)); 16];
        let thumbnail = Thumbnail { pixels: &pixels, width: 4, height: 4, order: PixelOrder::Rgb };
        let mut buf = [0u32; 6 * 6];
        let mut fb = LinearFb::new(&mut buf, 6, 6, 6, PixelOrder::Rgb).unwrap();
        // A 2x6 area: only the middle two columns of the picture show, rows 0..4 shifted by 1.
        let area = Rectangle::new(Point::new(2, 0), Size::new(2, 6));
        thumbnail.draw_centred(&mut fb, &area, false).unwrap();
        for y in 0..6 {
            for x in 0..6 {
                let inside = (2..4).contains(&x) && (1..5).contains(&y);
                let expected = if inside { Rgb888::new(9, 9, 9) } else { Rgb888::new(0, 0, 0) };
                assert_eq!(fb.pixel(Point::new(x, y)), Some(expected), "({x},{y})");
            }
        }
    }
}
