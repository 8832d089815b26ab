//! Choosing the GOP mode: the largest mode up to 1920x1080, unless the manifest asks for
//! a specific size.

/// A candidate mode as reported by GOP (only modes with a linear RGB/BGR framebuffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub index: u32,
    pub width: u32,
    pub height: u32,
}

pub const DEFAULT_MAX: (u32, u32) = (1920, 1080);

/// Picks a mode index. An exact match for `wanted` wins; otherwise the largest mode
/// (by area, then width) that fits in 1920x1080; otherwise the smallest mode.
pub fn choose(modes: &[Candidate], wanted: Option<(u32, u32)>) -> Option<Candidate> {
    if let Some((w, h)) = wanted
        && let Some(exact) = modes.iter().find(|m| m.width == w && m.height == h)
    {
        return Some(*exact);
    }
    let area = |m: &&Candidate| (u64::from(m.width) * u64::from(m.height), m.width);
    modes
        .iter()
        .filter(|m| m.width <= DEFAULT_MAX.0 && m.height <= DEFAULT_MAX.1)
        .max_by_key(area)
        .or_else(|| modes.iter().min_by_key(area))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(index: u32, width: u32, height: u32) -> Candidate {
        Candidate { index, width, height }
    }

    #[test]
    fn picks_largest_mode_within_1080p() {
        let modes = [m(0, 640, 480), m(1, 1280, 800), m(2, 2560, 1600), m(3, 1920, 1080), m(4, 1024, 768)];
        assert_eq!(choose(&modes, None), Some(m(3, 1920, 1080)));
    }

    #[test]
    fn manifest_override_wins_when_available() {
        let modes = [m(0, 640, 480), m(1, 1280, 800), m(3, 1920, 1080)];
        assert_eq!(choose(&modes, Some((1280, 800))), Some(m(1, 1280, 800)));
        assert_eq!(choose(&modes, Some((1366, 768))), Some(m(3, 1920, 1080)));
    }

    #[test]
    fn falls_back_to_smallest_when_everything_is_too_big() {
        let modes = [m(0, 3840, 2160), m(1, 2560, 1440)];
        assert_eq!(choose(&modes, None), Some(m(1, 2560, 1440)));
        assert_eq!(choose(&[], None), None);
    }
}
