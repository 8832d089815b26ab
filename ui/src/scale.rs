//! Integer HiDPI scaling: every screen is laid out in base pixels and multiplied.

use embedded_graphics::prelude::{Point, Size};

/// How many device pixels one base pixel takes.
///
/// Integer factors keep lines and bitmap fonts crisp. The factor follows the screen
/// height: one step per 720 lines, so 800p and 1080p panels draw at 1, 1440p and
/// 1600p at 2, 4K (2160p) at 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scale(u32);

impl Scale {
    pub const ONE: Scale = Scale(1);
    pub const MAX: Scale = Scale(4);

    /// Lines per scale step.
    const LINES_PER_STEP: u32 = 720;

    /// A factor of `factor`, kept within `1..=4`.
    pub const fn new(factor: u32) -> Scale {
        if factor < 1 {
            Scale(1)
        } else if factor > Self::MAX.0 {
            Self::MAX
        } else {
            Scale(factor)
        }
    }

    /// The factor that suits a screen of `size`.
    pub const fn for_screen(size: Size) -> Scale {
        Scale::new(size.height / Self::LINES_PER_STEP)
    }

    pub const fn factor(self) -> u32 {
        self.0
    }

    /// `base` pixels at this scale.
    pub const fn px(self, base: u32) -> u32 {
        base.saturating_mul(self.0)
    }

    /// `base` pixels at this scale, signed (for offsets).
    pub const fn offset(self, base: i32) -> i32 {
        base.saturating_mul(self.0 as i32)
    }

    pub const fn size(self, base: Size) -> Size {
        Size::new(self.px(base.width), self.px(base.height))
    }

    pub const fn point(self, base: Point) -> Point {
        Point::new(self.offset(base.x), self.offset(base.y))
    }
}

impl Default for Scale {
    fn default() -> Self {
        Scale::ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_laptop_panels() {
        let factor = |w, h| Scale::for_screen(Size::new(w, h)).factor();
        assert_eq!(factor(1280, 800), 1);
        assert_eq!(factor(1366, 768), 1);
        assert_eq!(factor(1920, 1080), 1);
        assert_eq!(factor(1920, 1200), 1);
        assert_eq!(factor(2560, 1440), 2);
        assert_eq!(factor(2560, 1600), 2);
        assert_eq!(factor(3840, 2160), 3);
        assert_eq!(factor(7680, 4320), 4);
    }

    #[test]
    fn tiny_and_huge_screens_stay_in_range() {
        assert_eq!(Scale::for_screen(Size::new(640, 480)), Scale::ONE);
        assert_eq!(Scale::for_screen(Size::new(0, 0)), Scale::ONE);
        assert_eq!(Scale::for_screen(Size::new(u32::MAX, u32::MAX)), Scale::MAX);
        assert_eq!(Scale::new(0), Scale::ONE);
        assert_eq!(Scale::new(99), Scale::MAX);
    }

    #[test]
    fn sizes_and_offsets_multiply() {
        let s = Scale::new(2);
        assert_eq!(s.px(28), 56);
        assert_eq!(s.offset(-3), -6);
        assert_eq!(s.size(Size::new(3, 4)), Size::new(6, 8));
        assert_eq!(s.point(Point::new(5, -1)), Point::new(10, -2));
        assert_eq!(s.px(u32::MAX), u32::MAX);
    }
}
