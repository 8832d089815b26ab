//! Screenshots from QMP `screendump`, decoded into RGB pixels for assertions.

use std::path::Path;

pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    /// RGB triples, row-major.
    pub rgb: Vec<u8>,
}

impl Screenshot {
    /// Whether character cell `col` of the first row of a desktop's Linux console has
    /// a lit pixel, the desktop filling a 1280x800 screen: fbcon's 8x16 font, row 0
    /// starting under the trust strip.
    pub fn console_cell_lit(&self, col: u32) -> bool {
        use embedded_graphics::prelude::Size;
        let strip = ui::strip::height(ui::Scale::for_screen(Size::new(1280, 800)));
        (0..16).any(|dy| (0..8).any(|dx| self.pixel(col * 8 + dx, strip + dy) != (0, 0, 0)))
    }

    pub fn load(path: &Path) -> Result<Screenshot, String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
        let mut buf = vec![0; reader.output_buffer_size().ok_or("PNG too large")?];
        let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
        let channels = info.color_type.samples();
        let rgb = buf[..info.buffer_size()]
            .chunks_exact(channels)
            .flat_map(|px| [px[0], px[1.min(channels - 1)], px[2.min(channels - 1)]])
            .collect();
        Ok(Screenshot { width: info.width, height: info.height, rgb })
    }

    pub fn pixel(&self, x: u32, y: u32) -> (u8, u8, u8) {
        let i = ((y * self.width + x) * 3) as usize;
        (self.rgb[i], self.rgb[i + 1], self.rgb[i + 2])
    }

    /// How many pixels in the rectangle have exactly this colour.
    pub fn count(&self, x0: u32, y0: u32, w: u32, h: u32, colour: (u8, u8, u8)) -> usize {
        let mut n = 0;
        for y in y0..(y0 + h).min(self.height) {
            for x in x0..(x0 + w).min(self.width) {
                n += usize::from(self.pixel(x, y) == colour);
            }
        }
        n
    }
}

impl Screenshot {
    /// Pixels of exactly `colour` inside an embedded-graphics rectangle.
    pub fn count_in(
        &self,
        rect: embedded_graphics::primitives::Rectangle,
        colour: embedded_graphics::pixelcolor::Rgb888,
    ) -> usize {
        use embedded_graphics::prelude::RgbColor;
        let (x, y) = (rect.top_left.x.max(0) as u32, rect.top_left.y.max(0) as u32);
        self.count(x, y, rect.size.width, rect.size.height, (colour.r(), colour.g(), colour.b()))
    }

    pub fn is(&self, x: u32, y: u32, colour: embedded_graphics::pixelcolor::Rgb888) -> bool {
        use embedded_graphics::prelude::RgbColor;
        self.pixel(x, y) == (colour.r(), colour.g(), colour.b())
    }
}

impl Screenshot {
    /// What `draw` paints on an empty screen of this size, rendered on the host with
    /// the same `ui` code the hypervisor runs: comparing it with a screendump checks
    /// every glyph of a screen's text.
    pub fn render(
        width: u32,
        height: u32,
        draw: impl FnOnce(&mut Canvas) -> Result<(), core::convert::Infallible>,
    ) -> Screenshot {
        let mut canvas = Canvas(Screenshot { width, height, rgb: vec![0; (width * height * 3) as usize] });
        let _ = draw(&mut canvas);
        canvas.0
    }

    /// How many pixels differ from `other` (a different size counts every pixel).
    pub fn differing_pixels(&self, other: &Screenshot) -> usize {
        if (self.width, self.height) != (other.width, other.height) {
            return (self.width * self.height) as usize;
        }
        self.rgb.chunks_exact(3).zip(other.rgb.chunks_exact(3)).filter(|(a, b)| a != b).count()
    }

    /// Writes the screenshot as a PNG (for a failing comparison's evidence).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&self.rgb).map_err(|e| e.to_string())
    }
}

/// An in-memory RGB screen `ui` code can draw on.
pub struct Canvas(Screenshot);

impl embedded_graphics::geometry::OriginDimensions for Canvas {
    fn size(&self) -> embedded_graphics::geometry::Size {
        embedded_graphics::geometry::Size::new(self.0.width, self.0.height)
    }
}

impl embedded_graphics::draw_target::DrawTarget for Canvas {
    type Color = embedded_graphics::pixelcolor::Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = embedded_graphics::Pixel<Self::Color>>,
    {
        use embedded_graphics::prelude::RgbColor;
        for embedded_graphics::Pixel(point, colour) in pixels {
            let (Ok(x), Ok(y)) = (u32::try_from(point.x), u32::try_from(point.y)) else { continue };
            if x < self.0.width && y < self.0.height {
                let i = ((y * self.0.width + x) * 3) as usize;
                self.0.rgb[i..i + 3].copy_from_slice(&[colour.r(), colour.g(), colour.b()]);
            }
        }
        Ok(())
    }
}
