//! Whole screens at common laptop resolutions, compared with committed PNGs.
//! See `support/mod.rs` for how failures are reported and goldens updated.

mod support;

use support::{Canvas, check_golden};
use ui::{
    boot_screen::{self, BootScreen},
    palette,
    strip::{self, Strip},
};

/// 1280x800 (13" WXGA) and 1920x1080 (full HD), both at scale 1, and 2560x1600 at 2.
const SCREENS: [(u32, u32); 3] = [(1280, 800), (1920, 1080), (2560, 1600)];

fn name(screen: &str, (width, height): (u32, u32)) -> String {
    format!("{screen}-{width}x{height}")
}

#[test]
fn boot_screen() {
    let info = BootScreen {
        product: "Bulkhead",
        version: "0.1.0",
        cpu_vendor: "AuthenticAMD (AMD EPYC 7763, 4 cores)",
        virtualization: "AMD-V with nested paging",
        memory_bytes: 512 << 20,
        pci_devices: 7,
        iommu: "AMD-Vi, 1 unit",
        status: "Verifying policy...",
    };
    for screen in SCREENS {
        let mut canvas = Canvas::new(screen.0, screen.1);
        boot_screen::draw(&mut canvas.target(), &info).unwrap();
        check_golden(&name("boot", screen), &canvas);
    }
}

/// A stand-in for a guest's desktop: a diagonal gradient in `tint` with two windows.
fn fake_desktop(width: u32, height: u32, tint: [u8; 3]) -> Vec<u32> {
    let mut pixels = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height {
        for x in 0..width {
            let t = x * 128 / width.max(1) + y * 127 / height.max(1);
            let shade = |c: u8| (c as u32 * (128 + t) / 512) as u8;
            let in_window = |left: u32, top: u32, w: u32, h: u32| {
                x >= width * left / 100
                    && x < width * (left + w) / 100
                    && y >= height * top / 100
                    && y < height * (top + h) / 100
            };
            let rgb = if in_window(10, 15, 45, 50) {
                if y < height * 15 / 100 + height / 25 {
                    [60, 64, 72]
                } else {
                    [236, 238, 242]
                }
            } else if in_window(50, 40, 38, 45) {
                if y < height * 40 / 100 + height / 25 {
                    [40, 44, 52]
                } else {
                    [24, 26, 32]
                }
            } else {
                tint.map(shade)
            };
            pixels.push(u32::from_le_bytes([rgb[0], rgb[1], rgb[2], 0]));
        }
    }
    pixels
}

#[test]
fn trust_strip() {
    let corporate = Strip {
        vm_name: "Corporate",
        label: "secure",
        trust_colour: palette::TRUST_RED,
        clock: (9, 41),
        network_up: true,
        secure: true,
    };
    let personal = Strip {
        vm_name: "Personal",
        label: "untrusted · home Wi-Fi",
        trust_colour: palette::TRUST_GREEN,
        clock: (23, 5),
        network_up: false,
        secure: false,
    };
    for screen in SCREENS {
        for (vm, strip, tint) in [
            ("corporate", &corporate, [70, 110, 200]),
            ("personal", &personal, [200, 120, 60]),
        ] {
            let mut canvas = Canvas::new(screen.0, screen.1);
            canvas.pixels = fake_desktop(screen.0, screen.1, tint);
            strip::draw(&mut canvas.target(), strip).unwrap();
            check_golden(&name(&format!("strip-{vm}"), screen), &canvas);
        }
    }
}
