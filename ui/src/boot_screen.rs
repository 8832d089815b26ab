//! The screen the hypervisor shows while it takes over the machine: product name,
//! version, what it found (CPU, virtualization, memory, PCI, IOMMU) and a status line.
//!
//! The palette and the header position are public and fixed, so that an integration
//! test can recognise the real screen in a screendump:
//! - the four corners are [`BOOT_BACKGROUND`];
//! - [`header_rect`] is a solid block of [`BOOT_ACCENT`] with nothing drawn over it;
//! - [`text_rect`] holds the hardware summary, whose values are drawn in [`BOOT_TEXT`];
//! - [`medium_rect`] holds only the line saying where Bulkhead runs from, so a test can
//!   compare it with the same line rendered on the host.

use core::fmt::Write;

use embedded_graphics::{
    Drawable,
    pixelcolor::Rgb888,
    prelude::{DrawTarget, Point, Primitive, Size},
    primitives::{PrimitiveStyle, Rectangle},
    text::Baseline,
};

use crate::card::Card;
use crate::{
    Scale,
    text::{self, TextRole},
    text_buf::TextBuf,
};

/// The whole screen behind the card (dark navy).
pub const BOOT_BACKGROUND: Rgb888 = Rgb888::new(0x0F, 0x17, 0x2A);
/// The card that holds the text (a lighter navy).
pub const BOOT_PANEL: Rgb888 = Rgb888::new(0x1A, 0x25, 0x3C);
/// The header bar on top of the card (teal), solid.
pub const BOOT_ACCENT: Rgb888 = Rgb888::new(0x14, 0xB8, 0xA6);
/// The product name and the hardware values (near white).
pub const BOOT_TEXT: Rgb888 = Rgb888::new(0xF1, 0xF5, 0xF9);
/// Field names and the version (grey blue).
pub const BOOT_MUTED_TEXT: Rgb888 = Rgb888::new(0x94, 0xA3, 0xB8);
/// The status line, in a lighter tint of the accent so it reads on the card.
pub const BOOT_STATUS_TEXT: Rgb888 = Rgb888::new(0x5E, 0xEA, 0xD4);
/// The policy line when the image carries the public demo policy (amber).
pub const BOOT_WARNING_TEXT: Rgb888 = crate::palette::SEVERITY_WARNING;

/// What the boot screen reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootScreen<'a> {
    pub product: &'a str,
    pub version: &'a str,
    pub cpu_vendor: &'a str,
    pub virtualization: &'a str,
    pub memory_bytes: u64,
    pub pci_devices: usize,
    pub iommu: &'a str,
    /// The hypervisor's disk: "QEMU NVMe Ctrl, 1 GiB data partition", "No data
    /// partition", ...
    pub disk: &'a str,
    pub status: &'a str,
    /// Where Bulkhead runs from, e.g. [`medium_line`]'s text; empty draws no line.
    pub medium: &'a str,
    /// Which policy runs ("Policy version 3 from Example Corp IT"), or that the image
    /// carries the public demo policy; empty draws no line.
    pub policy: &'a str,
    /// Draw the policy line as a warning (the demo key, which anyone can sign with).
    pub policy_warning: bool,
}

/// Where the loader was started from, as the boot screen words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    Stick,
    Nvme,
    Sata,
    Unknown,
}

/// The boot screen's line for `medium`.
pub fn medium_line(medium: Medium) -> &'static str {
    match medium {
        Medium::Stick => "Running from the USB stick",
        Medium::Nvme => "Installed on the internal NVMe disk",
        Medium::Sata => "Installed on the internal SATA disk",
        Medium::Unknown => "Boot medium unknown",
    }
}

/// Layout in base pixels (multiplied by the screen's [`Scale`]).
const GAP: u32 = 20;
const LABEL_COLUMN: u32 = 170;
const INFO_LINES: u32 = 6;
/// Between the status line and the boot-medium line.
const MEDIUM_GAP: u32 = 8;

/// Where everything sits for one screen size.
#[derive(Debug, Clone, Copy)]
struct Layout {
    scale: Scale,
    card: Rectangle,
    header: Rectangle,
    title_top: i32,
    version_top: i32,
    rule_top: i32,
    info: Rectangle,
    info_line_height: u32,
    status_top: i32,
    medium: Rectangle,
    policy_top: i32,
    content_left: i32,
    content_width: u32,
}

impl Layout {
    fn new(size: Size) -> Layout {
        let scale = Scale::for_screen(size);
        let px = |n| scale.px(n);
        let line = |role| text::line_height(&text::style(role, scale, BOOT_TEXT));

        let info_line_height = line(TextRole::Body) + px(8);
        let info_height = info_line_height * INFO_LINES;
        let content_height = line(TextRole::Title)
            + line(TextRole::Body)
            + px(GAP) * 2
            + info_height
            + px(GAP)
            + line(TextRole::Body)
            + px(MEDIUM_GAP)
            + line(TextRole::Body)
            + px(MEDIUM_GAP)
            + line(TextRole::Body);
        let Card { card, header, left: content_left, width: content_width, top: title_top } =
            Card::place(size, scale, content_height);
        let version_top = title_top + line(TextRole::Title) as i32;
        let rule_top = version_top + (line(TextRole::Body) + px(GAP)) as i32;
        let info_top = rule_top + px(GAP) as i32;
        let info = Rectangle::new(Point::new(content_left, info_top), Size::new(content_width, info_height));
        let status_top = info_top + (info_height + px(GAP)) as i32;
        let medium_top = status_top + (line(TextRole::Body) + px(MEDIUM_GAP)) as i32;
        let medium =
            Rectangle::new(Point::new(content_left, medium_top), Size::new(content_width, line(TextRole::Body)));
        let policy_top = medium_top + (line(TextRole::Body) + px(MEDIUM_GAP)) as i32;
        Layout {
            scale,
            card,
            header,
            title_top,
            version_top,
            rule_top,
            info,
            info_line_height,
            status_top,
            medium,
            policy_top,
            content_left,
            content_width,
        }
    }
}

/// The solid accent bar across the top of the card on a screen of `size`.
pub fn header_rect(size: Size) -> Rectangle {
    Layout::new(size).header
}

/// The block of "CPU:" … "Disk:" lines on a screen of `size`; the values in it are
/// drawn in [`BOOT_TEXT`].
pub fn text_rect(size: Size) -> Rectangle {
    Layout::new(size).info
}

/// The line saying where Bulkhead runs from (drawn in [`BOOT_MUTED_TEXT`] on
/// [`BOOT_PANEL`], nothing else in it).
pub fn medium_rect(size: Size) -> Rectangle {
    Layout::new(size).medium
}

/// Draws the whole boot screen over `target`.
pub fn draw<D>(target: &mut D, screen: &BootScreen<'_>) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let layout = Layout::new(target.bounding_box().size);
    let scale = layout.scale;
    target.clear(BOOT_BACKGROUND)?;
    target.fill_solid(&layout.card, BOOT_PANEL)?;
    target.fill_solid(&layout.header, BOOT_ACCENT)?;

    let left = layout.content_left;
    let width = layout.content_width;
    let title = text::style(TextRole::Title, scale, BOOT_TEXT);
    text::draw_fitted(target, screen.product, Point::new(left, layout.title_top), Baseline::Top, width, &title)?;
    let muted = text::style(TextRole::Body, scale, BOOT_MUTED_TEXT);
    let mut version = TextBuf::<64>::new();
    let _ = write!(version, "Version {}", screen.version);
    text::draw_fitted(target, version.as_str(), Point::new(left, layout.version_top), Baseline::Top, width, &muted)?;

    Rectangle::new(Point::new(left, layout.rule_top), Size::new(width, scale.px(1)))
        .into_styled(PrimitiveStyle::with_fill(crate::palette::mix(BOOT_PANEL, BOOT_MUTED_TEXT, 60)))
        .draw(target)?;

    let mut memory = TextBuf::<32>::new();
    format_memory(screen.memory_bytes, &mut memory);
    let mut pci = TextBuf::<24>::new();
    let _ = write!(pci, "{}", screen.pci_devices);
    let rows: [(&str, &str); INFO_LINES as usize] = [
        ("CPU:", screen.cpu_vendor),
        ("Virtualization:", screen.virtualization),
        ("Memory:", memory.as_str()),
        ("PCI devices:", pci.as_str()),
        ("IOMMU:", screen.iommu),
        ("Disk:", screen.disk),
    ];
    let value_style = text::style(TextRole::Body, scale, BOOT_TEXT);
    let label_width = scale.px(LABEL_COLUMN);
    let value_left = left + label_width as i32;
    let value_width = width.saturating_sub(label_width);
    for (row, (label, value)) in rows.iter().enumerate() {
        let top = layout.info.top_left.y + (row as u32 * layout.info_line_height) as i32;
        text::draw_fitted(target, label, Point::new(left, top), Baseline::Top, label_width, &muted)?;
        text::draw_fitted(target, value, Point::new(value_left, top), Baseline::Top, value_width, &value_style)?;
    }

    let status = text::style(TextRole::Body, scale, BOOT_STATUS_TEXT);
    text::draw_fitted(target, screen.status, Point::new(left, layout.status_top), Baseline::Top, width, &status)?;
    text::draw_fitted(target, screen.medium, layout.medium.top_left, Baseline::Top, width, &muted)?;
    let policy_colour = if screen.policy_warning { BOOT_WARNING_TEXT } else { BOOT_MUTED_TEXT };
    let policy = text::style(TextRole::Body, scale, policy_colour);
    text::draw_fitted(target, screen.policy, Point::new(left, layout.policy_top), Baseline::Top, width, &policy)?;
    Ok(())
}

/// "512 MiB" below a GiB, "16 GiB" or "1.5 GiB" above; one decimal, rounded down, so
/// the screen never claims memory that is not there.
pub fn format_memory<const N: usize>(bytes: u64, out: &mut TextBuf<N>) {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    let _ = if bytes >= GIB {
        let tenths = (bytes as u128 * 10 / GIB as u128) as u64;
        if tenths.is_multiple_of(10) {
            write!(out, "{} GiB", tenths / 10)
        } else {
            write!(out, "{}.{} GiB", tenths / 10, tenths % 10)
        }
    } else if bytes >= MIB {
        write!(out, "{} MiB", bytes / MIB)
    } else if bytes >= KIB {
        write!(out, "{} KiB", bytes / KIB)
    } else {
        write!(out, "{bytes} bytes")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(bytes: u64) -> String {
        let mut out = TextBuf::<32>::new();
        format_memory(bytes, &mut out);
        out.as_str().to_owned()
    }

    #[test]
    fn memory_uses_the_largest_sensible_unit() {
        assert_eq!(memory(512 << 20), "512 MiB");
        assert_eq!(memory(16 << 30), "16 GiB");
        assert_eq!(memory(3 << 29), "1.5 GiB");
        assert_eq!(memory((2 << 30) - 1), "1.9 GiB");
        assert_eq!(memory(1023 << 20), "1023 MiB");
        assert_eq!(memory(640 << 10), "640 KiB");
        assert_eq!(memory(12), "12 bytes");
        assert_eq!(memory(u64::MAX), "17179869183.9 GiB");
    }

    #[test]
    fn the_medium_line_is_drawn_inside_its_rect_and_nowhere_else() {
        use crate::{LinearFb, PixelOrder};
        use embedded_graphics::prelude::PointsIter;
        let lines = [Medium::Stick, Medium::Nvme, Medium::Sata, Medium::Unknown].map(medium_line);
        for (i, a) in lines.iter().enumerate() {
            assert!(lines[i + 1..].iter().all(|b| a != b), "{lines:?}");
        }
        for (width, height) in [(800, 600), (1280, 800), (2560, 1600)] {
            let size = Size::new(width, height);
            let render = |medium: &str| {
                let mut pixels = vec![0u32; (width * height) as usize];
                let mut fb = LinearFb::new(&mut pixels, width, height, width, PixelOrder::Bgr).unwrap();
                let screen = BootScreen {
                    product: "Bulkhead",
                    version: "0.1.0",
                    cpu_vendor: "AuthenticAMD",
                    virtualization: "AMD SVM",
                    memory_bytes: 1 << 30,
                    pci_devices: 3,
                    iommu: "none",
                    disk: "No NVMe drive",
                    status: "Starting virtual machines",
                    medium,
                    policy: "",
                    policy_warning: false,
                };
                draw(&mut fb, &screen).unwrap();
                pixels
            };
            let (stick, nvme) = (render(medium_line(Medium::Stick)), render(medium_line(Medium::Nvme)));
            let rect = medium_rect(size);
            let inside = |i: usize| rect.contains(Point::new((i as u32 % width) as i32, (i as u32 / width) as i32));
            let differing: Vec<usize> = (0..stick.len()).filter(|&i| stick[i] != nvme[i]).collect();
            assert!(differing.len() > 100, "{size:?}: {} pixels differ", differing.len());
            assert!(differing.iter().all(|&i| inside(i)), "{size:?}: the medium line spills out of its rect");
            // Nothing else is drawn in the rect: an empty line leaves the card's colour.
            let empty = render("");
            let panel = PixelOrder::Bgr.encode(BOOT_PANEL);
            assert!(rect.points().all(|p| empty[(p.y as u32 * width + p.x as u32) as usize] == panel), "{size:?}");
            assert!(rect.top_left.y > text_rect(size).bottom_right().unwrap().y, "{size:?}");
            assert!(Layout::new(size).card.contains(rect.bottom_right().unwrap()), "{size:?}");
        }
    }

    #[test]
    fn header_sits_inside_the_screen_away_from_the_corners() {
        for size in [Size::new(1280, 800), Size::new(1920, 1080), Size::new(2560, 1600), Size::new(800, 600)] {
            let header = header_rect(size);
            let screen = Rectangle::new(Point::zero(), size);
            assert_eq!(screen.intersection(&header), header, "{size:?}");
            assert!(header.size.width >= size.width / 3, "{size:?}");
            assert!(header.size.height >= 40, "{size:?}");
            assert!(!header.contains(Point::zero()));
            let text = text_rect(size);
            assert!(text.top_left.y > header.bottom_right().unwrap().y);
            assert_eq!(screen.intersection(&text), text, "{size:?}");
        }
    }
}
