//! Whole screens at common laptop resolutions, compared with committed PNGs.
//! See `support/mod.rs` for how failures are reported and goldens updated.

mod support;

use support::{Canvas, check_golden};
use ui::boot_screen::{self, BootScreen};

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
