//! Every transition of the focus machine, driven by raw set-1 bytes as the keyboard
//! sends them (default key map: Ctrl+Alt+1..9, Ctrl+Alt+Tab, Ctrl+Alt+Space,
//! Ctrl+Alt+Home).

use std::vec;
use std::vec::Vec;

use super::*;
use crate::switcher::keys::Set1Decoder;

const CTRL: u8 = 0x1D;
const ALT: u8 = 0x38;
const A: u8 = 0x1E;
const B: u8 = 0x30;
const TAB: u8 = 0x0F;
const SPACE: u8 = 0x39;
const ENTER: u8 = 0x1C;
const ESC: u8 = 0x01;
/// Extended keys: E0 then the code.
const HOME: [u8; 2] = [0xE0, 0x47];
const UP: [u8; 2] = [0xE0, 0x48];
const DOWN: [u8; 2] = [0xE0, 0x50];
const LEFT: [u8; 2] = [0xE0, 0x4B];
const RIGHT: [u8; 2] = [0xE0, 0x4D];
const NUMPAD_ENTER: [u8; 2] = [0xE0, 0x1C];

fn digit(n: u8) -> u8 {
    // Set 1: "1" is 0x02 ... "9" is 0x0A.
    n + 1
}

struct Rig {
    machine: FocusMachine,
    decoder: Set1Decoder,
}

impl Rig {
    fn new(vms: usize) -> Rig {
        Rig { machine: FocusMachine::new(vms, Hotkeys::default()), decoder: Set1Decoder::new() }
    }

    /// Feeds raw keyboard bytes; returns every command they caused, in order.
    fn bytes(&mut self, bytes: &[u8]) -> Vec<FocusCommand> {
        let mut out = Vec::new();
        for &b in bytes {
            if let Some(key) = self.decoder.feed(b) {
                out.extend(self.machine.key(key));
            }
        }
        out
    }

    /// Presses and releases a key (one byte, or E0 and a byte).
    fn tap(&mut self, key: &[u8]) -> Vec<FocusCommand> {
        let mut seq = key.to_vec();
        seq.extend_from_slice(&release(key));
        self.bytes(&seq)
    }

    /// Ctrl+Alt+`key`, pressed and released as a person does: Ctrl, Alt, key down;
    /// key, Alt, Ctrl up.
    fn ctrl_alt(&mut self, key: &[u8]) -> Vec<FocusCommand> {
        let mut seq = vec![CTRL, ALT];
        seq.extend_from_slice(key);
        seq.extend_from_slice(&release(key));
        seq.extend_from_slice(&[ALT | 0x80, CTRL | 0x80]);
        self.bytes(&seq)
    }

    fn stopped(&mut self, slot: usize, cause: StopCause, restarted: bool) -> Vec<FocusCommand> {
        self.machine.vm_stopped(slot, "PERSONAL", cause, restarted)
    }
}

fn release(key: &[u8]) -> Vec<u8> {
    let mut r = key.to_vec();
    if let Some(last) = r.last_mut() {
        *last |= 0x80;
    }
    r
}

/// The bytes each VM was given, by slot.
fn keys_to(cmds: &[FocusCommand], slot: usize) -> Vec<u8> {
    cmds.iter()
        .filter_map(|c| match c {
            FocusCommand::ToVm { slot: s, bytes } if *s == slot => Some(bytes.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn to_vm(slot: usize, bytes: &[u8]) -> FocusCommand {
    FocusCommand::ToVm { slot, bytes: heapless::Vec::from_slice(bytes).unwrap() }
}

fn any_keys(cmds: &[FocusCommand]) -> bool {
    cmds.iter().any(|c| matches!(c, FocusCommand::ToVm { .. }))
}

/// The commands other than key bytes.
fn screen(cmds: &[FocusCommand]) -> Vec<FocusCommand> {
    cmds.iter().filter(|c| !matches!(c, FocusCommand::ToVm { .. })).cloned().collect()
}

fn overview_at(count: usize, index: usize) -> Selection {
    Selection::new(count, ui::overview::columns_for(count)).with_index(index)
}

fn selected(rig: &Rig) -> usize {
    match rig.machine.view() {
        View::Overview(sel) => sel.index(),
        View::Desktop => panic!("the overview is not open"),
    }
}

// Focus mode.

#[test]
fn keys_go_to_the_focused_vm_with_their_exact_bytes() {
    let mut rig = Rig::new(3);
    let cmds = rig.bytes(&[A, A, A | 0x80, 0xE0, 0x48, 0xE0, 0xC8]);
    assert_eq!(keys_to(&cmds, 0), vec![A, A, A | 0x80, 0xE0, 0x48, 0xE0, 0xC8]);
    assert!(screen(&cmds).is_empty());
}

#[test]
fn switch_to_slot_n_releases_the_modifiers_in_the_old_vm_and_hides_the_digit() {
    let mut rig = Rig::new(3);
    let cmds = rig.ctrl_alt(&[digit(2)]);
    // Ctrl and Alt reached VM 1 before the hotkey fired: released there at the switch,
    // before the new VM takes over. The digit reaches nobody; the real releases neither.
    assert_eq!(
        cmds,
        vec![
            to_vm(0, &[CTRL]),
            to_vm(0, &[ALT]),
            to_vm(0, &[CTRL | 0x80]),
            to_vm(0, &[ALT | 0x80]),
            FocusCommand::ShowVm { slot: 1, switch: true },
        ]
    );
    assert_eq!(keys_to(&cmds, 0), vec![CTRL, ALT, CTRL | 0x80, ALT | 0x80]);
    assert_eq!(keys_to(&cmds, 1), vec![]);
    assert_eq!(screen(&cmds), vec![FocusCommand::ShowVm { slot: 1, switch: true }]);
    assert_eq!((rig.machine.focus(), rig.machine.view()), (1, View::Desktop));
    assert_eq!(keys_to(&rig.tap(&[B]), 1), vec![B, B | 0x80]);
}

#[test]
fn switch_to_the_focused_slot_redraws_it_without_counting_a_switch() {
    let mut rig = Rig::new(3);
    let cmds = rig.ctrl_alt(&[digit(1)]);
    assert_eq!(screen(&cmds), vec![FocusCommand::ShowVm { slot: 0, switch: false }]);
    // The focus did not move: Ctrl and Alt get their real releases.
    assert_eq!(keys_to(&cmds, 0), vec![CTRL, ALT, ALT | 0x80, CTRL | 0x80]);
}

#[test]
fn switch_to_an_absent_slot_does_nothing() {
    let mut rig = Rig::new(3);
    let cmds = rig.ctrl_alt(&[digit(5)]);
    assert!(screen(&cmds).is_empty());
    assert_eq!((rig.machine.focus(), rig.machine.view()), (0, View::Desktop));
    assert_eq!(keys_to(&cmds, 0), vec![CTRL, ALT, ALT | 0x80, CTRL | 0x80], "the digit still reaches nobody");
}

#[test]
fn switch_to_a_stopped_slot_shows_its_last_picture() {
    let mut rig = Rig::new(3);
    rig.stopped(1, StopCause::ShutDown, false);
    let cmds = rig.ctrl_alt(&[digit(2)]);
    assert_eq!(screen(&cmds), vec![FocusCommand::ShowVm { slot: 1, switch: true }]);
    assert_eq!(rig.machine.focus(), 1);
}

#[test]
fn next_goes_round_the_slots() {
    let mut rig = Rig::new(3);
    let mut order = vec![];
    for _ in 0..4 {
        let cmds = rig.ctrl_alt(&[TAB]);
        assert_eq!(screen(&cmds).len(), 1);
        order.push(rig.machine.focus());
    }
    assert_eq!(order, vec![1, 2, 0, 1]);
}

#[test]
fn next_with_no_vms_does_nothing() {
    let mut rig = Rig::new(0);
    assert!(screen(&rig.ctrl_alt(&[TAB])).is_empty());
    assert!(screen(&rig.ctrl_alt(&[digit(1)])).is_empty());
}

#[test]
fn overview_hotkey_opens_the_overview_on_the_focused_tile() {
    let mut rig = Rig::new(3);
    rig.ctrl_alt(&[digit(2)]);
    let cmds = rig.ctrl_alt(&[SPACE]);
    assert_eq!(screen(&cmds), vec![FocusCommand::ShowOverview(overview_at(3, 1))]);
    assert_eq!(keys_to(&cmds, 1), vec![CTRL, ALT, CTRL | 0x80, ALT | 0x80]);
    assert_eq!(rig.machine.view(), View::Overview(overview_at(3, 1)));
}

#[test]
fn secure_attention_from_the_desktop_opens_the_overview() {
    let mut rig = Rig::new(2);
    let cmds = rig.ctrl_alt(&HOME);
    assert_eq!(screen(&cmds), vec![FocusCommand::ShowOverview(overview_at(2, 0))]);
    // Home is an extended key: the guest never sees E0 47.
    assert!(!keys_to(&cmds, 0).contains(&0x47));
}

// Overview mode.

#[test]
fn overview_hotkey_in_the_overview_goes_back_to_the_focused_vm() {
    let mut rig = Rig::new(3);
    rig.ctrl_alt(&[SPACE]);
    rig.tap(&RIGHT);
    let cmds = rig.ctrl_alt(&[SPACE]);
    assert_eq!(screen(&cmds), vec![FocusCommand::ShowVm { slot: 0, switch: true }]);
    assert!(!any_keys(&cmds), "the overview owned Ctrl and Alt");
}

#[test]
fn overview_hotkey_stays_when_the_focused_vm_has_stopped() {
    let mut rig = Rig::new(3);
    rig.ctrl_alt(&[SPACE]);
    rig.stopped(0, StopCause::Crashed("triple fault"), false);
    assert!(screen(&rig.ctrl_alt(&[SPACE])).is_empty());
    assert!(matches!(rig.machine.view(), View::Overview(_)));
}

#[test]
fn secure_attention_in_the_overview_opens_it_afresh() {
    let mut rig = Rig::new(4);
    rig.ctrl_alt(&[SPACE]);
    rig.tap(&DOWN);
    assert_eq!(selected(&rig), 2);
    let cmds = rig.ctrl_alt(&HOME);
    assert_eq!(screen(&cmds), vec![FocusCommand::ShowOverview(overview_at(4, 0))]);
    assert!(!any_keys(&cmds));
}

#[test]
fn arrows_and_tab_move_the_selection_round_the_grid() {
    // Four VMs: a 2x2 grid.
    let mut rig = Rig::new(4);
    rig.ctrl_alt(&[SPACE]);
    let mut path = vec![];
    for key in [&RIGHT[..], &DOWN, &LEFT, &UP, &[TAB], &[TAB], &RIGHT, &UP] {
        let cmds = rig.tap(key);
        let index = selected(&rig);
        assert_eq!(cmds, vec![FocusCommand::ShowOverview(overview_at(4, index))]);
        path.push(index);
    }
    assert_eq!(path, vec![1, 3, 2, 0, 1, 2, 3, 1]);
}

#[test]
fn a_move_that_changes_nothing_redraws_nothing() {
    let mut rig = Rig::new(1);
    rig.ctrl_alt(&[SPACE]);
    for key in [&RIGHT[..], &LEFT, &UP, &DOWN, &[TAB]] {
        assert!(rig.tap(key).is_empty());
    }
}

#[test]
fn enter_focuses_the_selected_vm() {
    let mut rig = Rig::new(3);
    rig.ctrl_alt(&[SPACE]);
    rig.tap(&DOWN);
    assert_eq!(selected(&rig), 2);
    let cmds = rig.tap(&[ENTER]);
    assert_eq!(cmds, vec![FocusCommand::ShowVm { slot: 2, switch: true }]);
    assert_eq!((rig.machine.focus(), rig.machine.view()), (2, View::Desktop));
    // Enter's release went to nobody; the next key goes to the new VM.
    assert_eq!(keys_to(&rig.tap(&[A]), 2), vec![A, A | 0x80]);
}

#[test]
fn numpad_enter_focuses_the_selected_vm_too() {
    let mut rig = Rig::new(2);
    rig.ctrl_alt(&[SPACE]);
    rig.tap(&[TAB]);
    assert_eq!(rig.tap(&NUMPAD_ENTER), vec![FocusCommand::ShowVm { slot: 1, switch: true }]);
}

#[test]
fn enter_on_the_focused_tile_still_counts_as_a_switch() {
    let mut rig = Rig::new(2);
    rig.ctrl_alt(&[SPACE]);
    assert_eq!(rig.tap(&[ENTER]), vec![FocusCommand::ShowVm { slot: 0, switch: true }]);
}

#[test]
fn escape_goes_back_to_the_focused_vm_whatever_is_selected() {
    let mut rig = Rig::new(3);
    rig.ctrl_alt(&[digit(3)]);
    rig.ctrl_alt(&[SPACE]);
    rig.tap(&[TAB]);
    assert_eq!(selected(&rig), 0);
    assert_eq!(rig.tap(&[ESC]), vec![FocusCommand::ShowVm { slot: 2, switch: true }]);
    assert_eq!(rig.machine.focus(), 2);
}

#[test]
fn escape_stays_in_the_overview_when_the_focused_vm_has_stopped() {
    let mut rig = Rig::new(2);
    rig.stopped(0, StopCause::ShutDown, false);
    assert!(matches!(rig.machine.view(), View::Overview(_)));
    assert!(rig.tap(&[ESC]).is_empty());
    assert!(matches!(rig.machine.view(), View::Overview(_)));
}

#[test]
fn keys_never_reach_a_vm_while_the_overview_is_open() {
    let mut rig = Rig::new(3);
    rig.ctrl_alt(&[SPACE]);
    let typed: Vec<u8> = (0x02..0x36u8).flat_map(|b| [b, b | 0x80]).filter(|&b| b & 0x7F != ENTER).collect();
    let cmds = rig.bytes(&typed);
    assert!(!any_keys(&cmds), "{cmds:?}");
    assert_eq!(rig.machine.view(), View::Overview(overview_at(3, 1)), "only Tab moved it");
    // Shift+Ctrl+Alt+1 is no hotkey, and in the overview it is no VM's either.
    let cmds = rig.bytes(&[0x2A, CTRL, ALT, digit(1), digit(1) | 0x80, ALT | 0x80, CTRL | 0x80, 0xAA]);
    assert!(cmds.is_empty(), "{cmds:?}");
}

// Held keys.

#[test]
fn key_held_during_a_switch_is_released_once_in_the_vm_that_had_it() {
    let mut rig = Rig::new(3);
    let cmds = rig.bytes(&[A, CTRL, ALT, digit(2)]);
    assert_eq!(keys_to(&cmds, 0), vec![A, CTRL, ALT, A | 0x80, CTRL | 0x80, ALT | 0x80]);
    assert_eq!(screen(&cmds), vec![FocusCommand::ShowVm { slot: 1, switch: true }]);
    // The physical releases after the switch reach neither VM.
    let cmds = rig.bytes(&[digit(2) | 0x80, A | 0x80, ALT | 0x80, CTRL | 0x80]);
    assert!(cmds.is_empty(), "{cmds:?}");
    // A new press of the same key goes to the new VM.
    assert_eq!(keys_to(&rig.bytes(&[A]), 1), vec![A]);
}

#[test]
fn key_held_when_the_overview_opens_is_released_in_its_vm() {
    let mut rig = Rig::new(2);
    let cmds = rig.bytes(&[B, CTRL, ALT, SPACE]);
    assert_eq!(keys_to(&cmds, 0), vec![B, CTRL, ALT, B | 0x80, CTRL | 0x80, ALT | 0x80]);
    let cmds = rig.bytes(&[SPACE | 0x80, B | 0x80, ALT | 0x80, CTRL | 0x80]);
    assert!(cmds.is_empty());
}

#[test]
fn key_held_over_a_switch_by_the_overview_goes_nowhere_afterwards() {
    let mut rig = Rig::new(2);
    rig.ctrl_alt(&[SPACE]);
    // Enter held down while it switches: its repeat and release reach nobody.
    let cmds = rig.bytes(&[ENTER, ENTER, ENTER | 0x80]);
    assert_eq!(cmds, vec![FocusCommand::ShowVm { slot: 0, switch: true }]);
}

// VM events.

#[test]
fn focused_vm_stopping_for_good_opens_the_overview() {
    let mut rig = Rig::new(2);
    rig.ctrl_alt(&[digit(2)]);
    let cmds = rig.stopped(1, StopCause::ShutDown, false);
    assert_eq!(
        cmds,
        vec![
            FocusCommand::Notify { text: "PERSONAL was shut down".try_into().unwrap(), severity: Severity::Info },
            FocusCommand::ShowOverview(overview_at(2, 1)),
        ]
    );
    // The overview has the keyboard now.
    assert!(!any_keys(&rig.tap(&[A])));
}

#[test]
fn focused_vm_crashing_and_restarted_still_opens_the_overview() {
    let mut rig = Rig::new(2);
    let cmds = rig.stopped(0, StopCause::Crashed("triple fault"), true);
    assert_eq!(
        cmds,
        vec![
            FocusCommand::Notify {
                text: "PERSONAL crashed: triple fault; restarted".try_into().unwrap(),
                severity: Severity::Error
            },
            FocusCommand::ShowOverview(overview_at(2, 0)),
        ]
    );
    // It runs again, so the overview hotkey goes back to it.
    assert_eq!(screen(&rig.ctrl_alt(&[SPACE])), vec![FocusCommand::ShowVm { slot: 0, switch: true }]);
}

#[test]
fn focused_vm_rebooting_stays_on_screen() {
    let mut rig = Rig::new(2);
    let cmds = rig.stopped(0, StopCause::Rebooted, true);
    assert_eq!(
        cmds,
        vec![
            FocusCommand::Notify { text: "PERSONAL restarted".try_into().unwrap(), severity: Severity::Info },
            FocusCommand::Redraw,
        ]
    );
    assert_eq!(rig.machine.view(), View::Desktop);
    assert_eq!(keys_to(&rig.tap(&[A]), 0), vec![A, A | 0x80]);
}

#[test]
fn focused_vm_stopping_forgets_its_held_keys() {
    let mut rig = Rig::new(2);
    rig.bytes(&[A, CTRL]);
    let cmds = rig.stopped(0, StopCause::Crashed("triple fault"), true);
    assert!(!any_keys(&cmds), "a new start is not sent the old start's releases: {cmds:?}");
    assert!(rig.bytes(&[A | 0x80, CTRL | 0x80]).is_empty());
}

#[test]
fn focused_vm_stopping_while_the_overview_is_open_redraws_its_tile() {
    let mut rig = Rig::new(2);
    rig.ctrl_alt(&[SPACE]);
    rig.tap(&[TAB]);
    let cmds = rig.stopped(0, StopCause::ShutDown, false);
    assert_eq!(screen(&cmds)[1..], [FocusCommand::Redraw]);
    assert_eq!(selected(&rig), 1, "the selection stays");
}

#[test]
fn another_vm_stopping_redraws_and_keeps_the_focus() {
    let mut rig = Rig::new(3);
    rig.bytes(&[A]);
    let cmds = rig.stopped(2, StopCause::Crashed("bad hypercall"), false);
    assert_eq!(cmds[1..], [FocusCommand::Redraw]);
    assert!(matches!(&cmds[0], FocusCommand::Notify { severity: Severity::Error, .. }));
    assert_eq!((rig.machine.focus(), rig.machine.view()), (0, View::Desktop));
    // The focused VM still owns its held key.
    assert_eq!(keys_to(&rig.bytes(&[A | 0x80]), 0), vec![A | 0x80]);
}

#[test]
fn another_vm_rebooting_only_notifies() {
    let mut rig = Rig::new(3);
    let cmds = rig.stopped(1, StopCause::Rebooted, true);
    assert_eq!(cmds.len(), 1);
    assert!(matches!(&cmds[0], FocusCommand::Notify { severity: Severity::Info, .. }));
    assert_eq!(rig.machine.view(), View::Desktop);
}

#[test]
fn a_stop_for_an_unknown_slot_only_notifies_and_redraws() {
    let mut rig = Rig::new(2);
    let cmds = rig.stopped(7, StopCause::ShutDown, false);
    assert_eq!(screen(&cmds)[1..], [FocusCommand::Redraw]);
    assert_eq!((rig.machine.focus(), rig.machine.view()), (0, View::Desktop));
}

// Any sequence of keys, hotkeys, overview moves and stopped VMs.

/// What one VM saw: keys down now, and any release of a key it had not seen pressed.
#[derive(Default)]
struct GuestView {
    down: std::collections::BTreeSet<pc_keyboard::KeyCode>,
    unmatched_releases: usize,
    presses: usize,
}

impl GuestView {
    fn feed(&mut self, decoder: &mut Set1Decoder, bytes: &[u8]) {
        for &b in bytes {
            let Some(key) = decoder.feed(b) else { continue };
            if key.down {
                self.presses += 1;
                self.down.insert(key.code);
            } else if !self.down.remove(&key.code) {
                self.unmatched_releases += 1;
            }
        }
    }
}

#[test]
fn after_any_storm_every_vm_saw_a_release_for_every_press() {
    // Keys a storm uses: modifiers, letters, digits (Ctrl+Alt+digit switches), Tab,
    // Space (overview), Enter, Esc, Home (secure attention) and the arrows.
    let pool: [&[u8]; 16] = [
        &[CTRL],
        &[ALT],
        &[0x2A], // left shift
        &[A],
        &[B],
        &[digit(1)],
        &[digit(2)],
        &[digit(3)],
        &[TAB],
        &[SPACE],
        &[ENTER],
        &[ESC],
        &HOME,
        &LEFT,
        &RIGHT,
        &[0xE0, 0x1D], // right ctrl
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut presses_per_vm = [0usize; 3];
    for round in 0..200 {
        let mut rig = Rig::new(3);
        let mut views: Vec<GuestView> = (0..3).map(|_| GuestView::default()).collect();
        let mut decoders: Vec<Set1Decoder> = (0..3).map(|_| Set1Decoder::new()).collect();
        let mut held: Vec<usize> = Vec::new();
        let apply = |cmds: Vec<FocusCommand>, views: &mut [GuestView], decoders: &mut [Set1Decoder]| {
            for c in cmds {
                if let FocusCommand::ToVm { slot, bytes } = c {
                    views[slot].feed(&mut decoders[slot], &bytes);
                }
            }
        };
        for _ in 0..300 {
            let roll = next(100);
            if roll < 2 {
                // A VM stops (and is started afresh): its keyboard starts empty.
                let slot = next(3);
                let cmds = rig.stopped(slot, StopCause::Crashed("triple fault"), true);
                apply(cmds, &mut views, &mut decoders);
                views[slot] = GuestView::default();
                decoders[slot] = Set1Decoder::new();
            } else if roll < 50 && !held.is_empty() {
                let k = held.swap_remove(next(held.len()));
                let cmds = rig.bytes(&release(pool[k]));
                apply(cmds, &mut views, &mut decoders);
            } else {
                let k = next(pool.len());
                if held.contains(&k) {
                    // Typematic repeat of a held key.
                    let cmds = rig.bytes(pool[k]);
                    apply(cmds, &mut views, &mut decoders);
                } else {
                    held.push(k);
                    let cmds = rig.bytes(pool[k]);
                    apply(cmds, &mut views, &mut decoders);
                }
            }
        }
        for k in held.drain(..) {
            let cmds = rig.bytes(&release(pool[k]));
            apply(cmds, &mut views, &mut decoders);
        }
        for (slot, view) in views.iter().enumerate() {
            assert!(view.down.is_empty(), "round {round}: vm {slot} still holds {:?}", view.down);
            assert_eq!(view.unmatched_releases, 0, "round {round}: vm {slot} got a release twice");
        }
        assert_eq!(rig.machine.held_count(), 0, "round {round}: the router still holds keys");
        presses_per_vm.iter_mut().zip(&views).for_each(|(n, v)| *n += v.presses);
    }
    // The storms reached every VM (the test is not vacuous).
    assert!(presses_per_vm.iter().all(|&n| n > 1000), "presses per VM: {presses_per_vm:?}");
}
