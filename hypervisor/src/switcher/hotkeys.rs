//! Hotkey combinations and what they do. The defaults are Ctrl+Alt+1..9 (switch to VM
//! slot N), Ctrl+Alt+Tab (next VM), Ctrl+Alt+Space (overview) and the secure-attention
//! key Ctrl+Alt+Home (always the hypervisor's overview, whatever a guest does). Policy
//! can replace the map; combos are written like `"Ctrl+Alt+Tab"`.

use heapless::Vec;
use pc_keyboard::KeyCode;

pub use bulkhead_policy::syntax::{Action, MAX_HOTKEYS, Mods, ParseError};
use bulkhead_policy::syntax::{Key, KeyCombo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Combo {
    pub mods: Mods,
    pub key: KeyCode,
}

impl Combo {
    /// The policy's syntax (shared with the host tool), mapped to this keyboard's codes.
    pub fn parse(text: &str) -> Result<Combo, ParseError> {
        let combo = KeyCombo::parse(text)?;
        Ok(Combo { mods: combo.mods, key: key_code(combo.key).ok_or(ParseError::UnknownKey)? })
    }
}

fn key_code(key: Key) -> Option<KeyCode> {
    use KeyCode::*;
    const DIGITS: [KeyCode; 10] = [Key0, Key1, Key2, Key3, Key4, Key5, Key6, Key7, Key8, Key9];
    const FKEYS: [KeyCode; 12] = [F1, F2, F3, F4, F5, F6, F7, F8, F9, F10, F11, F12];
    const LETTERS: [KeyCode; 26] = [A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q, R, S, T, U, V, W, X, Y, Z];
    Some(match key {
        Key::Digit(d) => *DIGITS.get(usize::from(d))?,
        Key::Letter(c) => *LETTERS.get(usize::from(c))?,
        Key::F(n) => *FKEYS.get(usize::from(n).checked_sub(1)?)?,
        Key::Tab => Tab,
        Key::Space => Spacebar,
        Key::Home => Home,
        Key::End => End,
        Key::Escape => Escape,
        Key::Backspace => Backspace,
        Key::Delete => Delete,
        Key::Insert => Insert,
        Key::PageUp => PageUp,
        Key::PageDown => PageDown,
        Key::Left => ArrowLeft,
        Key::Right => ArrowRight,
        Key::Up => ArrowUp,
        Key::Down => ArrowDown,
    })
}

/// The active key map.
#[derive(Debug, Clone)]
pub struct Hotkeys {
    entries: Vec<(Combo, Action), MAX_HOTKEYS>,
}

impl Default for Hotkeys {
    fn default() -> Self {
        let ctrl_alt = Mods { ctrl: true, alt: true, ..Mods::default() };
        let mut entries = Vec::new();
        let digits = [
            KeyCode::Key1,
            KeyCode::Key2,
            KeyCode::Key3,
            KeyCode::Key4,
            KeyCode::Key5,
            KeyCode::Key6,
            KeyCode::Key7,
            KeyCode::Key8,
            KeyCode::Key9,
        ];
        for (slot, key) in (1u8..).zip(digits) {
            let _ = entries.push((Combo { mods: ctrl_alt, key }, Action::SwitchTo(slot)));
        }
        let _ = entries.push((Combo { mods: ctrl_alt, key: KeyCode::Tab }, Action::Next));
        let _ = entries.push((Combo { mods: ctrl_alt, key: KeyCode::Spacebar }, Action::Overview));
        let _ = entries.push((Combo { mods: ctrl_alt, key: KeyCode::Home }, Action::SecureAttention));
        Hotkeys { entries }
    }
}

impl Hotkeys {
    /// A map from policy: `(combo text, action)` pairs. The secure-attention combo is
    /// always present (policy can move it, never remove it).
    pub fn from_config(items: &[(&str, Action)]) -> Result<Hotkeys, (usize, ParseError)> {
        let mut combos = alloc::vec::Vec::new();
        for (i, (text, action)) in items.iter().enumerate() {
            combos.push((Combo::parse(text).map_err(|e| (i, e))?, *action));
        }
        Hotkeys::from_combos(&combos).map_err(|i| (i, ParseError::TooManyKeys))
    }

    /// A map from parsed bindings, plus the default secure-attention combination if
    /// none is bound. `Err(i)`: binding `i` does not fit.
    pub fn from_combos(items: &[(Combo, Action)]) -> Result<Hotkeys, usize> {
        let mut entries = Vec::new();
        for (i, binding) in items.iter().enumerate() {
            entries.push(*binding).map_err(|_| i)?;
        }
        if !entries.iter().any(|(_, a)| *a == Action::SecureAttention) {
            let sas = Hotkeys::default().entries.iter().copied().find(|(_, a)| *a == Action::SecureAttention);
            if let Some(sas) = sas {
                let _ = entries.push(sas);
            }
        }
        Ok(Hotkeys { entries })
    }

    pub fn lookup(&self, mods: Mods, key: KeyCode) -> Option<Action> {
        self.entries.iter().find(|(c, _)| c.key == key && c.mods == mods).map(|(_, a)| *a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTRL_ALT: Mods = Mods { ctrl: true, alt: true, shift: false, meta: false };

    #[test]
    fn defaults_cover_slots_next_overview_and_sas() {
        let h = Hotkeys::default();
        assert_eq!(h.lookup(CTRL_ALT, KeyCode::Key3), Some(Action::SwitchTo(3)));
        assert_eq!(h.lookup(CTRL_ALT, KeyCode::Tab), Some(Action::Next));
        assert_eq!(h.lookup(CTRL_ALT, KeyCode::Spacebar), Some(Action::Overview));
        assert_eq!(h.lookup(CTRL_ALT, KeyCode::Home), Some(Action::SecureAttention));
        assert_eq!(h.lookup(Mods { ctrl: true, ..Mods::default() }, KeyCode::Key3), None);
    }

    #[test]
    fn parses_policy_combos_and_keeps_sas() {
        let h = Hotkeys::from_config(&[("Ctrl+Shift+F1", Action::SwitchTo(1)), ("meta+tab", Action::Next)]).unwrap();
        assert_eq!(
            h.lookup(Mods { ctrl: true, shift: true, ..Mods::default() }, KeyCode::F1),
            Some(Action::SwitchTo(1))
        );
        assert_eq!(h.lookup(Mods { meta: true, ..Mods::default() }, KeyCode::Tab), Some(Action::Next));
        assert_eq!(h.lookup(CTRL_ALT, KeyCode::Home), Some(Action::SecureAttention));
    }

    #[test]
    fn rejects_bad_combos() {
        assert_eq!(Combo::parse("Ctrl+Alt"), Err(ParseError::NoKey));
        assert_eq!(Combo::parse("Ctrl+Q+W"), Err(ParseError::TooManyKeys));
        assert_eq!(Combo::parse("Ctrl+Banana"), Err(ParseError::UnknownKey));
        assert_eq!(Combo::parse("Ctrl+F13"), Err(ParseError::UnknownKey));
        assert_eq!(Hotkeys::from_config(&[("Alt+Nope", Action::Next)]).unwrap_err().0, 0);
    }
}
