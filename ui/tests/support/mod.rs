//! Golden-image comparison for whole screens.
//!
//! Each screen is rendered into memory and compared, pixel for pixel, with
//! `ui/tests/golden/<name>.png`. A missing or different golden fails the test and
//! leaves `target/ui-golden-actual/<name>.png` and `<name>.diff.png` (changed pixels in
//! magenta over a faded copy of the golden) for review.
//!
//! Goldens change only on request: `BULKHEAD_UPDATE_GOLDENS=1 cargo test -p ui --test
//! golden` rewrites them from the current rendering. Review the new PNGs before
//! committing them.

use std::{
    fs::{self, File},
    io::BufWriter,
    path::{Path, PathBuf},
};

use embedded_graphics::prelude::Size;
use ui::{LinearFb, PixelOrder};

/// An in-memory screen.
pub struct Canvas {
    pub pixels: Vec<u32>,
    pub size: Size,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas { pixels: vec![0; width as usize * height as usize], size: Size::new(width, height) }
    }

    pub fn target(&mut self) -> LinearFb<'_> {
        let Size { width, height } = self.size;
        LinearFb::new(&mut self.pixels, width, height, width, PixelOrder::Rgb).expect("canvas geometry is consistent")
    }

    fn to_rgb_bytes(&self) -> Vec<u8> {
        // A plain loop: iterator adapters are slow in the unoptimised test build.
        let mut rgb = vec![0; self.pixels.len() * 3];
        for (out, word) in rgb.chunks_exact_mut(3).zip(&self.pixels) {
            out.copy_from_slice(&word.to_le_bytes()[..3]);
        }
        rgb
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn actual_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.parent().unwrap_or(manifest).join("target")
    });
    target.join("ui-golden-actual")
}

fn update_requested() -> bool {
    std::env::var("BULKHEAD_UPDATE_GOLDENS").is_ok_and(|v| v == "1")
}

fn write_png(path: &Path, size: Size, rgb: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create output directory");
    }
    let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut encoder = png::Encoder::new(BufWriter::new(file), size.width, size.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Best);
    let mut writer = encoder.write_header().expect("png header");
    writer.write_image_data(rgb).expect("png data");
}

/// The golden's size and RGB bytes, or `None` if it does not exist.
fn read_png(path: &Path) -> Option<(Size, Vec<u8>)> {
    let file = File::open(path).ok()?;
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().expect("readable png");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    buf.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        other => panic!("{}: unexpected colour type {other:?}", path.display()),
    };
    Some((Size::new(info.width, info.height), rgb))
}

/// Magenta where pixels differ, a faded golden elsewhere.
fn diff_image(expected: &[u8], actual: &[u8]) -> Vec<u8> {
    expected
        .chunks_exact(3)
        .zip(actual.chunks_exact(3))
        .flat_map(|(e, a)| if e == a { [e[0], e[1], e[2]].map(|c| 192 + c / 4) } else { [255, 0, 255] })
        .collect()
}

/// Compares `canvas` with the golden `name`, or rewrites the golden on request.
pub fn check_golden(name: &str, canvas: &Canvas) {
    let golden = golden_dir().join(format!("{name}.png"));
    let actual = canvas.to_rgb_bytes();
    if update_requested() {
        write_png(&golden, canvas.size, &actual);
        eprintln!("updated golden {}", golden.display());
        return;
    }

    let out = actual_dir();
    let actual_path = out.join(format!("{name}.png"));
    let diff_path = out.join(format!("{name}.diff.png"));
    // Leave no stale output from an earlier failing run.
    let _ = fs::remove_file(&actual_path);
    let _ = fs::remove_file(&diff_path);

    let Some((golden_size, expected)) = read_png(&golden) else {
        write_png(&actual_path, canvas.size, &actual);
        panic!(
            "golden {} is missing; the rendering is in {}. Review it, then run \
             BULKHEAD_UPDATE_GOLDENS=1 cargo test -p ui --test golden",
            golden.display(),
            actual_path.display()
        );
    };
    if golden_size != canvas.size {
        write_png(&actual_path, canvas.size, &actual);
        panic!(
            "golden {name} is {golden_size:?} but the screen is {:?}; actual in {}",
            canvas.size,
            actual_path.display()
        );
    }
    if expected != actual {
        let changed = expected.chunks_exact(3).zip(actual.chunks_exact(3)).filter(|(e, a)| e != a).count();
        write_png(&actual_path, canvas.size, &actual);
        write_png(&diff_path, canvas.size, &diff_image(&expected, &actual));
        panic!(
            "{name}: {changed} pixels differ from {}; see {} and {}. If the change is \
             intended, run BULKHEAD_UPDATE_GOLDENS=1 cargo test -p ui --test golden",
            golden.display(),
            actual_path.display(),
            diff_path.display()
        );
    }
}
