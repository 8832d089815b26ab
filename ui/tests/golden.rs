//! Whole screens at common laptop resolutions, compared with committed PNGs.
//! See `support/mod.rs` for how failures are reported and goldens updated.

mod support;

use embedded_graphics::{pixelcolor::Rgb888, prelude::Size};
use support::{Canvas, check_golden};
use ui::{
    PixelOrder, Scale,
    boot_screen::{self, BootScreen},
    install_progress,
    notification::{self, Notification, Severity},
    overview::{self, Overview, Tile, VmState},
    palette,
    passphrase::{self, Field, Mode, PassphraseScreen, Tone},
    safe_mode::{self, SafeMode},
    strip::{self, Strip},
    thumbnail::Thumbnail,
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
        disk: "Samsung SSD 980 PRO 1TB, 913 GiB data partition",
        status: "Verifying policy...",
        medium: "Running from the USB stick",
        policy: "DEMO policy: signed with the public demo key, not for real laptops",
        policy_warning: true,
    };
    for screen in SCREENS {
        let mut canvas = Canvas::new(screen.0, screen.1);
        boot_screen::draw(&mut canvas.target(), &info).unwrap();
        check_golden(&name("boot", screen), &canvas);
    }
}

/// The passphrase screen after a wrong passphrase (at every size), and the first-use
/// and change modes at one size.
#[test]
fn passphrase_screen() {
    let waiting = ["Corporate", "Personal"];
    let wrong = PassphraseScreen {
        product: "Bulkhead",
        mode: Mode::Unlock,
        field: Field::Passphrase,
        waiting: &waiting,
        typed: 3,
        min_length: 8,
        message: "Wrong passphrase. Try again in 4 s",
        tone: Tone::Refused,
    };
    for screen in SCREENS {
        let mut canvas = Canvas::new(screen.0, screen.1);
        passphrase::draw(&mut canvas.target(), &wrong).unwrap();
        check_golden(&name("passphrase-wrong", screen), &canvas);
    }
    let first_use = PassphraseScreen {
        mode: Mode::FirstUse,
        field: Field::New,
        typed: 0,
        message: "Passphrases do not match",
        ..wrong
    };
    let change = PassphraseScreen {
        mode: Mode::Change,
        field: Field::Confirm,
        typed: 12,
        message: "Changing the passphrase...",
        tone: Tone::Busy,
        ..wrong
    };
    for (label, screen) in [("passphrase-first-use", first_use), ("passphrase-change", change)] {
        let mut canvas = Canvas::new(1280, 800);
        passphrase::draw(&mut canvas.target(), &screen).unwrap();
        check_golden(&name(label, (1280, 800)), &canvas);
    }
}

/// The installer's band over a console-black screen, halfway through writing.
#[test]
fn install_progress_band() {
    use ui::install_progress::{Phase, Progress};
    let progress = Progress::new(Phase::Writing, 97 << 20, 194 << 20);
    for screen in SCREENS {
        let mut canvas = Canvas::new(screen.0, screen.1);
        install_progress::draw(&mut canvas.target(), &progress).unwrap();
        check_golden(&name("install-progress", screen), &canvas);
    }
}

/// A stand-in for a guest's desktop: a diagonal gradient in `tint` with two windows.
fn fake_desktop(width: u32, height: u32, tint: [u8; 3]) -> Vec<u32> {
    let (w, h) = (width as usize, height as usize);
    let mut pixels = vec![0u32; w * h];
    for (y, row) in pixels.chunks_exact_mut(w).enumerate() {
        let row_shade = 128 + y * 127 / h;
        for (x, pixel) in row.iter_mut().enumerate() {
            // Coarse steps keep the PNGs small.
            let shade = (row_shade + x * 128 / w) & !7;
            let r = tint[0] as usize * shade / 512;
            let g = tint[1] as usize * shade / 512;
            let b = tint[2] as usize * shade / 512;
            *pixel = (r | g << 8 | b << 16) as u32;
        }
    }
    // Two windows, in percent of the screen: a light one and a dark one over it.
    let mut window = |left: usize, top: usize, ww: usize, wh: usize, title: u32, body: u32| {
        let (x0, x1) = (w * left / 100, w * (left + ww) / 100);
        let (y0, y1) = (h * top / 100, h * (top + wh) / 100);
        for y in y0..y1 {
            let colour = if y < y0 + h / 25 { title } else { body };
            pixels[y * w + x0..y * w + x1].fill(colour);
        }
    };
    window(10, 15, 45, 50, 0x48_40_3c, 0xf2_ee_ec);
    window(50, 40, 38, 45, 0x34_2c_28, 0x20_1a_18);
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
        for (vm, strip, tint) in [("corporate", &corporate, [70, 110, 200]), ("personal", &personal, [200, 120, 60])] {
            let mut canvas = Canvas::new(screen.0, screen.1);
            canvas.pixels = fake_desktop(screen.0, screen.1, tint);
            strip::draw(&mut canvas.target(), strip).unwrap();
            check_golden(&name(&format!("strip-{vm}"), screen), &canvas);
        }
    }
}

/// Overview tiles with thumbnails shrunk from fake desktops, as the switcher would.
/// The overview's guests: name, label, trust colour, state and desktop tint.
const GUESTS: [(&str, &str, Rgb888, VmState, [u8; 3]); 4] = [
    ("Corporate", "secure · VPN only", palette::TRUST_RED, VmState::Running, [70, 110, 200]),
    ("Personal", "untrusted", palette::TRUST_GREEN, VmState::Crashed, [200, 120, 60]),
    ("Banking", "isolated · no USB", palette::TRUST_BLUE, VmState::Running, [60, 160, 150]),
    ("Lab", "disposable", palette::TRUST_AMBER, VmState::Stopped, [120, 120, 120]),
];

/// Guests run at their own resolution; 1280x800 here.
const GUEST_SIZE: (u32, u32) = (1280, 800);

fn overview_screen(screen: (u32, u32), desktops: &[Vec<u32>], selected: usize) -> Canvas {
    let count = desktops.len();
    let size = Size::new(screen.0, screen.1);
    let grid = overview::layout(size, count, Scale::for_screen(size));
    let thumb = grid.thumbnail_size;
    let vms = GUESTS;
    let (guest_w, guest_h) = GUEST_SIZE;
    let pictures: Vec<Vec<u32>> = desktops
        .iter()
        .map(|desktop| {
            let mut small = vec![0; (thumb.width * thumb.height) as usize];
            let (w, h) = (thumb.width, thumb.height);
            ui::thumbnail::downscale(desktop, guest_w, guest_h, guest_w, &mut small, w, h).unwrap();
            small
        })
        .collect();
    let tiles: Vec<Tile> = vms
        .iter()
        .zip(&pictures)
        .map(|(vm, picture)| Tile {
            name: vm.0,
            label: vm.1,
            trust_colour: vm.2,
            state: vm.3,
            // The stopped VM has no picture: the tile shows a placeholder.
            thumbnail: (vm.3 != VmState::Stopped).then_some(Thumbnail {
                pixels: picture,
                width: thumb.width,
                height: thumb.height,
                order: PixelOrder::Rgb,
            }),
        })
        .collect();
    let mut canvas = Canvas::new(screen.0, screen.1);
    overview::draw(&mut canvas.target(), &Overview { tiles: &tiles, selected }).unwrap();
    canvas
}

#[test]
fn overview_with_two_and_four_vms() {
    let desktops: Vec<Vec<u32>> =
        GUESTS.iter().map(|guest| fake_desktop(GUEST_SIZE.0, GUEST_SIZE.1, guest.4)).collect();
    for screen in SCREENS {
        check_golden(&name("overview-2", screen), &overview_screen(screen, &desktops[..2], 0));
        check_golden(&name("overview-4", screen), &overview_screen(screen, &desktops, 3));
    }
}

#[test]
fn notification_over_a_desktop() {
    let crash = Notification { message: "Personal crashed: triple fault", severity: Severity::Error };
    let restart = Notification {
        message: "The network service restarted. Desktops keep their connections.",
        severity: Severity::Warning,
    };
    for screen in SCREENS {
        for (kind, note) in [("error", &crash), ("warning", &restart)] {
            let mut canvas = Canvas::new(screen.0, screen.1);
            canvas.pixels = fake_desktop(screen.0, screen.1, [70, 110, 200]);
            notification::draw(&mut canvas.target(), note).unwrap();
            check_golden(&name(&format!("notification-{kind}"), screen), &canvas);
        }
    }
}

#[test]
fn safe_mode_screen() {
    let screen_text = SafeMode {
        title: "Safe mode: the policy could not be verified",
        reason: "The policy bundle on this device is signed with a key that this \
                 image does not trust (key id 3f9c 21ab). No virtual machine has been \
                 started, and no device has been handed to a guest.",
        hint: "Restart the laptop to try again. If this screen comes back, contact \
               your IT department and quote the reason above.",
    };
    for screen in SCREENS {
        let mut canvas = Canvas::new(screen.0, screen.1);
        safe_mode::draw(&mut canvas.target(), &screen_text).unwrap();
        check_golden(&name("safe-mode", screen), &canvas);
    }
}

/// What the QEMU screendump check relies on: background corners, a solid accent
/// header and text-coloured pixels in the text block, in either GOP pixel order.
#[test]
fn boot_screen_palette_contract() {
    use embedded_graphics::prelude::{Point, PointsIter};
    use ui::LinearFb;

    let info = BootScreen {
        product: "Bulkhead",
        version: "0.1.0",
        cpu_vendor: "GenuineIntel",
        virtualization: "Intel VT-x with EPT",
        memory_bytes: 8 << 30,
        pci_devices: 23,
        iommu: "Intel VT-d",
        disk: "No data partition",
        status: "Starting",
        medium: "Running from the USB stick",
        policy: "",
        policy_warning: false,
    };
    for (width, height) in [(1280, 800), (1920, 1080), (2560, 1600), (1024, 768), (800, 600)] {
        for order in [PixelOrder::Rgb, PixelOrder::Bgr] {
            // A stride wider than the screen, as GOP often reports.
            let stride = width + 64;
            let mut pixels = vec![0u32; (stride * height) as usize];
            let mut fb = LinearFb::new(&mut pixels, width, height, stride, order).unwrap();
            boot_screen::draw(&mut fb, &info).unwrap();
            let size = Size::new(width, height);
            let (w, h) = (width as i32, height as i32);
            for corner in [Point::new(0, 0), Point::new(w - 1, 0), Point::new(0, h - 1), Point::new(w - 1, h - 1)] {
                assert_eq!(fb.pixel(corner), Some(boot_screen::BOOT_BACKGROUND), "{size:?} {order:?}");
            }
            let header = boot_screen::header_rect(size);
            assert!(header.points().all(|p| fb.pixel(p) == Some(boot_screen::BOOT_ACCENT)));
            let text = boot_screen::text_rect(size);
            let text_pixels = text.points().filter(|&p| fb.pixel(p) == Some(boot_screen::BOOT_TEXT)).count();
            assert!(text_pixels > 300, "{size:?}: {text_pixels} text pixels");
        }
    }
}
