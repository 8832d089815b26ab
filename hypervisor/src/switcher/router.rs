//! Routes physical key events: hotkeys to the switcher, everything else to whoever has
//! the focus (a VM slot, or the hypervisor's own overview). Every key a VM saw pressed
//! is released in that VM exactly once — by the real release, or by a synthesised one
//! when the focus moves away — so keys never stick and never arrive twice.

use heapless::Vec;
use pc_keyboard::KeyCode;

use super::hotkeys::{Action, Hotkeys, Mods};
use super::keys::RawKey;

/// Who receives keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Vm(usize),
    /// The hypervisor's overview / notification UI.
    Hypervisor,
}

/// What the router wants done with a key event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Put these set-1 bytes into the VM's virtual keyboard.
    ToVm { slot: usize, bytes: Vec<u8, 6> },
    /// A key press for the hypervisor's own UI.
    ToHypervisor(KeyCode),
    /// A hotkey fired; the caller applies it (and calls [`KeyRouter::set_focus`]).
    Hotkey(Action),
}

/// Where a held key's release must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Vm(usize),
    /// Nobody: hotkey keys, keys for the hypervisor UI, keys already released in a VM
    /// that lost the focus.
    Nobody,
}

#[derive(Debug, Clone)]
struct Held {
    key: RawKey,
    owner: Owner,
}

const MAX_HELD: usize = 16;

#[derive(Debug)]
pub struct KeyRouter {
    hotkeys: Hotkeys,
    focus: Focus,
    held: Vec<Held, MAX_HELD>,
}

pub type Outputs = Vec<Output, { MAX_HELD + 1 }>;

impl KeyRouter {
    pub fn new(hotkeys: Hotkeys, focus: Focus) -> Self {
        KeyRouter { hotkeys, focus, held: Vec::new() }
    }

    /// Keys down right now.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    pub fn focus(&self) -> Focus {
        self.focus
    }

    fn mods(&self) -> Mods {
        let mut m = Mods::default();
        for h in &self.held {
            match h.key.code {
                KeyCode::LControl | KeyCode::RControl => m.ctrl = true,
                KeyCode::LAlt | KeyCode::RAltGr => m.alt = true,
                KeyCode::LShift | KeyCode::RShift => m.shift = true,
                KeyCode::LWin | KeyCode::RWin => m.meta = true,
                _ => {}
            }
        }
        m
    }

    /// Handles one physical key event.
    pub fn feed(&mut self, key: RawKey) -> Outputs {
        let mut out = Outputs::new();
        let existing = self.held.iter().position(|h| h.key.code == key.code);
        if !key.down {
            if let Some(i) = existing {
                let held = self.held.swap_remove(i);
                if let Owner::Vm(slot) = held.owner {
                    let _ = out.push(Output::ToVm { slot, bytes: key.bytes });
                }
            }
            // A release for a key nobody saw pressed goes nowhere.
            return out;
        }
        if let Some(i) = existing {
            // Typematic repeat: same receiver as the original press.
            if let Some(Owner::Vm(slot)) = self.held.get(i).map(|h| h.owner) {
                let _ = out.push(Output::ToVm { slot, bytes: key.bytes });
            }
            return out;
        }
        if let Some(action) = self.hotkeys.lookup(self.mods(), key.code) {
            self.remember(key, Owner::Nobody);
            let _ = out.push(Output::Hotkey(action));
            return out;
        }
        match self.focus {
            Focus::Vm(slot) => {
                let bytes = key.bytes.clone();
                // A press the router cannot release later never reaches the VM.
                if self.remember(key, Owner::Vm(slot)) {
                    let _ = out.push(Output::ToVm { slot, bytes });
                }
            }
            Focus::Hypervisor => {
                let _ = out.push(Output::ToHypervisor(key.code));
                self.remember(key, Owner::Nobody);
            }
        }
        out
    }

    /// Keeps `key` as held by `owner`; `false` when [`MAX_HELD`] keys are down and
    /// none of them is ownerless to make room.
    fn remember(&mut self, key: RawKey, owner: Owner) -> bool {
        if self.held.is_full() {
            match self.held.iter().position(|h| h.owner == Owner::Nobody) {
                Some(i) => {
                    self.held.swap_remove(i);
                }
                None => return false,
            }
        }
        self.held.push(Held { key, owner }).is_ok()
    }

    /// Moves the focus. Keys the old VM saw pressed are released in it now.
    pub fn set_focus(&mut self, focus: Focus) -> Outputs {
        let mut out = Outputs::new();
        if focus == self.focus {
            return out;
        }
        for held in self.held.iter_mut() {
            if let Owner::Vm(slot) = held.owner {
                let _ = out.push(Output::ToVm { slot, bytes: held.key.release_bytes() });
                held.owner = Owner::Nobody;
            }
        }
        self.focus = focus;
        out
    }

    /// A VM went away: forget what it held without sending it anything.
    pub fn forget_vm(&mut self, slot: usize) {
        for held in self.held.iter_mut() {
            if held.owner == Owner::Vm(slot) {
                held.owner = Owner::Nobody;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::Set1Decoder;
    use super::*;

    /// Feeds raw bytes, applies hotkeys the way the switcher does (SwitchTo(n) focuses
    /// slot n-1), and collects what each VM received.
    fn run(router: &mut KeyRouter, bytes: &[u8]) -> (std::vec::Vec<std::vec::Vec<u8>>, std::vec::Vec<Action>) {
        let mut decoder = Set1Decoder::new();
        let mut per_vm = vec![vec![]; 3];
        let mut actions = vec![];
        for &b in bytes {
            let Some(key) = decoder.feed(b) else { continue };
            for o in router.feed(key) {
                match o {
                    Output::ToVm { slot, bytes } => per_vm[slot].extend_from_slice(&bytes),
                    Output::Hotkey(a) => {
                        actions.push(a);
                        if let Action::SwitchTo(n) = a {
                            for o in router.set_focus(Focus::Vm(usize::from(n) - 1)) {
                                if let Output::ToVm { slot, bytes } = o {
                                    per_vm[slot].extend_from_slice(&bytes);
                                }
                            }
                        }
                    }
                    Output::ToHypervisor(_) => {}
                }
            }
        }
        (per_vm, actions)
    }

    #[test]
    fn hotkey_switches_and_no_guest_sees_the_hotkey_key() {
        let mut r = KeyRouter::new(Hotkeys::default(), Focus::Vm(0));
        // "a" to VM 1, then Ctrl+Alt+2 (press ctrl, alt, 2; release 2, alt, ctrl), then "b".
        let bytes = [0x1E, 0x9E, 0x1D, 0x38, 0x03, 0x83, 0xB8, 0x9D, 0x30, 0xB0];
        let (vms, actions) = run(&mut r, &bytes);
        assert_eq!(actions, vec![Action::SwitchTo(2)]);
        // VM 1: a down/up, ctrl+alt down, then synthesised releases at the switch.
        assert_eq!(vms[0], vec![0x1E, 0x9E, 0x1D, 0x38, 0x9D, 0xB8]);
        // VM 2: only "b"; neither the "2" nor the stale modifier releases.
        assert_eq!(vms[1], vec![0x30, 0xB0]);
        assert!(!vms.iter().flatten().any(|&b| b == 0x03 || b == 0x83), "hotkey key leaked");
    }

    #[test]
    fn key_held_across_a_switch_is_released_once_in_the_old_vm() {
        let mut r = KeyRouter::new(Hotkeys::default(), Focus::Vm(0));
        let (vms, _) = run(&mut r, &[0x1E, 0x1D, 0x38, 0x03]); // "a", ctrl, alt held; "2"
        assert_eq!(vms[0], vec![0x1E, 0x1D, 0x38, 0x9E, 0x9D, 0xB8]);
        // Physical releases after the switch reach nobody.
        let (vms, _) = run(&mut r, &[0x9E, 0x83, 0xB8, 0x9D, 0x1E]);
        assert_eq!(vms[0], vec![]);
        assert_eq!(vms[1], vec![0x1E]);
    }

    #[test]
    fn modifiers_must_match_exactly() {
        let mut r = KeyRouter::new(Hotkeys::default(), Focus::Vm(0));
        // Shift+Ctrl+Alt+2 is not Ctrl+Alt+2: it belongs to the guest.
        let (vms, actions) = run(&mut r, &[0x2A, 0x1D, 0x38, 0x03]);
        assert!(actions.is_empty());
        assert_eq!(vms[0], vec![0x2A, 0x1D, 0x38, 0x03]);
    }

    #[test]
    fn typematic_repeats_follow_the_original_press() {
        let mut r = KeyRouter::new(Hotkeys::default(), Focus::Vm(0));
        let (vms, _) = run(&mut r, &[0x1E, 0x1E, 0x1E, 0x9E]);
        assert_eq!(vms[0], vec![0x1E, 0x1E, 0x1E, 0x9E]);
    }

    #[test]
    fn a_press_beyond_the_held_limit_is_not_sent_so_it_cannot_stick() {
        let mut r = KeyRouter::new(Hotkeys::default(), Focus::Vm(0));
        // Seventeen different letters and digits held down at once.
        let codes: std::vec::Vec<u8> = (0x10..0x19).chain(0x1E..0x26).collect();
        let (vms, _) = run(&mut r, &codes);
        assert_eq!(vms[0], codes[..MAX_HELD].to_vec(), "the 17th press reached the VM");
        let releases: std::vec::Vec<u8> = codes.iter().map(|c| c | 0x80).collect();
        let (vms, _) = run(&mut r, &releases);
        assert_eq!(vms[0], releases[..MAX_HELD].to_vec());
        assert_eq!(r.held_count(), 0);
    }

    #[test]
    fn overview_focus_sends_keys_to_the_hypervisor() {
        let mut r = KeyRouter::new(Hotkeys::default(), Focus::Hypervisor);
        let mut d = Set1Decoder::new();
        let out = r.feed(d.feed(0x1C).unwrap()); // Enter
        assert_eq!(out.as_slice(), &[Output::ToHypervisor(KeyCode::Return)]);
        assert!(r.feed(d.feed(0x9C).unwrap()).is_empty());
    }

    #[test]
    fn secure_attention_fires_whatever_the_focus() {
        let mut r = KeyRouter::new(Hotkeys::default(), Focus::Vm(1));
        let (_, actions) = run(&mut r, &[0x1D, 0x38, 0xE0, 0x47]);
        assert_eq!(actions, vec![Action::SecureAttention]);
    }
}
