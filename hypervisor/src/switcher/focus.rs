//! The switcher's focus as a state machine: which VM slot has the screen and the
//! keyboard, whether the overview covers it, and what to do about each key and each
//! VM that stops. Input: decoded keys ([`super::keys`]) and VM events; output: a list
//! of [`FocusCommand`]s the desk carries out (drawing, injecting keys, timing). No clock,
//! no hardware and no VM type here, so every transition is unit-tested.
//!
//! Keys go through the [`KeyRouter`]: hotkeys come here, other keys go to the focused
//! VM, or to the overview while it is open (then no VM gets any). A key a VM saw
//! pressed is released in that VM when the focus leaves it.

use alloc::vec::Vec;

use log::info;
use pc_keyboard::KeyCode;
use ui::notification::Severity;
use ui::overview::{Direction, Selection};

use super::hotkeys::{Action, Hotkeys};
use super::keys::RawKey;
use super::notices::{NoticeText, StopCause, stop_message};
use super::router::{Focus, KeyRouter, Output, Outputs};

/// What covers the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The focused VM's desktop.
    Desktop,
    /// The overview, with a tile selected.
    Overview(Selection),
}

/// What the desk is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FocusCommand {
    /// Put these set-1 bytes into VM `slot`'s keyboard: a key typed while it has the
    /// focus, or the release of a key it saw pressed when the focus leaves it.
    ToVm { slot: usize, bytes: heapless::Vec<u8, 6> },
    /// VM `slot` takes the screen and the keyboard: its whole picture is drawn at the
    /// next frame and its keyboard LEDs go to the real keyboard. `switch` when the
    /// screen showed something else (another VM or the overview): the time to its
    /// first frame is a switch's time.
    ShowVm { slot: usize, switch: bool },
    /// Draw the overview with this selection at the next frame (it opened, or the
    /// selection moved).
    ShowOverview(Selection),
    /// Show a notification (and draw the next frame at once).
    Notify { text: NoticeText, severity: Severity },
    /// Redraw the whole screen at the next frame (a tile changed state, or the focused
    /// VM started again).
    Redraw,
}

pub type Commands = Vec<FocusCommand>;

#[derive(Debug)]
pub struct FocusMachine {
    router: KeyRouter,
    /// The VM slot on the desktop (also while the overview covers it).
    focus: usize,
    view: View,
    /// Which slots hold a running VM (all at first; a VM that stops and is not
    /// restarted is not).
    running: Vec<bool>,
}

impl FocusMachine {
    /// `vm_count` running VMs, slot 0 on the desktop, keys mapped by `hotkeys`.
    pub fn new(vm_count: usize, hotkeys: Hotkeys) -> Self {
        FocusMachine {
            router: KeyRouter::new(hotkeys, Focus::Vm(0)),
            focus: 0,
            view: View::Desktop,
            running: alloc::vec![true; vm_count],
        }
    }

    pub fn focus(&self) -> usize {
        self.focus
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub fn vm_count(&self) -> usize {
        self.running.len()
    }

    /// Keys down right now.
    pub fn held_count(&self) -> usize {
        self.router.held_count()
    }

    /// One key event from the keyboard.
    pub fn key(&mut self, key: RawKey) -> Commands {
        let mut out = Commands::new();
        for routed in self.router.feed(key) {
            match routed {
                Output::ToVm { slot, bytes } => out.push(FocusCommand::ToVm { slot, bytes }),
                Output::Hotkey(action) => self.hotkey(action, &mut out),
                Output::ToHypervisor(code) => self.overview_key(code, &mut out),
            }
        }
        out
    }

    /// VM `slot`, called `name`, stopped for `cause` (`restarted` when policy started
    /// it again): a notification, and the overview if it was on screen and is gone.
    pub fn vm_stopped(&mut self, slot: usize, name: &str, cause: StopCause, restarted: bool) -> Commands {
        let mut out = Commands::new();
        let (text, severity) = stop_message(name, cause, restarted);
        out.push(FocusCommand::Notify { text, severity });
        if let Some(running) = self.running.get_mut(slot) {
            *running = restarted;
        }
        // It is gone (or started afresh): the keys it held are not released in it.
        self.router.forget_vm(slot);
        // A crash takes the user to the overview even when policy restarted the VM:
        // what they were looking at is gone, and the notification says why.
        let crashed = severity == Severity::Error;
        if restarted && !crashed {
            if slot == self.focus {
                out.push(FocusCommand::Redraw);
            }
        } else if slot == self.focus && self.view == View::Desktop {
            self.open_overview(&mut out);
        } else {
            // Its tile changes state.
            out.push(FocusCommand::Redraw);
        }
        out
    }

    fn hotkey(&mut self, action: Action, out: &mut Commands) {
        info!(target: "switcher", "hotkey {action:?}");
        let count = self.vm_count();
        match action {
            Action::SwitchTo(n) => {
                let slot = usize::from(n).saturating_sub(1);
                if slot < count {
                    self.switch_to(slot, out);
                }
            }
            Action::Next if count > 0 => {
                self.switch_to(self.focus.saturating_add(1).checked_rem(count).unwrap_or(0), out)
            }
            Action::Next => {}
            Action::Overview if matches!(self.view, View::Overview(_)) => self.back_to_focus(out),
            Action::Overview | Action::SecureAttention => self.open_overview(out),
        }
    }

    /// A key for the overview: arrows and Tab move the selection, Enter focuses the
    /// selected VM, Escape goes back to the focused one.
    fn overview_key(&mut self, key: KeyCode, out: &mut Commands) {
        let View::Overview(sel) = self.view else { return };
        let moved = match key {
            KeyCode::ArrowLeft => sel.moved(Direction::Left),
            KeyCode::ArrowRight => sel.moved(Direction::Right),
            KeyCode::ArrowUp => sel.moved(Direction::Up),
            KeyCode::ArrowDown => sel.moved(Direction::Down),
            KeyCode::Tab => sel.next(),
            KeyCode::Return | KeyCode::NumpadEnter => return self.switch_to(sel.index(), out),
            KeyCode::Escape => return self.back_to_focus(out),
            _ => return,
        };
        if moved != sel {
            self.view = View::Overview(moved);
            out.push(FocusCommand::ShowOverview(moved));
        }
    }

    /// Leaves the overview for the VM that had the focus, if it still runs (a stopped
    /// VM's last picture is not worth going back to).
    fn back_to_focus(&mut self, out: &mut Commands) {
        if self.running.get(self.focus).copied().unwrap_or(false) {
            self.switch_to(self.focus, out);
        }
    }

    /// Opens the overview (again, with the focused VM selected, when it is open). It is
    /// the hypervisor's: keys go to it, and keys held in the VM are released there.
    fn open_overview(&mut self, out: &mut Commands) {
        let count = self.vm_count();
        let columns = ui::overview::columns_for(count);
        let selection = Selection::new(count, columns).with_index(self.focus);
        self.view = View::Overview(selection);
        let releases = self.router.set_focus(Focus::Hypervisor);
        push_releases(releases, out);
        out.push(FocusCommand::ShowOverview(selection));
        info!(target: "switcher", "overview open");
    }

    fn switch_to(&mut self, slot: usize, out: &mut Commands) {
        let releases = self.router.set_focus(Focus::Vm(slot));
        push_releases(releases, out);
        let switch = self.focus != slot || self.view != View::Desktop;
        self.focus = slot;
        self.view = View::Desktop;
        out.push(FocusCommand::ShowVm { slot, switch });
        info!(target: "switcher", "focus on VM slot {}", slot.saturating_add(1));
    }
}

fn push_releases(releases: Outputs, out: &mut Commands) {
    for release in releases {
        if let Output::ToVm { slot, bytes } = release {
            out.push(FocusCommand::ToVm { slot, bytes });
        }
    }
}

#[cfg(test)]
mod tests;
