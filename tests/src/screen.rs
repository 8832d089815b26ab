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
