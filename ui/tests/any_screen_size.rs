//! Every screen draws on any framebuffer size, however odd, without panicking: the
//! hypervisor takes whatever mode GOP gives it.

use embedded_graphics::pixelcolor::Rgb888;
use ui::{
    LinearFb, PixelOrder,
    boot_screen::{self, BootScreen},
    install_progress,
    notification::{self, Notification, Severity},
    overview::{self, Overview, Tile, VmState},
    safe_mode::{self, SafeMode},
    strip::{self, Strip},
    thumbnail::Thumbnail,
};

const SIZES: [(u32, u32); 9] =
    [(0, 0), (1, 1), (7, 3), (64, 48), (320, 200), (640, 480), (1024, 768), (3840, 2160), (5000, 90)];

fn each_screen(mut draw: impl FnMut(&mut LinearFb<'_>)) {
    for (width, height) in SIZES {
        let stride = width + 3;
        let mut pixels = vec![0u32; (stride * height) as usize];
        let mut fb = LinearFb::new(&mut pixels, width, height, stride, PixelOrder::Bgr).unwrap();
        draw(&mut fb);
    }
}

const LONG: &str = "An unreasonably long name that keeps going well past any sensible width \
                    for a label, a strip, a tile or a toast, with ünïcödé and 😀 in it";

#[test]
fn boot_and_safe_mode() {
    each_screen(|fb| {
        let info = BootScreen {
            product: LONG,
            version: LONG,
            cpu_vendor: LONG,
            virtualization: "",
            memory_bytes: u64::MAX,
            pci_devices: usize::MAX,
            iommu: LONG,
            disk: LONG,
            status: LONG,
            medium: LONG,
            policy: "",
            policy_warning: false,
        };
        boot_screen::draw(fb, &info).unwrap();
        for phase in [install_progress::Phase::Writing, install_progress::Phase::Failed] {
            let progress = install_progress::Progress::new(phase, u64::MAX, u64::MAX);
            install_progress::draw(fb, &progress).unwrap();
        }
        let screen = SafeMode { title: LONG, reason: LONG, hint: "" };
        safe_mode::draw(fb, &screen).unwrap();
    });
}

#[test]
fn strip_and_notification() {
    each_screen(|fb| {
        let strip = Strip {
            vm_name: LONG,
            label: LONG,
            trust_colour: Rgb888::new(255, 255, 0),
            clock: (255, 255),
            network_up: false,
            secure: true,
        };
        strip::draw(fb, &strip).unwrap();
        for severity in [Severity::Info, Severity::Warning, Severity::Error] {
            notification::draw(fb, &Notification { message: LONG, severity }).unwrap();
        }
    });
}

#[test]
fn overview_with_odd_tiles() {
    let picture = vec![0x00ff_8000u32; 50 * 30];
    let good = Thumbnail { pixels: &picture, width: 50, height: 30, order: PixelOrder::Rgb };
    // Claims more pixels than it has: must be ignored, not read past the end.
    let short = Thumbnail { pixels: &picture[..10], width: 50, height: 30, order: PixelOrder::Rgb };
    let huge = Thumbnail { pixels: &picture, width: 5, height: 300, order: PixelOrder::Rgb };
    let tile =
        |thumbnail, state| Tile { name: LONG, label: LONG, trust_colour: Rgb888::new(10, 200, 10), state, thumbnail };
    let tiles: Vec<Tile> = (0..70)
        .map(|i| match i % 4 {
            0 => tile(Some(good), VmState::Running),
            1 => tile(Some(short), VmState::Crashed),
            2 => tile(Some(huge), VmState::Stopped),
            _ => tile(None, VmState::Running),
        })
        .collect();
    each_screen(|fb| {
        for count in [0, 1, 2, 3, 5, 9, 70] {
            for selected in [0, count / 2, usize::MAX] {
                overview::draw(fb, &Overview { tiles: &tiles[..count], selected }).unwrap();
            }
        }
    });
}
