//! The text-level syntax of a policy's values, shared by the host compiler (which
//! reports errors with line and column) and the hypervisor (which checks again and
//! trusts nothing): VM names, memory sizes, device selectors, network allow-list
//! entries, hotkey actions and key combinations.
//!
//! The hypervisor maps a parsed [`Key`] to its keyboard driver's key code; everything
//! else here is the whole rule.

/// Smallest and largest VM memory, and its granule (nested paging maps 2 MiB pages).
pub const MIN_MEMORY: u64 = 2 * 1024 * 1024;
pub const MAX_MEMORY: u64 = 64 * 1024 * 1024 * 1024;
pub const MEMORY_GRANULE: u64 = 2 * 1024 * 1024;
/// Most virtual CPUs one VM may have.
pub const MAX_VCPUS: u8 = 8;
/// Most VMs one policy may run.
pub const MAX_VMS: usize = 16;
/// Most boot modules a Multiboot VM may be given.
pub const MAX_MODULES: usize = 16;
/// Longest VM name.
pub const MAX_NAME: usize = 31;
/// Key-map entries, one of which stays free for the secure-attention default.
pub const MAX_HOTKEYS: usize = 16;
/// Links a desktop may have (one virtio-net device each).
pub const MAX_LINKS_PER_VM: usize = 4;
/// Links the service VM may have: one per connected desktop.
pub const MAX_SERVICE_LINKS: usize = 8;

/// VM names are 1-31 ASCII letters, digits or '-'.
pub fn valid_vm_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether `bytes` is a VM size the hypervisor accepts: a multiple of 2 MiB between
/// 2 MiB and 64 GiB.
pub fn valid_memory(bytes: u64) -> bool {
    (MIN_MEMORY..=MAX_MEMORY).contains(&bytes) && bytes.is_multiple_of(MEMORY_GRANULE)
}

/// Whether `vcpus` is a vCPU count a VM of this kind may have: 1 to [`MAX_VCPUS`],
/// and only Linux VMs (the kind with a local APIC per vCPU and an MADT) more than one.
pub fn valid_vcpus(vcpus: u8, linux: bool) -> bool {
    (1..=MAX_VCPUS).contains(&vcpus) && (linux || vcpus == 1)
}

/// `384M`, `1G`, `512MiB`, `64K`: a whole number with a binary unit (K, M, G; KiB,
/// MiB, GiB). `None` for anything else or an overflow.
pub fn parse_size(value: &str) -> Option<u64> {
    let (digits, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit())?);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let shift = match unit {
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// A host PCI function given to a VM: by address (`00:03.0`, segment 0) or by
/// vendor:device id (`8086:10d3`, the first such function not given to another VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceSelector {
    Address { bus: u8, device: u8, function: u8 },
    Id { vendor: u16, device: u16 },
}

impl DeviceSelector {
    /// Parses `BB:DD.F` or `VVVV:DDDD` (hexadecimal).
    pub fn parse(text: &str) -> Option<DeviceSelector> {
        let (left, right) = text.split_once(':')?;
        let hex = |s: &str, max_len: usize| {
            (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        if let Some((dev, func)) = right.split_once('.') {
            let (bus, device, function) = (hex(left, 2)?, hex(dev, 2)?, hex(func, 1)?);
            if device > 0x1f || function > 7 {
                return None;
            }
            return Some(DeviceSelector::Address { bus: bus as u8, device: device as u8, function: function as u8 });
        }
        if left.len() != 4 || right.len() != 4 {
            return None;
        }
        Some(DeviceSelector::Id { vendor: hex(left, 4)? as u16, device: hex(right, 4)? as u16 })
    }
}

impl core::fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeviceSelector::Address { bus, device, function } => write!(f, "{bus:02x}:{device:02x}.{function}"),
            DeviceSelector::Id { vendor, device } => write!(f, "{vendor:04x}:{device:04x}"),
        }
    }
}

/// An allow-list entry of a `corporate-only` network: `A.B.C.D[/len][:port]` with
/// len ≤ 32 and port 1..=65535.
pub fn valid_destination(entry: &str) -> bool {
    let (net, port) = match entry.rsplit_once(':') {
        Some((net, port)) => (net, Some(port)),
        None => (entry, None),
    };
    let (addr, len) = net.split_once('/').unwrap_or((net, "32"));
    let mut octets = 0;
    for octet in addr.split('.') {
        octets += 1;
        if octet.is_empty() || !octet.bytes().all(|b| b.is_ascii_digit()) || octet.parse::<u8>().is_err() {
            return false;
        }
    }
    octets == 4
        && !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
        && len.parse::<u8>().is_ok_and(|l| l <= 32)
        && port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|p| p != 0))
}

/// How a self-test VM is expected to end (checked by the self-test verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    TripleFault,
    /// Stopped by nested paging: it touched memory outside its map.
    NestedPageFault,
    BadHypercall,
    Shutdown,
    /// Stopped because a device it owns did DMA the IOMMU blocked.
    DmaFault,
}

impl Expect {
    pub const NAMES: &'static str = "triple-fault, npf, bad-hypercall, shutdown or dma-fault";

    pub fn parse(text: &str) -> Option<Expect> {
        Some(match text {
            "triple-fault" => Expect::TripleFault,
            "npf" => Expect::NestedPageFault,
            "bad-hypercall" => Expect::BadHypercall,
            "shutdown" => Expect::Shutdown,
            "dma-fault" => Expect::DmaFault,
            _ => return None,
        })
    }
}

/// What a hotkey does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Focus VM slot N (1-based, as printed on the key).
    SwitchTo(u8),
    Next,
    Overview,
    /// The secure attention sequence: the hypervisor's overview, unconditionally.
    SecureAttention,
}

impl Action {
    pub const NAMES: &'static str = "switch-1 .. switch-9, next, overview, secure-attention";

    /// `switch-1` .. `switch-9`, `next`, `overview`, `secure-attention`.
    pub fn parse(text: &str) -> Option<Action> {
        Some(match text {
            "next" => Action::Next,
            "overview" => Action::Overview,
            "secure-attention" => Action::SecureAttention,
            other => match other.strip_prefix("switch-").and_then(|n| n.parse::<u8>().ok()) {
                Some(n @ 1..=9) if other.len() == "switch-1".len() => Action::SwitchTo(n),
                _ => return None,
            },
        })
    }
}

/// Modifier state needed for a combo; left and right keys count the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mods {
    pub ctrl: bool,
    pub alt: bool,
    pub shift: bool,
    pub meta: bool,
}

/// The non-modifier key of a combination, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `0`..`9`.
    Digit(u8),
    /// `a`..`z` as 0..25.
    Letter(u8),
    /// `F1`..`F12` as 1..12.
    F(u8),
    Tab,
    Space,
    Home,
    End,
    Escape,
    Backspace,
    Delete,
    Insert,
    PageUp,
    PageDown,
    Left,
    Right,
    Up,
    Down,
}

impl Key {
    /// A key by its (case-insensitive) name.
    pub fn by_name(name: &str) -> Option<Key> {
        let mut buf = [0u8; 16];
        let lower = buf.get_mut(..name.len())?;
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        let lower = core::str::from_utf8(lower).ok()?;
        match lower.as_bytes() {
            [d @ b'0'..=b'9'] => return Some(Key::Digit(d - b'0')),
            [c @ b'a'..=b'z'] => return Some(Key::Letter(c - b'a')),
            _ => {}
        }
        if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<u8>().ok()) {
            return (1..=12).contains(&n).then_some(Key::F(n));
        }
        Some(match lower {
            "tab" => Key::Tab,
            "space" => Key::Space,
            "home" => Key::Home,
            "end" => Key::End,
            "escape" | "esc" => Key::Escape,
            "backspace" => Key::Backspace,
            "delete" | "del" => Key::Delete,
            "insert" => Key::Insert,
            "pageup" => Key::PageUp,
            "pagedown" => Key::PageDown,
            "left" => Key::Left,
            "right" => Key::Right,
            "up" => Key::Up,
            "down" => Key::Down,
            _ => return None,
        })
    }
}

/// Why a key combination does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    UnknownKey,
    NoKey,
    TooManyKeys,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ParseError::UnknownKey => "unknown key name (use e.g. Ctrl+Alt+Tab, Ctrl+Alt+1, Ctrl+Alt+F12)",
            ParseError::NoKey => "a combination needs a non-modifier key",
            ParseError::TooManyKeys => "a combination has exactly one non-modifier key",
        })
    }
}

/// A key combination like `Ctrl+Alt+F1`, by key name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCombo {
    pub mods: Mods,
    pub key: Key,
}

impl KeyCombo {
    pub fn parse(text: &str) -> Result<KeyCombo, ParseError> {
        let mut mods = Mods::default();
        let mut key = None;
        for part in text.split('+').map(str::trim) {
            let is = |name: &str| part.eq_ignore_ascii_case(name);
            if is("ctrl") || is("control") {
                mods.ctrl = true;
            } else if is("alt") {
                mods.alt = true;
            } else if is("shift") {
                mods.shift = true;
            } else if is("meta") || is("super") || is("win") {
                mods.meta = true;
            } else if key.replace(Key::by_name(part).ok_or(ParseError::UnknownKey)?).is_some() {
                return Err(ParseError::TooManyKeys);
            }
        }
        Ok(KeyCombo { mods, key: key.ok_or(ParseError::NoKey)? })
    }

    /// Ctrl, Alt or Meta is held: without one, the combination would take ordinary
    /// typing away from every guest.
    pub fn has_modifier(&self) -> bool {
        self.mods.ctrl || self.mods.alt || self.mods.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("384M"), Some(384 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        for bad in ["", "M", "12", "12T", "1.5G", "-1M", "99999999999999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert!(valid_memory(2 << 20) && valid_memory(64 << 30));
        assert!(valid_vcpus(1, false) && valid_vcpus(2, true) && valid_vcpus(MAX_VCPUS, true));
        assert!(!valid_vcpus(0, true) && !valid_vcpus(2, false) && !valid_vcpus(MAX_VCPUS + 1, true));
        assert!(!valid_memory(3 << 20) && !valid_memory(0) && !valid_memory(66 << 30));
    }

    #[test]
    fn device_selectors() {
        assert_eq!(DeviceSelector::parse("00:03.0"), Some(DeviceSelector::Address { bus: 0, device: 3, function: 0 }));
        assert_eq!(DeviceSelector::parse("8086:10D3"), Some(DeviceSelector::Id { vendor: 0x8086, device: 0x10d3 }));
        assert_eq!(DeviceSelector::parse("1a:1f.7").unwrap().to_string(), "1a:1f.7");
        for bad in ["00:20.0", "00:03.8", "0:3", "8086:10d", "xx:03.0", "", "00:03.0,"] {
            assert_eq!(DeviceSelector::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn destinations() {
        for good in ["10.0.2.2/32:8080", "192.168.0.0/16", "10.0.0.1", "10.0.0.1:443"] {
            assert!(valid_destination(good), "{good}");
        }
        for bad in ["10.0.0.0/33", "10.0.0.1:0", "10.0.0:80", "10.0.0.256", "ten", "10.0.0.1/+8", "10..0.1", ""] {
            assert!(!valid_destination(bad), "{bad}");
        }
    }

    #[test]
    fn actions_and_combos() {
        assert_eq!(Action::parse("switch-9"), Some(Action::SwitchTo(9)));
        for bad in ["switch-0", "switch-10", "switch-01", "jump", ""] {
            assert_eq!(Action::parse(bad), None, "{bad}");
        }
        let c = KeyCombo::parse("ctrl+Alt+F12").unwrap();
        assert_eq!((c.key, c.mods.ctrl, c.mods.alt, c.has_modifier()), (Key::F(12), true, true, true));
        assert!(!KeyCombo::parse("Shift+Tab").unwrap().has_modifier());
        assert_eq!(KeyCombo::parse("Ctrl+Alt"), Err(ParseError::NoKey));
        assert_eq!(KeyCombo::parse("Ctrl+Q+W"), Err(ParseError::TooManyKeys));
        assert_eq!(KeyCombo::parse("Ctrl+F13"), Err(ParseError::UnknownKey));
        assert_eq!(KeyCombo::parse("Ctrl+averyveryverylongname"), Err(ParseError::UnknownKey));
        assert_eq!(KeyCombo::parse("Meta+Space").unwrap().key, Key::Space);
    }
}
