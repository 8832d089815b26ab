//! Screenshots from QMP `screendump`, decoded into RGB pixels for assertions.

use std::path::Path;

pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    /// RGB triples, row-major.
    pub rgb: Vec<u8>,
}

impl Screenshot {
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
